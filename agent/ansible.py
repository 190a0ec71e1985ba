"""What an ansible-playbook run needs besides the checkout, and its command line.

As Semaphore's LocalJob (getPlaybookArgs, installInventory, installVaultKeyFiles): the
inventory (static text written to a private file, or a file of the repository), the extra vars
(with `var` secrets: in a private file), the inventory's keys (an ssh key through the task's
ssh-agent and `--user`; a login_password key as `--user` and `--ask-pass`; a become key as
`--become-user` and `--ask-become-pass`, the passwords typed at ansible's prompts on a pty),
and the template's vaults (`--vault-id name@file`, each password in a private file; a script
of the repository as `--vault-id name@script`). Every file is the task user's, 0600, in the
task's own folder: removed with it when the task ends, however it ends.
"""

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.isolation import IsolationError, TaskIdentity, prepare_private_folder
from agent.taskenv import PlaybookError, resolve_playbook, write_private_file
from protocol.frames import InventorySpec, TaskSecrets, TaskSpec

# ansible's prompts (CLI.ask_passwords) and the key whose password answers each. The become
# prompt is `BECOME password` (AGNOSTIC_BECOME_PROMPT, the default) or the method's name.
SSH_PROMPT = "SSH password:"
BECOME_PROMPTS = ("BECOME password", "SUDO password")
# ssh's ControlPath is a unix socket (at most 107 bytes) named <dir>/<10-character hash>, and
# ssh adds a 17-character suffix while it creates it: a longer folder cannot hold it.
MAX_CONTROL_DIR = 75


@dataclass
class AnsiblePlay:
    """The play's argv, the passwords to type at its prompts, and environment to add."""

    argv: list[str]
    answers: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def prepare_play(program: str, spec: TaskSpec, secrets: TaskSecrets, task_id: int,
                 playbook: Path, checkout: Path, work_dir: Path,
                 identity: TaskIdentity) -> AnsiblePlay:
    """Write the play's private files and build its command line; PlaybookError when the
    inventory or a vault script is not usable."""
    inventory = install_inventory(spec.inventory, checkout, work_dir, identity)
    vars_file = None
    if secrets.vars:
        # Secret values never on a command line, which any local user can read.
        vars_file = write_private_file(
            work_dir / "extra_vars.json",
            json.dumps(ansible_extra_vars(spec, task_id, secrets.vars)), identity)
    access, answers = access_flags(secrets)
    vaults = install_vaults(spec, secrets, checkout, work_dir, identity)
    argv = ansible_command(program, spec, playbook, task_id, inventory, vars_file, access,
                           vaults)
    return AnsiblePlay(argv, answers)


def _short_root(tasks_root: Path) -> Path:
    """This runner's folder of short ControlPath folders: one name per tasks folder, so a
    restarted runner finds (and empties) its own, never another runner's."""
    digest = hashlib.sha256(str(tasks_root.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"semaphore-cp-{digest}"


def control_path_dir(work_dir: Path, identity: TaskIdentity) -> Path | None:
    """ansible's ssh ControlPath folder is ~/.ansible/cp, in the task's folder. When that path
    is too long for a socket: a short folder of the task's (0700, the task user's) under the
    runner's own folder in the system's temporary folder, for ANSIBLE_SSH_CONTROL_PATH_DIR
    and the task's ssh-agent socket; None when not needed. The caller removes it when the
    task ends; a restarted runner removes what a killed one left (clear_control_dirs)."""
    if len(str(work_dir / ".ansible" / "cp")) <= MAX_CONTROL_DIR:
        return None
    root: Path | None = _short_root(work_dir.parent)
    try:
        prepare_private_folder(_short_root(work_dir.parent),
                               0o711 if identity.separate else 0o700)
    except (IsolationError, OSError):
        root = None  # someone else's (planted) folder: a random one of the system's instead
    try:
        folder = Path(tempfile.mkdtemp(prefix="task_", dir=root))
    except FileNotFoundError:  # another task's end removed the empty root just now
        folder = Path(tempfile.mkdtemp(prefix="semaphore-cp-"))
    if identity.separate:
        os.chown(folder, identity.uid, identity.gid)
    return folder


def remove_control_dir(folder: Path) -> None:
    """At the task's end: its ControlPath folder, and the runner's root of them once empty
    (nothing is left in the system's temporary folder by an idle runner)."""
    shutil.rmtree(folder, ignore_errors=True)
    if folder.parent.name.startswith("semaphore-cp-"):
        with contextlib.suppress(OSError):  # another task's folder is still in it
            folder.parent.rmdir()


def clear_control_dirs(tasks_root: Path) -> None:
    """At the runner's start: the ControlPath folders of tasks an earlier process ran."""
    root = _short_root(tasks_root)
    try:
        info = root.lstat()
    except OSError:
        return
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        return
    for folder in root.iterdir():
        shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        root.rmdir()


def access_flags(secrets: TaskSecrets) -> tuple[list[str], dict[str, str]]:
    """As Semaphore: `--user` from the inventory's key, `--ask-pass` for its password and
    `--become-user` / `--ask-become-pass` for the become key; the passwords as answers to
    the prompts those flags make ansible show."""
    flags: list[str] = []
    answers: dict[str, str] = {}
    if secrets.inventory_ssh_key is not None and secrets.inventory_ssh_key.login:
        flags.append(f"--user={secrets.inventory_ssh_key.login}")
    login = secrets.inventory_login
    if login is not None:
        if login.login:
            flags.append(f"--user={login.login}")
        if login.password:
            flags.append("--ask-pass")
            answers[SSH_PROMPT] = login.password
    become = secrets.become
    if become is not None:
        if become.login:
            flags.append(f"--become-user={become.login}")
        if become.password:
            flags.append("--ask-become-pass")
            for prompt in BECOME_PROMPTS:
                answers[prompt] = become.password
    return flags, answers


def install_vaults(spec: TaskSpec, secrets: TaskSecrets, checkout: Path, work_dir: Path,
                   identity: TaskIdentity) -> list[str]:
    """`--vault-id` per vault: a password in its own private file (not executable, so ansible
    reads it rather than runs it), or a script inside the checkout (resolved as the
    playbook is: no absolute path, nothing out of the repository)."""
    flags = []
    for index, (name, password) in enumerate(sorted(secrets.vault_passwords.items())):
        path = write_private_file(work_dir / f"vault_{index}", password + "\n", identity)
        flags.append(f"--vault-id={name}@{path}")
    for name, script in sorted(spec.vault_scripts.items()):
        path = resolve_playbook(checkout, script, f"vault {name!r} script")
        flags.append(f"--vault-id={name}@{path}")
    return flags


def install_inventory(inventory: InventorySpec | None, checkout: Path, work_dir: Path,
                      identity: TaskIdentity) -> Path | None:
    """The file `-i` names: a `file` inventory inside the checkout (a file or a folder, as
    ansible allows), or the static text written to a private file (0600, the task user's)
    in the task's own folder, removed with it when the task ends."""
    if inventory is None:
        return None
    if inventory.type == "file":
        return resolve_playbook(checkout, inventory.path, "inventory")
    if inventory.type not in ("static", "static-yaml"):
        raise PlaybookError(f"inventory type {inventory.type!r} is not supported by this "
                            "runner (static, static-yaml or file)")
    # ansible's yaml plugin reads only .yml/.yaml/.json names; the ini plugin reads any.
    path = work_dir / ("inventory.yml" if inventory.type == "static-yaml" else "inventory")
    return write_private_file(path, inventory.content, identity)


def ansible_extra_vars(spec: TaskSpec, task_id: int,
                       secret_vars: dict[str, str] | None = None) -> dict[str, Any]:
    """Semaphore's --extra-vars: the environment's (and the task's) extra vars, the
    environment's `var` secrets over them, and `semaphore_vars.task_details` set by the
    runner (a task cannot forge it)."""
    details: dict[str, Any] = {"id": task_id}
    if spec.message:
        details["message"] = spec.message
    details["username"] = spec.username
    details["url"] = (f"{spec.web_host}/project/{spec.project_id}/history?t={task_id}"
                      if spec.web_host else "")
    return {**spec.extra_vars, **(secret_vars or {}),
            "semaphore_vars": {"task_details": details}}


def ansible_command(program: str, spec: TaskSpec, playbook: Path, task_id: int,
                    inventory: Path | None, extra_vars_file: Path | None,
                    access: list[str] | None = None,
                    vaults: list[str] | None = None) -> list[str]:
    """As Semaphore's getPlaybookArgs: -i, the keys' flags, the task's flags, the vaults, one
    --extra-vars JSON, the template's arguments, the task's arguments and --limit, then the
    playbook last."""
    argv = [program]
    if inventory is not None:
        argv += ["-i", str(inventory)]
    argv += access or []
    if spec.debug:
        argv.append("-vvvv")
    if spec.diff:
        argv.append("--diff")
    if spec.dry_run:
        argv.append("--check")
    argv += vaults or []
    argv += ["--extra-vars", f"@{extra_vars_file}" if extra_vars_file is not None
             else json.dumps(ansible_extra_vars(spec, task_id))]
    argv += [*spec.arguments, *spec.task_arguments]
    if spec.limit:
        argv.append(f"--limit={spec.limit}")
    if spec.tags:
        argv.append(f"--tags={spec.tags}")
    if spec.skip_tags:
        argv.append(f"--skip-tags={spec.skip_tags}")
    argv.append(str(playbook))
    return argv
