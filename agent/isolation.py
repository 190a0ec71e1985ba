"""Who a task runs as, and what keeps a task away from the runner's own secrets.

A task is code the runner did not write. The runner's token, private key and spool must stay
out of its reach, or one task could connect as the runner and open other projects' secrets.
The defence is a separate unprivileged user for tasks (`runner.task_user`): the runner, as
root, starts each task's processes as that user, keeps its own files 0600 and folders 0700,
and makes itself undumpable so that no process of another user can read its memory. A runner
that cannot switch users runs tasks as itself: that is "shared identity", logged at start and
shown by the hub, and only fit for a runner whose tasks are all trusted alike.
"""

import ctypes
import ctypes.util
import itertools
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

import psutil
import structlog

from agent.errors import RunnerError

log = structlog.get_logger("agent.isolation")

PR_SET_DUMPABLE = 4
# Users that other services run as: never task users, whose processes the runner kills.
SHARED_SYSTEM_USERS = frozenset({"nobody", "daemon", "bin", "sys", "www-data", "nfsnobody"})


class IsolationError(RunnerError):
    """The runner's identity or folders are unsafe; the message says what to change."""


@dataclass(frozen=True)
class TaskIdentity:
    """The user a task's processes run as."""

    uid: int
    gid: int
    name: str
    home: str

    @property
    def separate(self) -> bool:
        """True when tasks run as another user than the runner (they cannot read its files)."""
        return self.uid != os.geteuid()

    @classmethod
    def of_runner(cls) -> "TaskIdentity":
        uid = os.geteuid()
        try:
            entry = pwd.getpwuid(uid)
            return cls(uid, os.getegid(), entry.pw_name, entry.pw_dir)
        except KeyError:  # a uid without a passwd entry (containers)
            return cls(uid, os.getegid(), str(uid), "/")


def resolve_task_identities(task_users: list[str], allow_root_tasks: bool,
                            max_parallel_tasks: int) -> list[TaskIdentity]:
    """The users tasks run as (one per running task), or IsolationError saying how to make
    it safe. Without task users: the runner's own user, for every task."""
    running_as_root = os.geteuid() == 0
    if not task_users:
        if running_as_root and not allow_root_tasks:
            raise IsolationError(
                "this runner runs as root and has no runner.task_user, so its tasks would run "
                "as root, able to read its token and key; create an unprivileged user for "
                "tasks alone (e.g. `useradd --system --create-home semaphore-task`) and set "
                "\"task_user\": \"semaphore-task\" in the runner section of the config, or set "
                "\"allow_root_tasks\": true to accept that tasks can do anything on this host")
        return [TaskIdentity.of_runner()]
    identities = [_task_identity(name, allow_root_tasks) for name in task_users]
    if len({i.uid for i in identities}) < len(identities):
        raise IsolationError("runner.task_user names one user twice")
    if not running_as_root:
        raise IsolationError(
            f"runner.task_user {task_users[0]!r} needs the runner to run as root (it switches "
            "to that user for each task); start the runner as root, or remove task_user to "
            "run tasks as the runner's own user")
    if not 1 <= max_parallel_tasks <= len(identities):
        raise IsolationError(
            f"runner.max_parallel_tasks is {max_parallel_tasks} but runner.task_user names "
            f"{len(identities)} user(s): each running task needs a user of its own, so that "
            "no task can reach another's processes; list more users in task_user (e.g. "
            "[\"semaphore-task1\", \"semaphore-task2\"]) or lower max_parallel_tasks")
    return identities


def _task_identity(task_user: str, allow_root_tasks: bool) -> TaskIdentity:
    try:
        entry = (pwd.getpwuid(int(task_user)) if task_user.isdigit()
                 else pwd.getpwnam(task_user))
    except KeyError:
        raise IsolationError(f"runner.task_user {task_user!r}: no such user on this "
                             "host") from None
    identity = TaskIdentity(entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir)
    if identity.name in SHARED_SYSTEM_USERS:
        raise IsolationError(
            f"runner.task_user {task_user!r} is shared with other services; the runner kills "
            "every process of a task user when a task ends, so task users must be its alone "
            "(e.g. `useradd --system --create-home semaphore-task`)")
    if identity.uid == 0 and not allow_root_tasks:
        raise IsolationError(f"runner.task_user {task_user!r} is root; name an unprivileged "
                             "user, or set \"allow_root_tasks\": true")
    if not identity.separate:
        raise IsolationError(f"runner.task_user {task_user!r} is the runner's own user; name "
                             "another user, or remove task_user")
    return identity


def kill_user_processes(uid: int) -> list[int]:
    """SIGKILL every process of `uid` (its real uid): what a task left running when it ended
    (a daemon, a `setsid` escapee) could otherwise watch the next task's environment and
    files. Task users are the runner's alone, so nothing else of theirs may run. Repeated
    until none is left, so that a process forking as fast as it can does not outrun it."""
    killed: list[int] = []
    for _ in range(50):
        found = False
        for proc in psutil.process_iter(["uids", "status"]):
            uids = proc.info["uids"]
            if uids is None or uids.real != uid or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            found = True
            try:
                proc.kill()
                killed.append(proc.pid)
            except psutil.Error:
                pass
        if not found:
            break
    return killed


def forbid_inspection() -> None:
    """Make this process undumpable: its /proc files (environ, mem, fd, maps) become root's
    and no other process of any user can ptrace it. Children are not affected (execve resets
    the flag), so tasks stay debuggable."""
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
    except (OSError, AttributeError) as exc:
        log.warning("runner.dumpable", error=str(exc),
                    consequence="processes of the runner's user can read its memory")


def prepare_private_folder(path: Path, mode: int = 0o700) -> None:
    """Create `path` (mode `mode`), or check an existing one: a real folder of ours that no
    one else can write. A folder another user created first (say in /tmp) could hold planted
    files: refused, never taken over."""
    check_ancestors(path)
    try:
        path.mkdir(mode=mode, parents=True)
    except FileExistsError:
        pass
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise IsolationError(f"{path} must be a folder, not a symbolic link or a file")
    if info.st_uid != os.geteuid():
        raise IsolationError(
            f"{path} belongs to uid {info.st_uid}, not to the runner's user (uid "
            f"{os.geteuid()}); another user may have planted files there. Remove it or "
            "choose another tmp_path")
    if info.st_mode & 0o022:
        raise IsolationError(f"{path} can be written by other users (mode "
                             f"{stat.S_IMODE(info.st_mode):o}); make it 0700 or choose another "
                             "tmp_path")
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)


def check_ancestors(path: Path) -> None:
    """Every folder above the state folder must be beyond other users' reach (as OpenSSH's
    StrictModes asks): owned by root or the runner's user, and not writable by others, or
    sticky (like /tmp) with the next folder down ours. Else another user could rename the
    state folder away and put one of their own, full of symbolic links, in its place, and
    the runner, as root, would write through them."""
    trusted = {0, os.geteuid()}
    real = Path(os.path.realpath(path))
    chain = [*reversed(real.parents), real]
    for parent, child in itertools.pairwise(chain):
        if not parent.exists():
            return  # made by the runner from here down (mkdir, under its umask)
        info = parent.stat()
        if info.st_uid not in trusted:
            raise IsolationError(f"{parent} (above {path}) belongs to uid {info.st_uid}: that "
                                 "user could swap the runner's folder; choose a tmp_path whose "
                                 "every parent folder belongs to root or the runner's user")
        if info.st_mode & 0o022:
            sticky = info.st_mode & stat.S_ISVTX
            if not sticky or (child.exists() and child.lstat().st_uid not in trusted):
                raise IsolationError(
                    f"{parent} (above {path}) can be written by other users (mode "
                    f"{stat.S_IMODE(info.st_mode):o}): they could swap the runner's folder; "
                    "choose a tmp_path whose parent folders only root or the runner's user "
                    "can write")


def check_private_file(path: Path) -> None:
    """The runner's config, token or key: ours, and readable by us only (tightened if not)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if info.st_uid != os.geteuid():
        raise IsolationError(f"{path} belongs to uid {info.st_uid}, not to the runner's user "
                             f"(uid {os.geteuid()}); `chown` it to the runner's user")
    if info.st_mode & 0o077:
        os.chmod(path, 0o600)
        log.warning("runner.file.tightened", path=str(path),
                    was=f"{stat.S_IMODE(info.st_mode):o}", now="600")


def default_state_folder() -> str:
    """Where a runner keeps its spool and task folders when the config names none: never a
    shared folder like /tmp, where another user could create it first."""
    if os.geteuid() == 0:
        return "/var/lib/semaphore-runner"
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state_home) / "semaphore-runner")
