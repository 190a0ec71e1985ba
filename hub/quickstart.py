"""`semaphore quickstart`: a working system on embedded defaults, in one folder.

It starts a hub on SQLite, creates an admin, sets up, registers and starts a local runner
through the real `semaphore runner` commands, adds a demo project whose template runs a bash
script, and prints the address, the login and how to run a first task. Run it again and it
reuses the same folder, database, admin and runner.
"""

import base64
import http.cookiejar
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from agent.config import write_private_file

DEMO_SCRIPT = """#!/usr/bin/env bash
echo "Hello from task $SEMAPHORE_TASK_ID on $(hostname)"
for i in 1 2 3; do echo "step $i"; sleep 0.2; done
echo "done"
"""


def cli_safe_token(nbytes: int) -> str:
    """`secrets.token_urlsafe(nbytes)` that does not start with "-": one in 64 does, and a
    command line then takes it for an option (`--registration-token -x...` failed)."""
    while True:
        token = secrets.token_urlsafe(nbytes)
        if not token.startswith("-"):
            return token


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "hub.cli", *args]


def quickstart(data_dir: str, port: int, with_binary: bool = False) -> int:
    root = Path(data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    address = f"http://127.0.0.1:{port}"
    config_path = root / "config.json"
    if not config_path.exists():
        write_private_file(config_path, json.dumps({
            "interface": "127.0.0.1", "port": port, "web_host": address,
            "sqlite": {"host": str(root / "semaphore.sqlite")}, "tmp_path": str(root / "tmp"),
            "runner_binaries_path": str(root / "runner-binaries"),
            "runner_registration_token": cli_safe_token(24),
            # Keys and secrets are encrypted at rest under this (a random one per install).
            "access_key_encryption": base64.b64encode(secrets.token_bytes(32)).decode()},
            indent=2) + "\n")
    config = json.loads(config_path.read_text())
    if "runner_binaries_path" not in config:  # made by an older quickstart
        config["runner_binaries_path"] = str(root / "runner-binaries")
        write_private_file(config_path, json.dumps(config, indent=2) + "\n")
    address = config.get("web_host") or address
    _check_port_free(config.get("interface", "127.0.0.1"), config.get("port", port))

    password_file = root / "admin-password"
    if not password_file.exists():
        password = cli_safe_token(12)
        subprocess.run(_cli("user", "add", "--config", str(config_path), "--admin",
                            "--login", "admin", f"--password={password}", "--name", "Admin",
                            "--email", "admin@localhost"), check=True, stdout=subprocess.DEVNULL)
        write_private_file(password_file, password + "\n")
    password = password_file.read_text().strip()

    hub_log = open(root / "hub.log", "ab")
    hub = subprocess.Popen(_cli("server", "--config", str(config_path)),
                           stdout=hub_log, stderr=hub_log)
    runner = None
    try:
        _wait_for_hub(address, hub, root / "hub.log")
        runner_config = root / "runner" / "config.runner.json"
        if not runner_config.exists():
            subprocess.run(_cli("runner", "setup", "--config", str(runner_config),
                                "--non-interactive", "--web-host", address,
                                # `=`: a token of an older install may start with "-".
                                f"--registration-token={config['runner_registration_token']}",
                                "--name", "local", "--tags", "local",
                                "--max-parallel-tasks", "4",
                                "--tmp-path", str(root / "runner" / "work"),
                                *_root_tasks_flag()),
                           check=True, stdout=subprocess.DEVNULL)
            subprocess.run(_cli("runner", "register", "--config", str(runner_config)),
                           check=True, stdout=subprocess.DEVNULL)
        runner_log = open(root / "runner.log", "ab")
        runner = subprocess.Popen(_cli("runner", "start", "--config", str(runner_config)),
                                  stdout=runner_log, stderr=runner_log)
        project_id, template_id = _demo_project(address, password, root, runner)
        _print_welcome(address, password, project_id, template_id, root)
        _runner_binary(with_binary, config_path, root)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while hub.poll() is None and runner.poll() is None:
            time.sleep(0.5)
        print("the hub or the runner stopped; see hub.log and runner.log in", root)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for process in (runner, hub):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT if process is runner else signal.SIGTERM)
        for process in (runner, hub):
            if process is not None:
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()


def _wait_for_hub(address: str, hub: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if hub.poll() is not None:
            raise SystemExit(f"the hub exited at start; its log:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{address}/api/ping", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the hub did not answer at {address} within 30 s; see {log_path}")


def _check_port_free(interface: str, port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((interface, port))
        except OSError as exc:
            raise SystemExit(f"cannot use {interface}:{port} ({exc.strerror}); is another hub "
                             f"running? Stop it, or pick another port with --port") from None


def _root_tasks_flag() -> list[str]:
    """Run as root, the quick start's runner runs its tasks as root: said aloud, since a
    production runner should give tasks a user of their own (runner.task_user)."""
    if os.geteuid() != 0:
        return []
    print("note: running as root, the local runner runs tasks as root (allow_root_tasks); "
          "for production set runner.task_user, see docs/security.md", flush=True)
    return ["--allow-root-tasks"]


def _demo_project(address: str, password: str, root: Path,
                  runner: subprocess.Popen) -> tuple[int, int]:
    """Wait for the runner to be online, then create (once) a project whose template runs
    a bash script from a local folder."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def call(method: str, path: str, body: dict | None = None):
        request = urllib.request.Request(
            address + path, method=method, headers={"Content-Type": "application/json"},
            data=json.dumps(body).encode() if body is not None else None)
        with opener.open(request, timeout=10) as response:
            raw = response.read()
            return json.loads(raw) if raw else None

    call("POST", "/api/auth/login", {"auth": "admin", "password": password})
    deadline = time.monotonic() + 30
    while not any(r["online"] for r in call("GET", "/api/runners")):
        if runner.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the runner did not connect; see {root / 'runner.log'}")
        time.sleep(0.1)
    for project in call("GET", "/api/projects"):
        if project["name"] == "Demo":
            templates = call("GET", f"/api/project/{project['id']}/templates")
            if templates:
                return project["id"], templates[0]["id"]
    demo = root / "demo"
    demo.mkdir(exist_ok=True)
    (demo / "hello.sh").write_text(DEMO_SCRIPT)
    project = call("POST", "/api/projects", {"name": "Demo"})
    pid = project["id"]
    repo = call("POST", f"/api/project/{pid}/repositories",
                {"name": "demo folder", "git_url": str(demo), "git_branch": ""})
    template = call("POST", f"/api/project/{pid}/templates",
                    {"name": "Hello", "app": "bash", "playbook": "hello.sh",
                     "repository_id": repo["id"], "runner_tag": "local"})
    return pid, template["id"]


def _print_welcome(address: str, password: str, project_id: int, template_id: int,
                   root: Path) -> None:
    print(f"""
Semaphore hub is running at {address}
  open it in a browser and sign in (the dashboard), or use the REST API below
  login:     admin
  password:  {password}        (also in {root / 'admin-password'})
  runner:    `local`, connected (log: {root / 'runner.log'})

Run the demo task and read its output:
  curl -s -c /tmp/sem.cookies -H 'Content-Type: application/json' \\
       -d '{{"auth": "admin", "password": "{password}"}}' {address}/api/auth/login
  curl -s -b /tmp/sem.cookies -H 'Content-Type: application/json' \\
       -d '{{"template_id": {template_id}}}' {address}/api/project/{project_id}/tasks
  curl -s -b /tmp/sem.cookies {address}/api/project/{project_id}/tasks/1/raw_output

Press Ctrl-C to stop the hub and the runner.""", flush=True)


def _runner_binary(wanted: bool, config_path: Path, root: Path) -> None:
    """Fill runner_binaries_path with a build of this version, in the background (the
    hermetic build takes 20 s or more), when asked (--with-binary); else say how. One line
    either way."""
    if not wanted:
        print("runner binary: not built (quickstart --with-binary builds one; or "
              "`semaphore runner-binary add FILE`): /api/runner/binary answers 404 until then",
              flush=True)
        return
    threading.Thread(target=_build_and_add, args=(config_path, root), daemon=True).start()
    print(f"runner binary: building in the background (log: {root / 'build.log'})",
          flush=True)


def _source_tree() -> Path | None:
    """The clone that holds build/build_runner.sh: the package's own folder (an editable
    install) or the current folder (`pip install .` copies no build scripts)."""
    for folder in (Path(__file__).resolve().parents[1], Path.cwd()):
        if (folder / "build" / "build_runner.sh").exists():
            return folder
    return None


def _build_and_add(config_path: Path, root: Path) -> None:
    work = root / "build"
    source = _source_tree()
    with open(root / "build.log", "ab") as log:
        if source is None:
            print("runner binary: cannot build it here (no build/build_runner.sh: run "
                  "quickstart from the clone); going on without", flush=True)
            return
        # The hermetic, static build (a fresh venv of Debian's python3, then staticx).
        command = ["bash", str(source / "build" / "build_runner.sh"),
                   "--out", str(work / "dist" / "semaphore"), "--work", str(work / "work")]
        built = subprocess.run(command, cwd=source, stdout=log, stderr=log)
        added = built.returncode == 0 and subprocess.run(
            _cli("runner-binary", "add", str(work / "dist" / "semaphore"), "--config",
                 str(config_path)), stdout=log, stderr=log).returncode == 0
    print("runner binary: ready at /api/runner/binary" if added else
          f"runner binary: the build failed; see {root / 'build.log'}", flush=True)
