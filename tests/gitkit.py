"""Real git repositories for tests, made in a temporary folder."""

import os
import subprocess
from pathlib import Path

AUTHOR = {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.com",
          "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.com"}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **AUTHOR}, check=True,
                          capture_output=True, text=True)
    return done.stdout.strip()


def repo_with_branch(folder: Path, script: str, on_main: str, branch: str, on_branch: str,
                     message: str = "branch change") -> Path:
    """A repository whose `script` reads `on_main` on main and `on_branch` on `branch`,
    main checked out."""
    folder.mkdir(parents=True)
    git(folder, "init", "-q", "-b", "main")
    (folder / script).write_text(on_main)
    git(folder, "add", script)
    git(folder, "commit", "-q", "-m", "first")
    git(folder, "checkout", "-q", "-b", branch)
    (folder / script).write_text(on_branch)
    git(folder, "commit", "-q", "-am", message)
    git(folder, "checkout", "-q", "main")
    return folder
