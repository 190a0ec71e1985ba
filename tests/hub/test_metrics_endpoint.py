"""GET /metrics and /api/metrics, /api/health and /api/ready, through a real hub with a real
runner: counters move by exactly what the tasks did, access is an admin's or the scrape
token's (or anyone's when configured), and readiness follows a database that cannot be
written (made immutable with chattr +i, which stops writes for root too)."""

import asyncio
import base64
import gc
import json
import shutil
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import aiohttp
import structlog
from prometheus_client.parser import text_string_to_metric_families

from protocol.codec import decode_hub_frame, encode
from protocol.frames import Error, Hello, Welcome
from protocol.version import PROTOCOL_VERSION
from tests.hub.test_accounts_security import make_user
from tests.hub.test_integrations import PUSH, post, signed
from tests.hub.test_integrations import _github_integration as github_integration
from tests.hub.test_integrations import _project as integration_project
from tests.hub.test_schedules import _manual_clock as manual_clock
from tests.hub.test_schedules import _next_minute as next_minute
from tests.hubkit import start_hub, write_script

SCRAPE_TOKEN = "scrape-token-for-tests-0123456789"


def parse(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a scrape."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    return sum(v for (n, have), v in samples.items()
               if n == name and set(labels.items()) <= set(have))


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


async def get(hub, path: str, headers: dict | None = None) -> tuple[int, str, str]:
    """(status, body, content type), with no cookie."""
    async with aiohttp.ClientSession() as session, session.get(
            hub.base_url + path, headers=headers or {}) as response:
        return response.status, await response.text(), response.headers.get("Content-Type", "")


async def scrape(api) -> dict:
    status, text = await api.request("GET", "/metrics")
    assert status == 200, text
    return parse(text)


async def test_counters_follow_three_tasks_exactly(hub, api, tmp_path):
    scripts = tmp_path / "s"
    write_script(scripts, "ok.sh", "echo one\necho two\nprintf 'caf\\xc3\\xa9\\n'\n")
    write_script(scripts, "bad.sh", "echo failing\nexit 3\n")
    write_script(scripts, "long.sh", "echo started\nsleep 60\n")
    await hub.start_runner(tmp_path)
    pid = await api.project()
    templates = [await api.template(pid, scripts, name)
                 for name in ("ok.sh", "bad.sh", "long.sh")]
    before = await scrape(api)

    ok = await api.run(pid, templates[0])
    assert (await api.wait_status(pid, ok))["status"] == "success"
    bad = await api.run(pid, templates[1])
    assert (await api.wait_status(pid, bad))["status"] == "error"
    long = await api.run(pid, templates[2])
    await api.wait_status(pid, long, statuses={"running"})
    for _ in range(600):  # its first line is stored, so it surely ran (30 s at most)
        if "started" in await api.raw_output(pid, long):
            break
        await asyncio.sleep(0.05)
    await api.ok("POST", f"/api/project/{pid}/tasks/{long}/stop", status=204)
    assert (await api.wait_status(pid, long))["status"] == "stopped"
    await hub.hub.writer.flush()
    after = await scrape(api)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    for status in ("success", "error", "stopped"):
        assert moved("semaphore_hub_tasks_finished_total", app="bash", status=status) == 1
        assert moved("semaphore_tasks_total", status=status) == 1
        assert moved("semaphore_hub_task_duration_seconds_count", app="bash",
                     status=status) == 1
    assert moved("semaphore_hub_tasks_created_total", source="api") == 3
    assert moved("semaphore_hub_tasks_created_total", source="schedule") == 0
    assert moved("semaphore_hub_dispatch_latency_seconds_count", stage="assigned") == 3
    assert moved("semaphore_hub_dispatch_latency_seconds_count", stage="accepted") == 3

    stored = [await api.raw_output(pid, task) for task in (ok, bad, long)]
    assert "café" in stored[0]
    assert moved("semaphore_hub_output_bytes_total") == sum(len(s.encode()) for s in stored)
    assert moved("semaphore_hub_output_lines_total") == sum(s.count("\n") for s in stored)
    frames = moved("semaphore_hub_output_frames_total")
    assert frames >= 3 and frames == moved("semaphore_hub_frames_received_total",
                                           type="output")
    assert moved("semaphore_hub_frames_received_total", type="accepted") == 3
    assert moved("semaphore_hub_frames_received_total", type="finished") == 3
    assert moved("semaphore_hub_frames_sent_total", type="assign") == 3
    assert moved("semaphore_hub_frames_sent_total", type="cancel") == 1
    assert moved("semaphore_hub_db_write_batch_rows_sum") == frames

    # Live state, read at scrape time.
    assert value(after, "semaphore_hub_runners", state="online", scope="global") == 1
    assert value(after, "semaphore_hub_runner_sessions") == 1
    assert value(after, "semaphore_hub_tasks", status="running") == 0
    assert value(after, "semaphore_hub_queue_waiting_tasks") == 0
    assert value(after, "semaphore_hub_queue_oldest_waiting_seconds") == 0
    assert value(after, "semaphore_hub_ready") == 1
    assert value(after, "semaphore_tasks_running") == 0
    assert total(after, "semaphore_hub_info") == 1
    assert total(after, "process_resident_memory_bytes") > 0
    assert total(after, "semaphore_hub_event_loop_lag_seconds_count") >= 0

    # No id of a task or runner in any label: every label value is from a small fixed set.
    ids = {str(task) for task in (ok, bad, long)} | {str(pid)}
    allowed = {"version", "state", "scope", "status", "source", "app", "stage", "type", "code",
               "le", "implementation", "major", "minor", "patchlevel", "generation"}
    for (_, labels) in after:
        for label, label_value in labels:
            assert label in allowed, label
            if label == "generation":  # the collector's three: 0, 1, 2
                assert label_value in ("0", "1", "2"), label_value
            elif label not in ("le", "version", "major", "minor", "patchlevel"):
                assert label_value not in ids, (label, label_value)


async def test_waiting_task_shows_in_the_queue_gauges(hub, api):
    pid = await api.project()
    task = await api.run(pid, await api.template(pid, None, "x.sh", runner_tag="nobody"))
    await asyncio.sleep(0.2)
    samples = await scrape(api)
    assert value(samples, "semaphore_hub_queue_waiting_tasks") == 1
    assert value(samples, "semaphore_hub_tasks", status="waiting") == 1
    assert value(samples, "semaphore_hub_queue_oldest_waiting_seconds") >= 0.2
    assert value(samples, "semaphore_hub_dispatch_latency_seconds_count",
                 stage="assigned") == 0
    await api.ok("POST", f"/api/project/{pid}/tasks/{task}/stop", status=204)
    samples = await scrape(api)
    assert value(samples, "semaphore_hub_queue_waiting_tasks") == 0
    # Stopped before it started: counted as finished, with no duration.
    assert value(samples, "semaphore_hub_tasks_finished_total", app="bash",
                 status="stopped") == 1
    assert value(samples, "semaphore_hub_task_duration_seconds_count", app="bash",
                 status="stopped") == 0


async def test_refusals_are_counted(hub, api):
    stranger = await hub.api(login=False)
    status, _ = await stranger.request("POST", "/api/auth/login",
                                       {"auth": "admin", "password": "wrong-password"})
    assert status == 401
    status, _ = await stranger.request("POST", "/api/internal/runners",
                                       {"registration_token": "wrong"})
    assert status == 401
    status, _ = await stranger.request("GET", "/api/internal/runners/ws",
                                       headers={"Authorization": "Bearer wrong"})
    assert status == 401
    samples = await scrape(api)
    assert value(samples, "semaphore_hub_rejected_logins_total") == 1
    assert value(samples, "semaphore_hub_rejected_registrations_total") == 2


async def test_metrics_access(tmp_path):
    hub = await start_hub(tmp_path, metrics={"scrape_token": SCRAPE_TOKEN})
    try:
        admin = await hub.api()
        await make_user(admin, "viewer")
        viewer = await hub.api(login=False)
        await viewer.login("viewer", "viewer-password")
        token = (await admin.ok("POST", "/api/user/tokens", status=201))["id"]
        for path in ("/metrics", "/api/metrics"):
            status, body, _ = await get(hub, path)
            assert status == 401 and "Bearer" in body
            assert (await viewer.request("GET", path))[0] == 403
            status, body, content_type = await get(
                hub, path, {"Authorization": f"Bearer {token}"})
            assert status == 200 and content_type.startswith("text/plain")
            assert "semaphore_hub_info{" in body
            assert (await admin.request("GET", path))[0] == 200  # session cookie
            status, body, _ = await get(hub, path, {"Authorization": f"Bearer {SCRAPE_TOKEN}"})
            assert status == 200 and "semaphore_hub_ready 1.0" in body
            status, _, _ = await get(hub, path, {"Authorization": f"Bearer {SCRAPE_TOKEN}x"})
            assert status == 401
    finally:
        await hub.close()


async def test_anonymous_metrics_when_configured(tmp_path):
    hub = await start_hub(tmp_path, metrics={"anonymous": True})
    try:
        status, body, _ = await get(hub, "/metrics")
        assert status == 200 and "semaphore_hub_tasks_created_total" in body
        assert (await get(hub, "/api/metrics"))[0] == 200
    finally:
        await hub.close()


async def test_semaphore_basic_auth_and_switched_off(tmp_path):
    """Semaphore 2.20's keys: metrics.username/password (HTTP Basic), metrics.enabled."""
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    hub = await start_hub(tmp_path / "on", metrics={"username": "prometheus",
                                                    "password": "changeme"})
    try:
        good = basic("prometheus", "changeme")
        status, body, _ = await get(hub, "/api/metrics", {"Authorization": good})
        assert status == 200 and "semaphore_tasks_running" in body
        for wrong in (basic("prometheus", "changemf"),
                      basic("root", "changeme"), "Basic !!!"):
            assert (await get(hub, "/api/metrics", {"Authorization": wrong}))[0] == 401
    finally:
        await hub.close()
    hub = await start_hub(tmp_path / "off", metrics={"enabled": False})
    try:
        admin = await hub.api()
        assert (await admin.request("GET", "/metrics"))[0] == 404
        assert (await get(hub, "/api/ready"))[0] == 200
    finally:
        await hub.close()


async def test_two_hubs_in_one_process_have_their_own_counters(tmp_path):
    for name in "ab":
        (tmp_path / name).mkdir()
    first = await start_hub(tmp_path / "a", metrics={"anonymous": True})
    second = await start_hub(tmp_path / "b", metrics={"anonymous": True})
    try:
        client = await first.api(login=False)
        await client.request("POST", "/api/auth/login", {"auth": "x", "password": "y"})
        one = parse((await get(first, "/metrics"))[1])
        two = parse((await get(second, "/metrics"))[1])
        assert value(one, "semaphore_hub_rejected_logins_total") == 1
        assert value(two, "semaphore_hub_rejected_logins_total") == 0
    finally:
        await first.close()
        await second.close()


# Health and readiness.


def immutable(paths: list[Path], on: bool) -> None:
    """chattr +i: not even root can write the file, through descriptors opened before too.
    Never the -shm file: SQLite maps it, and a write to an immutable mapping is a SIGBUS."""
    subprocess.run(["chattr", "+i" if on else "-i", *map(str, paths)], check=True)


async def test_ready_fails_while_the_database_cannot_be_written(hub, api):
    assert shutil.which("chattr"), "chattr (e2fsprogs) is needed for this test"
    assert await get(hub, "/api/health") == (200, '{"status":"ok"}', "application/json")
    status, body, _ = await get(hub, "/api/ready")
    assert status == 200 and body == '{"status":"ok"}'
    database = Path(hub.config.database_path)
    files = [database, database.with_name(database.name + "-wal")]
    assert all(path.exists() for path in files)
    await asyncio.sleep(1.1)  # past the cached verdict
    immutable(files, True)
    try:
        status, body, _ = await get(hub, "/api/ready")
        assert status == 503, body
        assert body == '{"status":"not ready","reasons":["database: not writable"]}'
        assert str(database) not in body
        assert (await get(hub, "/api/ping"))[0] == 200
        assert (await get(hub, "/api/health"))[0] == 200
        samples = await scrape(api)
        assert value(samples, "semaphore_hub_ready") == 0
    finally:
        immutable(files, False)
    await asyncio.sleep(1.1)
    status, body, _ = await get(hub, "/api/ready")
    assert status == 200, body


async def test_ready_answers_503_once_shutdown_begins(hub):
    assert (await get(hub, "/api/ready"))[0] == 200
    # What the hub's shutdown does first (aiohttp's on_shutdown, in order).
    await hub.app.on_shutdown[0](hub.app)
    status, body, _ = await get(hub, "/api/ready")
    assert status == 503 and '"shutting down"' in body
    assert (await get(hub, "/api/health"))[0] == 200


async def test_reconnects_and_protocol_errors_are_counted(hub, api):
    token = await hub.register("raw")
    session = aiohttp.ClientSession()
    hub.sessions.append(session)
    hello = encode(Hello(protocol_version=PROTOCOL_VERSION, runner_version="x"))
    for _ in range(2):  # the second session of the same runner is a reconnect
        ws = await session.ws_connect(hub.ws_url, headers={"Authorization": f"Bearer {token}"})
        await ws.send_bytes(hello)
        assert isinstance(decode_hub_frame((await ws.receive(timeout=5)).data), Welcome)
        await ws.close()
    ws = await session.ws_connect(hub.ws_url, headers={"Authorization": f"Bearer {token}"})
    await ws.send_bytes(hello)
    assert isinstance(decode_hub_frame((await ws.receive(timeout=5)).data), Welcome)
    await ws.send_bytes(b"this is not a frame")
    assert isinstance(decode_hub_frame((await ws.receive(timeout=5)).data), Error)
    closing = await ws.receive(timeout=5)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    code = ws.close_code
    assert code is not None and code >= 1000
    samples = await scrape(api)
    assert value(samples, "semaphore_hub_runner_reconnects_total") == 2
    assert value(samples, "semaphore_hub_protocol_errors_total", code=str(code)) == 1
    assert value(samples, "semaphore_hub_frames_received_total", type="hello") == 3
    assert value(samples, "semaphore_hub_frames_sent_total", type="welcome") == 3
    assert value(samples, "semaphore_hub_frames_sent_total", type="error") == 1


async def test_event_loop_lag_is_measured(hub, api):
    await asyncio.sleep(0.6)  # the probe has run
    # Block the loop: a probe due meanwhile wakes at least 0.35 s late.
    time.sleep(0.6)  # noqa: ASYNC251
    await asyncio.sleep(0.6)
    samples = await scrape(api)
    assert value(samples, "semaphore_hub_event_loop_lag_seconds_count") >= 2
    assert value(samples, "semaphore_hub_event_loop_lag_max_seconds") >= 0.3
    assert value(samples, "semaphore_hub_event_loop_lag_seconds_bucket", le="0.25") < value(
        samples, "semaphore_hub_event_loop_lag_seconds_count")


async def test_tasks_created_by_schedule_and_integration_are_counted_by_source(hub, api,
                                                                              tmp_path):
    project, template, key = await integration_project(api, tmp_path)
    _, url = await github_integration(api, project, template, key)
    body = json.dumps(PUSH).encode()
    status, _, text = await post(hub, url, body, signed(body))
    assert status == 204, text
    when = next_minute() + timedelta(minutes=5)
    await api.ok("POST", f"/api/project/{project}/schedules",
                 {"name": "once", "template_id": template, "type": "run_at",
                  "run_at": when.strftime("%Y-%m-%dT%H:%M:%SZ")}, 201)
    clock = await manual_clock(hub, when)
    assert len(await hub.hub.scheduler.tick()) == 1 and clock
    samples = await scrape(api)
    assert value(samples, "semaphore_hub_tasks_created_total", source="integration") == 1
    assert value(samples, "semaphore_hub_tasks_created_total", source="schedule") == 1
    assert value(samples, "semaphore_hub_tasks_created_total", source="api") == 0
    assert value(samples, "semaphore_hub_tasks", status="waiting") == 2


async def test_garbage_collections_are_timed_by_generation(hub, api):
    gc.collect()  # a full collection, seen by the hub's callback
    samples = await scrape(api)
    assert value(samples, "semaphore_hub_gc_pause_seconds_count", generation="2") >= 1
    assert value(samples, "semaphore_hub_gc_pause_seconds_sum", generation="2") > 0
    assert ("semaphore_hub_gc_pause_seconds_count", (("generation", "0"),)) in samples


async def test_a_long_pause_is_logged_with_its_garbage_collection(tmp_path):
    hub = await start_hub(tmp_path, metrics={"loop_probe_interval_sec": 0.01,
                                             "loop_lag_log_sec": 0.05})
    try:
        with structlog.testing.capture_logs() as logs:
            await asyncio.sleep(0.05)
            gc.collect()
            time.sleep(0.12)  # noqa: ASYNC251 (the pause under test)
            await asyncio.sleep(0.05)
        paused = [entry for entry in logs if entry["event"] == "hub.loop_paused"]
        assert paused, logs
        # The longest one is ours (a loaded machine may show shorter ones besides).
        longest = max(paused, key=lambda entry: entry["lag_ms"])
        assert longest["lag_ms"] >= 100 and longest["gc_generation"] == 2, paused
        assert longest["gc_ms"] > 0
        assert hub.hub.telemetry.probe_interval == 0.01
    finally:
        await hub.close()
