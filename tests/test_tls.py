"""TLS between runners and the hub: real sockets, certificates made at test time by trustme."""

import asyncio
import base64
import json
import ssl
import time
import urllib.request
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path

import pytest
import trustme
from structlog.testing import capture_logs

from agent.config import RunnerConfig, RunnerConfigError, RunnerSection
from agent.registration import RegistrationError, register
from agent.tls import client_ssl_context, is_loopback, warn_if_plaintext
from hub.config import ConfigError, TlsConfig
from hub.tls import server_ssl_context
from tests.hubkit import REGISTRATION_TOKEN, InProcessRunner, start_hub, write_script
from tests.test_cli_e2e import Client, free_port, semaphore, spawn


@dataclass
class Pki:
    ca: trustme.CA
    ca_file: Path  # the CA's certificate, what a runner's server_ca_cert_file names
    cert_file: Path  # the hub's certificate (127.0.0.1 and localhost)
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    pki = Pki(ca, folder / "ca.pem", folder / "hub.pem", folder / "hub.key")
    ca.cert_pem.write_to_path(str(pki.ca_file))
    for number, pem in enumerate(leaf.cert_chain_pems):
        pem.write_to_path(str(pki.cert_file), append=number > 0)
    leaf.private_key_pem.write_to_path(str(pki.key_file))
    return pki


@pytest.fixture
async def tls_hub(tmp_path, pki):
    context = server_ssl_context(TlsConfig(True, str(pki.cert_file), str(pki.key_file)))
    running = await start_hub(tmp_path, ssl_context=context, client_ssl=pki.client_context())
    yield running
    await running.close()


def runner_config(web_host: str, **runner: object) -> RunnerConfig:
    return RunnerConfig(web_host=web_host, runner=RunnerSection(
        registration_token=REGISTRATION_TOKEN, **runner))


async def hello_task(hub, tmp_path: Path) -> tuple[object, int, int]:
    """A project with a one-line script template; returns (api, project, template)."""
    api = await hub.api()
    scripts = tmp_path / "scripts"
    write_script(scripts, "hello.sh", 'echo "hello over tls"\n')
    project = await api.project()
    return api, project, await api.template(project, scripts, "hello.sh")


# The hub's server context.


def test_server_context_is_off_without_tls_and_tls12_plus_with_it(pki):
    assert server_ssl_context(TlsConfig()) is None
    context = server_ssl_context(TlsConfig(True, str(pki.cert_file), str(pki.key_file)))
    assert context is not None and context.minimum_version >= ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(("cert", "key", "named"), [
    ("", "", "tls.cert_file"),
    ("CERT", "", "tls.key_file"),
    ("CERT", "missing.key", "tls.key_file"),
    ("missing.pem", "KEY", "tls.cert_file"),
])
def test_server_context_names_the_key_and_file_that_is_wrong(pki, tmp_path, cert, key, named):
    files = {"CERT": str(pki.cert_file), "KEY": str(pki.key_file)}
    cert = files.get(cert, str(tmp_path / cert) if cert else "")
    key = files.get(key, str(tmp_path / key) if key else "")
    with pytest.raises(ConfigError) as caught:
        server_ssl_context(TlsConfig(True, cert, key))
    message = str(caught.value)
    assert f"`{named}`" in message
    wrong = cert if named == "tls.cert_file" else key
    assert not wrong or wrong in message


def test_server_context_refuses_a_key_that_is_not_the_certificates(pki, tmp_path):
    other = trustme.CA().issue_cert("127.0.0.1")
    other.private_key_pem.write_to_path(str(tmp_path / "other.key"))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    for cert, key in ((pki.cert_file, tmp_path / "other.key"),
                      (tmp_path / "junk.pem", pki.key_file)):
        with pytest.raises(ConfigError, match=r"tls\.cert_file.*tls\.key_file") as caught:
            server_ssl_context(TlsConfig(True, str(cert), str(key)))
        assert str(cert) in str(caught.value) and str(key) in str(caught.value)


# The runner's client context.


def test_client_context_uses_system_store_or_the_configured_ca(pki):
    default = client_ssl_context(runner_config("https://hub.example"))
    assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname
    pinned = client_ssl_context(runner_config("https://hub.example",
                                              server_ca_cert_file=str(pki.ca_file)))
    assert pinned.verify_mode == ssl.CERT_REQUIRED and pinned.check_hostname
    # Only the configured CA, not the system store as well.
    ca_der = ssl.PEM_cert_to_DER_cert(pki.ca.cert_pem.bytes().decode())
    assert pinned.get_ca_certs(binary_form=True) == [ca_der]


def test_client_context_names_an_unreadable_or_bad_ca_file(tmp_path):
    missing = tmp_path / "nope.pem"
    with pytest.raises(RunnerConfigError, match=r"runner\.server_ca_cert_file") as caught:
        client_ssl_context(runner_config("https://h", server_ca_cert_file=str(missing)))
    assert str(missing) in str(caught.value)
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    with pytest.raises(RunnerConfigError, match=r"runner\.server_ca_cert_file") as caught:
        client_ssl_context(runner_config("https://h", server_ca_cert_file=str(junk)))
    assert str(junk) in str(caught.value)


def test_skip_tls_verify_turns_checks_off_and_says_so_every_time():
    config = runner_config("https://hub.example", skip_tls_verify=True)
    with capture_logs() as logs:
        for _ in range(2):
            context = client_ssl_context(config)
            assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    events = [e for e in logs if e["event"] == "runner.tls.unverified"]
    assert len(events) == 2 and all(e["log_level"] == "warning" for e in events)


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("LOCALHOST", True), ("127.0.0.1", True), ("127.8.9.10", True),
    ("::1", True), ("::ffff:127.0.0.1", True), ("10.255.255.1", False),
    ("hub.example.com", False), ("128.0.0.1", False), ("", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("web_host", "warned"), [
    ("http://10.255.255.1:9", True), ("http://hub.example.com", True),
    ("http://127.0.0.1:3000", False), ("http://localhost:3000", False),
    ("http://[::1]:3000", False), ("https://10.255.255.1:9", False),
])
def test_plaintext_to_another_machine_is_warned(web_host, warned):
    with capture_logs() as logs:
        assert warn_if_plaintext(runner_config(web_host)) is warned
    plaintext = [e for e in logs if e["event"] == "runner.tls.plaintext"]
    assert len(plaintext) == int(warned)
    if warned:
        assert plaintext[0]["log_level"] == "warning"
        assert "clear text" in plaintext[0]["message"] and "token" in plaintext[0]["message"]


def test_runner_start_warns_about_plaintext_before_connecting(tmp_path):
    config = tmp_path / "config.runner.json"
    # Another host, never reached: `.invalid` names do not resolve (no traffic leaves).
    config.write_text(json.dumps({"web_host": "http://hub.invalid:9", "runner": {
        "token": "some-token", "tmp_path": str(tmp_path / "work"), "allow_root_tasks": True}}))
    log = tmp_path / "runner.log"
    runner = spawn("runner", "start", "--config", str(config), log=log)
    try:
        deadline = time.monotonic() + 20
        while '"runner.starting"' not in log.read_text():
            assert time.monotonic() < deadline and runner.poll() is None, log.read_text()
            time.sleep(0.05)
    finally:
        runner.kill()  # it would keep retrying an address nobody answers on
        runner.wait(10)
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()
              if line.startswith("{")]
    assert events.index("runner.tls.plaintext") < events.index("runner.starting")
    assert "runner.tls.unverified" not in events


# Real sessions over TLS.


async def test_runner_trusting_the_hub_ca_registers_and_runs_a_task_over_wss(tls_hub, pki,
                                                                             tmp_path):
    assert tls_hub.base_url.startswith("https://")
    config = runner_config(tls_hub.base_url, server_ca_cert_file=str(pki.ca_file))
    with capture_logs() as logs:
        token, release_key = await asyncio.to_thread(register, config)
        context = client_ssl_context(config)
    # The hub's release key (updates are checked against it) comes over the same TLS.
    assert len(base64.b64decode(release_key)) == 32
    assert not [e for e in logs if e["event"].startswith("runner.tls.")]
    assert config.websocket_url().startswith("wss://127.0.0.1:")
    runner = InProcessRunner(config.websocket_url(), token, tmp_path / "work", "tls", [], 0,
                             2.0, ssl_context=context)
    await runner.start()
    tls_hub.runners.append(runner)
    api, project, template = await hello_task(tls_hub, tmp_path)
    task = await api.wait_status(project, await api.run(project, template))
    assert task["status"] == "success", task
    assert await api.raw_output(project, task["id"]) == "hello over tls\n"


async def test_runner_trusting_only_the_system_store_is_refused_and_runs_nothing(tls_hub,
                                                                                 tmp_path):
    config = runner_config(tls_hub.base_url)
    with pytest.raises(RegistrationError, match="certificate") as caught:
        await asyncio.to_thread(register, config)
    assert "runner.server_ca_cert_file" in str(caught.value)

    # Even with a token got another way, the websocket is never opened.
    token = await tls_hub.register("untrusting")
    runner = InProcessRunner(config.websocket_url(), token, tmp_path / "work", "untrusting",
                             [], 0, 2.0, ssl_context=client_ssl_context(config))
    tls_hub.runners.append(runner)
    api, project, template = await hello_task(tls_hub, tmp_path)
    task_id = await api.run(project, template)
    with capture_logs() as logs:
        with pytest.raises(AssertionError, match="did not connect"):
            await runner.start(timeout=2.0)
    failures = [e for e in logs if e["event"] == "runner.connect.failed"]
    assert failures and all("CERTIFICATE_VERIFY_FAILED" in e["error"] for e in failures)
    assert (await api.task(project, task_id))["status"] == "waiting"
    assert [r["online"] for r in await api.ok("GET", "/api/runners")] == [False]


async def test_skip_tls_verify_connects_and_warns(tls_hub, tmp_path):
    config = runner_config(tls_hub.base_url, skip_tls_verify=True)
    with capture_logs() as logs:
        token, _ = await asyncio.to_thread(register, config)
        runner = InProcessRunner(config.websocket_url(), token, tmp_path / "work", "skip", [],
                                 0, 2.0, ssl_context=client_ssl_context(config))
        await runner.start()
        tls_hub.runners.append(runner)
    warnings = [e for e in logs if e["event"] == "runner.tls.unverified"]
    assert len(warnings) == 2  # registration, then the session
    assert any(e["event"] == "runner.connected" for e in logs)


# The commands, as separate processes.


def test_server_with_tls_and_a_missing_key_file_stops_naming_it(tmp_path, pki):
    missing = tmp_path / "gone.key"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"port": free_port(),
                                  "sqlite": {"host": str(tmp_path / "db.sqlite")},
                                  "tls": {"enabled": True, "cert_file": str(pki.cert_file),
                                          "key_file": str(missing)}}))
    result = semaphore("server", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert "tls.key_file" in result.stderr and str(missing) in result.stderr
    assert "Traceback" not in result.stderr and "listening" not in result.stdout




def test_cli_server_and_runner_over_tls_run_a_task(tmp_path, pki, processes):
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "port": port, "sqlite": {"host": str(tmp_path / "db.sqlite")},
        "runner_registration_token": "reg-tls", "tmp_path": str(tmp_path / "hubtmp"),
        "tls": {"enabled": True, "cert_file": str(pki.cert_file),
                "key_file": str(pki.key_file)}}))
    created = semaphore("user", "add", "--config", str(config), "--admin", "--login", "ops",
                        "--password", "pw-123456", "--name", "Ops", "--email", "ops@x.io")
    assert created.returncode == 0, created.stderr
    hub_log = tmp_path / "hub.log"
    processes.append(hub := spawn("server", "--config", str(config), log=hub_log))
    client = Client(base)
    client.opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(CookieJar()),
        urllib.request.HTTPSHandler(context=pki.client_context()))
    deadline = time.monotonic() + 30
    while True:
        try:
            assert client.call("GET", "/api/ping") == "pong"
            break
        except OSError:
            assert hub.poll() is None, hub_log.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert f"listening on {base}" in hub_log.read_text()

    runner_config_file = tmp_path / "runner" / "config.runner.json"
    setup = semaphore("runner", "setup", "--config", str(runner_config_file),
                      "--non-interactive", "--web-host", base, "--registration-token", "reg-tls",
                      "--name", "tls-1", "--tmp-path", str(tmp_path / "work"),
                      "--allow-root-tasks")
    assert setup.returncode == 0, setup.stderr
    stored = json.loads(runner_config_file.read_text())
    stored["runner"]["server_ca_cert_file"] = str(pki.ca_file)
    runner_config_file.write_text(json.dumps(stored))
    register_result = semaphore("runner", "register", "--config", str(runner_config_file))
    assert register_result.returncode == 0, register_result.stderr
    assert "runner.tls." not in register_result.stderr
    runner_log = tmp_path / "runner.log"
    processes.append(spawn("runner", "start", "--config", str(runner_config_file),
                           log=runner_log))

    client.call("POST", "/api/auth/login", {"auth": "ops", "password": "pw-123456"})
    deadline = time.monotonic() + 30
    while not client.call("GET", "/api/runners")[0]["online"]:
        assert time.monotonic() < deadline, runner_log.read_text()
        time.sleep(0.1)
    scripts = tmp_path / "scripts"
    write_script(scripts, "hello.sh", 'echo "hello over tls"\n')
    pid = client.call("POST", "/api/projects", {"name": "tls"})["id"]
    repo = client.call("POST", f"/api/project/{pid}/repositories",
                       {"name": "local", "git_url": str(scripts)})["id"]
    template = client.call("POST", f"/api/project/{pid}/templates", {
        "name": "hello", "app": "bash", "playbook": "hello.sh", "repository_id": repo})["id"]
    task = client.call("POST", f"/api/project/{pid}/tasks", {"template_id": template})
    done = client.wait_task(pid, task["id"], {"success", "error"})
    assert done["status"] == "success", runner_log.read_text()
    output = client.call("GET", f"/api/project/{pid}/tasks/{task['id']}/raw_output")
    assert output == "hello over tls\n"
    logs = runner_log.read_text()
    assert f'"url": "wss://127.0.0.1:{port}/api/internal/runners/ws"' in logs
    assert "runner.tls." not in logs
