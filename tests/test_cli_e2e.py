"""The product as a user drives it: separate processes for the hub and the runner CLI."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def semaphore(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, **kwargs)


def spawn(*args: str, log: Path) -> subprocess.Popen:
    handle = open(log, "wb")
    return subprocess.Popen([sys.executable, "-m", "hub.cli", *args], cwd=ROOT,
                            stdout=handle, stderr=subprocess.STDOUT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Client:
    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def call(self, method: str, path: str, body=None):
        request = urllib.request.Request(self.base + path, method=method,
                                         data=json.dumps(body).encode() if body else None,
                                         headers={"Content-Type": "application/json"})
        with self.opener.open(request, timeout=10) as response:
            raw = response.read()
            if response.headers.get_content_type() == "application/json" and raw:
                return json.loads(raw)
            return raw.decode()

    def wait_task(self, pid: int, task_id: int, statuses, timeout=60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            task = self.call("GET", f"/api/project/{pid}/tasks/{task_id}")
            if task["status"] in statuses:
                return task
            assert time.monotonic() < deadline, task
            time.sleep(0.05)




def test_server_and_runner_cli_run_a_task(tmp_path, processes):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"port": port, "sqlite": {"host": str(tmp_path / "db.sqlite")},
                                  "runner_registration_token": "reg-123",
                                  "tmp_path": str(tmp_path / "hubtmp")}))
    created = semaphore("user", "add", "--config", str(config), "--admin", "--login", "ops",
                        "--password", "pw-123456", "--name", "Ops", "--email", "ops@x.io")
    assert created.returncode == 0, created.stderr
    hub = spawn("server", "--config", str(config), log=tmp_path / "hub.log")
    processes.append(hub)
    client = Client(base)
    deadline = time.monotonic() + 30
    while True:
        try:
            assert client.call("GET", "/api/ping") == "pong"
            break
        except OSError:
            assert hub.poll() is None, (tmp_path / "hub.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)

    runner_config = tmp_path / "runner" / "config.runner.json"
    setup = semaphore("runner", "setup", "--config", str(runner_config), "--non-interactive",
                      "--web-host", base, "--registration-token", "reg-123", "--name", "cli-1",
                      "--tags", "cli", "--max-parallel-tasks", "2",
                      "--tmp-path", str(tmp_path / "work"), "--allow-root-tasks")
    assert setup.returncode == 0, setup.stderr
    stored = json.loads(runner_config.read_text())
    assert stored["web_host"] == base and stored["runner"]["tags"] == ["cli"]
    register = semaphore("runner", "register", "--config", str(runner_config))
    assert register.returncode == 0, register.stderr
    token_file = Path(stored["runner"]["token_file"])
    assert token_file.stat().st_mode & 0o777 == 0o600 and len(token_file.read_text()) > 40
    # register made the runner's key pair: the private half stays here, readable by us only.
    key_file = Path(json.loads(runner_config.read_text())["runner"]["private_key_file"])
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_text()) > 40
    # The hub's database (password hashes, sealed secrets) is its own: made under umask 0077.
    assert (tmp_path / "db.sqlite").stat().st_mode & 0o077 == 0
    runner = spawn("runner", "start", "--config", str(runner_config),
                   log=tmp_path / "runner.log")
    processes.append(runner)

    client.call("POST", "/api/auth/login", {"auth": "ops", "password": "pw-123456"})
    deadline = time.monotonic() + 30
    while not client.call("GET", "/api/runners")[0]["online"]:
        assert time.monotonic() < deadline, (tmp_path / "runner.log").read_text()
        time.sleep(0.1)

    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "hello.sh").write_text('echo "hello from $(basename $PWD)"\nexit 0\n')
    (scripts / "forever.sh").write_text("echo started\nsleep 600\n")
    pid = client.call("POST", "/api/projects", {"name": "cli"})["id"]
    repo = client.call("POST", f"/api/project/{pid}/repositories",
                       {"name": "local", "git_url": str(scripts)})["id"]
    hello = client.call("POST", f"/api/project/{pid}/templates", {
        "name": "hello", "app": "bash", "playbook": "hello.sh", "repository_id": repo,
        "runner_tag": "cli"})["id"]
    forever = client.call("POST", f"/api/project/{pid}/templates", {
        "name": "forever", "app": "bash", "playbook": "forever.sh", "repository_id": repo})["id"]

    task = client.call("POST", f"/api/project/{pid}/tasks", {"template_id": hello})
    done = client.wait_task(pid, task["id"], {"success", "error"})
    assert done["status"] == "success", client.call(
        "GET", f"/api/project/{pid}/tasks/{task['id']}/raw_output")
    output = client.call("GET", f"/api/project/{pid}/tasks/{task['id']}/raw_output")
    assert output == "hello from scripts\n"

    long = client.call("POST", f"/api/project/{pid}/tasks", {"template_id": forever})
    client.wait_task(pid, long["id"], {"running"})
    client.call("POST", f"/api/project/{pid}/tasks/{long['id']}/stop")
    stopped = client.wait_task(pid, long["id"], {"stopped", "error", "success"})
    assert stopped["status"] == "stopped"

    unregister_runner = semaphore("runner", "unregister", "--config", str(runner_config))
    assert unregister_runner.returncode == 0, unregister_runner.stderr
    assert client.call("GET", "/api/runners") == []
    # Its session ends; on reconnecting, its token is refused and it exits saying so.
    assert runner.wait(30) == 1
    logs = (tmp_path / "runner.log").read_text()
    assert '"event": "runner.connected"' in logs
    assert "refused this runner's token" in logs


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    ('{"web_host": "http://x", "runner": {"tokn": "a"}}', "runner.tokn"),
])
def test_runner_commands_with_bad_config_exit_nonzero_naming_the_problem(tmp_path, content,
                                                                         message):
    path = tmp_path / "config.runner.json"
    if content is not None:
        path.write_text(content)
    for command in ("register", "start", "unregister"):
        result = semaphore("runner", command, "--config", str(path))
        assert result.returncode != 0
        assert str(path) in result.stderr and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_runner_start_without_token_says_to_register(tmp_path):
    path = tmp_path / "config.runner.json"
    path.write_text(json.dumps({"web_host": "http://127.0.0.1:9", "runner": {}}))
    result = semaphore("runner", "start", "--config", str(path))
    assert result.returncode != 0 and "semaphore runner register" in result.stderr


def test_server_with_unknown_config_key_stops_naming_it(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"prot": 3000}))
    result = semaphore("server", "--config", str(path))
    assert result.returncode != 0 and "`prot`" in result.stderr
    result = semaphore("server", "--config", str(path), env={**os.environ,
                                                              "SEMAPHORE_PORT": "x"})
    assert result.returncode != 0


def test_quickstart_brings_up_hub_runner_and_demo(tmp_path):
    port = free_port()
    folder = tmp_path / "qs"
    quick = subprocess.Popen([sys.executable, "-m", "hub.cli", "quickstart", "--dir",
                              str(folder), "--port", str(port)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        printed = []
        for line in quick.stdout:
            printed.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(printed)
        assert f"http://127.0.0.1:{port}" in text, text
        password = (folder / "admin-password").read_text().strip()
        assert f"password:  {password}" in text
        client = Client(f"http://127.0.0.1:{port}")
        client.call("POST", "/api/auth/login", {"auth": "admin", "password": password})
        assert [r["online"] for r in client.call("GET", "/api/runners")] == [True]
        task = client.call("POST", "/api/project/1/tasks", {"template_id": 1})
        assert client.wait_task(1, task["id"], {"success", "error"})["status"] == "success"
        output = client.call("GET", f"/api/project/1/tasks/{task['id']}/raw_output")
        assert output.startswith(f"Hello from task {task['id']}") and "done" in output
    finally:
        quick.send_signal(signal.SIGINT)
        assert quick.wait(30) == 0


def test_runner_setup_prompts_at_a_terminal(tmp_path):
    import pty

    path = tmp_path / "config.runner.json"
    primary, secondary = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "hub.cli", "runner", "setup", "--config",
                                str(path), "--tmp-path", str(tmp_path / "w")], cwd=ROOT,
                               stdin=secondary, stdout=secondary, stderr=secondary)
    os.close(secondary)
    answers = {"Hub address": "http://hub.example:3000", "Tags": "a, b",
               "Registration token": "reg", "Token file": "", "Max parallel tasks": "three",
               "Please answer": "3", "Runner name": "typed", "User that tasks run as": "nobody"}
    seen = b""
    try:
        while process.poll() is None or seen:
            try:
                data = os.read(primary, 1024)
            except OSError:
                break
            if not data:
                break
            seen += data
            for prompt, reply in list(answers.items()):
                if prompt.encode() in seen:
                    os.write(primary, reply.encode() + b"\n")
                    del answers[prompt]
                    seen = b""
    finally:
        os.close(primary)
    assert process.wait(10) == 0
    assert answers == {}
    config = json.loads(path.read_text())
    assert config["web_host"] == "http://hub.example:3000"
    assert config["runner"]["tags"] == ["a", "b"] and config["runner"]["name"] == "typed"
    assert config["runner"]["max_parallel_tasks"] == 3 and config["runner"]["task_user"] == "nobody"
    assert config["runner"]["token_file"] == str(tmp_path / "runner.token")
    assert path.stat().st_mode & 0o777 == 0o600
