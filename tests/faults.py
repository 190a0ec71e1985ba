"""Real faults for reliability tests: a hub process and runner processes.

Everything is a real process: `HubProcess` runs `semaphore server` (kill -9, SIGTERM, restart
on the same database and port), `RunnerProcess` runs `semaphore runner start` (kill -9,
SIGSTOP/SIGCONT, SIGTERM); `Rest` is a small synchronous REST client. The connection-cutting
TCP proxy is in tests/proxy.py.

Every helper cleans up after itself: no hub, runner or task process outlives its test.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
ADMIN_LOGIN = "admin"
ADMIN_PASSWORD = "admin-password-1"
REGISTRATION_TOKEN = "fault-registration-token"
FINAL = frozenset({"success", "error", "stopped"})
# Task scripts write their pid ($$, the leader of the task's own session) into the runner's
# task-pids folder, so a test can kill tasks a killed runner left behind.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def semaphore(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run one `semaphore` CLI command to its end."""
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.05,
               message: str | Callable[[], str] = "condition not met") -> Any:
    """Poll until predicate() is truthy and return its value; fail with `message` at the
    deadline (a callable message is evaluated only then, e.g. to read a log)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"after {timeout} s: {text}")
        time.sleep(interval)


@contextlib.contextmanager
def _stderr_to(path: Path | None) -> Iterator[Any]:
    """Where a process's stderr goes: into its log file with its stdout (None), or appended
    to a file of its own, for tests that read the log stream alone (every line JSON)."""
    if path is None:
        yield subprocess.STDOUT
        return
    with open(path, "ab") as stream:
        yield stream


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _kill_process_tree(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)
        os.kill(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)


# The hub.


class HubProcess:
    """`semaphore server` in its own process, on a free loopback port and a SQLite file;
    `options` are more words for the command line (e.g. --log-format console)."""

    def __init__(self, folder: Path, options: Sequence[str] = (), **overrides: Any):
        self.folder = Path(folder)
        self.options = list(options)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config_file = self.folder / "hub-config.json"
        self.log_file = self.folder / "hub.log"
        self.stderr_file: Path | None = None  # set: stderr (the log stream) goes there alone
        self.values = {"interface": "127.0.0.1", "port": self.port,
                       "sqlite": {"host": str(self.folder / "hub.sqlite")},
                       "tmp_path": str(self.folder / "hub-tmp"),
                       "runner_registration_token": REGISTRATION_TOKEN, **overrides}
        self.config_file.write_text(json.dumps(self.values))
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        created = semaphore("user", "add", "--config", str(self.config_file), "--admin",
                            "--login", ADMIN_LOGIN, "--password", ADMIN_PASSWORD,
                            "--name", "Admin", "--email", "admin@example.com")
        assert created.returncode == 0, created.stderr

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None and self.proc.poll() is None, "the hub is not running"
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> "HubProcess":
        assert self.proc is None or self.proc.poll() is not None, "the hub is running already"
        self.starts += 1
        with open(self.log_file, "ab") as log, _stderr_to(self.stderr_file) as stderr:
            log.write(f"\n===== hub start #{self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hub.cli", "server", "--config", str(self.config_file),
                 *self.options],
                cwd=ROOT, stdout=log, stderr=stderr, stdin=subprocess.DEVNULL)

        def answers() -> bool:
            assert self.proc.poll() is None, (
                f"the hub exited with {self.proc.returncode}:\n{tail(self.log_file)}")
            try:
                with urllib.request.urlopen(self.base_url + "/api/ping", timeout=2) as reply:
                    return reply.read() == b"pong"
            except OSError:
                return False

        wait_until(answers, timeout, message=lambda: f"hub does not answer /api/ping:\n"
                                                     f"{tail(self.log_file)}")
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def restart(self, timeout: float = 30.0) -> "HubProcess":
        """Start again on the same database and port (after kill9 or terminate)."""
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()
        return self.start(timeout)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def rest(self) -> "Rest":
        rest = Rest(self.base_url)
        rest.login()
        return rest

    def close(self) -> None:
        if self.proc is not None:
            _kill_process_tree(self.proc)

    def __enter__(self) -> "HubProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# A runner.


class RunnerProcess:
    """`semaphore runner start` in its own process; registered once at construction.
    `options` are more words for the start command line (e.g. --log-format console)."""

    def __init__(self, folder: Path, web_host: str, name: str, tags: Iterable[str] = (),
                 max_parallel_tasks: int = 1, register: bool = True,
                 options: Sequence[str] = (), **runner_options: Any):
        self.folder = Path(folder)
        self.options = list(options)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.config_file = self.folder / "config.runner.json"
        self.log_file = self.folder / "runner.log"
        self.stderr_file: Path | None = None  # set: stderr (the log stream) goes there alone
        self.pid_dir = self.folder / "task-pids"
        self.pid_dir.mkdir(exist_ok=True)
        self.config_file.write_text(json.dumps({
            "web_host": web_host,
            "runner": {"registration_token": REGISTRATION_TOKEN, "token": "",
                       "token_file": str(self.folder / "runner.token"),
                       "max_parallel_tasks": max_parallel_tasks,
                       "tmp_path": str(self.folder / "work"), "webhook": "",
                       "private_key_file": "", "name": name, "tags": list(tags),
                       # Tests run as root; the task scripts live in root's 0700 tmp_path.
                       "allow_root_tasks": True, **runner_options}}))
        self.procs: list[subprocess.Popen] = []
        self._task_pids: set[int] = set()
        if register:
            done = semaphore("runner", "register", "--config", str(self.config_file))
            assert done.returncode == 0, done.stderr

    @property
    def proc(self) -> subprocess.Popen:
        assert self.procs, "the runner was never started"
        return self.procs[-1]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> "RunnerProcess":
        """Start `runner start` (again, with the same config and token, after a kill)."""
        assert not self.procs or self.proc.poll() is not None, "the runner is running already"
        with open(self.log_file, "ab") as log, _stderr_to(self.stderr_file) as stderr:
            log.write(f"\n===== runner start #{len(self.procs) + 1} =====\n".encode())
            log.flush()
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "hub.cli", "runner", "start", "--config",
                 str(self.config_file), *self.options], cwd=ROOT, stdout=log,
                stderr=stderr, stdin=subprocess.DEVNULL))
        return self

    def _remember_tasks(self) -> None:
        """Note the processes the runner started, to clean them up even once orphaned."""
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                self._task_pids.update(c.pid for c in psutil.Process(proc.pid).children(True))

    def _signal(self, sig: int) -> None:
        self._remember_tasks()
        self.proc.send_signal(sig)

    def kill9(self) -> int:
        self._signal(signal.SIGKILL)
        return self.proc.wait(30)

    def sigstop(self) -> None:
        self._signal(signal.SIGSTOP)

    def sigcont(self) -> None:
        self._signal(signal.SIGCONT)

    def sigterm(self) -> None:
        self._signal(signal.SIGTERM)

    def wait(self, timeout: float = 60.0) -> int:
        """The process's return code; fails the test if it is still running at the deadline."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"runner {self.name} still running after {timeout} s:\n"
                                 f"{tail(self.log_file)}") from None

    def alive(self) -> bool:
        return bool(self.procs) and self.proc.poll() is None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def close(self) -> None:
        self._remember_tasks()
        for proc in self.procs:
            _kill_process_tree(proc)
        # Tasks run in their own sessions: a killed runner leaves them behind.
        for pid_file in self.pid_dir.iterdir():
            with contextlib.suppress(ValueError):
                self._task_pids.add(int(pid_file.read_text().strip() or 0))
        for pid in self._task_pids:
            self._kill_task(pid)

    def _kill_task(self, pid: int) -> None:
        """SIGKILL a task's process group, if that pid still is one of our tasks."""
        try:
            process = psutil.Process(pid)
            home = process.environ().get("HOME", "")
            ours = home.startswith(str(self.folder / "work" / "tasks") + "/")
        except psutil.Error:
            return
        if not ours:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> "RunnerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# REST.


class RestError(AssertionError):
    pass


class Rest:
    """A synchronous, logged-in client for Semaphore's REST paths."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def request(self, method: str, path: str, body: Any = None,
                timeout: float = 30.0) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, method=method, data=data,
                                         headers={"Content-Type": "application/json"})
        try:
            with self.opener.open(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
                json_body = response.headers.get_content_type() == "application/json"
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
            json_body = exc.headers.get_content_type() == "application/json"
        if json_body and raw:
            return status, json.loads(raw)
        return status, raw.decode(errors="replace")

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        got, data = self.request(method, path, body)
        if got != status:
            raise RestError(f"{method} {path} -> {got} {data!r} (expected {status})")
        return data

    def login(self) -> None:
        self.ok("POST", "/api/auth/login", {"auth": ADMIN_LOGIN, "password": ADMIN_PASSWORD},
                204)

    def project(self, name: str = "faults") -> int:
        return self.ok("POST", "/api/projects", {"name": name}, 201)["id"]

    def template(self, project_id: int, scripts: Path, playbook: str,
                 runner_tag: str = "") -> int:
        """A bash template running `playbook` from the folder `scripts`, used in place."""
        repo = self.ok("POST", f"/api/project/{project_id}/repositories",
                       {"name": f"r-{playbook}", "git_url": str(scripts)}, 201)["id"]
        return self.ok("POST", f"/api/project/{project_id}/templates", {
            "name": f"t-{playbook}", "app": "bash", "playbook": playbook,
            "repository_id": repo, "runner_tag": runner_tag}, 201)["id"]

    def run(self, project_id: int, template_id: int) -> int:
        return self.ok("POST", f"/api/project/{project_id}/tasks",
                       {"template_id": template_id}, 201)["id"]

    def task(self, project_id: int, task_id: int) -> dict:
        return self.ok("GET", f"/api/project/{project_id}/tasks/{task_id}")

    def stop(self, project_id: int, task_id: int) -> None:
        got, data = self.request("POST", f"/api/project/{project_id}/tasks/{task_id}/stop")
        if got not in (200, 204):
            raise RestError(f"stop task {task_id} -> {got} {data!r}")

    def raw_output(self, project_id: int, task_id: int) -> str:
        return self.ok("GET", f"/api/project/{project_id}/tasks/{task_id}/raw_output")

    def runners(self) -> list[dict]:
        return self.ok("GET", "/api/runners")

    def runner(self, name: str) -> dict:
        found = [r for r in self.runners() if r["name"] == name]
        assert len(found) == 1, f"runner {name!r}: {self.runners()}"
        return found[0]

    def wait_status(self, project_id: int, task_id: int, statuses: Iterable[str] = FINAL,
                    timeout: float = 60.0, logs: Callable[[], str] = lambda: "") -> dict:
        wanted = set(statuses)
        last: dict = {}

        def reached() -> dict | None:
            nonlocal last
            last = self.task(project_id, task_id)
            return last if last["status"] in wanted else None

        return wait_until(reached, timeout, message=lambda: (
            f"task {task_id} never reached {sorted(wanted)}; last seen {last}\n{logs()}"))

    def wait_runner_online(self, name: str, online: bool = True,
                           timeout: float = 60.0, logs: Callable[[], str] = lambda: "") -> dict:
        return wait_until(lambda: (r := self.runner(name))["online"] is online and r, timeout,
                          message=lambda: f"runner {name} never online={online}: "
                                          f"{self.runners()}\n{logs()}")


def write_script(folder: Path, name: str, body: str) -> Path:
    """A bash script that first records its pid in its runner's task-pids folder (cleanup)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    # A task's HOME is <runner folder>/work/tasks/task_<id>_<random>: the runner's task-pids
    # folder is three levels up (tasks get no environment from the runner to say so).
    path.write_text('pids="$HOME/../../../task-pids"; if [ -d "$pids" ]; then echo $$ > '
                    f'"$pids/$SEMAPHORE_TASK_ID"; fi\n{body}')
    return path
