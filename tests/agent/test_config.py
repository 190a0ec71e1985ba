"""The runner's config file: loading, validation, saving (0600), URLs and the token."""

import json
import stat

import pytest

from agent.config import (
    RunnerConfig,
    RunnerConfigError,
    RunnerSection,
    load_runner_config,
    save_runner_config,
)

FULL = {
    "web_host": "https://hub.example.com",
    "runner": {"registration_token": "reg", "token": "tok", "token_file": "/etc/token",
               "max_parallel_tasks": 3, "tmp_path": "/var/lib/runner", "webhook": "http://w",
               "private_key_file": "/etc/key", "name": "web-1", "tags": ["prod", "eu"]},
}


@pytest.fixture
def write(tmp_path):
    def write(content) -> str:
        path = tmp_path / "config.runner.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return str(path)
    return write


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_full_config_is_read(write):
    config = load_runner_config(write(FULL))
    assert config.web_host == "https://hub.example.com"
    assert config.runner == RunnerSection(
        registration_token="reg", token="tok", token_file="/etc/token", max_parallel_tasks=3,
        tmp_path="/var/lib/runner", webhook="http://w", private_key_file="/etc/key",
        name="web-1", tags=["prod", "eu"])
    assert config.display_name == "web-1"


def test_omitted_keys_take_defaults(write):
    config = load_runner_config(write({"web_host": "http://hub:3000"}))
    assert config.runner == RunnerSection()
    assert config.runner.max_parallel_tasks == 1
    assert config.runner.tags == []
    assert config.display_name  # falls back to the host name


def test_save_then_load_round_trips_with_mode_0600(tmp_path):
    path = tmp_path / "etc" / "semaphore" / "config.runner.json"
    config = RunnerConfig(web_host="http://hub:3000/prefix", runner=RunnerSection(
        registration_token="r", token="secret", max_parallel_tasks=4, name="n",
        tags=["a", "b"]))
    save_runner_config(path, config)
    assert _mode(path) == 0o600
    assert load_runner_config(path) == config
    assert json.loads(path.read_text())["runner"]["token"] == "secret"
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.runner.json"]


def test_save_replaces_a_readable_file_with_a_private_one(tmp_path):
    path = tmp_path / "config.runner.json"
    path.write_text(json.dumps(FULL))
    path.chmod(0o644)
    config = RunnerConfig(web_host="https://other", runner=RunnerSection(token="new"))
    save_runner_config(path, config)
    assert _mode(path) == 0o600
    assert load_runner_config(path) == config


def test_missing_file_tells_how_to_create_it(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(RunnerConfigError) as info:
        load_runner_config(path)
    message = str(info.value)
    assert "`semaphore runner setup" in message
    assert str(path) in message


def test_unreadable_path_is_runner_config_error(tmp_path):
    with pytest.raises(RunnerConfigError, match="cannot read"):
        load_runner_config(tmp_path)


@pytest.mark.parametrize("content", ["", "{", "web_host=http://h", "{'web_host': 'http://h'}",
                                     "\udcff"])
def test_file_that_is_not_json(tmp_path, content):
    path = tmp_path / "config.runner.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(RunnerConfigError) as info:
        load_runner_config(path)
    assert str(path) in str(info.value)
    assert "not valid JSON" in str(info.value)


@pytest.mark.parametrize(("content", "key"), [
    ({"web_host": "http://h", "runner": {"bogus": 1}}, "`runner.bogus`"),
    ({"web_host": "http://h", "runner": {"name": "n", "tokenfile": "/x"}}, "`runner.tokenfile`"),
    ({"web_host": "http://h", "extra": 1}, "`extra`"),
])
def test_unknown_key_is_named(write, content, key):
    path = write(content)
    with pytest.raises(RunnerConfigError) as info:
        load_runner_config(path)
    assert "unknown" in str(info.value)
    assert key in str(info.value)
    assert path in str(info.value)


@pytest.mark.parametrize(("content", "key"), [
    ({"web_host": "http://h", "runner": {"tags": "prod"}}, "`runner.tags`"),
    ({"web_host": "http://h", "runner": {"max_parallel_tasks": "2"}},
     "`runner.max_parallel_tasks`"),
    ({"web_host": "http://h", "runner": {"tags": ["a", 1]}}, "`runner.tags[1]`"),
    ({"web_host": "http://h", "runner": None}, "`runner`"),
    ({"web_host": 3000}, "`web_host`"),
])
def test_wrong_type_is_named(write, content, key):
    path = write(content)
    with pytest.raises(RunnerConfigError) as info:
        load_runner_config(path)
    assert key in str(info.value)
    assert path in str(info.value)


@pytest.mark.parametrize("content", ["[]", "[1]", "3", "null"])
def test_file_that_is_not_an_object(write, content):
    path = write(content)
    with pytest.raises(RunnerConfigError, match="object") as info:
        load_runner_config(path)
    assert path in str(info.value)


@pytest.mark.parametrize("web_host", ["", "hub:3000", "ftp://hub", "ws://hub:3000", "http://",
                                      "hub.example.com"])
def test_bad_web_host_is_refused(write, web_host):
    path = write({"web_host": web_host})
    with pytest.raises(RunnerConfigError, match="`web_host`") as info:
        load_runner_config(path)
    assert path in str(info.value)
    assert repr(web_host) in str(info.value)


@pytest.mark.parametrize(("runner", "key"), [
    ({"max_parallel_tasks": -1}, "`runner.max_parallel_tasks`"),
    ({"tmp_path": "relative/work"}, "`runner.tmp_path`"),
])
def test_bad_runner_values_are_named(write, runner, key):
    with pytest.raises(RunnerConfigError) as info:
        load_runner_config(write({"web_host": "http://h", "runner": runner}))
    assert key in str(info.value)


@pytest.mark.parametrize(("web_host", "url"), [
    ("http://hub:3000", "ws://hub:3000/api/internal/runners/ws"),
    ("http://hub:3000/", "ws://hub:3000/api/internal/runners/ws"),
    ("https://hub.example.com", "wss://hub.example.com/api/internal/runners/ws"),
    ("https://hub.example.com/semaphore", "wss://hub.example.com/semaphore/api/internal/runners/ws"),
    ("https://hub.example.com/semaphore/", "wss://hub.example.com/semaphore/api/internal/runners/ws"),
    ("http://10.0.0.1:8080/a/b", "ws://10.0.0.1:8080/a/b/api/internal/runners/ws"),
])
def test_websocket_url(write, web_host, url):
    config = load_runner_config(write({"web_host": web_host}))
    assert config.websocket_url() == url


def test_api_url_joins_without_double_slash():
    config = RunnerConfig(web_host="https://hub.example.com/semaphore/")
    assert config.api_url("/api/ping") == "https://hub.example.com/semaphore/api/ping"


def test_read_token_inline(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    config = RunnerConfig(web_host="http://h", runner=RunnerSection(
        token="inline", token_file=str(token_file)))
    assert config.read_token(tmp_path / "c.json") == "inline"


def test_read_token_from_token_file(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("  from-file\n\n")
    config = RunnerConfig(web_host="http://h", runner=RunnerSection(token_file=str(token_file)))
    assert config.read_token(tmp_path / "c.json") == "from-file"


def test_read_token_when_there_is_none(tmp_path):
    assert RunnerConfig(web_host="http://h").read_token(tmp_path / "c.json") == ""
    missing = RunnerConfig(web_host="http://h",
                           runner=RunnerSection(token_file=str(tmp_path / "absent")))
    assert missing.read_token(tmp_path / "c.json") == ""


def test_unreadable_token_file_names_it(tmp_path):
    config = RunnerConfig(web_host="http://h", runner=RunnerSection(token_file=str(tmp_path)))
    with pytest.raises(RunnerConfigError) as info:
        config.read_token(tmp_path / "c.json")
    assert "runner.token_file" in str(info.value)
    assert str(tmp_path) in str(info.value)
