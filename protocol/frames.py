"""Every frame of the runner protocol, as frozen msgspec Structs tagged by `type`.

One tagged union per direction (`RunnerFrame`, `HubFrame`); the codec decodes against those, so
a frame of the wrong direction is refused like an unknown one. Fields added later must carry
defaults so that an older peer keeps decoding what it knows.
"""

from typing import Any, Literal

import msgspec

from protocol.numbers import (
    ExitCode,
    Id,
    Interval,
    Load,
    OutputSeq,
    Percent,
    Seq,
    Size,
    UnixTime,
    Version,
)

TaskStatus = Literal["success", "error", "stopped"]
Stream = Literal["stdout", "stderr"]


class _Frame(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=False):
    """Base of all frames: JSON object with a `type` tag; unknown fields are ignored."""


# Shapes carried inside frames.


class HeldTask(msgspec.Struct, frozen=True):
    """A task the runner still holds when it (re)connects."""

    task_id: Id
    state: Literal["running", "finished"]
    last_seq: Seq  # last output seq the runner produced for it (0: none yet)
    # Its plan waits for a decision (confirm or reject) from the hub: after a reconnect the
    # hub sends again a decision that may not have reached it. An older runner: never.
    awaiting: bool = False


class Metrics(msgspec.Struct, frozen=True):
    """Resource figures the runner reports in every heartbeat."""

    cpu_percent: Percent = 0.0
    memory_used: Size = 0
    memory_total: Size = 0
    disk_free: Size = 0
    load1: Load = 0.0


class SshKeySecret(msgspec.Struct, frozen=True):
    """An ssh access key, as the runner needs it."""

    private_key: str = ""
    login: str = ""
    passphrase: str = ""


class LoginPasswordSecret(msgspec.Struct, frozen=True):
    """A login/password access key: the repository's (for an https fetch), or an ansible
    inventory's ssh password login or become user."""

    login: str = ""
    password: str = ""


class TaskSecrets(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """What travels sealed in `TaskSpec.sealed_secrets` (JSON, a NaCl SealedBox to the
    runner's key): never in the clear, never stored by the runner."""

    env: dict[str, str] = {}  # environment secrets, as process environment variables
    ssh_key: SshKeySecret | None = None  # the repository's key, for the clone
    # Environment secrets of type `var` for an ansible, terraform or tofu task: merged into
    # its variables, which then reach the program in a private file, never on its command
    # line.
    vars: dict[str, str] = {}
    # The repository's login/password key (https), given to git by a credential helper.
    login_password: LoginPasswordSecret | None = None
    # Ansible, from the template's inventory: its `ssh` key (loaded into a private ssh-agent
    # for the run) or its `login_password` key (answered at `--ask-pass`), and its become
    # key (answered at `--ask-become-pass`).
    inventory_ssh_key: SshKeySecret | None = None
    inventory_login: LoginPasswordSecret | None = None
    become: LoginPasswordSecret | None = None
    # Ansible: the template's `password` vaults, vault id -> password.
    vault_passwords: dict[str, str] = {}

    def values(self) -> list[str]:
        """Every secret value a task's output must never show."""
        found = [*self.env.values(), *self.vars.values(), *self.vault_passwords.values()]
        for key in (self.ssh_key, self.inventory_ssh_key):
            if key is not None:
                found += [key.private_key, key.passphrase]
        for login in (self.login_password, self.inventory_login, self.become):
            if login is not None:
                found.append(login.password)
        return [value for value in found if value]


class RepositorySpec(msgspec.Struct, frozen=True):
    """Where the task's code comes from: a git URL (cloned) or an absolute path (used as is)."""

    url: str
    branch: str = ""


class InventorySpec(msgspec.Struct, frozen=True):
    """A template's Ansible inventory: `static` (INI) or `static-yaml` text the runner writes
    to a private file for the run, or `file`: a path inside the repository's checkout. For
    terraform and tofu, `terraform-workspace`: the workspace's name."""

    type: str = "static"
    content: str = ""  # static, static-yaml, terraform-workspace
    path: str = ""  # file


class TaskSpec(msgspec.Struct, frozen=True):
    """Everything a runner needs to run a task, resolved by the hub at dispatch time."""

    project_id: Id
    template_id: Id
    app: str
    playbook: str = ""  # a path inside the checkout; the runner refuses one that leaves it
    arguments: list[str] = []  # the template's
    task_arguments: list[str] = []  # the task's own (when the template allows them)
    # Process environment: only from the environment object (chosen by a manager or owner).
    environment: dict[str, str] = {}
    # Extra variables (the environment's `json` with the task's `environment` over it): data
    # for the play or script, never process environment.
    extra_vars: dict[str, Any] = {}
    # Secrets (environment secrets, the repository's key) as a NaCl SealedBox to the
    # runner's public key, base64: only the runner that runs the task can open them.
    sealed_secrets: str = ""
    repository: RepositorySpec | None = None
    commit_hash: str = ""
    timeout_sec: Size = 0  # 0: no limit
    message: str = ""
    # Ansible: the inventory, the task's flags (-vvvv, --diff, --check, --limit) and what
    # Semaphore's semaphore_vars.task_details names (who started the task; the hub's web
    # address, to which the runner adds the task's page).
    inventory: InventorySpec | None = None
    debug: bool = False
    diff: bool = False
    dry_run: bool = False
    limit: str = ""
    tags: str = ""  # --tags, comma-separated (the template's task_params or the task's)
    skip_tags: str = ""  # --skip-tags, likewise
    username: str = ""
    web_host: str = ""
    # Ansible: the template's `script` vaults, vault id -> a script inside the checkout that
    # prints the password (its `password` vaults travel sealed, in TaskSecrets).
    vault_scripts: dict[str, str] = {}


class TaskAck(msgspec.Struct, frozen=True):
    task_id: Id
    seq: Seq


# Runner -> hub.


class Hello(_Frame, tag="hello", frozen=True):
    protocol_version: Version
    runner_version: str
    name: str = ""
    tags: list[str] = []
    max_parallel_tasks: Size = 0
    platform: str = ""
    held_tasks: list[HeldTask] = []
    # Its tasks run as the runner's own user (no separate task user): they can read its
    # token, key and spool. The hub records it and warns; it grants nothing. An older runner
    # that does not say has no task user: it defaults to true.
    shared_identity: bool = True
    # The apps it can run (app -> the program's version line), found when it started. None:
    # an older runner that does not say (it runs bash, python and powershell if it can).
    apps: dict[str, str] | None = None
    # Why its last self-update did not take (its watchdog put the previous binary back), or
    # "": the hub marks that update failed with this reason.
    update_error: str = ""


class Heartbeat(_Frame, tag="heartbeat", frozen=True):
    time: UnixTime
    running: list[Id] = []
    metrics: Metrics = Metrics()
    draining: bool = False


class Accepted(_Frame, tag="accepted", frozen=True):
    task_id: Id


class Rejected(_Frame, tag="rejected", frozen=True):
    task_id: Id
    reason: str


class Output(_Frame, tag="output", frozen=True):
    task_id: Id
    seq: OutputSeq
    stream: Stream
    data: str
    time: UnixTime


class Finished(_Frame, tag="finished", frozen=True):
    task_id: Id
    status: TaskStatus
    last_seq: Seq
    exit_code: ExitCode | None = None
    message: str = ""
    commit_hash: str = ""
    commit_message: str = ""


class Confirmation(_Frame, tag="confirmation", frozen=True):
    """A task that asks before it changes anything (terraform, tofu): `waiting`, its plan has
    changes and it waits for a decision; `applying`, the confirmation reached it and it
    applies that plan."""

    task_id: Id
    state: Literal["waiting", "applying"] = "waiting"


class UpdateProgress(_Frame, tag="update_progress", frozen=True):
    """Where the runner is with an `Update`: `draining` (checked, waiting for its tasks to
    end), `restarting` (swapped, re-executing: it must reconnect as `version` within the
    update's deadline), or `failed` (`reason` says why; it keeps running its current build)."""

    version: str
    state: Literal["draining", "restarting", "failed"]
    reason: str = ""


# Hub -> runner.


class Welcome(_Frame, tag="welcome", frozen=True):
    protocol_version: Version
    session_id: str
    runner_id: Id
    heartbeat_interval: Interval
    max_frame_bytes: Size
    max_output_bytes: Size
    acked: list[TaskAck] = []
    # The tags the hub holds for this runner, the only ones it is dispatched by (the hello's
    # are not taken), and, when the hello asked for others, a notice saying so.
    tags: list[str] = []
    notice: str = ""


class Assign(_Frame, tag="assign", frozen=True):
    task_id: int
    spec: TaskSpec


class Ack(_Frame, tag="ack", frozen=True):
    """Output up to `seq` is durably stored; `finished`: the finished frame is stored too."""

    task_id: Id
    seq: Seq
    finished: bool = False


class Cancel(_Frame, tag="cancel", frozen=True):
    task_id: int
    reason: str = ""


class Decision(_Frame, tag="decision", frozen=True):
    """A user's answer to a task's `Confirmation`: apply the plan, or end the task `stopped`
    (`message` says who decided; it becomes the task's message)."""

    task_id: Id
    approved: bool
    message: str = ""


class Update(_Frame, tag="update", frozen=True):
    """Replace this runner's binary with the hub's build `version`: download `path` (on the
    hub, with the runner's token), check `size`, `sha256` and `signature` (Ed25519 by the
    hub's release key, base64, over `release_message(...)`), drain, swap, re-execute; if the
    new build has not reconnected within `deadline_sec`, the watchdog restores the old one."""

    version: str
    path: str
    sha256: str
    signature: str
    size: Size
    arch: str = "amd64"
    deadline_sec: Interval = 120.0


def release_message(version: str, arch: str, sha256: str) -> bytes:
    """What the hub's release key signs for a runner build: its digest bound to its version
    and architecture, so a signed build cannot be served as another version or arch."""
    return f"semaphore-runner-binary linux-{arch} {version} sha256:{sha256}\n".encode()


# Either direction.


class Error(_Frame, tag="error", frozen=True):
    code: str
    message: str


RunnerFrame = (Hello | Heartbeat | Accepted | Rejected | Output | Finished | Confirmation
               | UpdateProgress | Error)
HubFrame = Welcome | Assign | Ack | Cancel | Decision | Update | Error
