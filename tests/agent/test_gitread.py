"""agent/gitread.py against real repositories made with git: it must say what `git log -1
--format=%H%n%s` says (as the runner decoded it), or AskGit."""

import os
import subprocess
from pathlib import Path

import pytest

from agent.gitread import AskGit, HeadCommit, head_commit

ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@example.com", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
       "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}


def git(folder: Path, *args: str, input: bytes | None = None) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], env=ENV, check=True, input=input,
                          capture_output=True).stdout.decode(errors="replace")


def what_git_says(folder: Path) -> HeadCommit | None:
    """As agent/executor.py's `_git_log` turns git's output into the outcome."""
    proc = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(folder), "log", "-1",
                           "--format=%H%n%s"], env=ENV, capture_output=True)
    if proc.returncode != 0:
        return None
    commit_hash, _, message = proc.stdout.decode(errors="replace").partition("\n")
    return HeadCommit(commit_hash, message.strip())


def commit(folder: Path, message: bytes, name: str = "f") -> None:
    (folder / name).write_bytes(os.urandom(8))
    git(folder, "add", name)
    # verbatim: the message's blank lines and white space kept, as other tools may write it
    git(folder, "commit", "-q", "--cleanup=verbatim", "-F", "-", input=message)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    folder = tmp_path / "repo"
    folder.mkdir()
    git(folder, "init", "-q", "-b", "main")
    commit(folder, b"first\n")
    commit(folder, b"second: the subject\n\nand a body\n")
    return folder


def same(folder: Path) -> HeadCommit | None:
    found = head_commit(folder)
    assert found == what_git_says(folder)
    return found


def test_branch_loose_objects(repo):
    found = same(repo)
    assert found is not None and found.subject == "second: the subject"


def test_packed_refs_and_packed_objects(repo):
    git(repo, "gc", "-q", "--prune=now")  # refs to packed-refs, objects into one pack
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert list((repo / ".git" / "objects" / "pack").glob("*.pack"))
    assert same(repo) is not None


def test_detached_head(repo):
    first = git(repo, "rev-parse", "HEAD~1").strip()
    git(repo, "checkout", "-q", "--detach", first)
    assert same(repo).hash == first


def test_multi_line_subject_and_whitespace(repo):
    commit(repo, b"\n \t\n  line one  \nline two\t\r\n\nbody\n")
    assert same(repo).subject == "line one line two"


@pytest.mark.parametrize("message", [
    b"caf\xe9 latin-1 bytes, no encoding header\n",
    b"broken \xff\xfe utf-8\n",
    "déjà vu, UTF-8\n".encode(),
])
def test_non_utf8_bytes_as_git_prints_them(repo, message):
    commit(repo, message)
    assert same(repo) is not None


def test_encoding_header_is_decoded_as_git_reencodes(repo):
    git(repo, "config", "i18n.commitEncoding", "ISO-8859-1")
    commit(repo, "caf\xe9 en latin-1\n".encode("latin-1"))
    assert "encoding ISO-8859-1" in git(repo, "cat-file", "commit", "HEAD")
    # (git's output would follow the repository's config, which the reader never reads: a
    # clone, without it, gets the message in UTF-8; as the reader does.)
    git(repo, "config", "--unset", "i18n.commitEncoding")
    assert same(repo).subject == "caf\xe9 en latin-1"


def test_annotated_tag_checked_out_detached(repo):
    git(repo, "tag", "-a", "v1", "-m", "tag message")
    git(repo, "checkout", "-q", "--detach", "v1")
    git(repo, "gc", "-q")
    assert same(repo).subject == "second: the subject"


def test_worktree_has_its_own_head(repo, tmp_path):
    first = git(repo, "rev-parse", "HEAD~1").strip()
    git(repo, "worktree", "add", "-q", "--detach", str(tmp_path / "wt"), first)
    assert (tmp_path / "wt" / ".git").is_file()
    assert same(tmp_path / "wt").hash == first
    git(repo, "gc", "-q")
    assert same(tmp_path / "wt").hash == first


def test_subfolder_and_bare_and_clone(repo, tmp_path):
    (repo / "sub" / "deeper").mkdir(parents=True)
    assert same(repo / "sub" / "deeper") is not None
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], env=ENV, check=True)
    assert same(bare) is not None
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow)],
                   env=ENV, check=True)
    assert same(shallow).subject == "second: the subject"


def test_no_repository_and_unborn_branch_give_none(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert same(plain) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    assert same(empty) is None


def test_what_it_does_not_read_is_asked_of_git(repo):
    git(repo, "replace", "HEAD", "HEAD~1")  # git log now shows the first commit
    with pytest.raises(AskGit):
        head_commit(repo)


def test_a_commit_stored_as_a_delta_is_asked_of_git(repo, monkeypatch):
    import agent.gitread as gitread

    git(repo, "gc", "-q")
    monkeypatch.setattr(gitread, "PACK_COMMIT", -1)  # every packed entry looks foreign
    monkeypatch.setattr(gitread, "PACK_OFS_DELTA", 1)
    with pytest.raises(AskGit):
        head_commit(repo)


def test_a_gitdir_file_naming_nothing_is_asked_of_git(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / ".git").write_text("gitdir: /nowhere\n")
    with pytest.raises(AskGit):
        head_commit(folder)
