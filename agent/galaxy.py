"""Ansible Galaxy requirements of a repository, installed before the play (as Semaphore's
AnsibleApp.InstallRequirements) and skipped when unchanged since the last install here.

The files: `requirements.yml` (roles and collections), `roles/requirements.yml` and
`collections/requirements.yml`, beside the playbook and at the repository's root. They are
installed with `ansible-galaxy ... install -r FILE -p DIR --force`, as the task's user, into
the task's own `~/.ansible/roles` and `~/.ansible/collections` (HOME is the task's folder;
those are in ansible's default search paths), so nothing the task can write outlives it.

Skipping: after a successful install the runner copies what was installed into its own state
folder (`<tmp_path>/galaxy/<project and repository>/`, 0700, the runner's, never readable
or writable by a task user), with the hash of each requirements file. A later task of the same
project and repository whose files hash the same gets a copy of that content in its own folder
instead of running galaxy. The copy is made by the runner after galaxy and every process of
the task user have ended (symbolic links copied as links, never followed), so a task cannot
change another's content, and one project never sees another's roles.
"""

import asyncio
import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.isolation import TaskIdentity
from protocol.frames import TaskSpec

# (galaxy's kind, file) in Semaphore's order: collections before roles; the shared file
# may hold both, so it is given to both.
KINDS = ("collection", "role")
SUBDIRS = {"collection": "collections", "role": "roles"}

_locks: dict[str, asyncio.Lock] = {}

# Runs one galaxy command as the task's process: (exit code, "exit" | "stop" | "timeout").
RunProcess = Callable[[list[str]], Awaitable[tuple[int | None, str]]]
Say = Callable[[str], Awaitable[None]]


def requirement_files(checkout: Path, playbook: Path) -> list[tuple[str, Path]]:
    """The requirements files present, each with the kind of galaxy install it gets."""
    root = checkout.resolve()
    bases = [playbook.parent]
    if root != playbook.parent:
        bases.append(root)
    found: list[tuple[str, Path]] = []
    for kind in KINDS:
        for base in bases:
            for path in (base / SUBDIRS[kind] / "requirements.yml", base / "requirements.yml"):
                resolved = path.resolve()
                # Inside the checkout only (a link out of it is not the repository's file).
                if not (resolved.is_relative_to(root) and resolved.is_file()) or (
                        kind, resolved) in found:
                    continue
                if path.parent == base and kind not in _kinds_in(resolved):
                    continue
                found.append((kind, resolved))
    return found


def _kinds_in(path: Path) -> set[str]:
    """What a shared requirements.yml holds: a YAML list is roles (the older format, which
    `collection install` refuses); a mapping has `roles:` and/or `collections:` keys. Read
    by its top-level lines (no YAML parser on the runner); unreadable: both, and galaxy says
    what is wrong."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return set(KINDS)
    lines = [line for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith(("#", "---"))]
    if lines and lines[0].startswith("-"):
        return {"role"}
    kinds = {kind for kind in KINDS
             if re.search(rf"^{SUBDIRS[kind]}\s*:", text, re.MULTILINE)}
    return kinds or set(KINDS)


class GalaxyRequirements:
    """One task's requirements: the galaxy commands to run, or the cached content to use."""

    def __init__(self, state_dir: Path, project_id: int, repository: str, checkout: Path,
                 playbook: Path, home: Path, galaxy: str):
        self.files = requirement_files(checkout, playbook)
        self.checkout = checkout.resolve()
        self.home = home
        self.galaxy = galaxy
        key = hashlib.sha256(f"{project_id}\0{repository}".encode()).hexdigest()[:32]
        self.state_dir = state_dir
        self.cache = state_dir / key
        self.lock = _locks.setdefault(key, asyncio.Lock())
        self.hashes = {f"{kind}:{path.relative_to(self.checkout)}":
                       hashlib.sha256(path.read_bytes()).hexdigest()
                       for kind, path in self.files}

    @classmethod
    def of_task(cls, spec: TaskSpec, program: str, checkout: Path, playbook: Path,
                work_dir: Path) -> "GalaxyRequirements":
        """A task's requirements; ansible-galaxy is the one beside ansible-playbook."""
        beside = Path(program).with_name("ansible-galaxy")
        galaxy = (str(beside) if beside.is_file()
                  else shutil.which("ansible-galaxy") or "ansible-galaxy")
        repository = spec.repository.url if spec.repository else ""
        # The runner's state folder: <tmp_path>/tasks/<task folder> -> <tmp_path>/galaxy.
        return cls(work_dir.parent.parent / "galaxy", spec.project_id, repository, checkout,
                   playbook, work_dir, galaxy)

    async def install(self, run: RunProcess, say: Say,
                      identity: TaskIdentity) -> tuple[int | None, str, str] | None:
        """Install (or take from the cache); None when done, else (exit code, how galaxy
        ended, message)."""
        if not self.files:
            return None
        owner = (identity.uid, identity.gid) if identity.separate else (None, None)
        async with self.lock:
            if self.unchanged():
                await say("Galaxy requirements unchanged since their last install on this "
                          "runner: galaxy skipped\n")
                await asyncio.to_thread(self.use_cached, *owner)
                return None
            for argv, (kind, path) in zip(self.commands(), self.files, strict=True):
                await say(f"Installing {kind} requirements from "
                          f"{path.relative_to(self.checkout)}\n")
                code, ended_by = await run(argv)
                if ended_by == "stop":
                    return code, ended_by, "stopped"
                if code != 0 or ended_by != "exit":
                    self.forget()
                    message = f"ansible-galaxy {kind} install failed" + (
                        f" with exit code {code}" if ended_by == "exit" else " (timed out)")
                    await say(message + "\n")
                    return code, ended_by, message
            await asyncio.to_thread(self.remember)
        return None

    def target(self, kind: str) -> Path:
        return self.home / ".ansible" / SUBDIRS[kind]

    def commands(self) -> list[list[str]]:
        return [[self.galaxy, kind, "install", "-r", str(path), "-p", str(self.target(kind)),
                 "--force"] for kind, path in self.files]

    def unchanged(self) -> bool:
        """Installed here before from files hashing the same."""
        try:
            stored = json.loads((self.cache / "hashes.json").read_text())
        except (OSError, ValueError):
            return False
        return stored == self.hashes and (self.cache / "content").is_dir()

    def use_cached(self, uid: int | None, gid: int | None) -> None:
        """A copy of the cached content in the task's own folder, the task user's."""
        content = self.cache / "content"
        for kind in KINDS:
            source = content / SUBDIRS[kind]
            if source.is_dir():
                _copy(source, self.target(kind), uid, gid)

    def remember(self) -> None:
        """After a successful install: its content and hashes become the cache (replaced
        whole, never changed in place)."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        fresh = self.cache.with_name(self.cache.name + ".new")
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir(mode=0o700)
        for kind in KINDS:
            source = self.target(kind)
            if source.is_dir() and not source.is_symlink():
                _copy(source, fresh / "content" / SUBDIRS[kind], None, None)
        (fresh / "content").mkdir(mode=0o700, exist_ok=True)
        (fresh / "hashes.json").write_text(json.dumps(self.hashes))
        old = self.cache.with_name(self.cache.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self.cache.exists():
            self.cache.rename(old)
        fresh.rename(self.cache)
        shutil.rmtree(old, ignore_errors=True)

    def forget(self) -> None:
        """A failed install: what was cached is no longer what the files say."""
        shutil.rmtree(self.cache, ignore_errors=True)


def _copy(source: Path, target: Path, uid: int | None, gid: int | None) -> None:
    """Copy a tree, links as links; owned by uid/gid when given (else the runner's)."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True,
                    copy_function=_copy_regular)
    if uid is None or gid is None:
        return
    os.chown(target.parent, uid, gid)
    for folder, dirs, files in os.walk(target):
        os.chown(folder, uid, gid)
        for name in (*dirs, *files):
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


def _copy_regular(source: str, target: str) -> None:
    """Regular files only: a FIFO or device among a task's files would block or leak."""
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return
        with open(target, "wb") as out, os.fdopen(os.dup(fd), "rb") as data:
            shutil.copyfileobj(data, out)
        os.chmod(target, stat.S_IMODE(info.st_mode) & 0o755)
    finally:
        os.close(fd)
