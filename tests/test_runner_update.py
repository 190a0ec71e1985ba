"""Runner builds served by the hub and staged self-updates, with real single-file runners.

Two real builds of this code are made once per session with PyInstaller (semaphore.spec):
the hub's own version, and a newer one stamped with SEMAPHORE_BUILD_VERSION (the same code,
another version string), plus a "broken" build: a real x86-64 ELF compiled here that
answers `--version` with a newer version, like a runner build, and exits 1 when started (a
build that dies at start: a missing library, a bad bootloader). It passes every check a
runner makes before the swap (size, sha256, signature, ELF machine, `--version`), so only the
watchdog can save the runner, which is what the rollback test shows.
"""

import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from nacl.signing import SigningKey

from hub.runner_binaries import add_binary
from protocol.version import SOURCE_VERSION
from tests.faults import (
    REGISTRATION_TOKEN,
    HubProcess,
    Rest,
    RunnerProcess,
    semaphore,
    tail,
    wait_until,
    write_script,
)

ROOT = Path(__file__).resolve().parents[1]
NEW_VERSION = "0.1.1-update"
BROKEN_VERSION = "0.1.2-broken"
DEADLINE = 20.0  # runner_update_deadline_sec: a frozen runner starts in 1-3 s

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="the builds here are linux/amd64")


def _build(tmp_path_factory, version: str) -> Path:
    work = tmp_path_factory.mktemp(f"build-{version or 'current'}")
    env = {key: value for key, value in os.environ.items()
           if key != "SEMAPHORE_BUILD_VERSION"}
    if version:
        env["SEMAPHORE_BUILD_VERSION"] = version
    # PyInstaller's cache of its own, not ~/.cache/pyinstaller, which other builds running
    # at the same time (other test sessions) rewrite under this one.
    env["PYINSTALLER_CONFIG_DIR"] = str(_pyinstaller_cache(tmp_path_factory))
    built = subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
         "--workpath", str(work / "work"), "--distpath", str(work / "dist"),
         str(ROOT / "semaphore.spec")], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    return work / "dist" / "semaphore"


def _pyinstaller_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.getbasetemp() / "pyinstaller-cache"
    cache.mkdir(exist_ok=True)
    return cache


@pytest.fixture(scope="session")
def current_build(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "")


@pytest.fixture(scope="session")
def new_build(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, NEW_VERSION)


@pytest.fixture(scope="session")
def broken_build(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("broken")
    source = folder / "broken.c"
    source.write_text(
        '#include <stdio.h>\n#include <string.h>\n'
        'int main(int argc, char **argv) {\n'
        '  if (argc > 1 && strcmp(argv[1], "--version") == 0) {\n'
        f'    puts("semaphore {BROKEN_VERSION} (runner build)"); return 0; }}\n'
        '  fputs("broken build: cannot start\\n", stderr); return 1;\n}\n')
    binary = folder / "semaphore"
    subprocess.run(["gcc", "-O1", "-o", str(binary), str(source)], check=True)
    return binary


class FrozenRunner:
    """A single-file runner in a folder of its own (its file is replaced by updates),
    set up and registered with its own commands, started as a user would."""

    def __init__(self, folder: Path, build: Path, hub: HubProcess, name: str):
        self.folder = folder
        folder.mkdir(parents=True)
        self.exe = folder / "semaphore"
        shutil.copy2(build, self.exe)
        self.name = name
        self.config = folder / "config.runner.json"
        self.log_file = folder / "runner.log"
        self.state = folder / "work"
        self.proc: subprocess.Popen | None = None
        for args in (["setup", "--non-interactive", "--web-host", hub.base_url,
                      "--registration-token", REGISTRATION_TOKEN, "--name", name,
                      "--tags", name, "--tmp-path", str(self.state), "--allow-root-tasks"],
                     ["register"]):
            done = subprocess.run([str(self.exe), "runner", args[0], "--config",
                                   str(self.config), *args[1:]], capture_output=True,
                                  text=True, timeout=60)
            assert done.returncode == 0, done.stderr

    def start(self) -> "FrozenRunner":
        # Not under systemd: its watchdog restarts the old build itself.
        env = {k: v for k, v in os.environ.items() if k != "INVOCATION_ID"}
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.exe), "runner", "start", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        return self

    def version_on_disk(self) -> str:
        return subprocess.run([str(self.exe), "--version"], capture_output=True, text=True,
                              timeout=60).stdout.split()[1]

    def log(self) -> str:
        return tail(self.log_file, 80)

    def close(self) -> None:
        """Every process of this runner: the one started, a restored one, a watchdog."""
        for process in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if any(str(self.folder) in word for word in process.info["cmdline"] or []):
                    process.kill()
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)


@pytest.fixture
def hub(tmp_path):
    with HubProcess(tmp_path / "hub", runner_binaries_path=str(tmp_path / "builds"),
                    runner_update_deadline_sec=DEADLINE) as process:
        process.start()
        yield process


@pytest.fixture
def runners(tmp_path, hub):
    made: list[FrozenRunner] = []

    def make(build: Path, name: str) -> FrozenRunner:
        runner = FrozenRunner(tmp_path / name, build, hub, name)
        made.append(runner)
        return runner.start()

    yield make
    for runner in made:
        runner.close()


def add_build(hub: HubProcess, build: Path, *extra: str) -> dict:
    done = semaphore("runner-binary", "add", str(build), "--config", str(hub.config_file),
                     *extra)
    assert done.returncode == 0, done.stderr
    return done


def by_name(rest: Rest) -> dict[str, dict]:
    return {row["name"]: row for row in rest.runners()}


def wait_update(rest: Rest, name: str, states: set[str], timeout: float = 90,
                logs=lambda: "") -> dict:
    return wait_until(lambda: (row := by_name(rest)[name])["update"]["state"] in states and row,
                      timeout, 0.2, lambda: f"{name}: {by_name(rest).get(name)}\n{logs()}")


def test_hub_serves_the_build_and_a_sha256_file_sha256sum_accepts(hub, current_build,
                                                                   tmp_path):
    add_build(hub, current_build)
    url = f"{hub.base_url}/api/runner/binary?arch=amd64"
    with urllib.request.urlopen(url) as response:  # public: no token, no login
        served = response.read()
        assert response.headers["X-Semaphore-Version"] == SOURCE_VERSION
    assert served == current_build.read_bytes()
    # The README's line, run as written.
    here = tmp_path / "download"
    here.mkdir()
    line = (f"curl -fsSLo semaphore '{url}' && curl -fsSL "
            f"'{hub.base_url}/api/runner/binary.sha256?arch=amd64' | sha256sum -c -")
    done = subprocess.run(["bash", "-c", line], cwd=here, capture_output=True, text=True)
    assert done.returncode == 0 and "semaphore: OK" in done.stdout, done.stderr
    # The signature verifies with the key /api/info shows.
    info = hub.rest().ok("GET", "/api/info")
    signature = urllib.request.urlopen(url.replace("binary?", "binary.sig?")).read()
    from nacl.signing import VerifyKey

    from protocol.frames import release_message
    VerifyKey(base64.b64decode(info["runner_release_key"])).verify(
        release_message(SOURCE_VERSION, "amd64", hashlib.sha256(served).hexdigest()),
        base64.b64decode(signature))
    # A corrupted file fails sha256sum -c.
    middle = len(served) // 2
    (here / "semaphore").write_bytes(served[:middle] + bytes([served[middle] ^ 1])
                                     + served[middle + 1:])
    assert subprocess.run(["bash", "-c", line.split(" && ")[1]], cwd=here,
                          capture_output=True).returncode != 0
    rest = Rest(hub.base_url)
    status, body = rest.request("GET", "/api/runner/binary?arch=amd64&version=9.9.9")
    assert status == 404 and "no runner build 9.9.9 for linux/amd64" in body["error"]
    status, body = rest.request("GET", "/api/runner/binary?arch=sparc")
    assert status == 400 and "`arch`" in body["error"]
    # Adding a build checks that it is one for the arch it is added as.
    refused = semaphore("runner-binary", "add", str(current_build), "--config",
                        str(hub.config_file), "--arch", "arm64")
    assert refused.returncode != 0 and "built for amd64, not arm64" in refused.stderr


def test_rollout_reaches_the_canary_first_then_the_rest_and_waits_for_a_running_task(
        hub, runners, current_build, new_build, tmp_path):
    rest = hub.rest()
    fleet = [runners(current_build, f"r{i}") for i in range(3)]
    for runner in fleet:
        rest.wait_runner_online(runner.name, logs=runner.log)
    add_build(hub, new_build)
    # The canary (the first online runner) is busy with a task when told to update.
    project = rest.project()
    scripts = tmp_path / "scripts"
    write_script(scripts, "slow.sh", "sleep 4\necho slow task done\n")
    task = rest.run(project, rest.template(project, scripts, "slow.sh", runner_tag="r0"))
    rest.wait_status(project, task, {"running"})
    started = rest.ok("PUT", "/api/runners/update", {"version": NEW_VERSION, "canary": 1,
                                                      "healthy_seconds": 4}, 201)
    assert started["state"] == "running"
    seen: dict[str, dict[str, float]] = {runner.name: {} for runner in fleet}
    task_end = 0.0

    def progress() -> bool:
        nonlocal task_end
        now = time.monotonic()
        for name, row in by_name(rest).items():
            seen[name].setdefault(row["update"]["state"], now)
            if row["version"] == NEW_VERSION and row["online"]:
                seen[name].setdefault("back", now)
        if not task_end and rest.task(project, task)["status"] in {"success", "error"}:
            task_end = now
        return rest.ok("GET", "/api/runners/update")["state"] != "running"

    wait_until(progress, 180, 0.2, lambda: f"{seen}\n" + "\n".join(r.log() for r in fleet))
    assert rest.ok("GET", "/api/runners/update")["state"] == "done", rest.runners()
    # The task was not killed: it ended well, and before its runner restarted.
    assert rest.task(project, task)["status"] == "success"
    assert rest.raw_output(project, task).endswith("slow task done\n")
    assert task_end and task_end <= seen["r0"]["back"] + 0.5, seen
    # r0 first; the others told only once r0 had been back and healthy for 4 s.
    assert seen["r0"]["updating"] < seen["r1"]["updating"], seen
    for name in ("r1", "r2"):
        assert seen[name]["updating"] >= seen["r0"]["back"] + 3.5, seen
    for runner in fleet:
        row = by_name(rest)[runner.name]
        assert row["version"] == NEW_VERSION and row["update"]["state"] == "updated", row
        assert runner.version_on_disk() == NEW_VERSION
        assert runner.exe.with_name("semaphore.previous").exists()
        # Re-executed in place: the process its starter follows is still the one it started.
        assert runner.proc is not None and runner.proc.poll() is None, runner.log()
        assert not list(runner.folder.glob(".semaphore-update-*"))
    # And the updated runners still run tasks.
    after = rest.run(project, rest.template(project, scripts, "slow.sh", runner_tag="r2"))
    assert rest.wait_status(project, after)["status"] == "success"


def test_new_build_that_dies_at_start_is_rolled_back_and_the_rollout_stops(
        hub, runners, current_build, broken_build):
    rest = hub.rest()
    fleet = [runners(current_build, name) for name in ("c0", "c1")]
    for runner in fleet:
        rest.wait_runner_online(runner.name, logs=runner.log)
    add_build(hub, broken_build)  # its version, from `--version`: BROKEN_VERSION
    assert (Path(hub.values["runner_binaries_path"]) / BROKEN_VERSION).is_dir()
    rest.ok("PUT", "/api/runners/update", {"version": BROKEN_VERSION, "canary": 1,
                                           "healthy_seconds": 2}, 201)
    canary = fleet[0]
    # The swapped-in build exits 1; the process the user started ends with it.
    assert canary.proc is not None and canary.proc.wait(DEADLINE + 30) == 1, canary.log()
    failed = wait_update(rest, "c0", {"failed"}, DEADLINE + 60, canary.log)
    assert "did not connect within its deadline; restored " + SOURCE_VERSION in \
        failed["update"]["error"], failed
    rollout = rest.ok("GET", "/api/runners/update")
    assert rollout["state"] == "failed" and "c0" in rollout["error"], rollout
    # The watchdog put the old build back and started it: online again, as before.
    row = rest.wait_runner_online("c0", logs=canary.log)
    assert row["version"] == SOURCE_VERSION
    assert canary.version_on_disk() == SOURCE_VERSION
    assert "broken build: cannot start" in canary.log_file.read_text()
    # The rest were never told.
    other = by_name(rest)["c1"]
    assert other["update"]["state"] == "none" and other["version"] == SOURCE_VERSION, other
    assert fleet[1].proc is not None and fleet[1].proc.poll() is None


def test_bad_downloads_are_refused_and_the_runner_keeps_running(
        hub, runners, current_build, new_build, tmp_path):
    rest = hub.rest()
    runner = FrozenRunner(tmp_path / "v0", current_build, hub, "v0")
    # What a kill -9 between download and swap leaves: a temporary file, and a marker of an
    # update that never swapped. The next start removes both and tells the hub.
    leftover = runner.folder / ".semaphore-update-abc123"
    leftover.write_bytes(b"half a download")
    runner.state.mkdir(parents=True, exist_ok=True)
    (runner.state / "update-pending.json").write_text(json.dumps({
        "version": "9.9.9", "previous_version": SOURCE_VERSION, "exe": str(runner.exe),
        "previous": str(runner.exe) + ".previous", "deadline": 0, "argv": [], "pid": 1,
        "pid_started": 0, "supervised": False}))
    runner.start()
    try:
        rest.wait_runner_online("v0", logs=runner.log)
        assert not leftover.exists() and not (runner.state / "update-pending.json").exists()
        assert "interrupted before the swap" in runner.log_file.read_text()
        pid = runner.proc.pid
        builds = Path(hub.values["runner_binaries_path"])
        good = new_build.read_bytes()
        served = builds / NEW_VERSION / "semaphore-linux-amd64"
        key = SigningKey(base64.b64decode(
            (Path(hub.values["sqlite"]["host"]).parent / "runner-release.key").read_bytes()))
        runner_id = by_name(rest)["v0"]["id"]

        def attempt(version: str, expect: str) -> None:
            rest.ok("PUT", "/api/runners/update", {"version": version, "runner_id": runner_id,
                                                   "canary": 1, "healthy_seconds": 1}, 201)
            row = wait_update(rest, "v0", {"failed"}, 60, runner.log)
            assert expect in row["update"]["error"], row
            assert rest.ok("GET", "/api/runners/update")["state"] == "failed"
            row = rest.wait_runner_online("v0")
            assert row["version"] == SOURCE_VERSION and runner.proc.pid == pid
            assert runner.proc.poll() is None and runner.version_on_disk() == SOURCE_VERSION
            assert not list(runner.folder.glob(".semaphore-update-*"))

        # Signed by another key: a hub's binaries folder someone else could write to.
        add_binary(str(builds), SigningKey.generate(), new_build, NEW_VERSION, "amd64")
        attempt(NEW_VERSION, "signature check failed")
        # Signed right, but the file changed after: a corrupt download.
        add_binary(str(builds), key, new_build, NEW_VERSION, "amd64")
        served.write_bytes(good[:1000] + b"\xff" + good[1001:])
        attempt(NEW_VERSION, "sha256 mismatch")
        # Signed right, for another machine (e_machine: aarch64).
        arm = tmp_path / "arm"
        arm.write_bytes(good[:18] + (183).to_bytes(2, "little") + good[20:])
        add_binary(str(builds), key, arm, "0.1.3-arm", "amd64", check=False)
        attempt("0.1.3-arm", "not a runner for this machine: built for arm64")
        # Signed right, but `--version` says another version than the hub's.
        add_binary(str(builds), key, new_build, "0.1.4-renamed", "amd64")
        attempt("0.1.4-renamed", f"says it is version '{NEW_VERSION}', not 0.1.4-renamed")
        # The file changed size after it was signed: the hub announces the size it has now.
        add_binary(str(builds), key, new_build, NEW_VERSION, "amd64")
        served.write_bytes(good[: len(good) // 2])
        attempt(NEW_VERSION, "sha256 mismatch")
    finally:
        runner.close()


def test_a_runner_not_run_from_a_single_file_says_it_cannot_update(hub, new_build, tmp_path):
    rest = hub.rest()
    add_build(hub, new_build)
    with RunnerProcess(tmp_path / "py", hub.base_url, "py").start() as runner:
        rest.wait_runner_online("py", logs=runner.log)
        rest.ok("PUT", "/api/runners/update", {"version": NEW_VERSION, "canary": 0,
                                               "healthy_seconds": 0}, 201)
        row = wait_update(rest, "py", {"failed"}, 30, runner.log)
        assert "not a single-file runner" in row["update"]["error"]
        assert runner.alive()


def test_rollout_api_refuses_bad_input_naming_the_field(hub):
    rest = hub.rest()
    for body, field in (({"canary": 1}, "version"),
                        ({"version": "../x"}, "version"),
                        ({"version": "9.9.9"}, "version"),
                        ({"version": "1.0", "canary": -1}, "canary"),
                        ({"version": "1.0", "project_id": 99}, "project_id"),
                        ({"version": "1.0", "runner_id": 99}, "runner_id"),
                        ({"version": "1.0", "healthy_minutes": 1, "healthy_seconds": 1},
                         "healthy_seconds")):
        status, answer = rest.request("PUT", "/api/runners/update", body)
        assert status == 400 and f"`{field}`" in answer["error"], (body, answer)
    status, answer = rest.request("DELETE", "/api/runners/update")
    assert status == 404
    assert rest.ok("GET", "/api/runners/update") == {"state": "none"}


def _kill9_tree(proc: subprocess.Popen) -> None:
    family = psutil.Process(proc.pid).children(recursive=True)
    for process in [psutil.Process(proc.pid), *family]:
        with contextlib.suppress(psutil.Error):
            process.kill()
    proc.wait(30)


def test_kill9_between_download_and_swap_leaves_the_old_build_working(
        hub, runners, current_build, new_build, tmp_path):
    rest = hub.rest()
    runner = runners(current_build, "k0")
    rest.wait_runner_online("k0", logs=runner.log)
    add_build(hub, new_build)
    project = rest.project()
    scripts = tmp_path / "scripts"
    write_script(scripts, "long.sh", "sleep 30\n")
    task = rest.run(project, rest.template(project, scripts, "long.sh", runner_tag="k0"))
    rest.wait_status(project, task, {"running"})
    rest.ok("PUT", "/api/runners/update", {"version": NEW_VERSION, "canary": 1,
                                           "healthy_seconds": 1}, 201)
    # Downloaded and checked, now draining (its task runs on): the moment between download
    # and swap. The power goes.
    wait_until(lambda: by_name(rest)["k0"].get("draining"), 60, 0.1, runner.log)
    temporary = list(runner.folder.glob(".semaphore-update-*"))
    assert len(temporary) == 1 and temporary[0].stat().st_size == new_build.stat().st_size
    assert runner.proc is not None
    _kill9_tree(runner.proc)
    assert runner.version_on_disk() == SOURCE_VERSION
    runner.start()
    row = rest.wait_runner_online("k0", logs=runner.log)
    assert row["version"] == SOURCE_VERSION
    assert not list(runner.folder.glob(".semaphore-update-*"))
    failed = wait_update(rest, "k0", {"failed"}, 30, runner.log)
    assert "interrupted before the swap" in failed["update"]["error"], failed
    assert rest.ok("GET", "/api/runners/update")["state"] == "failed"


def test_full_disk_refuses_the_update_and_keeps_the_runner(hub, current_build, new_build,
                                                          tmp_path):
    """The executable's folder on a file system with room for the current build and little
    more: the download cannot be written, the running build is untouched."""
    rest = hub.rest()
    add_build(hub, new_build)
    small = tmp_path / "small"
    small.mkdir()
    size = current_build.stat().st_size + 2 * 1024 * 1024
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(small)], capture_output=True, text=True)
    assert mounted.returncode == 0, f"this test mounts a tmpfs (as root): {mounted.stderr}"
    runner = None
    try:
        runner = FrozenRunner(small / "f0", current_build, hub, "f0")
        runner.start()
        rest.wait_runner_online("f0", logs=runner.log)
        rest.ok("PUT", "/api/runners/update", {"version": NEW_VERSION, "canary": 1,
                                               "healthy_seconds": 1}, 201)
        row = wait_update(rest, "f0", {"failed"}, 60, runner.log)
        assert "No space left on device" in row["update"]["error"], row
        assert runner.proc is not None and runner.proc.poll() is None
        assert runner.version_on_disk() == SOURCE_VERSION
        assert not list(runner.folder.glob(".semaphore-update-*"))
        assert rest.wait_runner_online("f0")["version"] == SOURCE_VERSION
    finally:
        if runner is not None:
            runner.close()
        subprocess.run(["umount", "-l", str(small)], check=False)
