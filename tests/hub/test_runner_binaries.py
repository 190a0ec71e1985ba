"""The hub's runner builds folder and release key, on real files (the builds here are small
ELF files: the header is all that is checked before a build is added)."""

import base64
import hashlib
import shutil
import stat
import sys

import pytest
from nacl.signing import VerifyKey

from hub.config import ConfigError, HubConfig, SqliteConfig
from hub.release_key import load_release_key, release_key_path
from hub.runner_binaries import BinaryError, add_binary, find_binary
from protocol.elf import NotAnExecutable, check_elf, elf_arch
from protocol.frames import release_message


def config_in(tmp_path, **values) -> HubConfig:
    return HubConfig(sqlite=SqliteConfig(host=str(tmp_path / "hub.sqlite")), **values)


def test_release_key_is_made_once_private_and_refused_when_others_can_read_it(tmp_path):
    config = config_in(tmp_path)
    key = load_release_key(config)
    path = release_key_path(config)
    assert path == tmp_path / "runner-release.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bytes(load_release_key(config)) == bytes(key)  # read back, not made again
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="may be read by others"):
        load_release_key(config)
    path.chmod(0o600)
    path.write_text("not a key\n")
    with pytest.raises(ConfigError, match="not a base64 Ed25519 key"):
        load_release_key(config)


def test_a_build_is_added_with_its_digest_and_a_signature_bound_to_version_and_arch(
        tmp_path):
    builds = tmp_path / "builds"
    key = load_release_key(config_in(tmp_path))
    source = tmp_path / "semaphore"
    shutil.copy(sys.executable, source)  # a real ELF executable of this machine
    arch = elf_arch(source.read_bytes()[:20])
    added = add_binary(str(builds), key, source, "1.2.3", arch)
    assert added.path == builds / "1.2.3" / f"semaphore-linux-{arch}"
    assert added.path.read_bytes() == source.read_bytes()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert added.path.with_name(added.path.name + ".sha256").read_text() == \
        f"{digest}  {added.path.name}\n"
    verify = VerifyKey(bytes(key.verify_key))
    verify.verify(release_message("1.2.3", arch, digest), base64.b64decode(added.signature))
    # The same signature does not hold for another version or arch.
    with pytest.raises(Exception, match="Signature was forged or corrupt"):
        verify.verify(release_message("1.2.4", arch, digest),
                      base64.b64decode(added.signature))
    assert find_binary(str(builds), "1.2.3", arch) == added


@pytest.mark.parametrize(("content", "arch", "message"), [
    (b"#!/bin/sh\necho hi\n", "amd64", "not an ELF executable"),
    (b"\x7fELF\x02\x01\x01" + b"\0" * 11 + (183).to_bytes(2, "little"), "amd64",
     "built for arm64, not amd64"),
    (b"\x7fELF", "amd64", "not an ELF executable"),
])
def test_a_file_that_is_not_a_build_for_the_arch_is_refused(tmp_path, content, arch, message):
    source = tmp_path / "file"
    source.write_bytes(content)
    with pytest.raises(NotAnExecutable, match=message):
        check_elf(str(source), arch)
    with pytest.raises(BinaryError, match=message):
        add_binary(str(tmp_path / "builds"), load_release_key(config_in(tmp_path)), source,
                   "1.0", arch)
    assert not (tmp_path / "builds" / "1.0" / f"semaphore-linux-{arch}").exists()


@pytest.mark.parametrize(("folder", "version", "arch", "message"), [
    ("", "1.0", "amd64", "runner_binaries_path is not set"),
    ("builds", "1.0", "amd64", "no runner build 1.0 for linux/amd64"),
    ("builds", "../etc", "amd64", "is not a version"),
    ("builds", "1.0", "sparc", "unknown arch 'sparc'"),
])
def test_a_missing_build_is_named(tmp_path, folder, version, arch, message):
    with pytest.raises(BinaryError, match=message):
        find_binary(str(tmp_path / folder) if folder else "", version, arch)
