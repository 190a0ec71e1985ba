"""The single-file runner, built from semaphore.spec and used exactly as a user would.

The binary is built once per test session (PyInstaller, about 15 s) into a temporary folder,
with rich, pygments, werkzeug and pyyaml importable where it is built: the runner's
dependencies import those when present, and the build must leave them out anyway (hermetic).
Then it registers with a real hub process, runs a task to success, has a second one stopped,
and unregisters. Bad input gets one-line errors, never a traceback.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from PyInstaller.archive.readers import CArchiveReader

from tests.faults import (
    REGISTRATION_TOKEN,
    HubProcess,
    Rest,
    free_port,
    wait_until,
    write_script,
)

ROOT = Path(__file__).resolve().parents[1]
# What the binary may hold besides the standard library (semaphore.spec's RUNNER_PACKAGES).
RUNNER_PACKAGES = {"agent", "protocol", "websockets", "msgspec", "structlog", "psutil", "nacl",
                   "_cffi_backend", "prometheus_client"}
# Optional imports of the runner's dependencies (structlog.dev: rich; msgspec: yaml,
# typing_extensions), and what those bring along. Built with them around, the runner once grew
# from 9.1 to 12.3 MiB.
EXTRAS = ["rich", "pygments", "werkzeug", "pyyaml"]
EXTRA_MODULES = {"rich", "pygments", "werkzeug", "yaml", "_yaml", "markdown_it", "markupsafe",
                 "mdurl", "typing_extensions"}
MAX_BYTES = 12_000_000  # README: the binary is at most 12 MB


@pytest.fixture(scope="session")
def extras_path(tmp_path_factory) -> Path:
    """A folder with the extras, put on the build's PYTHONPATH: installed in its own folder
    (3 to 5 s) rather than into the shared venv, which other tests use meanwhile."""
    folder = tmp_path_factory.mktemp("extras")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--target", str(folder), *EXTRAS], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return folder


@pytest.fixture(scope="session")
def runner_binary(tmp_path_factory, extras_path) -> Path:
    work = tmp_path_factory.mktemp("pyinstaller")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(extras_path), os.environ.get("PYTHONPATH")])),
        # Its own binary cache: the default (~/.cache/pyinstaller) is shared with the portable
        # build (Debian's python3, same version tag), which running alongside would take this
        # build's pyenv libraries from it (staticx then refuses their RUNPATH).
        "PYINSTALLER_CONFIG_DIR": str(work / "config")}
    # The building interpreter really can import them (so the analysis could follow them).
    subprocess.run([sys.executable, "-c", "import rich, pygments, werkzeug, yaml"], env=env,
                   check=True)
    built = subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
         "--workpath", str(work / "work"), "--distpath", str(work / "dist"),
         str(ROOT / "semaphore.spec")], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600)
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


def archive_listing(binary: Path) -> tuple[set[str], set[str]]:
    """The executable's CArchive entries (binaries, data files, scripts) and the modules of
    its PYZ, as `pyi-archive_viewer --list --recursive` reads them."""
    archive = CArchiveReader(str(binary))
    entries, modules = set(archive.toc), set()
    for name, (*_, typecode) in archive.toc.items():
        if typecode == "z":  # the PYZ: the pure-Python modules
            modules |= set(archive.open_embedded_archive(name).toc)
    return entries, modules


def top_level(name: str) -> str:
    return name.replace("/", ".").replace("-", ".").split(".")[0]


def test_binary_is_hermetic_small_and_holds_all_of_the_runner(runner_binary):
    entries, modules = archive_listing(runner_binary)
    assert runner_binary.stat().st_size <= MAX_BYTES, runner_binary.stat().st_size
    # Only the standard library and the runner's packages, though the extras were importable.
    foreign = {m for m in modules if top_level(m) not in RUNNER_PACKAGES
               and top_level(m) not in sys.stdlib_module_names}
    assert foreign == set()
    assert {top_level(e) for e in entries} & EXTRA_MODULES == set()
    assert {top_level(m) for m in modules} >= RUNNER_PACKAGES - {"_cffi_backend"}
    assert any(e.startswith("_cffi_backend.") for e in entries)
    # Every module of agent/ and protocol/, imported by the entry point or not.
    own = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
           for package in ("agent", "protocol") for p in (ROOT / package).rglob("*.py")
           if p.name != "__main__.py"}
    assert own - modules == set()


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
        health = f"http://127.0.0.1:{free_port()}"
        runner = subprocess.Popen([*as_user, str(runner_binary), "runner", "start",
                                   "--config", str(config), "--health-addr",
                                   health.removeprefix("http://")], stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            rest: Rest = hub.rest()
            rest.wait_runner_online("frozen", logs=lambda: (tmp_path / "runner.log").read_text())
            # The bundled health address (prometheus_client and the websockets server).
            def connected() -> bool:
                with urllib.request.urlopen(health + "/health", timeout=10) as reply:
                    return json.loads(reply.read())["connected"] is True

            wait_until(connected, 30, message="the frozen runner's /health never connected")
            with urllib.request.urlopen(health + "/metrics", timeout=10) as reply:
                assert b"\nsemaphore_runner_connected 1.0\n" in reply.read()
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
    # allow_root_tasks: as root, a runner without a task_user refuses to start at all.
    config.write_text(json.dumps({"web_host": "http://127.0.0.1:9",
                                  "runner": {"token": "t" * 43, "allow_root_tasks": True,
                                             "tmp_path": str(tmp_path / "w")}}))
    runner = subprocess.Popen([str(runner_binary), "runner", "start", "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    first_failure = threading.Event()

    def read() -> None:
        assert runner.stderr is not None
        for line in runner.stderr:
            lines.append(line)
            if "runner.connect.failed" in line:
                first_failure.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # The 4 s count from the first attempt: a loaded machine may take seconds to unpack and
    # start the binary, which is not what is measured.
    assert first_failure.wait(60), "".join(lines)
    time.sleep(4)
    runner.terminate()
    runner.wait(timeout=15)
    reader.join(timeout=15)
    stderr = "".join(lines)
    failures = [line for line in lines if "runner.connect.failed" in line]
    # Backoff 0.5 s doubling (with jitter): a handful of attempts in 4 s, not a tight loop.
    assert 2 <= len(failures) <= 6, stderr
    assert runner.returncode == 0
