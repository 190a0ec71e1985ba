"""GET .../runners/{id}/metrics over HTTP on a real hub: time ranges, resolutions, bad
parameters, who may read it, and a deleted runner's history going with it."""

import sqlite3
import time

import pytest

from tests.hub.test_live_ws import make_user

GIB = 2**30


def feed(hub, runner_id: int, now: float, minutes: int) -> None:
    """A point a minute for `minutes` minutes up to `now` (cpu = minutes ago), through the
    hub's own history, as the gateway adds them."""
    for k in range(minutes + 1):
        hub.hub.metrics.add(runner_id, {
            "time": now - 60 * k, "cpu_percent": float(k % 100), "memory_used": GIB,
            "memory_total": 4 * GIB, "disk_free": 8 * GIB, "load1": 0.25, "running": k % 2})


@pytest.fixture
async def fed(hub, api):
    """A project runner and a global one, three hours of history each, flushed."""
    pid = await api.project("A")
    project_runner = await api.ok("POST", f"/api/project/{pid}/runners", {"name": "pr"}, 201)
    global_runner = await api.ok("POST", "/api/runners", {"name": "gr"}, 201)
    now = time.time()
    for runner in (project_runner, global_runner):
        feed(hub, runner["id"], now, 180)
    await hub.hub.metrics.flush()
    return pid, project_runner["id"], global_runner["id"], now


async def test_ranges_and_resolutions(hub, api, fed):
    pid, rid, gid, now = fed
    base = f"/api/project/{pid}/runners/{rid}/metrics"
    # Default: raw, the last 15 minutes (what the dashboard charts).
    points = await api.ok("GET", base)
    assert [round(now - p["time"]) for p in points] == [60 * k for k in range(14, -1, -1)]
    assert set(points[0]) == {"time", "cpu_percent", "memory_used", "memory_total",
                              "disk_free", "load1", "running"}
    assert points[-1]["memory_total"] == 4 * GIB and points[-1]["cpu_percent"] == 0.0
    # Raw from a given time; raw is kept an hour, so asking for more gives an hour.
    half_hour = await api.ok("GET", f"{base}?resolution=raw&since={now - 1800.5!r}")
    assert len(half_hour) == 31
    hour = await api.ok("GET", f"{base}?resolution=raw&since=0")
    assert 60 <= len(hour) <= 62 and hour == sorted(hour, key=lambda p: p["time"])
    # Minutes: one point per minute with a sample each, over two hours.
    minutes = await api.ok("GET", f"{base}?resolution=1m&since={now - 7200!r}")
    assert len(minutes) == 121 and all(m["samples"] == 1 for m in minutes)
    assert {m["time"] % 60 for m in minutes} == {0}
    assert minutes[0]["cpu_percent"] == minutes[0]["cpu_percent_max"] == 20.0  # 120 % 100
    # Hours: the three closed ones, their samples the points that fell in them.
    hours = await api.ok("GET", f"{base}?resolution=1h&since={now - 3 * 3600!r}")
    this_hour = int(now // 3600) * 3600
    assert [h["time"] for h in hours] == [this_hour - 3 * 3600 + 3600 * i for i in range(3)]
    assert sum(h["samples"] for h in hours) == sum(
        1 for k in range(181) if this_hour - 3 * 3600 <= now - 60 * k < this_hour)
    assert all(h["memory_total"] == 4 * GIB and h["running_max"] == 1 for h in hours)
    # The global runner's, on the admins' path.
    assert len(await api.ok("GET", f"/api/runners/{gid}/metrics?resolution=1m&since=0")) == 181


@pytest.mark.parametrize(("query", "named"), [
    ("resolution=5m", "`resolution`"), ("resolution=", "`resolution`"),
    ("since=yesterday", "`since`"), ("since=-5", "`since`"), ("since=inf", "`since`"),
    ("since=nan", "`since`"), ("since=1e999", "`since`"), ("since=", "`since`"),
])
async def test_bad_parameters_are_a_400_naming_them(api, fed, query, named):
    pid, rid, _, _ = fed
    status, body = await api.request("GET", f"/api/project/{pid}/runners/{rid}/metrics?{query}")
    assert status == 400 and named in body["error"], body


async def test_access_as_for_the_runner_itself(hub, api, fed):
    pid, rid, gid, _ = fed
    other = await api.project("B")
    manager = await make_user(api, hub, "mgr", pid, "manager")
    guest = await make_user(api, hub, "gst", pid, "guest")
    stranger = await make_user(api, hub, "strg", other, "owner")
    path = f"/api/project/{pid}/runners/{rid}/metrics?resolution=1m"
    assert len(await manager.ok("GET", path)) >= 15
    assert (await guest.request("GET", path))[0] == 403
    assert (await stranger.request("GET", path))[0] == 404  # not their project
    # Another project's path, or the project path for a global runner: not found.
    assert (await stranger.request("GET", f"/api/project/{other}/runners/{rid}/metrics"))[0] \
        == 404
    assert (await api.request("GET", f"/api/project/{pid}/runners/{gid}/metrics"))[0] == 404
    # Global runners: admins only.
    assert (await manager.request("GET", f"/api/runners/{gid}/metrics"))[0] == 403
    assert (await manager.request("GET", f"/api/runners/{rid}/metrics"))[0] == 403


async def test_a_deleted_runners_history_goes(hub, api, fed):
    pid, rid, gid, _ = fed
    await api.ok("DELETE", f"/api/project/{pid}/runners/{rid}", status=204)
    assert (await api.request("GET", f"/api/project/{pid}/runners/{rid}/metrics"))[0] == 404
    with sqlite3.connect(hub.config.database_path) as db:
        for table in ("metric_raw", "metric_1m", "metric_1h"):
            counts = dict(db.execute(f"SELECT runner_id, COUNT(*) FROM {table} "
                                     "GROUP BY runner_id").fetchall())
            assert rid not in counts and counts[gid] > 0, (table, counts)
