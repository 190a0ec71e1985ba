"""A real OpenSSH server on a loopback port for one test (Debian's openssh-server, which
.ci/run installs), and real ssh keys made by ssh-keygen."""

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


@dataclass
class KeyPair:
    private: str  # the OpenSSH private key text, as an access key holds it
    public: str   # one authorized_keys line
    passphrase: str = ""


def make_key(folder: Path, name: str, passphrase: str = "") -> KeyPair:
    """A new ed25519 key pair (encrypted with the passphrase, if one is given)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", name,
                    "-f", str(path)], check=True, capture_output=True)
    return KeyPair(path.read_text(), (folder / f"{name}.pub").read_text().strip(), passphrase)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Sshd:
    """sshd on 127.0.0.1:<port>, in the foreground, with its own host key and configuration;
    logs in `user` (root by default) with the given public keys only."""

    def __init__(self, folder: Path, authorized: list[str], user: str = "root"):
        if not os.path.exists(SSHD) or shutil.which("ssh") is None:
            raise RuntimeError("sshd is not installed: .ci/run installs Debian's "
                               "openssh-server (apt-get install openssh-server)")
        self.folder = folder
        self.user = user
        self.port = _free_port()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "authorized_keys").write_text("".join(f"{key}\n" for key in authorized))
        host_key = folder / "host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                       check=True, capture_output=True)
        self.host_public_key = (folder / "host_key.pub").read_text().split()[:2]
        (folder / "sshd_config").write_text(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {folder / 'sshd.pid'}
AuthorizedKeysFile {folder / 'authorized_keys'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowUsers {user}
LogLevel VERBOSE
""")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation folder
        self.log = folder / "sshd.log"
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"))
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on {self.port}: {self.log.read_text()}")

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {' '.join(self.host_public_key)}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
