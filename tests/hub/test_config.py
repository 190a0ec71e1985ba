"""Hub configuration: file plus environment, the environment wins, every error names the key."""

import json

import pytest

from hub.config import ConfigError, HubConfig, load_config


@pytest.fixture
def write(tmp_path):
    def write(content) -> str:
        path = tmp_path / "config.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return str(path)
    return write


def test_defaults_without_file_or_environment():
    config = load_config(None, {})
    assert config == HubConfig()
    assert config.interface == "127.0.0.1"
    assert config.port == 3000
    assert config.dialect == "sqlite"
    assert config.database_path == "semaphore.sqlite"
    assert config.use_remote_runner is True
    assert config.heartbeat_interval == 5.0
    assert config.max_parallel_tasks == 0
    assert config.max_task_output_bytes == 100 * 1024 * 1024


def test_environment_alone_sets_values():
    config = load_config(None, {"SEMAPHORE_PORT": "4000", "SEMAPHORE_DB_HOST": "/var/x.db",
                                "SEMAPHORE_USE_REMOTE_RUNNER": "false",
                                "SEMAPHORE_HEARTBEAT_INTERVAL": "2.5",
                                "UNRELATED": "ignored"})
    assert (config.port, config.database_path) == (4000, "/var/x.db")
    assert config.use_remote_runner is False
    assert config.heartbeat_interval == 2.5


def test_file_values_are_read(write):
    path = write({"interface": "0.0.0.0", "port": 8080, "web_host": "https://hub.example",
                  "sqlite": {"host": "/data/hub.db"}, "use_remote_runner": False,
                  "runner_registration_token": "tok", "max_parallel_tasks": 3,
                  "heartbeat_interval": 1.5})
    config = load_config(path, {})
    assert config.interface == "0.0.0.0"
    assert config.port == 8080
    assert config.web_host == "https://hub.example"
    assert config.database_path == "/data/hub.db"
    assert config.use_remote_runner is False
    assert config.runner_registration_token == "tok"
    assert config.max_parallel_tasks == 3
    assert config.heartbeat_interval == 1.5
    assert config.session_ttl_sec == HubConfig().session_ttl_sec  # untouched: default


def test_environment_wins_over_file(write):
    path = write({"port": 8080, "sqlite": {"host": "/file.db"}, "use_remote_runner": True,
                  "web_host": "http://file", "max_task_duration_sec": 10})
    config = load_config(path, {"SEMAPHORE_PORT": "9090", "SEMAPHORE_DB_HOST": "/env.db",
                                "SEMAPHORE_USE_REMOTE_RUNNER": "off",
                                "SEMAPHORE_WEB_HOST": "http://env"})
    assert config.port == 9090
    assert config.database_path == "/env.db"
    assert config.use_remote_runner is False
    assert config.web_host == "http://env"
    assert config.max_task_duration_sec == 10  # no variable for it set: the file's value


@pytest.mark.parametrize(("raw", "expected"), [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True), (" on ", True),
    ("0", False), ("false", False), ("No", False), ("off", False), ("", False),
])
def test_bool_environment_values(raw, expected):
    assert load_config(None, {"SEMAPHORE_USE_REMOTE_RUNNER": raw}).use_remote_runner is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "enabled", "tru"])
def test_bad_bool_environment_value_names_the_variable(raw):
    with pytest.raises(ConfigError, match="SEMAPHORE_USE_REMOTE_RUNNER") as info:
        load_config(None, {"SEMAPHORE_USE_REMOTE_RUNNER": raw})
    assert repr(raw) in str(info.value)


@pytest.mark.parametrize(("name", "raw"), [
    ("SEMAPHORE_PORT", "http"), ("SEMAPHORE_PORT", "30.5"), ("SEMAPHORE_PORT", ""),
    ("SEMAPHORE_MAX_PARALLEL_TASKS", "many"), ("SEMAPHORE_HEARTBEAT_INTERVAL", "5s"),
    ("SEMAPHORE_SESSION_TTL_SEC", "1d"),
])
def test_bad_number_environment_value_names_the_variable(name, raw):
    with pytest.raises(ConfigError, match=name) as info:
        load_config(None, {name: raw})
    assert "number" in str(info.value)


@pytest.mark.parametrize(("content", "key"), [
    ({"bogus": 1}, "`bogus`"),
    ({"port": 3000, "sqlite": {"host": "x.db", "xxx": 1}}, "`sqlite.xxx`"),
    ({"sqlite": {"hots": "x.db"}}, "`sqlite.hots`"),
])
def test_unknown_key_is_named(write, content, key):
    path = write(content)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    message = str(info.value)
    assert "unknown" in message
    assert key in message
    assert path in message


@pytest.mark.parametrize(("content", "key"), [
    ({"port": "http"}, "`port`"),
    ({"port": True}, "`port`"),
    ({"port": 3000.5}, "`port`"),
    ({"use_remote_runner": "sometimes"}, "`use_remote_runner`"),
    ({"sqlite": {"host": 5}}, "`sqlite.host`"),
    ({"sqlite": "x.db"}, "`sqlite`"),
    ({"heartbeat_interval": "fast"}, "`heartbeat_interval`"),
    ({"interface": ["a"]}, "`interface`"),
])
def test_wrong_type_is_named(write, content, key):
    path = write(content)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert key in str(info.value)
    assert path in str(info.value)


@pytest.mark.parametrize("sqlite", ["x.db", None, [], 5])
def test_wrong_type_section_with_environment_override_is_config_error(write, sqlite):
    # The variable sets `sqlite.host`, but the file's `sqlite` is not an object.
    path = write({"sqlite": sqlite})
    with pytest.raises(ConfigError, match="sqlite"):
        load_config(path, {"SEMAPHORE_DB_HOST": "/env.db"})


@pytest.mark.parametrize("port", [0, -1, 65536, 100000])
def test_out_of_range_port_from_file(write, port):
    with pytest.raises(ConfigError, match="`port`") as info:
        load_config(write({"port": port}), {})
    assert str(port) in str(info.value)


@pytest.mark.parametrize("port", ["0", "65536"])
def test_out_of_range_port_from_environment(port):
    with pytest.raises(ConfigError, match="port"):
        load_config(None, {"SEMAPHORE_PORT": port})


@pytest.mark.parametrize("port", [1, 65535])
def test_port_range_bounds_are_accepted(write, port):
    assert load_config(write({"port": port}), {}).port == port


@pytest.mark.parametrize(("content", "key"), [
    ({"dialect": "postgres"}, "`dialect`"),
    ({"heartbeat_interval": 0}, "`heartbeat_interval`"),
    ({"runner_lost_timeout": -1}, "`runner_lost_timeout`"),
    ({"max_parallel_tasks": -1}, "`max_parallel_tasks`"),
    ({"max_task_duration_sec": -5}, "`max_task_duration_sec`"),
    ({"max_task_output_bytes": 0}, "`max_task_output_bytes`"),
    ({"heartbeat_interval": 100_000}, "`heartbeat_interval`"),  # runners take a day at most
    ({"http_header_timeout_sec": 0}, "`http_header_timeout_sec`"),
    ({"http_body_timeout_sec": -1}, "`http_body_timeout_sec`"),
    ({"http_keepalive_timeout_sec": 86_400}, "`http_keepalive_timeout_sec`"),
    ({"http_max_connections_per_address": -1}, "`http_max_connections_per_address`"),
    ({"http_max_connections_per_address": 1.5}, "`http_max_connections_per_address`"),
    ({"metrics": {"loop_probe_interval_sec": 0}}, "`metrics.loop_probe_interval_sec`"),
    ({"metrics": {"loop_probe_interval_sec": 120}}, "`metrics.loop_probe_interval_sec`"),
    ({"metrics": {"loop_lag_log_sec": 0}}, "`metrics.loop_lag_log_sec`"),
])
def test_out_of_range_values_are_named(write, content, key):
    with pytest.raises(ConfigError, match=key):
        load_config(write(content), {})


def test_http_limits_have_defaults_and_come_from_the_environment():
    config = load_config(None, {})
    assert (config.http_header_timeout_sec, config.http_body_timeout_sec,
            config.http_keepalive_timeout_sec, config.http_max_connections_per_address) == (
        10.0, 60.0, 75.0, 256)
    config = load_config(None, {"SEMAPHORE_HTTP_HEADER_TIMEOUT_SEC": "2.5",
                                "SEMAPHORE_HTTP_BODY_TIMEOUT_SEC": "30",
                                "SEMAPHORE_HTTP_KEEPALIVE_TIMEOUT_SEC": "5",
                                "SEMAPHORE_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "0"})
    assert (config.http_header_timeout_sec, config.http_body_timeout_sec,
            config.http_keepalive_timeout_sec, config.http_max_connections_per_address) == (
        2.5, 30.0, 5.0, 0)
    with pytest.raises(ConfigError, match="SEMAPHORE_HTTP_HEADER_TIMEOUT_SEC"):
        load_config(None, {"SEMAPHORE_HTTP_HEADER_TIMEOUT_SEC": "nan"})


def test_the_loop_probe_is_cheap_by_default_and_settable_from_the_environment():
    config = load_config(None, {})
    assert (config.metrics.loop_probe_interval_sec, config.metrics.loop_lag_log_sec) == (
        0.25, 0.5)
    config = load_config(None, {"SEMAPHORE_METRICS_LOOP_PROBE_INTERVAL_SEC": "0.01",
                                "SEMAPHORE_METRICS_LOOP_LAG_LOG_SEC": "0.02"})
    assert (config.metrics.loop_probe_interval_sec, config.metrics.loop_lag_log_sec) == (
        0.01, 0.02)
    with pytest.raises(ConfigError, match="SEMAPHORE_METRICS_LOOP_PROBE_INTERVAL_SEC"):
        load_config(None, {"SEMAPHORE_METRICS_LOOP_PROBE_INTERVAL_SEC": "nan"})


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert str(path) in str(info.value)
    assert "cannot read" in str(info.value)


def test_directory_instead_of_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path, {})


@pytest.mark.parametrize("content", ["{port: 3000}", "", "{\"port\": 3000", "port=3000"])
def test_file_that_is_not_json(write, content):
    path = write(content)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert path in str(info.value)
    assert "not valid JSON" in str(info.value)


@pytest.mark.parametrize("content", ["[]", '[{"port": 3000}]', "3000", '"x"', "null"])
def test_file_that_is_not_a_json_object(write, content):
    path = write(content)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert path in str(info.value)
    assert "JSON object" in str(info.value)
