"""A single-file runner updating itself from its hub (the hub's `Update` frame).

Order, and what a failure (or kill -9) at each step leaves:

1. download `<exe dir>/.semaphore-update-*` with the runner's token, checking size, sha256,
   the Ed25519 signature by the hub's release key (stored at registration), the ELF machine
   and what `NEW --version` says. Any failure: the temporary file is removed (a kill -9
   leaves it; the next start removes it) and the current build goes on.
2. drain: no new task; the running ones end and are delivered (never killed for an update).
3. `<exe>.previous` made (a hard link to the running file), the marker written
   (`update-pending.json` in the state folder), the watchdog started (the *previous* build,
   `runner update-watchdog`, in a session of its own), then the new file renamed over
   `<exe>`: one rename on one file system, so `<exe>` is always a whole, working build.
4. `update_progress restarting` told to the hub, then `execv` of `<exe>` with the same
   arguments: same pid, so systemd or whatever started it still follows it.
5. the new process removes the marker after its first welcome. If it has not by the
   deadline, the watchdog puts `<exe>.previous` back, ends what is left of the new process,
   notes why (`update-result.json`: the restored runner says it in its hello) and starts
   the old build again itself, unless a service manager (systemd) restarts the unit.
"""

import asyncio
import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import structlog
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from agent.config import RunnerConfig
from agent.tls import client_ssl_context
from agent.worker import TaskWorker
from protocol.elf import NotAnExecutable, check_elf, this_arch
from protocol.frames import RunnerFrame, Update, UpdateProgress, release_message
from protocol.version import PACKAGE_VERSION

log = structlog.get_logger("agent.update")

TEMP_PREFIX = ".semaphore-update-"
MARKER = "update-pending.json"
RESULT = "update-result.json"
MAX_SIZE = 512 * 1024 * 1024
VERSION_CHECK_TIMEOUT = 60.0


class UpdateRefused(Exception):
    """This update is not applied; the message says why (told to the hub)."""


def frozen_executable() -> Path | None:
    """The single-file runner's own file; None when running from a Python installation."""
    if not getattr(sys, "frozen", False):
        return None
    return Path(sys.executable).resolve()


def clean_environment() -> dict[str, str]:
    """The environment for starting another single-file build: PyInstaller's own variables
    would make its bootloader reuse this process's unpacked files (and so this version)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("_MEI", "_PYI"))}
    env["PYINSTALLER_RESET_ENVIRONMENT"] = "1"
    return env


@dataclass
class Marker:
    """What the watchdog and the new process need: written before the swap."""

    version: str
    previous_version: str
    exe: str
    previous: str
    deadline: float  # wall-clock time
    argv: list[str]
    pid: int
    pid_started: float
    supervised: bool

    def save(self, path: Path) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as file:
            json.dump(self.__dict__, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "Marker | None":
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def under_service_manager() -> bool:
    """Started by systemd (which restarts the unit when its main process ends): the
    watchdog then leaves restarting to it, or two runners would run."""
    if "INVOCATION_ID" not in os.environ:
        return False
    try:
        process = psutil.Process().parent()
        for _ in range(2):  # a single-file build runs under its bootloader
            if process is None:
                return False
            if process.name() == "systemd":
                return True
            process = process.parent()
    except psutil.Error:
        pass
    return False


class Updater:
    """Applies the hub's `Update` frames, one at a time."""

    def __init__(self, config: RunnerConfig, token: str, worker: TaskWorker,
                 emit: Callable[[RunnerFrame], None], heartbeat: Callable[[], None],
                 flushed: Callable[[], bool], stopping: Callable[[], bool] = lambda: False):
        self.config = config
        self.token = token
        self.worker = worker
        self.emit = emit
        self.heartbeat = heartbeat
        self.flushed = flushed
        self.stopping = stopping  # asked to stop (SIGTERM): never swap then
        self.state_folder = config.state_folder
        self._job: asyncio.Task | None = None

    # At start and after the first welcome.

    def startup(self) -> str:
        """Clear what an interrupted update left; the reason the last one did not take, for
        the hello ("" if none)."""
        exe = frozen_executable()
        if exe is not None:
            for leftover in exe.parent.glob(TEMP_PREFIX + "*"):
                log.warning("runner.update.leftover_removed", path=str(leftover))
                leftover.unlink(missing_ok=True)
        marker = Marker.load(self.state_folder / MARKER)
        error = ""
        if marker is not None and marker.version != PACKAGE_VERSION:
            # Stopped before the swap (kill -9, power cut): the old file is still in place.
            (self.state_folder / MARKER).unlink(missing_ok=True)
            error = (f"the update to {marker.version} was interrupted before the swap (the "
                     f"runner stopped); still running {PACKAGE_VERSION}")
        result = self.state_folder / RESULT
        try:
            error = json.loads(result.read_text())["error"] or error
        except (OSError, ValueError, KeyError, TypeError):
            pass
        result.unlink(missing_ok=True)
        if error:
            log.warning("runner.update.not_applied", reason=error)
        return error

    def welcomed(self) -> None:
        """Connected as this build: an update to it took; its watchdog may stop."""
        marker_path = self.state_folder / MARKER
        marker = Marker.load(marker_path)
        if marker is not None and marker.version == PACKAGE_VERSION:
            marker_path.unlink(missing_ok=True)
            log.info("runner.update.applied", version=PACKAGE_VERSION,
                     previous=marker.previous_version)

    # The hub's frame.

    def handle(self, frame: Update) -> None:
        if self._job is not None and not self._job.done():
            log.info("runner.update.busy", version=frame.version)
            return
        self._job = asyncio.get_running_loop().create_task(self._apply(frame))

    async def _apply(self, frame: Update) -> None:
        drained = False
        try:
            exe = frozen_executable()
            if exe is None:
                raise UpdateRefused("cannot update: not a single-file runner (it runs from a "
                                    "Python installation; update that with its package "
                                    "manager)")
            if frame.version == PACKAGE_VERSION:
                raise UpdateRefused(f"already running {frame.version}")
            log.info("runner.update.start", version=frame.version, size=frame.size)
            # Said on disk first: a process killed before the swap (kill -9, power cut)
            # leaves the old build in place, and its next start tells the hub the update
            # was interrupted (startup). The swap rewrites it for the watchdog.
            self._note_started(frame, exe)
            new = await asyncio.to_thread(self._fetch_and_check, frame, exe)
            try:
                self.emit(UpdateProgress(version=frame.version, state="draining"))
                drained = True
                self.worker.draining = True
                self.heartbeat()
                await self.worker.wait_idle()
                if self.stopping():
                    raise UpdateRefused("the runner was asked to stop while it drained for "
                                        "the update")
                marker = self._swap(frame, exe, new)
            except BaseException:
                new.unlink(missing_ok=True)
                raise
        except UpdateRefused as exc:
            (self.state_folder / MARKER).unlink(missing_ok=True)
            log.error("runner.update.failed", version=frame.version, reason=str(exc))
            self.emit(UpdateProgress(version=frame.version, state="failed", reason=str(exc)))
            if drained and not self.stopping():
                self.worker.draining = False
                self.heartbeat()
            return
        self.emit(UpdateProgress(version=frame.version, state="restarting"))
        for _ in range(40):  # let the frame reach the hub (at most 2 s)
            if self.flushed():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        log.info("runner.update.exec", version=frame.version, exe=marker.exe)
        _flush_output()  # what is buffered would be lost with this process image
        os.execve(marker.exe, [marker.exe, *marker.argv[1:]], clean_environment())

    # Steps.

    def _note_started(self, frame: Update, exe: Path) -> None:
        try:
            Marker(version=frame.version, previous_version=PACKAGE_VERSION, exe=str(exe),
                   previous="", deadline=0.0, argv=[], pid=os.getpid(), pid_started=0.0,
                   supervised=False).save(self.state_folder / MARKER)
        except OSError as exc:
            raise UpdateRefused(f"cannot write {self.state_folder / MARKER}: "
                                f"{exc.strerror}") from None

    def _fetch_and_check(self, frame: Update, exe: Path) -> Path:
        """Download into the executable's folder and check everything a file can be checked
        for before it may replace the running one; the checked file, or UpdateRefused."""
        key_text = self.config.runner.release_key
        if not key_text:
            raise UpdateRefused("no release key in the runner's config (registered with an "
                                "older hub): register it again to get one")
        if frame.size > MAX_SIZE or not frame.path.startswith("/"):
            raise UpdateRefused(f"refused: size {frame.size} or path {frame.path!r} is not "
                                "that of a runner build")
        if frame.arch != this_arch():
            raise UpdateRefused(f"the hub offered a build for {frame.arch}; this machine is "
                                f"{this_arch()}")
        try:
            fd, tmp_name = tempfile.mkstemp(dir=exe.parent, prefix=TEMP_PREFIX)
        except OSError as exc:
            raise UpdateRefused(f"cannot write to {exe.parent}: {exc.strerror}") from None
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                digest, size = self._download(frame, out)
                out.flush()
                os.fsync(out.fileno())
            if size != frame.size:
                raise UpdateRefused(f"download is {size} bytes, the hub said {frame.size} "
                                    "(truncated or corrupt)")
            if digest != frame.sha256:
                raise UpdateRefused(f"sha256 mismatch: got {digest}, expected {frame.sha256}")
            try:
                VerifyKey(base64.b64decode(key_text)).verify(
                    release_message(frame.version, frame.arch, digest),
                    base64.b64decode(frame.signature))
            except (BadSignatureError, ValueError):
                raise UpdateRefused("signature check failed: the build is not signed by the "
                                    "hub's release key this runner registered with") from None
            try:
                check_elf(str(tmp), this_arch())
            except NotAnExecutable as exc:
                raise UpdateRefused(f"the download is not a runner for this machine: "
                                    f"{exc}") from None
            tmp.chmod(0o755)
            said = _version_of(tmp)
            if said != frame.version:
                raise UpdateRefused(f"the new build says it is version {said!r}, not "
                                    f"{frame.version}")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _download(self, frame: Update, out) -> tuple[str, int]:
        url = self.config.api_url(frame.path)
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        context = client_ssl_context(self.config) if url.startswith("https:") else None
        digest = hashlib.sha256()
        size = 0
        try:
            with urllib.request.urlopen(request, timeout=60, context=context) as response:
                while chunk := response.read(1 << 20):
                    size += len(chunk)
                    if size > frame.size:
                        raise UpdateRefused(f"download is larger than the {frame.size} bytes "
                                            "the hub said")
                    digest.update(chunk)
                    out.write(chunk)
        except urllib.error.HTTPError as exc:
            raise UpdateRefused(f"download {url} failed: HTTP {exc.code} "
                                f"{exc.read()[:300].decode(errors='replace')}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise UpdateRefused(f"download {url} failed: {reason}") from None
        return digest.hexdigest(), size

    def _swap(self, frame: Update, exe: Path, new: Path) -> Marker:
        previous = exe.with_name(exe.name + ".previous")
        marker_path = self.state_folder / MARKER
        marker = Marker(version=frame.version, previous_version=PACKAGE_VERSION,
                        exe=str(exe), previous=str(previous),
                        deadline=time.time() + frame.deadline_sec, argv=list(sys.argv),
                        pid=os.getpid(), pid_started=psutil.Process().create_time(),
                        supervised=under_service_manager())
        try:
            link_tmp = exe.with_name(f"{TEMP_PREFIX}previous")
            link_tmp.unlink(missing_ok=True)
            os.link(exe, link_tmp)  # no data copied: a full disk cannot stop it
            os.replace(link_tmp, previous)
            marker.save(marker_path)
            _start_watchdog(previous, marker_path)
            os.replace(new, exe)
            _fsync_folder(exe.parent)
        except OSError as exc:
            marker_path.unlink(missing_ok=True)
            raise UpdateRefused(f"cannot swap {exe}: {exc.strerror or exc}") from None
        log.info("runner.update.swapped", exe=str(exe), previous=str(previous),
                 version=frame.version)
        return marker


def _version_of(executable: Path) -> str:
    try:
        done = subprocess.run([str(executable), "--version"], capture_output=True, text=True,
                              timeout=VERSION_CHECK_TIMEOUT, env=clean_environment())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UpdateRefused(f"the new build does not run: {exc}") from None
    words = done.stdout.split()
    if done.returncode != 0 or len(words) < 2 or words[0] != "semaphore":
        raise UpdateRefused(f"the new build's --version failed (exit {done.returncode}): "
                            f"{(done.stdout + done.stderr).strip()[:300]!r}")
    return words[1]


def _start_watchdog(previous: Path, marker: Path) -> None:
    """The previous build, watching in a session of its own (it outlives this process's
    group); its output goes where the runner's does."""
    subprocess.Popen([str(previous), "runner", "update-watchdog", "--marker", str(marker)],
                     stdin=subprocess.DEVNULL, start_new_session=True,
                     env=clean_environment())


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# The watchdog: `semaphore runner update-watchdog --marker FILE`, run from <exe>.previous.


def run_watchdog(marker_path: Path, poll: float = 0.5) -> int:
    marker = Marker.load(marker_path)
    if marker is None:
        return 0
    while time.time() < marker.deadline:
        if not marker_path.exists():
            return 0  # the new build connected
        time.sleep(poll)
    if Marker.load(marker_path) != marker:
        return 0
    reason = (f"version {marker.version} did not connect within its deadline; restored "
              f"{marker.previous_version}")
    # The file first: a service manager restarting the unit must find the old build.
    try:
        os.replace(marker.previous, marker.exe)
    except OSError as exc:
        print(json.dumps({"event": "runner.update.restore_failed", "error": str(exc)}),
              file=sys.stderr, flush=True)
        return 1
    _end_process_tree(marker.pid, marker.pid_started)
    result = marker_path.with_name(RESULT)
    result.write_text(json.dumps({"error": reason}))
    marker_path.unlink(missing_ok=True)
    print(json.dumps({"event": "runner.update.rolled_back", "reason": reason,
                      "supervised": marker.supervised}), file=sys.stderr, flush=True)
    if marker.supervised:
        return 0
    _flush_output()
    os.execve(marker.exe, [marker.exe, *marker.argv[1:]], clean_environment())
    return 1  # not reached


def _end_process_tree(pid: int, started: float) -> None:
    """Kill the process the update re-executed (and its children), if it is still that one."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started) > 1.0:
            return
        family = [*process.children(recursive=True), process]
    except psutil.Error:
        return
    for member in family:
        try:
            member.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(family, timeout=10)
