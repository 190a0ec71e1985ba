"""The runner's configuration file: Semaphore's config.runner.json shape, plus name and tags.

    {"web_host": "https://hub.example.com",
     "runner": {"registration_token": "...", "token": "", "token_file": "/etc/semaphore/token",
                "max_parallel_tasks": 1, "tmp_path": "/var/lib/semaphore-runner",
                "webhook": "", "private_key_file": "", "name": "web-1", "tags": ["prod"],
                "task_user": "semaphore-task"}}

A missing or unreadable file, a file that is not JSON, an unknown key or a wrong value ends
the command with a message naming the file and the key.
"""

import json
import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from agent.errors import RunnerError
from agent.health_addr import HealthAddressError, parse_health_addr
from agent.isolation import default_state_folder
from protocol.validation import describe


class RunnerConfigError(RunnerError):
    """The runner configuration cannot be used; the message names the file and the problem."""


class RunnerSection(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    registration_token: str = ""
    token: str = ""
    token_file: str = ""
    max_parallel_tasks: int = 1
    # The runner's state: spool and task folders. Empty: /var/lib/semaphore-runner for root,
    # else the user's state folder; never /tmp, where another user could create it first.
    tmp_path: str = ""
    webhook: str = ""
    private_key_file: str = ""
    name: str = ""
    tags: list[str] = []
    # TLS to the hub: a CA bundle to trust instead of the system store, or no checks at all
    # (logged as a warning at every start).
    server_ca_cert_file: str = ""
    skip_tls_verify: bool = False
    # Who tasks run as: unprivileged users, the runner's alone, that the runner (as root)
    # switches to, one per running task (a list of at least max_parallel_tasks users), so that
    # a task cannot read the runner's token, key or spool, nor reach another task. Empty: the
    # runner's own user, which as root is refused unless allow_root_tasks says so.
    task_user: str | list[str] = ""
    allow_root_tasks: bool = False
    # The hub's release key (Ed25519, base64), stored at registration: a self-update is
    # applied only if the hub's build is signed by it.
    release_key: str = ""
    # host:port for the runner's own GET /health and /metrics (agent/health.py), e.g.
    # 127.0.0.1:9102 or [::1]:9102. Empty: not served.
    health_addr: str = ""


class AppSetting(msgspec.Struct, forbid_unknown_fields=False):
    """Semaphore's per-app setting (its other keys, such as `title` or `icon`, are for its UI
    and ignored here)."""

    app_path: str = ""  # the program to run, a path or a name on PATH
    app_args: list[str] | None = None  # its own arguments, before the script


class RunnerConfig(msgspec.Struct, forbid_unknown_fields=True):
    web_host: str = ""
    runner: RunnerSection = msgspec.field(default_factory=RunnerSection)
    # Semaphore's `apps`: another program per app, e.g. {"python": {"app_path": "python3.12"}}.
    apps: dict[str, AppSetting] = {}

    @property
    def display_name(self) -> str:
        return self.runner.name or socket.gethostname()

    def websocket_url(self) -> str:
        """http(s)://host[/prefix] -> ws(s)://host[/prefix]/api/internal/runners/ws"""
        parts = urlsplit(self.web_host)
        scheme = {"http": "ws", "https": "wss"}[parts.scheme]
        return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/api/internal/runners/ws"

    def api_url(self, path: str) -> str:
        return f"{self.web_host.rstrip('/')}{path}"

    @property
    def task_users(self) -> list[str]:
        user = self.runner.task_user
        return [user] if isinstance(user, str) and user else list(user or [])

    @property
    def state_folder(self) -> Path:
        return Path(self.runner.tmp_path or default_state_folder()).expanduser()

    def validate(self, path: Path) -> None:
        parts = urlsplit(self.web_host)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RunnerConfigError(
                f"{path}: `web_host` must be the hub's address, like http://hub:3000, "
                f"got {self.web_host!r}")
        if self.runner.max_parallel_tasks < 0:
            raise RunnerConfigError(f"{path}: `runner.max_parallel_tasks` must be >= 0")
        if self.runner.tmp_path and not Path(self.runner.tmp_path).expanduser().is_absolute():
            raise RunnerConfigError(f"{path}: `runner.tmp_path` must be an absolute path, got "
                                    f"{self.runner.tmp_path!r}")
        if self.runner.health_addr:
            try:
                parse_health_addr(self.runner.health_addr)
            except HealthAddressError as exc:
                raise RunnerConfigError(f"{path}: `runner.health_addr` {exc}") from None

    def token_path(self, config_path: Path) -> Path | None:
        """token_file, a relative one taken from the config file's folder."""
        if not self.runner.token_file:
            return None
        return config_path.parent / Path(self.runner.token_file).expanduser()

    def private_key_path(self, config_path: Path) -> Path:
        """private_key_file (relative: from the config's folder), or, beside the config, a key
        named after it (config.runner.json -> config.runner.key): two runners' configs in one
        folder never share, or overwrite, one key."""
        if not self.runner.private_key_file:
            return config_path.with_suffix(".key")
        return config_path.parent / Path(self.runner.private_key_file).expanduser()

    def read_token(self, path: Path) -> str:
        """The runner's own token: inline, or from token_file."""
        if self.runner.token:
            return self.runner.token
        token_path = self.token_path(path)
        if token_path is not None:
            try:
                return token_path.read_text().strip()
            except FileNotFoundError:
                return ""
            except OSError as exc:
                raise RunnerConfigError(
                    f"cannot read runner.token_file {token_path}: {exc.strerror}") from None
        return ""


def load_runner_config(path: str | os.PathLike) -> RunnerConfig:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RunnerConfigError(
            f"runner config {path} does not exist; create it with "
            f"`semaphore runner setup --config {path}`") from None
    except OSError as exc:
        raise RunnerConfigError(f"cannot read runner config {path}: {exc.strerror}") from None
    try:
        config = msgspec.json.decode(raw, type=RunnerConfig)
    except msgspec.ValidationError as exc:
        raise RunnerConfigError(f"{path}: {describe(exc, 'key')}") from None
    except msgspec.DecodeError as exc:
        raise RunnerConfigError(f"{path} is not valid JSON: {exc}") from None
    config.validate(path)
    ca_file = config.runner.server_ca_cert_file
    if ca_file and not Path(ca_file).expanduser().is_absolute():
        # Like token_file and private_key_file: relative to the config file's folder.
        config.runner.server_ca_cert_file = str(path.parent / ca_file)
    return config


def save_runner_config(path: str | os.PathLike, config: RunnerConfig) -> None:
    """Write the config (mode 0600: it may hold tokens), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = msgspec.to_builtins(config)
    write_private_file(path, json.dumps(data, indent=2) + "\n")


def write_private_file(path: Path, text: str) -> None:
    """Write a file only its owner can read, replacing any old one atomically. The temporary
    file is new and randomly named (mkstemp: O_EXCL, 0600): in a folder others can write, a
    file they made first under a fixed name would be written into, and read, by them."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
