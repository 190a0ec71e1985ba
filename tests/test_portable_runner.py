"""The portable runner (`bash build/build_runner.sh`: PyInstaller, then staticx) on hosts that
are not this one, each a chroot on this machine talking to a real hub process outside it:

(a) a root with no C library at all: the binary, /proc, an empty /etc and /tmp, /dev/null, and
    Debian's static busybox as `sh` (and, through a two-line script, `bash`: the bash app's
    program) for the task;
(b) Debian 11 (glibc 2.31, older than what the dynamic build needs), made with debootstrap
    and cached in /var/cache/semaphore-tests (tests/roots.py): a task cloning a git repository
    with that system's own git and running with its own bash.

The binary is built once per session with the script itself, as a user would (about 25 s with
pip's cache warm). Root only: chroot and mounts need it (CI runs as root).
"""

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import REGISTRATION_TOKEN, HubProcess, Rest, write_script
from tests.roots import ProcMount, bullseye_root

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 12_000_000  # README: the binary is at most 12 MB
BUILD_VERSION = "9.9.9-portable"
BUSYBOX = Path("/bin/busybox")
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="session")
def portable_binary(tmp_path_factory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("chroot and mounts need root (CI runs as root)")
    folder = tmp_path_factory.mktemp("portable")
    began = time.monotonic()
    built = subprocess.run(
        ["bash", str(ROOT / "build" / "build_runner.sh"), "--version", BUILD_VERSION,
         "--out", str(folder / "semaphore"), "--work", str(folder / "work")],
        capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    binary = folder / "semaphore"
    # The script's last line: size, sha256 and path.
    size, _, _, digest, _ = built.stdout.strip().splitlines()[-1].split(None, 4)
    assert int(size) == binary.stat().st_size
    print(f"portable runner: {size} bytes, sha256 {digest}, "
          f"built in {time.monotonic() - began:.0f} s")
    return binary


def asks_for_a_loader(path: Path) -> bool:
    """Whether an ELF executable (64-bit, little-endian) has a PT_INTERP program header: a
    dynamically linked one names the loader it needs there."""
    with open(path, "rb") as file:
        header = file.read(64)
        assert header[:6] == b"\x7fELF\x02\x01", f"{path} is no 64-bit little-endian ELF"
        phoff = int.from_bytes(header[32:40], "little")
        phentsize = int.from_bytes(header[54:56], "little")
        phnum = int.from_bytes(header[56:58], "little")
        file.seek(phoff)
        table = file.read(phentsize * phnum)
    return any(int.from_bytes(table[i:i + 4], "little") == 3  # PT_INTERP
               for i in range(0, len(table), phentsize))


def chroot(root: Path, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["chroot", str(root), *argv], env=chroot_env(), capture_output=True,
                          text=True, timeout=timeout)


def chroot_env() -> dict[str, str]:
    """What a login on that host would have, and nothing of this one's."""
    return {"PATH": ROOT_PATH, "HOME": "/root", "TMPDIR": "/tmp", "LANG": "C"}


def make_dev_null(root: Path) -> None:
    (root / "dev").mkdir(exist_ok=True)
    null = root / "dev" / "null"
    if not null.exists():
        subprocess.run(["mknod", "-m", "666", str(null), "c", "1", "3"], check=True)


@pytest.fixture
def bare_root(portable_binary, tmp_path) -> Iterator[Path]:
    """A root holding no C library: the runner, busybox, /proc, empty /etc and /tmp."""
    if not BUSYBOX.is_file() or asks_for_a_loader(BUSYBOX):
        pytest.fail("a static /bin/busybox is needed: apt-get install busybox-static")
    root = tmp_path / "bare"
    for folder in ("etc", "tmp", "bin", "srv"):
        (root / folder).mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(portable_binary, root / "semaphore")
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    # Debian's busybox has no `bash` applet (a symlink named bash says "applet not found"):
    # the bash app's program is its sh.
    (root / "bin" / "bash").write_text('#!/bin/sh\nexec /bin/busybox sh "$@"\n')
    (root / "bin" / "bash").chmod(0o755)
    # Every host has one: the runner starts a task's processes with it as stdin (without it,
    # "cannot start bash: No such file or directory").
    make_dev_null(root)
    # Nothing that a dynamically linked program could load.
    found = [str(p.relative_to(root)) for p in root.rglob("*")
             if p.name.startswith(("libc.", "ld-linux", "ld-musl"))]
    assert found == []
    with ProcMount(root):
        yield root
    assert not os.path.ismount(root / "proc")


@pytest.fixture(scope="session")
def bullseye(portable_binary) -> Path:
    began = time.monotonic()
    root = bullseye_root()
    print(f"bullseye root ready in {time.monotonic() - began:.0f} s (cached once built)")
    return root


@pytest.fixture
def bullseye_place(bullseye, portable_binary) -> Iterator[tuple[Path, Path]]:
    """This test's folder inside the cached root (/srv/<name>), with the binary; removed after,
    so the cache stays as debootstrap made it."""
    place = bullseye / "srv" / f"portable-{os.getpid()}-{time.monotonic_ns()}"
    place.mkdir(parents=True)
    shutil.copy2(portable_binary, place / "semaphore")
    try:
        with ProcMount(bullseye):
            yield bullseye, place
    finally:
        shutil.rmtree(place, ignore_errors=True)


class ChrootRunner:
    """`semaphore runner setup/register/start` inside a root, its log outside."""

    def __init__(self, root: Path, binary: str, place: str, hub: HubProcess, name: str,
                 log: Path):
        self.root, self.binary, self.hub, self.name, self.log = root, binary, hub, name, log
        self.config = f"{place}/config.runner.json"
        self.place = place
        self.proc: subprocess.Popen | None = None

    def setup_and_register(self) -> None:
        setup = chroot(self.root, self.binary, "runner", "setup", "--config", self.config,
                       "--non-interactive", "--web-host", self.hub.base_url,
                       "--registration-token", REGISTRATION_TOKEN, "--name", self.name,
                       "--tags", self.name, "--tmp-path", f"{self.place}/work",
                       # no users in such a root but root; the runner refuses root otherwise
                       "--allow-root-tasks")
        assert setup.returncode == 0, setup.stderr
        register = chroot(self.root, self.binary, "runner", "register", "--config",
                          self.config)
        assert register.returncode == 0, register.stderr

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["chroot", str(self.root), self.binary, "runner", "start", "--config",
                 self.config], env=chroot_env(), stdout=log, stderr=subprocess.STDOUT)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_portable_binary_is_small(portable_binary):
    assert portable_binary.stat().st_size <= MAX_BYTES, portable_binary.stat().st_size
    # One static file: no loader (ld.so) of the host's is asked for.
    assert not asks_for_a_loader(portable_binary)
    assert asks_for_a_loader(Path(shutil.which("true") or "/bin/true"))  # the check can fail


def test_runs_a_task_where_there_is_no_c_library(bare_root, tmp_path):
    version = chroot(bare_root, "/semaphore", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith(f"semaphore {BUILD_VERSION}"), version.stdout
    # The same root without the binary's help: a dynamic program cannot start there.
    shutil.copy2(shutil.which("true") or "/bin/true", bare_root / "dynamic-true")
    assert chroot(bare_root, "/dynamic-true").returncode != 0

    write_script(bare_root / "srv" / "scripts", "hello.sh",
                 'echo "bare says $1 from $(uname -s)"\n')
    with HubProcess(tmp_path / "hub") as hub:
        hub.start()
        runner = ChrootRunner(bare_root, "/semaphore", "/srv", hub, "bare", tmp_path / "log")
        try:
            runner.setup_and_register()
            runner.start()
            rest: Rest = hub.rest()
            rest.wait_runner_online("bare", logs=runner.logs)
            assert rest.runner("bare").get("version", BUILD_VERSION) == BUILD_VERSION
            project = rest.project()
            # The scripts folder as the runner sees it: an absolute path, used in place.
            template = rest.template(project, Path("/srv/scripts"), "hello.sh",
                                     runner_tag="bare")
            body = rest.ok("GET", f"/api/project/{project}/templates/{template}")
            rest.ok("PUT", f"/api/project/{project}/templates/{template}",
                    {**body, "arguments": '["hi"]'}, 204)
            task = rest.wait_status(project, rest.run(project, template), logs=runner.logs)
            output = rest.raw_output(project, task["id"])
            assert task["status"] == "success", (task, output, runner.logs())
            assert output == "bare says hi from Linux\n"
            # SIGTERM reaches the runner through both bootloaders (staticx's, PyInstaller's):
            # it drains and exits 0, as under systemd.
            assert runner.proc is not None
            runner.proc.terminate()
            assert runner.proc.wait(30) == 0, runner.logs()
            assert '"runner.stopped"' in runner.logs()
        finally:
            runner.close()


def test_clones_and_runs_on_debian_11(bullseye_place, tmp_path):
    root, place = bullseye_place
    inside = "/" + str(place.relative_to(root))
    # A repository made with that system's own git.
    repo = f"{inside}/repo"
    script = ('set -e\necho "cloned: $(cat greeting.txt)"\n'
              'echo "bash $BASH_VERSION"\nldd --version | head -1\n')
    made = chroot(root, "bash", "-ec", f"""
        git init -q {repo} && cd {repo}
        printf 'hello from bullseye\\n' > greeting.txt
        cat > build.sh <<'EOF'
{script}EOF
        git add . && git -c user.name=t -c user.email=t@example.com commit -qm first
        """)
    assert made.returncode == 0, made.stderr
    glibc = chroot(root, "ldd", "--version").stdout.splitlines()[0]
    assert glibc.endswith(" 2.31"), glibc

    with HubProcess(tmp_path / "hub") as hub:
        hub.start()
        runner = ChrootRunner(root, f"{inside}/semaphore", inside, hub, "bullseye",
                              tmp_path / "log")
        try:
            runner.setup_and_register()
            runner.start()
            rest: Rest = hub.rest()
            rest.wait_runner_online("bullseye", logs=runner.logs)
            project = rest.project()
            repository = rest.ok("POST", f"/api/project/{project}/repositories",
                                 {"name": "bullseye", "git_url": f"file://{repo}",
                                  "git_branch": ""}, 201)["id"]
            template = rest.ok("POST", f"/api/project/{project}/templates", {
                "name": "from git", "app": "bash", "playbook": "build.sh",
                "repository_id": repository, "runner_tag": "bullseye"}, 201)["id"]
            task = rest.wait_status(project, rest.run(project, template), logs=runner.logs)
            output = rest.raw_output(project, task["id"])
            assert task["status"] == "success", (task, output, runner.logs())
            # git's own lines (Cloning ...), then the script's.
            assert output.startswith(f"Cloning file://{repo}\n"), output
            cloned, bash, libc = output.splitlines()[-3:]
            assert cloned == "cloned: hello from bullseye", output
            assert bash.startswith("bash 5.1."), output  # bullseye's bash, not this host's
            assert libc == glibc, output
        finally:
            runner.close()


def build_fails(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Runs the build script expecting it to refuse: its one-line reason on stderr."""
    result = subprocess.run(
        ["bash", str(ROOT / "build" / "build_runner.sh"), "--work", str(tmp_path / "work"),
         "--out", str(tmp_path / "semaphore"), *args], capture_output=True, text=True,
        timeout=300, env=env)
    assert result.returncode != 0, result.stdout
    assert not (tmp_path / "semaphore").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("build_runner.sh: "), result.stderr
    return lines[0]


def test_build_without_debian_python_says_so(tmp_path):
    assert "no Debian python3 at /nonexistent/python3" in build_fails(
        tmp_path, "--python", "/nonexistent/python3")


def test_build_refuses_a_pyenv_or_conda_interpreter(tmp_path):
    interpreter = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    if not any(kind in interpreter for kind in ("pyenv", "conda")):
        pytest.skip(f"the tests' own interpreter {interpreter} is no pyenv/conda build")
    reason = build_fails(tmp_path, "--python", interpreter)
    assert "is a pyenv/conda build" in reason and "/usr/bin/python3" in reason, reason


def test_build_without_pypi_says_so(tmp_path):
    assert Path("/usr/bin/python3").is_file(), "Debian's python3 is needed (.ci/run installs it)"
    # An index that does not answer, and none of this machine's pip configuration (its
    # local wheel folders): as on a host without network.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL="http://127.0.0.1:9/simple",
               PIP_RETRIES="0", PIP_TIMEOUT="2", PIP_NO_CACHE_DIR="1")
    reason = build_fails(tmp_path, env=env)
    assert "cannot install build/runner-requirements.txt from PyPI (no network?)" in reason
    assert re.search(r"requirement [\w.-]+==", reason), reason  # pip's words, naming a pin


@pytest.mark.parametrize(("args", "message"), [
    (["--frob"], "unknown argument '--frob'"),
    (["--version", "1.0 beta"], "--version '1.0 beta' is not a version"),
    (["--version", "-x"], "--version '-x' is not a version"),
])
def test_build_refuses_bad_arguments(tmp_path, args, message):
    assert message in build_fails(tmp_path, *args)


def test_build_never_empties_a_folder_it_did_not_make(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = subprocess.run(["bash", str(ROOT / "build" / "build_runner.sh"), "--work",
                             str(mine), "--out", str(tmp_path / "semaphore")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"--work {mine} is not empty and was not made by this script" in result.stderr
    assert (mine / "notes.txt").read_text() == "keep me"
