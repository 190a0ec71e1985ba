"""Hub configuration: a JSON file (`--config`) and `SEMAPHORE_*` environment variables.

Key names follow Semaphore's config.json where Semaphore has the setting. The environment wins
over the file. An unknown key or a value of the wrong type stops the hub at start with a
message naming the key: a typo must never silently fall back to a default.
"""

import json
import os
from collections.abc import Mapping
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from hub.crypto import decode_key
from hub.errors import CONFIGURATION_EXIT, HubError
from protocol.validation import describe


class ConfigError(HubError):
    """The configuration cannot be used; the message names the file or key and the problem."""

    exit_code = CONFIGURATION_EXIT


class SqliteConfig(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "semaphore.sqlite"  # Semaphore's key for the database file path


class TlsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Semaphore's `tls` block: serve HTTPS and WSS with this certificate and key."""

    enabled: bool = False
    cert_file: str = ""
    key_file: str = ""


class ScheduleConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Semaphore's `schedule` block: the zone cron expressions are read in (IANA name)."""

    timezone: str = "UTC"


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Who may read GET /metrics (and /api/metrics) besides an admin: a Prometheus server
    sending `Authorization: Bearer <scrape_token>`, or anyone when `anonymous` is true.

    Semaphore 2.20's own keys work too, so its config.json is taken as it is: `username` and
    `password` (HTTP Basic, its way to scrape) and `enabled`, here only able to switch the
    endpoint off (an admin may read the metrics unless it is false)."""

    scrape_token: str = ""
    anonymous: bool = False
    enabled: bool = True
    username: str = ""
    password: str = ""
    # The event-loop lag probe (semaphore_hub_event_loop_lag_seconds): its period, and the
    # single lag from which a pause is logged (hub.loop_paused). A short period sees short
    # pauses (a benchmark sets ~0.01) at ~30 us of the loop per wake-up.
    loop_probe_interval_sec: float = 0.25
    loop_lag_log_sec: float = 0.5


class HubConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Listening address (Semaphore: `interface` and `port`).
    interface: str = "127.0.0.1"
    port: int = 3000
    # Public address runners and browsers use; printed at start.
    web_host: str = ""
    dialect: str = "sqlite"
    sqlite: SqliteConfig = msgspec.field(default_factory=SqliteConfig)
    tmp_path: str = "/tmp/semaphore"
    tls: TlsConfig = msgspec.field(default_factory=TlsConfig)
    # Cron times are evaluated in schedule.timezone; stored and shown fire times stay UTC.
    schedule: ScheduleConfig = msgspec.field(default_factory=ScheduleConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    # Semaphore's switch: without it only admins create (or restore) projects.
    non_admin_can_create_project: bool = False
    # Base64 of 32 random bytes; encrypts keys and secrets at rest (Semaphore's key name).
    access_key_encryption: str = ""
    # Runners.
    use_remote_runner: bool = True
    runner_registration_token: str = ""
    heartbeat_interval: float = 5.0
    runner_lost_timeout: float = 60.0
    # An assign not answered (accepted or rejected) this long goes to another runner.
    runner_accept_timeout_sec: float = 15.0
    # Runner builds served at /api/runner/binary, <path>/<version>/semaphore-linux-<arch>
    # with .sha256 and .sig (`semaphore runner-binary add` puts them there); "": none.
    runner_binaries_path: str = ""
    # The Ed25519 key that signs them; "": runner-release.key beside the database.
    release_key_file: str = ""
    # An updated runner must reconnect as the new version within this; else its watchdog
    # restores the old build and the rollout stops.
    runner_update_deadline_sec: float = 120.0
    # Tasks. 0 means unlimited, as in Semaphore.
    max_parallel_tasks: int = 0
    max_task_duration_sec: int = 0
    max_task_output_bytes: int = 100 * 1024 * 1024
    # Web sessions.
    session_ttl_sec: int = 7 * 24 * 3600
    # Slow or idle HTTP clients (beyond Semaphore). A request's head must arrive within
    # http_header_timeout_sec of the connection opening (or of its first byte on a kept-alive
    # connection), its body within http_body_timeout_sec of the head; an idle kept-alive
    # connection is closed after http_keepalive_timeout_sec. A handler that runs long
    # (streamed output, a runner's websocket) is not cut: these bound reading a request.
    http_header_timeout_sec: float = 10.0
    http_body_timeout_sec: float = 60.0
    http_keepalive_timeout_sec: float = 75.0
    # Open HTTP connections from one client address (runner websocket sessions not counted);
    # more are answered 503 and closed. 0: no limit (behind a reverse proxy, every client
    # has the proxy's address).
    http_max_connections_per_address: int = 256

    def __post_init__(self) -> None:
        _check(0 < self.port < 65536, "port", f"must be 1-65535, got {self.port}")
        _check(self.dialect == "sqlite", "dialect",
               f"only 'sqlite' is supported by this build, got {self.dialect!r}")
        # Sent to runners in welcome, which accept at most a day.
        _check(0 < self.heartbeat_interval <= 86400, "heartbeat_interval",
               "must be > 0 and at most 86400")
        _check(self.runner_lost_timeout >= 0, "runner_lost_timeout", "must be >= 0")
        _check(0 < self.runner_accept_timeout_sec <= 86400, "runner_accept_timeout_sec",
               "must be > 0 and at most 86400")
        _check(0 < self.runner_update_deadline_sec <= 86400, "runner_update_deadline_sec",
               "must be > 0 and at most 86400")
        _check(self.max_parallel_tasks >= 0, "max_parallel_tasks", "must be >= 0")
        _check(self.max_task_duration_sec >= 0, "max_task_duration_sec", "must be >= 0")
        _check(self.max_task_output_bytes > 0, "max_task_output_bytes", "must be > 0")
        for key in ("http_header_timeout_sec", "http_body_timeout_sec",
                    "http_keepalive_timeout_sec"):
            _check(0 < getattr(self, key) <= 3600, key, "must be > 0 and at most 3600")
        _check(0.001 <= self.metrics.loop_probe_interval_sec <= 60,
               "metrics.loop_probe_interval_sec", "must be between 0.001 and 60 (seconds)")
        _check(self.metrics.loop_lag_log_sec > 0, "metrics.loop_lag_log_sec",
               "must be > 0 (seconds)")
        _check(bool(self.metrics.username) == bool(self.metrics.password), "metrics.password",
               "metrics.username and metrics.password go together (HTTP Basic scrapes)")
        _check(self.http_max_connections_per_address >= 0, "http_max_connections_per_address",
               "must be >= 0 (0: no limit)")
        try:
            zone(self.schedule.timezone)
        except ValueError as exc:
            raise ConfigError(f"config key `schedule.timezone`: {exc}") from None
        if self.access_key_encryption:
            try:
                decode_key(self.access_key_encryption)
            except ValueError as exc:
                raise ConfigError(f"config key `access_key_encryption`: {exc} "
                                  "(base64 of 32 random bytes)") from None

    @property
    def database_path(self) -> str:
        return self.sqlite.host

    @property
    def schedule_zone(self) -> tzinfo:
        return zone(self.schedule.timezone)


def zone(name: str) -> tzinfo:
    """An IANA zone by name (ZoneInfo caches them); ValueError naming the problem."""
    if name == "UTC":  # the default works without a zone database (no tzdata installed)
        return UTC
    # ZoneInfo takes a path: keep it to names such as "UTC" or "Europe/Berlin".
    if not name or name.startswith("/") or ".." in name.split("/"):
        raise ValueError(f"{name[:80]!r} is not a time zone name (e.g. UTC, Europe/Berlin)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{name[:80]!r} is not a known time zone (IANA names such as UTC, "
                         "Europe/Berlin)") from None


def _check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"config key `{key}`: {problem}")


# Environment variables and the config key each one sets. Semaphore's own names where it has
# them (SEMAPHORE_DB_HOST, SEMAPHORE_USE_REMOTE_RUNNER, ...).
ENV_KEYS: dict[str, tuple[str, ...]] = {
    "SEMAPHORE_INTERFACE": ("interface",),
    "SEMAPHORE_PORT": ("port",),
    "SEMAPHORE_WEB_ROOT": ("web_host",),
    "SEMAPHORE_WEB_HOST": ("web_host",),
    "SEMAPHORE_DB_DIALECT": ("dialect",),
    "SEMAPHORE_DB_HOST": ("sqlite", "host"),
    "SEMAPHORE_DB_PATH": ("sqlite", "host"),
    "SEMAPHORE_TMP_PATH": ("tmp_path",),
    "SEMAPHORE_TLS_ENABLED": ("tls", "enabled"),
    "SEMAPHORE_TLS_CERT_FILE": ("tls", "cert_file"),
    "SEMAPHORE_TLS_KEY_FILE": ("tls", "key_file"),
    "SEMAPHORE_SCHEDULE_TIMEZONE": ("schedule", "timezone"),
    "SEMAPHORE_METRICS_SCRAPE_TOKEN": ("metrics", "scrape_token"),
    "SEMAPHORE_METRICS_ANONYMOUS": ("metrics", "anonymous"),
    "SEMAPHORE_METRICS_ENABLED": ("metrics", "enabled"),
    "SEMAPHORE_METRICS_USERNAME": ("metrics", "username"),
    "SEMAPHORE_METRICS_PASSWORD": ("metrics", "password"),
    "SEMAPHORE_METRICS_LOOP_PROBE_INTERVAL_SEC": ("metrics", "loop_probe_interval_sec"),
    "SEMAPHORE_METRICS_LOOP_LAG_LOG_SEC": ("metrics", "loop_lag_log_sec"),
    "SEMAPHORE_NON_ADMIN_CAN_CREATE_PROJECT": ("non_admin_can_create_project",),
    "SEMAPHORE_ACCESS_KEY_ENCRYPTION": ("access_key_encryption",),
    "SEMAPHORE_USE_REMOTE_RUNNER": ("use_remote_runner",),
    "SEMAPHORE_RUNNER_REGISTRATION_TOKEN": ("runner_registration_token",),
    "SEMAPHORE_HEARTBEAT_INTERVAL": ("heartbeat_interval",),
    "SEMAPHORE_RUNNER_LOST_TIMEOUT": ("runner_lost_timeout",),
    "SEMAPHORE_RUNNER_ACCEPT_TIMEOUT_SEC": ("runner_accept_timeout_sec",),
    "SEMAPHORE_RUNNER_BINARIES_PATH": ("runner_binaries_path",),
    "SEMAPHORE_RELEASE_KEY_FILE": ("release_key_file",),
    "SEMAPHORE_RUNNER_UPDATE_DEADLINE_SEC": ("runner_update_deadline_sec",),
    "SEMAPHORE_MAX_PARALLEL_TASKS": ("max_parallel_tasks",),
    "SEMAPHORE_MAX_TASK_DURATION_SEC": ("max_task_duration_sec",),
    "SEMAPHORE_MAX_TASK_OUTPUT_BYTES": ("max_task_output_bytes",),
    "SEMAPHORE_SESSION_TTL_SEC": ("session_ttl_sec",),
    "SEMAPHORE_HTTP_HEADER_TIMEOUT_SEC": ("http_header_timeout_sec",),
    "SEMAPHORE_HTTP_BODY_TIMEOUT_SEC": ("http_body_timeout_sec",),
    "SEMAPHORE_HTTP_KEEPALIVE_TIMEOUT_SEC": ("http_keepalive_timeout_sec",),
    "SEMAPHORE_HTTP_MAX_CONNECTIONS_PER_ADDRESS": ("http_max_connections_per_address",),
}


def load_config(path: str | os.PathLike | None = None,
                environ: Mapping[str, str] | None = None) -> HubConfig:
    """Read the file (if any), lay the environment over it, and validate the result."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_json_object(Path(path))
    for name, key_path in ENV_KEYS.items():
        if name in environ:
            _set_path(data, key_path, _env_value(name, environ[name], key_path))
    try:
        # strict: "3000" is not a port in a JSON file (env values were converted above).
        return msgspec.convert(data, HubConfig, strict=True)
    except ConfigError as exc:  # a range check in HubConfig.__post_init__
        raise ConfigError(f"invalid configuration{_source(path, environ)}: {exc}") from None
    except msgspec.ValidationError as exc:
        problem = describe(exc, "config key")
        raise ConfigError(f"invalid configuration{_source(path, environ)}: {problem}") from None


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    return data


def _env_value(name: str, raw: str, key_path: tuple[str, ...]) -> Any:
    """Environment values are strings; turn them into the key's type so errors name the var."""
    field_type = _field_type(key_path)
    if field_type is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off", ""}:
            return False
        raise ConfigError(f"environment variable {name}: expected true or false, got {raw!r}")
    if field_type in (int, float):
        try:
            return field_type(raw)
        except ValueError:
            raise ConfigError(f"environment variable {name}: expected a number, got {raw!r}") \
                from None
    return raw


def _field_type(key_path: tuple[str, ...]) -> type:
    struct: Any = HubConfig
    for key in key_path:
        hint = struct.__annotations__[key]
        struct = hint
    return struct


def _set_path(data: dict[str, Any], key_path: tuple[str, ...], value: Any) -> None:
    for depth, key in enumerate(key_path[:-1]):
        data = data.setdefault(key, {})
        if not isinstance(data, dict):
            name = ".".join(key_path[:depth + 1])
            raise ConfigError(f"config key `{name}`: Expected `object`, got "
                              f"`{type(data).__name__}`")
    data[key_path[-1]] = value


def _source(path: str | os.PathLike | None, environ: Mapping[str, str]) -> str:
    """Where the values came from: the file and any SEMAPHORE_* variables that were set."""
    places = [str(path)] if path is not None else []
    places += sorted(name for name in ENV_KEYS if name in environ)
    return f" (from {', '.join(places)})" if places else ""
