"""The runner builds a hub serves: `<runner_binaries_path>/<version>/semaphore-linux-<arch>`,
each with `.sha256` (sha256sum's format) and `.sig` (base64 Ed25519 signature by the hub's
release key over `protocol.frames.release_message(version, arch, sha256)`)."""

import base64
import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from protocol.elf import ARCHES, NotAnExecutable, check_elf
from protocol.frames import release_message

VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")


class BinaryError(ValueError):
    """A build cannot be added or is not there; the message says which and why."""


@dataclass(frozen=True)
class RunnerBinary:
    version: str
    arch: str
    path: Path
    sha256: str
    signature: str
    size: int

    @property
    def file_name(self) -> str:
        return self.path.name


def file_name(arch: str) -> str:
    return f"semaphore-linux-{arch}"


def check_arch(arch: str) -> None:
    if arch not in ARCHES:
        raise BinaryError(f"unknown arch {arch!r}; one of {', '.join(sorted(ARCHES))}")


def check_version(version: str) -> None:
    if not VERSION.fullmatch(version):
        raise BinaryError(f"version {version!r} is not a version (letters, digits, . + _ -)")


def find_binary(folder: str, version: str, arch: str) -> RunnerBinary:
    """The build, its digest and signature; BinaryError naming what is missing."""
    check_arch(arch)
    check_version(version)
    if not folder:
        raise BinaryError("this hub serves no runner builds: runner_binaries_path is not set")
    path = Path(folder) / version / file_name(arch)
    try:
        sha_line = path.with_name(path.name + ".sha256").read_text().split()
        signature = path.with_name(path.name + ".sig").read_text().strip()
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise BinaryError(f"no runner build {version} for linux/{arch} on this hub "
                          f"({exc.filename} is missing; add one with `semaphore "
                          f"runner-binary add`)") from None
    if not sha_line:
        raise BinaryError(f"{path}.sha256 is empty")
    return RunnerBinary(version, arch, path, sha_line[0], signature, size)


def build_version(executable: Path) -> str:
    """What `FILE --version` says its version is ("semaphore 1.2.3 (runner build)")."""
    try:
        done = subprocess.run([str(executable), "--version"], capture_output=True, text=True,
                              timeout=60)
    except OSError as exc:
        raise BinaryError(f"cannot run {executable} --version: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise BinaryError(f"{executable} --version did not answer within 60 s") from None
    words = done.stdout.split()
    if done.returncode != 0 or len(words) < 2 or words[0] != "semaphore":
        raise BinaryError(f"{executable} --version did not print `semaphore VERSION` "
                          f"(exit {done.returncode}): {(done.stdout + done.stderr)[:200]!r}")
    return words[1]


def add_binary(folder: str, key: SigningKey, source: Path, version: str, arch: str,
               check: bool = True) -> RunnerBinary:
    """Copy `source` into the folder as build `version` for `arch`, with its digest and
    signature; `check`: refuse a file that is not an ELF executable for `arch`."""
    check_arch(arch)
    check_version(version)
    if not folder:
        raise BinaryError("runner_binaries_path is not set in the hub's config")
    if check:
        try:
            check_elf(str(source), arch)
        except NotAnExecutable as exc:
            raise BinaryError(f"{source}: {exc}") from None
    target_dir = Path(folder) / version
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / file_name(arch)
    digest = hashlib.sha256()
    # Written beside the target and renamed in: a download never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=f".{target.name}.")
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        os.chmod(tmp, 0o755)
        sha256 = digest.hexdigest()
        signature = base64.b64encode(
            key.sign(release_message(version, arch, sha256)).signature).decode()
        _write(target.with_name(target.name + ".sha256"), f"{sha256}  {target.name}\n")
        _write(target.with_name(target.name + ".sig"), signature + "\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return find_binary(folder, version, arch)


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
