"""The last minutes of each runner's heartbeat figures, in memory, for the dashboard's charts.

Bounded twice: by age (HISTORY_SECONDS) and by count per runner (MAX_POINTS, so a runner with
a very short heartbeat interval cannot grow it), and a point per heartbeat at most. Lost with
the hub's restart: it is a view of the last minutes, not a record.
"""

import time
from collections import deque
from typing import Any

HISTORY_SECONDS = 15 * 60.0
# 15 minutes of heartbeats every 2 s; a runner beating faster keeps a shorter history.
MAX_POINTS = 450


class MetricsHistory:
    def __init__(self, seconds: float = HISTORY_SECONDS, max_points: int = MAX_POINTS):
        self.seconds = seconds
        self.max_points = max_points
        self._points: dict[int, deque[dict[str, Any]]] = {}

    def add(self, runner_id: int, point: dict[str, Any]) -> None:
        """`point` has "time" (Unix seconds, the hub's clock) and the figures."""
        points = self._points.get(runner_id)
        if points is None:
            points = self._points[runner_id] = deque(maxlen=self.max_points)
        points.append(point)
        self._expire(points, point["time"])

    def points(self, runner_id: int, now: float | None = None) -> list[dict[str, Any]]:
        """Oldest first; only the last `seconds`."""
        points = self._points.get(runner_id)
        if points is None:
            return []
        self._expire(points, time.time() if now is None else now)
        return list(points)

    def forget(self, runner_id: int) -> None:
        """The runner was deleted: its history goes with it."""
        self._points.pop(runner_id, None)

    def _expire(self, points: deque[dict[str, Any]], now: float) -> None:
        while points and points[0]["time"] < now - self.seconds:
            points.popleft()
