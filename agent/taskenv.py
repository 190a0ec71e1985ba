"""What a task's process is given: its environment, and the script it may run.

The environment is built, never inherited: a small set of the runner's own variables that a
program needs to work (PATH, locale, proxies), then the environment object's variables and
env secrets (chosen by a project manager or owner), then SEMAPHORE_TASK_ID. Nothing a task's
creator writes becomes process environment: the task's `environment` field is extra vars
(data in argv), so BASH_ENV, BASH_FUNC_*, LD_PRELOAD and the like cannot be slipped in by a
task_runner. The runner's own variables (its config path, the frozen binary's library path)
stay with the runner.
"""

import os
import re
from pathlib import Path

from agent.isolation import TaskIdentity
from protocol.frames import TaskSecrets, TaskSpec

# Taken from the runner's environment when present: what programs need to find themselves,
# speak the right language and reach the network the way this host does.
INHERITED = ("PATH", "LANG", "LANGUAGE", "TZ", "http_proxy", "https_proxy", "no_proxy",
             "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# POSIX names; others (with `%`, `=`, spaces) are how shells smuggle functions in.
VALID_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class PlaybookError(Exception):
    """The playbook is not a file inside the task's checkout."""


def task_environment(spec: TaskSpec | None, secrets: TaskSecrets, identity: TaskIdentity,
                     work_dir: Path, task_id: int) -> tuple[dict[str, str], list[str]]:
    """The process environment of a task's program (or, with no spec, of its git commands),
    and the names refused from the environment object."""
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    env.update({name: value for name, value in os.environ.items() if name.startswith("LC_")})
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(HOME=str(work_dir), PWD=str(work_dir), USER=identity.name,
               LOGNAME=identity.name, TMPDIR=str(work_dir / "tmp"))
    refused: list[str] = []
    if spec is not None and spec.app == "ansible":
        # As Semaphore's AnsiblePlaybook.makeCmd, before the environment object's (which may
        # change them). Host keys are not checked: HOME is new for every task, so no host
        # would ever be known. Beyond Semaphore: an inventory ansible cannot parse ends the
        # task `error` (by default ansible only warns, and plays on the implicit localhost).
        # Ansible refuses to start without a UTF-8 locale.
        env.update(PYTHONUNBUFFERED="1", ANSIBLE_FORCE_COLOR="True",
                   ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_INVENTORY_UNPARSED_FAILED="True")
        if "LANG" not in env and "LC_ALL" not in env:
            env["LANG"] = "C.UTF-8"
    if spec is not None and spec.app in ("terraform", "tofu"):
        # No update check over the network, no prompt ever (stdin is /dev/null), output
        # worded for automation; the working data (.terraform: providers, the chosen
        # workspace) in the task's own folder, so nothing of a run stays in the repository.
        env.update(CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1", TF_INPUT="0",
                   TF_DATA_DIR=str(work_dir / "terraform-data"))
    if spec is not None:
        chosen = {**spec.environment, **secrets.env}
        for name, value in chosen.items():
            if VALID_NAME.match(name) and "\0" not in value:
                env[name] = value
            else:
                refused.append(name)
    env["SEMAPHORE_TASK_ID"] = str(task_id)
    return env, refused


def resolve_playbook(checkout: Path, playbook: str, what: str = "playbook") -> Path:
    """The playbook as an absolute path inside the checkout. Absolute paths, `..` out of the
    checkout and symbolic links that lead out of it are refused: a task may run only code
    that is in its repository."""
    if not playbook or "\0" in playbook:
        raise PlaybookError(f"the {what} must name a file in the repository")
    relative = Path(playbook)
    if relative.is_absolute():
        raise PlaybookError(f"{what} {playbook!r} must be a path inside the repository, "
                            "not an absolute path")
    root = checkout.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise PlaybookError(f"{what} {playbook!r} leads out of the repository "
                            "(through `..` or a symbolic link); refused")
    if not target.exists():
        raise PlaybookError(f"{what} {playbook!r} is not a file in the repository")
    if what == "playbook" and not target.is_file():
        raise PlaybookError(f"{what} {playbook!r} is not a file in the repository")
    return target


def resolve_folder(checkout: Path, folder: str, what: str = "folder") -> Path:
    """A folder inside the checkout (empty: the checkout itself), as `resolve_playbook`
    checks a file: no absolute path, nothing that leads out of the checkout."""
    if not folder:
        return checkout.resolve()
    target = resolve_playbook(checkout, folder, what)
    if not target.is_dir():
        raise PlaybookError(f"{what} {folder!r} is not a folder in the repository")
    return target


def write_private_file(path: Path, text: str, identity: TaskIdentity) -> Path:
    """A new file only the task's user can read (0600), in the task's own folder: removed
    with it when the task ends, however it ends."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    if identity.separate:  # the task's program runs as the task's user and must read it
        os.chown(path, identity.uid, identity.gid)
    return path
