"""Root file systems for running the frozen runner on "other hosts" (tests/test_portable_runner.py):
a Debian 11 root made by debootstrap, built once and cached, and bind mounts of /proc.

Usable from the command line too, to build the cache ahead of a test run:
    python -m tests.roots
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path("/var/cache/semaphore-tests")
MIRROR = "http://deb.debian.org/debian"
# Debian 11: glibc 2.31, older than what the runner's dynamic build needs (2.34/2.35).
BULLSEYE_ARGS = ("--variant=minbase", "--include=git,ca-certificates", "bullseye")
MARKER = ".debootstrap-args"


def bullseye_root() -> Path:
    """A bullseye root with its own bash and git, in the cache; built when missing (a few
    minutes), into a temporary folder renamed into place when complete, so an interrupted
    build is never taken for a root. The marker file holds the debootstrap arguments: other
    arguments make another root."""
    wanted = " ".join((*BULLSEYE_ARGS, MIRROR))
    root = CACHE / "bullseye-minbase-git"
    if (root / MARKER).is_file() and (root / MARKER).read_text() == wanted:
        return root
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap)")
    CACHE.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".bullseye-", dir=CACHE))
    began = time.monotonic()
    made = subprocess.run([debootstrap, *BULLSEYE_ARGS, str(building), MIRROR],
                          capture_output=True, text=True, timeout=1800)
    if made.returncode != 0:
        for mount in ("proc", "sys"):  # debootstrap's own, if it stopped half way
            subprocess.run(["umount", "-l", str(building / mount)], capture_output=True)
        shutil.rmtree(building, ignore_errors=True)
        raise RuntimeError(f"debootstrap {wanted} failed: {made.stderr[-2000:]}"
                           f"{made.stdout[-2000:]}")
    (building / MARKER).write_text(wanted)
    building.chmod(0o755)  # mkdtemp's 0700 would keep a task user out of its own root
    print(f"debootstrap {wanted}: {time.monotonic() - began:.0f} s", file=sys.stderr)
    if (root / MARKER).is_file() and (root / MARKER).read_text() == wanted:
        shutil.rmtree(building)  # another test session made it meanwhile
        return root
    if root.exists():  # a root of other arguments: replaced (never through a mount in it)
        subprocess.run(["umount", "-l", str(root / "proc")], capture_output=True)
        shutil.rmtree(root)
    building.rename(root)
    return root


class ProcMount:
    """/proc bind-mounted into a root for as long as the context lasts."""

    def __init__(self, root: Path):
        self.target = root / "proc"

    def __enter__(self) -> "ProcMount":
        self.target.mkdir(exist_ok=True)
        subprocess.run(["mount", "--bind", "/proc", str(self.target)], check=True,
                       capture_output=True)
        return self

    def __exit__(self, *exc: object) -> None:
        # Lazy: a process of the test that is still dying does not keep it mounted.
        subprocess.run(["umount", "-l", str(self.target)], capture_output=True)


def is_mounted(path: Path) -> bool:
    return os.path.ismount(path)


if __name__ == "__main__":
    print(bullseye_root())
