"""The runners' resource history (hub/core/metrics.py) over a real SQLite file, with the
clock in the test's hands: downsampling, bounds, restarts, forgetting."""

import sqlite3

import pytest

from hub.core.metrics import MAX_POINTS_PER_MINUTE, MetricsHistory
from hub.store import open_store

T0 = 1_800_000_000.0  # a whole hour: 1800000000 = 500000 * 3600
GIB = 2**30


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def point(at: float, cpu: float = 1.0, used: int = GIB, total: int = 4 * GIB,
          disk: int = 8 * GIB, load: float = 0.5, running: int = 0) -> dict:
    return {"time": at, "cpu_percent": cpu, "memory_used": used, "memory_total": total,
            "disk_free": disk, "load1": load, "running": running}


@pytest.fixture
async def store(tmp_path):
    opened = await open_store(str(tmp_path / "hub.sqlite"))
    yield opened
    await opened.close()


def count(path, table: str, runner_id: int | None = None) -> int:
    with sqlite3.connect(path) as db:
        if runner_id is None:
            return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        return db.execute(f"SELECT COUNT(*) FROM {table} WHERE runner_id = ?",
                          (runner_id,)).fetchone()[0]


async def test_raw_points_come_back_as_sent_oldest_first_from_since(store):
    clock = Clock(T0 + 200)
    history = MetricsHistory(store, clock)
    for i in range(40):  # T0 .. T0+195, every 5 s
        history.add(7, point(T0 + 5 * i, cpu=float(i), used=GIB + i * 4096, running=i % 3))
    await history.flush()  # minutes T0, T0+60, T0+120 are closed; T0+180 is still held
    assert count(store.path, "metric_raw") == 3
    points = await history.points(7, since=T0 + 100, resolution="raw")
    assert [p["time"] for p in points] == [T0 + 5 * i for i in range(20, 40)]
    assert points[0] == {"time": T0 + 100, "cpu_percent": 20.0, "memory_used": GIB + 20 * 4096,
                         "memory_total": 4 * GIB, "disk_free": 8 * GIB, "load1": 0.5,
                         "running": 2}
    # Default: the last 15 minutes; another runner has none.
    assert len(await history.points(7)) == 40
    assert await history.points(8) == []


async def test_minutes_and_hours_are_averages_and_extremes_weighted_by_samples(store):
    clock = Clock(T0)
    history = MetricsHistory(store, clock)
    # Minute 0: 12 points, cpu 0..11, memory 1..12 GiB, disk falling, running 0/1.
    for i in range(12):
        history.add(1, point(T0 + 5 * i, cpu=float(i), used=(i + 1) * GIB,
                             disk=(100 - i) * GIB, load=i / 4, running=i % 2))
    # Minute 1: 3 points of cpu 50.
    for i in range(3):
        history.add(1, point(T0 + 60 + 20 * i, cpu=50.0))
    clock.now = T0 + 125
    await history.flush()
    minutes = await history.points(1, since=T0, resolution="1m")
    assert [m["time"] for m in minutes] == [T0, T0 + 60]
    first = minutes[0]
    assert first["samples"] == 12
    assert first["cpu_percent"] == pytest.approx(5.5) and first["cpu_percent_max"] == 11.0
    assert first["memory_used"] == round(6.5 * GIB) and first["memory_used_max"] == 12 * GIB
    assert first["memory_total"] == 4 * GIB
    assert first["disk_free"] == round(94.5 * GIB) and first["disk_free_min"] == 89 * GIB
    assert first["load1"] == pytest.approx(11 / 8) and first["load1_max"] == 2.75
    assert first["running"] == 0.5 and first["running_max"] == 1
    assert minutes[1]["samples"] == 3 and minutes[1]["cpu_percent"] == 50.0
    # The hour rolls up once it closes: weighted by samples, 15 of them.
    assert await history.points(1, since=T0, resolution="1h") == []
    clock.now = T0 + 3600 + 61
    await history.flush()
    (hour,) = await history.points(1, since=T0, resolution="1h")
    assert hour["time"] == T0 and hour["samples"] == 15
    assert hour["cpu_percent"] == pytest.approx((66 + 150) / 15)
    assert hour["cpu_percent_max"] == 50.0 and hour["disk_free_min"] == 8 * GIB
    assert hour["memory_used_max"] == 12 * GIB and hour["running_max"] == 1


async def test_the_current_minute_is_served_before_it_is_flushed(store):
    clock = Clock(T0 + 30)
    history = MetricsHistory(store, clock)
    history.add(3, point(T0 + 10, cpu=10.0))
    history.add(3, point(T0 + 20, cpu=30.0))
    assert [p["cpu_percent"] for p in await history.points(3, since=T0)] == [10.0, 30.0]
    (minute,) = await history.points(3, since=T0, resolution="1m")
    assert minute["samples"] == 2 and minute["cpu_percent"] == 20.0
    assert count(store.path, "metric_raw") == 0


async def test_48_hours_of_heartbeats_stay_within_the_bounds(store):
    clock = Clock(T0)
    history = MetricsHistory(store, clock)
    at = T0
    while at < T0 + 48 * 3600:
        history.add(1, point(at, cpu=float(int(at) % 100)))
        history.add(2, point(at))
        at += 5
        if int(at) % 600 == 0:  # a flush every 10 simulated minutes
            clock.now = at
            await history.flush()
    clock.now = at + 1
    await history.flush()
    for runner in (1, 2):
        assert count(store.path, "metric_raw", runner) <= 61
        assert 1440 <= count(store.path, "metric_1m", runner) <= 1441
        assert count(store.path, "metric_1h", runner) == 48  # every hour closed by now
    assert len(await history.points(1, since=0, resolution="raw")) <= 61 * 12
    assert len(await history.points(1, since=0, resolution="1m")) <= 1441
    # Nothing else held in memory but the current minute's points.
    assert not history._closed and len(history._current) <= 2


async def test_hours_are_kept_30_days_and_a_fast_runner_fills_a_minute_at_most(store):
    clock = Clock(T0)
    history = MetricsHistory(store, clock)
    for hour in range(35 * 24):
        at = T0 + hour * 3600
        history.add(1, point(at))
        clock.now = at + 61
        await history.flush()
    assert count(store.path, "metric_1h") <= 721
    assert count(store.path, "metric_1m") <= 25
    for i in range(10 * MAX_POINTS_PER_MINUTE):
        history.add(2, point(clock.now + i / 100))
    assert len(await history.points(2, since=0)) == MAX_POINTS_PER_MINUTE


async def test_the_coarse_tiers_and_flushed_minutes_survive_a_restart(tmp_path):
    path = str(tmp_path / "hub.sqlite")
    clock = Clock(T0)
    store = await open_store(path)
    history = MetricsHistory(store, clock)
    for i in range(720 * 2):  # two hours at 5 s
        history.add(5, point(T0 + 5 * i, cpu=10.0 if i < 720 else 30.0))
    history.add(5, point(T0 + 7200 + 1, cpu=90.0))  # part of a minute
    clock.now = T0 + 7200 + 2
    await history.flush()
    await history.stop()  # a clean stop writes the part-minute too
    await store.close()

    store = await open_store(path)
    try:
        history = MetricsHistory(store, clock)
        history.add(5, point(T0 + 7200 + 30, cpu=30.0))  # the rest of that minute
        hours = await history.points(5, since=T0, resolution="1h")
        assert [(h["time"], h["samples"], h["cpu_percent"]) for h in hours] == [
            (T0, 720, 10.0), (T0 + 3600, 720, 30.0)]
        clock.now = T0 + 7200 + 61
        await history.flush()
        minutes = await history.points(5, since=T0 + 7200 - 60, resolution="1m")
        assert [(m["time"], m["samples"], m["cpu_percent"]) for m in minutes] == [
            (T0 + 7140, 12, 30.0), (T0 + 7200, 2, 60.0)]
        raw = await history.points(5, since=T0 + 7200)
        assert [p["cpu_percent"] for p in raw] == [90.0, 30.0]
    finally:
        await store.close()


async def test_a_deleted_runners_history_goes_from_every_tier(store):
    clock = Clock(T0)
    history = MetricsHistory(store, clock)
    for i in range(720 + 24):
        history.add(4, point(T0 + 5 * i))
        history.add(6, point(T0 + 5 * i))
    clock.now = T0 + 3600 + 121
    await history.flush()
    history.add(4, point(clock.now))  # held in memory
    assert count(store.path, "metric_1h", 4) == 1
    await history.forget(4)
    for table in ("metric_raw", "metric_1m", "metric_1h"):
        assert count(store.path, table, 4) == 0
        assert count(store.path, table, 6) > 0
    for resolution in ("raw", "1m", "1h"):
        assert await history.points(4, since=0, resolution=resolution) == []
