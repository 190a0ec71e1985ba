"""The single-file runner, built from semaphore.spec and used exactly as a user would.

The binary is built once per test session (PyInstaller, about 10 s) into a temporary folder;
then it registers with a real hub process, runs a task to success, has a second one stopped,
and unregisters. Bad input gets one-line errors, never a traceback.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.faults import REGISTRATION_TOKEN, HubProcess, Rest, write_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def runner_binary(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("pyinstaller")
    built = subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
         "--workpath", str(work / "work"), "--distpath", str(work / "dist"),
         str(ROOT / "semaphore.spec")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    binary = work / "dist" / "semaphore"
    assert binary.is_file()
    return binary


def run(binary: Path, *args: str, timeout: float = 60,
        as_user: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*as_user, str(binary), *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def unprivileged(runner_binary):
    """A folder the runner owns, with its own copy of the binary; as root, the runner then runs
    as `nobody`, as on a locked-down host."""
    base = Path(tempfile.mkdtemp(prefix="frozen-runner-"))
    base.chmod(0o755)
    binary = base / "semaphore"
    shutil.copy2(runner_binary, binary)
    as_user: list[str] = []
    if os.geteuid() == 0 and shutil.which("setpriv"):
        as_user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                   "env", f"HOME={base}", f"TMPDIR={base}"]
        shutil.chown(base, "nobody", "nogroup")
    yield base, binary, as_user
    shutil.rmtree(base, ignore_errors=True)


def test_binary_answers_version_and_refuses_the_hub_commands(runner_binary):
    version = run(runner_binary, "--version")
    assert version.returncode == 0 and version.stdout.startswith("semaphore ")
    for command in ("server", "user", "quickstart"):
        refused = run(runner_binary, command)
        assert refused.returncode != 0
        assert "not part of the runner build" in refused.stderr
        assert "Traceback" not in refused.stderr


def test_binary_registers_runs_stops_and_unregisters(unprivileged, tmp_path):
    base, runner_binary, as_user = unprivileged
    with HubProcess(tmp_path / "hub") as hub:
        hub.start()
        config = base / "runner" / "config.runner.json"
        setup = run(runner_binary, "runner", "setup", "--config", str(config),
                    "--non-interactive", "--web-host", hub.base_url, "--registration-token",
                    REGISTRATION_TOKEN, "--name", "frozen", "--tags", "frozen",
                    "--tmp-path", str(base / "work"), as_user=as_user)
        assert setup.returncode == 0, setup.stderr
        register = run(runner_binary, "runner", "register", "--config", str(config),
                       as_user=as_user)
        assert register.returncode == 0, register.stderr
        log = open(tmp_path / "runner.log", "wb")
        runner = subprocess.Popen([*as_user, str(runner_binary), "runner", "start",
                                   "--config", str(config)], stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            rest: Rest = hub.rest()
            rest.wait_runner_online("frozen", logs=lambda: (tmp_path / "runner.log").read_text())
            scripts = base / "scripts"
            write_script(scripts, "hello.sh", 'echo "frozen says $1 as $(id -un)"\n'
                                              'python3 -c "print(6*7)"\n')
            write_script(scripts, "forever.sh", "echo started\nsleep 600\n")
            project = rest.project()
            hello = rest.template(project, scripts, "hello.sh", runner_tag="frozen")
            rest.ok("PUT", f"/api/project/{project}/templates/{hello}", {
                "name": "hello", "app": "bash", "playbook": "hello.sh",
                "arguments": json.dumps(["hi"]), "runner_tag": "frozen",
                "repository_id": rest.ok("GET", f"/api/project/{project}/templates/{hello}")[
                    "repository_id"]}, 204)
            task = rest.wait_status(project, rest.run(project, hello))
            assert task["status"] == "success", (task, (tmp_path / "runner.log").read_text())
            user = "nobody" if as_user else subprocess.run(
                ["id", "-un"], capture_output=True, text=True).stdout.strip()
            assert rest.raw_output(project, task["id"]) == f"frozen says hi as {user}\n42\n"

            forever = rest.run(project, rest.template(project, scripts, "forever.sh"))
            rest.wait_status(project, forever, {"running"})
            rest.stop(project, forever)
            assert rest.wait_status(project, forever)["status"] == "stopped"

            unregister = run(runner_binary, "runner", "unregister", "--config", str(config),
                             as_user=as_user)
            assert unregister.returncode == 0, unregister.stderr
            assert rest.runners() == []
            # Its session ends; its token is refused on reconnect and it exits, saying so.
            assert runner.wait(30) == 1
            assert "refused this runner's token" in (tmp_path / "runner.log").read_text()
        finally:
            if runner.poll() is None:
                runner.kill()
                runner.wait()
            log.close()


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    ('{"web_host": "http://127.0.0.1:9", "runner": {"tokn": "x"}}', "runner.tokn"),
    ('{"web_host": "http://127.0.0.1:9", "runner": {}}', "semaphore runner register"),
])
def test_binary_bad_config_is_one_line_naming_the_problem(runner_binary, tmp_path, content,
                                                          message):
    config = tmp_path / "config.runner.json"
    if content is not None:
        config.write_text(content)
    result = run(runner_binary, "runner", "start", "--config", str(config))
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_binary_keeps_retrying_an_unreachable_hub_once_per_attempt(runner_binary, tmp_path):
    config = tmp_path / "config.runner.json"
    config.write_text(json.dumps({"web_host": "http://127.0.0.1:9",
                                  "runner": {"token": "t" * 43,
                                             "tmp_path": str(tmp_path / "w")}}))
    runner = subprocess.Popen([str(runner_binary), "runner", "start", "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    runner.terminate()
    _, stderr = runner.communicate(timeout=15)
    failures = [line for line in stderr.splitlines() if "runner.connect.failed" in line]
    # Backoff 0.5 s doubling (with jitter): a handful of attempts in 4 s, not a tight loop.
    assert 2 <= len(failures) <= 6, stderr
    assert runner.returncode == 0
