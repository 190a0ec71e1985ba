"""The runners' metrics history: the last minutes only, a bounded number of points."""

from hub.core.metrics import MetricsHistory


def point(at: float) -> dict:
    return {"time": at, "cpu_percent": 1.0, "memory_used": 1, "memory_total": 2,
            "disk_free": 3, "load1": 0.5, "running": 0}


def test_only_the_last_minutes_oldest_first():
    history = MetricsHistory(seconds=60, max_points=1000)
    for at in range(0, 200, 10):
        history.add(7, point(float(at)))
    assert [p["time"] for p in history.points(7, now=190.0)] == [float(t) for t in
                                                                 range(130, 200, 10)]
    # Read later, with no new heartbeat: older points are gone too.
    assert [p["time"] for p in history.points(7, now=245.0)] == [190.0]
    assert history.points(7, now=400.0) == []
    assert history.points(8) == []


def test_a_runner_beating_fast_cannot_grow_it_and_a_deleted_one_is_forgotten():
    history = MetricsHistory(seconds=900, max_points=5)
    for i in range(100):
        history.add(1, point(1000.0 + i / 100))
    kept = history.points(1, now=1001.0)
    assert len(kept) == 5 and kept[-1]["time"] == 1000.99
    history.forget(1)
    assert history.points(1, now=1001.0) == []
