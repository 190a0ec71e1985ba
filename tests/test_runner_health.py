"""The runner's own health address (runner.health_addr / --health-addr): a real hub, a real
runner process reaching it through a cutting proxy, and plain HTTP to /health and /metrics."""

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from protocol.version import PACKAGE_VERSION
from tests.faults import ROOT, free_port, semaphore, wait_until, write_script
from tests.lab import stored_lines

HEARTBEAT = 0.5


def get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    """(status, content type, body) of a request to the runner's health address."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.headers.get("Content-Type", ""), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def health(base: str) -> tuple[int, dict]:
    status, kind, body = get(base + "/health")
    assert kind == "application/json", (status, kind, body)
    return status, json.loads(body)


def metrics(base: str) -> dict[str, float]:
    """Every sample of /metrics as `name{label="value"}` (labels sorted) -> value."""
    status, kind, body = get(base + "/metrics")
    assert status == 200 and kind.startswith("text/plain; version=0.0.4"), (status, kind)
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_health_and_metrics_follow_the_session_tasks_and_a_reconnect(lab):
    hub = lab.hub(heartbeat_interval=HEARTBEAT, runner_lost_timeout=60)
    proxy = lab.proxy(hub.port)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    runner, rest, project = lab.online_runner(hub, "healthy", web_host=proxy.url,
                                              health_addr=f"127.0.0.1:{port}")

    status, body = wait_until(lambda: (found := health(base))[1]["connected"] and found,
                              30, message=lab.logs)
    assert status == 200, body
    assert body["status"] == "ok" and body["version"] == PACKAGE_VERSION, body
    assert body["connected_since"].endswith("Z") and body["last_hub_contact"], body
    assert body["tasks_running"] == 0, body
    first = metrics(base)
    assert first[f'semaphore_runner_info{{version="{PACKAGE_VERSION}"}}'] == 1
    assert first["semaphore_runner_connected"] == 1
    assert first["semaphore_runner_connected_since_seconds"] > 0
    assert first["semaphore_runner_reconnects_total"] == 0
    assert first["semaphore_runner_tasks_running"] == 0
    assert first['semaphore_runner_tasks_finished_total{status="success"}'] == 0
    assert first['semaphore_runner_tasks_finished_total{status="error"}'] == 0
    # The hub's heartbeat interval (its welcome) paces them: more come without a task.
    wait_until(lambda: metrics(base)["semaphore_runner_heartbeats_sent_total"]
               > first["semaphore_runner_heartbeats_sent_total"], 30, message=lab.logs)

    # A task that prints until told to end: it goes on printing while the hub is away, so
    # its output waits in the spool, unacked, and it ends while the runner is cut off.
    flag = lab.folder / "end-now"
    write_script(lab.scripts, "ticks.sh",
                 f'while [ ! -e "{flag}" ]; do echo tick; sleep 0.1; done\necho done\n')
    template = rest.template(project, lab.scripts, "ticks.sh")
    task = rest.run(project, template)
    wait_until(lambda: stored_lines(rest, project, task) >= 1, 60, message=lab.logs)
    running = metrics(base)
    assert running["semaphore_runner_tasks_running"] == 1
    assert health(base)[1]["tasks_running"] == 1

    # The hub out of reach: disconnected at once, 503 after three heartbeat intervals.
    proxy.pause()
    status, body = wait_until(lambda: (found := health(base))[0] == 503 and found, 30,
                              message=lab.logs)
    assert body["status"] == "disconnected" and body["connected"] is False, body
    assert body["connected_since"] is None and body["last_hub_contact"], body
    cut = wait_until(lambda: (m := metrics(base))["semaphore_runner_frames_unacked"] > 0
                     and m["semaphore_runner_spool_bytes"] > 0 and m, 30, message=lab.logs)
    assert cut["semaphore_runner_connected"] == 0
    assert cut["semaphore_runner_connected_since_seconds"] == 0
    flag.touch()
    # Counted when it ends here, before the hub hears of it.
    wait_until(lambda: metrics(base)['semaphore_runner_tasks_finished_total{status="success"}']
               == 1, 60, message=lab.logs)

    proxy.resume()
    status, body = wait_until(lambda: (found := health(base))[1]["connected"] and found, 60,
                              message=lab.logs)
    assert status == 200 and body["status"] == "ok", body
    done = rest.wait_status(project, task, logs=lab.logs)
    assert done["status"] == "success", (done, lab.logs())
    # The spooled output reached the hub: acked, the spool empty.
    back = wait_until(lambda: (m := metrics(base))["semaphore_runner_frames_unacked"] == 0
                      and m["semaphore_runner_spool_bytes"] == 0 and m, 30, message=lab.logs)
    assert back["semaphore_runner_reconnects_total"] == 1
    assert back['semaphore_runner_tasks_finished_total{status="success"}'] == 1
    assert back['semaphore_runner_tasks_finished_total{status="error"}'] == 0
    assert back["semaphore_runner_tasks_running"] == 0
    assert back["semaphore_runner_last_hub_contact_seconds"] >= (
        first["semaphore_runner_last_hub_contact_seconds"])
    assert rest.raw_output(project, task).endswith("tick\ndone\n")

    # Only GET and HEAD, only these two paths.
    assert get(base + "/nothing")[0] == 404
    assert get(base + "/health", method="POST")[0] == 405
    head = get(base + "/metrics", method="HEAD")
    assert head[0] == 200 and head[2] == b"", head
    assert runner.alive()


def _start_config(folder: Path, **runner: object) -> Path:
    """A runner config with a token, for `runner start` to get as far as serving health."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.runner.json"
    path.write_text(json.dumps({
        "web_host": f"http://127.0.0.1:{free_port()}",
        "runner": {"token": "not-checked-before-connecting", "tmp_path": str(folder / "work"),
                   "allow_root_tasks": True, **runner}}))
    path.chmod(0o600)
    return path


def test_a_bad_health_addr_ends_the_start_naming_the_key(tmp_path):
    bad = ("9102", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "::1:9102",
           "[nonsense]:9102", "bad host:9102")
    for number, value in enumerate(bad):
        config = _start_config(tmp_path / f"c{number}", health_addr=value)
        result = semaphore("runner", "start", "--config", str(config), timeout=30)
        assert result.returncode == 1, (value, result.stderr)
        assert "`runner.health_addr`" in result.stderr and str(config) in result.stderr, (
            value, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
    config = _start_config(tmp_path / "flag")
    result = semaphore("runner", "start", "--config", str(config), "--health-addr", "x:y",
                       timeout=30)
    assert result.returncode == 1 and "--health-addr" in result.stderr, result.stderr


def test_a_health_addr_in_use_ends_the_start_naming_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        config = _start_config(tmp_path / "taken", health_addr=addr)
        result = semaphore("runner", "start", "--config", str(config), timeout=30)
    assert result.returncode == 1, result.stderr
    assert f"runner.health_addr {addr}" in result.stderr, result.stderr
    assert "in use" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_the_flag_serves_on_ipv6_loopback(tmp_path, processes):
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    config = _start_config(tmp_path / "v6")
    log = tmp_path / "runner.log"
    with open(log, "wb") as out:
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "runner", "start", "--config", str(config),
             "--health-addr", f"[::1]:{port}"], cwd=ROOT, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))

    def answers() -> tuple[int, dict] | None:
        try:
            return health(f"http://[::1]:{port}")
        except urllib.error.URLError:
            assert processes[0].poll() is None, log.read_text()
            return None

    status, body = wait_until(answers, 30, message=lambda: log.read_text())
    # No hub at web_host: never connected, so not yet unhealthy only for 3 intervals.
    assert body["connected"] is False and body["status"] == "disconnected", body
    assert body["connected_since"] is None and body["last_hub_contact"] is None, body
    assert status in (200, 503)
    assert "runner.health.listening" in log.read_text()


def test_setup_keeps_the_health_addr_of_an_existing_config(tmp_path):
    config = _start_config(tmp_path / "kept", health_addr="[::1]:9102")
    result = semaphore("runner", "setup", "--config", str(config), "--non-interactive",
                       "--name", "renamed", timeout=30)
    assert result.returncode == 0, result.stderr
    runner = json.loads(config.read_text())["runner"]
    assert runner["health_addr"] == "[::1]:9102" and runner["name"] == "renamed", runner
