"""Each runner's resource history (CPU, memory, disk, load, running tasks), in three tiers.

| tier  | resolution        | kept     | points per runner |
|-------|-------------------|----------|-------------------|
| raw   | each heartbeat    | 1 hour   | 720 at 5 s        |
| 1m    | minute avg/max    | 24 hours | 1,440             |
| 1h    | hour avg/max      | 30 days  | 720               |

Where it lives, and why. An hour of raw points at 10,000 runners is 7.2 M points; even packed
at 28 bytes each that is ~200 MiB, more than half of what the whole hub holds for 10,000
runners today. So the hub's memory keeps only each runner's *current minute*: its points
packed in a bytearray (7 float32, 28 bytes a point; ~12 at the default 5 s heartbeat), ~0.5
KiB per runner, ~5 MiB at 10,000. A heartbeat appends 28 bytes and does no I/O.

Once a minute (just after the minute turns) a flush writes every closed minute, in ONE
transaction: one `metric_raw` row per runner and minute holding the minute's packed points
(the raw tier: one row, not one per heartbeat, so 10,000 runners are 10,000 small appends a
minute), one `metric_1m` row with the minute's averages, maxima (disk: minimum free) and
sample count, the `metric_1h` roll-up of any hour that just closed (computed in SQL from its
minutes, weighted by samples, so it survives a restart mid-hour), and the deletion of every
row past its tier's age. The tables are keyed (bucket, runner_id): a flush appends at the end
of each b-tree, pruning cuts its front, and one runner's rows are read by naming each bucket.

Bounds, however long the hub runs: at most 61 raw rows, 1,441 minute rows and 721 hour rows
per runner (pruned by age on every flush), and at most MAX_POINTS_PER_MINUTE points a minute
(a runner beating faster than that keeps fewer). Disk at 10,000 runners: ~0.2 GB raw, ~1.4
GB minutes, ~0.7 GB hours; 15-minute buckets for 30 days would have been 2.9 GB alone, and a
30-day chart is a few hundred pixels wide. A restart loses nothing but the minutes not yet
flushed (a clean stop flushes them too; the next hub merges its part of that minute).

Times are the hub's (a runner's clock may be off); the clock is injectable for tests.
"""

import asyncio
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from hub.store import Store

log = structlog.get_logger("hub.core.metrics")

# Tier -> (bucket seconds, seconds kept).
TIERS: dict[str, tuple[int, int]] = {"raw": (60, 3600), "1m": (60, 86400),
                                     "1h": (3600, 30 * 86400)}
RESOLUTIONS = tuple(TIERS)
MAX_POINTS_PER_MINUTE = 60
# A point: seconds into its minute, then the figures, all float32 (bytes to 1 part in 10^7).
FIGURES = ("cpu_percent", "memory_used", "memory_total", "disk_free", "load1", "running")
_INTEGRAL = frozenset({"memory_used", "memory_total", "disk_free", "running"})
POINT = struct.Struct("<7f")


class _Minute:
    """One runner's points of one minute, packed."""

    __slots__ = ("data", "start")

    def __init__(self, start: int):
        self.start = start
        self.data = bytearray()


def minute_of(at: float) -> int:
    return int(at // 60) * 60


def aggregate(data: bytes | bytearray) -> tuple[Any, ...]:
    """samples, then (average, max) of each figure (memory_total: max only; disk_free:
    average and minimum), in the order of the aggregate columns."""
    points = list(POINT.iter_unpack(data))
    n = len(points)
    columns = list(zip(*points, strict=True))[1:]
    cpu, used, total, disk, load, running = columns
    return (n, sum(cpu) / n, max(cpu), sum(used) / n, max(used), max(total), sum(disk) / n,
            min(disk), sum(load) / n, max(load), sum(running) / n, max(running))


def _aggregate_point(bucket: int, values: tuple[Any, ...]) -> dict[str, Any]:
    (samples, cpu, cpu_max, used, used_max, total, disk, disk_min, load, load_max, running,
     running_max) = values
    return {"time": bucket, "samples": samples, "cpu_percent": cpu, "cpu_percent_max": cpu_max,
            "memory_used": round(used), "memory_used_max": round(used_max),
            "memory_total": round(total), "disk_free": round(disk),
            "disk_free_min": round(disk_min), "load1": load, "load1_max": load_max,
            "running": running, "running_max": round(running_max)}


def _raw_points(bucket: int, data: bytes | bytearray) -> list[dict[str, Any]]:
    out = []
    for offset, *values in POINT.iter_unpack(data):
        point: dict[str, Any] = {"time": bucket + offset}
        for name, value in zip(FIGURES, values, strict=True):
            # float32 keeps about 7 digits: 0.8 comes back as 0.800000011920929.
            point[name] = round(value) if name in _INTEGRAL else round(value, 3)
        out.append(point)
    return out


class MetricsHistory:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time):
        self.store = store
        self.clock = clock
        self._current: dict[int, _Minute] = {}
        self._closed: list[tuple[int, _Minute]] = []
        # Held by a flush while it writes, and by reads: a read sees each minute once, in
        # memory or stored, never half-written (reads share the writer's connection).
        self._flush_lock = asyncio.Lock()
        self._rolled: int | None = None  # the newest hour rolled up
        self._loaded = False
        self._task: asyncio.Task | None = None

    # The hot path: one call per heartbeat, no I/O.

    def add(self, runner_id: int, point: dict[str, Any]) -> None:
        """`point` has "time" (Unix seconds, the hub's clock) and the FIGURES."""
        at = point["time"]
        start = minute_of(at)
        minute = self._current.get(runner_id)
        if minute is None or minute.start != start:
            if minute is not None and minute.data:
                self._closed.append((runner_id, minute))
            minute = self._current[runner_id] = _Minute(start)
        if len(minute.data) >= MAX_POINTS_PER_MINUTE * POINT.size:
            return
        minute.data += POINT.pack(at - start, *(float(point[name]) for name in FIGURES))

    # Flushing (background task, once a minute).

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop flushing and write everything held, the current minutes too."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            await self.flush(everything=True)
        except Exception:  # the hub still stops, and closes its store
            log.exception("runner_metrics.flush.failed")

    async def _run(self) -> None:
        while True:
            now = self.clock()
            # Just after the minute turns: every heartbeat of the last one is in.
            await asyncio.sleep(minute_of(now) + 61 - now)
            try:
                await self.flush()
            except Exception:
                log.exception("runner_metrics.flush.failed")

    async def flush(self, everything: bool = False) -> None:
        """Write closed minutes (all held minutes with `everything`), roll up closed hours
        and prune every tier, in one transaction."""
        async with self._flush_lock:
            await self._flush(everything)

    async def _flush(self, everything: bool) -> None:
        now = self.clock()
        current = minute_of(now)
        if not self._loaded:
            self._rolled = await self.store.last_rollup()
            self._loaded = True
        closed, self._closed = self._closed, []
        for runner_id, minute in list(self._current.items()):
            if everything or minute.start < current:
                del self._current[runner_id]
                if minute.data:
                    closed.append((runner_id, minute))
        await self._write(closed, current)

    async def _write(self, closed: list[tuple[int, _Minute]], current: int) -> None:
        started = time.perf_counter()
        # Off the event loop: at 10,000 runners this is ~0.1-0.2 s of Python, and a thread
        # only holds the GIL for its switch interval (5 ms) at a time.
        raw, minutes = await asyncio.to_thread(_rows, closed)
        prepared = time.perf_counter() - started
        # Hours that just closed, and closed hours a minute written now belongs to (held
        # over a restart, or added late): their roll-up is computed again.
        hour_now = current // 3600 * 3600
        rollups = sorted(set(self._hours_to_roll(current)) | {
            minute.start // 3600 * 3600 for _, minute in closed
            if hour_now - TIERS["1m"][1] <= minute.start < hour_now})
        prune = {tier: (current if tier != "1h" else current // 3600 * 3600) - kept
                 for tier, (_, kept) in TIERS.items()}
        await self.store.write_metrics(raw, minutes, rollups, prune)
        if rollups:
            self._rolled = max(rollups[-1], self._rolled or rollups[-1])
        log.debug("runner_metrics.flushed", minutes=len(minutes), rollups=len(rollups),
                  prepare_seconds=round(prepared, 4),
                  seconds=round(time.perf_counter() - started, 4))

    def _hours_to_roll(self, current_minute: int) -> list[int]:
        """Hours that closed since the last roll-up and whose minutes are still kept."""
        closed_before = current_minute // 3600 * 3600  # the current hour is still open
        first = closed_before - TIERS["1m"][1]
        if self._rolled is not None:
            first = max(first, self._rolled + 3600)
        return list(range(first, closed_before, 3600))

    # Reading and forgetting.

    async def points(self, runner_id: int, since: float | None = None,
                     resolution: str = "raw") -> list[dict[str, Any]]:
        """Oldest first (see _points)."""
        async with self._flush_lock:
            return await self._points(runner_id, since, resolution)

    async def _points(self, runner_id: int, since: float | None,
                      resolution: str) -> list[dict[str, Any]]:
        """Oldest first, from `since` (default: 15 minutes ago; never past the tier's age).
        A coarse point's time is its bucket's start; points of minutes not yet flushed come
        from memory, and the current hour is not in the 1h tier until it closes."""
        now = self.clock()
        step, kept = TIERS[resolution]
        since = now - 900 if since is None else since
        first = max(int(since // step) * step, (int(now // step) - kept // step) * step)
        buckets = list(range(first, int(now // step) * step + 1, step))
        held = self._held(runner_id)
        if resolution == "raw":
            stored = await self.store.read_raw_metrics(runner_id, buckets)
            out: list[dict[str, Any]] = []
            for bucket, data in sorted(stored + [(m.start, bytes(m.data)) for m in held]):
                out.extend(p for p in _raw_points(bucket, data) if p["time"] >= since)
            return out
        rows = await self.store.read_metrics(resolution, runner_id, buckets)
        by_bucket = {row["bucket"]: tuple(list(row.values())[2:]) for row in rows}
        if resolution == "1m":
            for minute in held:
                if minute.start >= first:
                    values = aggregate(minute.data)
                    stored_values = by_bucket.get(minute.start)
                    by_bucket[minute.start] = (values if stored_values is None
                                               else _merge(stored_values, values))
        return [_aggregate_point(bucket, by_bucket[bucket]) for bucket in sorted(by_bucket)
                if bucket + step > since]

    def _held(self, runner_id: int) -> list[_Minute]:
        held = [minute for rid, minute in self._closed if rid == runner_id]
        current = self._current.get(runner_id)
        if current is not None and current.data:
            held.append(current)
        return held

    async def forget(self, runner_id: int) -> None:
        """The runner was deleted: its history goes with it, from memory and the store
        (after any flush under way, which may be writing its last minute)."""
        async with self._flush_lock:
            await self._forget(runner_id)

    async def _forget(self, runner_id: int) -> None:
        self._current.pop(runner_id, None)
        self._closed = [(rid, minute) for rid, minute in self._closed if rid != runner_id]
        now = self.clock()
        buckets: dict[str, list[int]] = {}
        for tier, (step, kept) in TIERS.items():
            # The tier's whole age, plus the bucket a late flush may still be writing.
            last = int(now // step) * step
            buckets[tier] = list(range(last - kept - step, last + step, step))
        await self.store.delete_metrics(runner_id, buckets)


def _rows(closed: list[tuple[int, _Minute]]) -> tuple[list[tuple[int, int, bytes]],
                                                     list[tuple[Any, ...]]]:
    """The metric_raw and metric_1m rows of closed minutes (no longer touched by `add`)."""
    raw = [(minute.start, runner_id, bytes(minute.data)) for runner_id, minute in closed]
    minutes = [(minute.start, runner_id, *aggregate(minute.data)) for runner_id, minute in closed]
    return raw, minutes


def _merge(a: Iterable[Any], b: Iterable[Any]) -> tuple[Any, ...]:
    """Two aggregates of the same bucket as one (as the store merges them)."""
    (n1, *x), (n2, *y) = a, b
    n = n1 + n2

    def avg(i: int) -> float:
        return (x[i] * n1 + y[i] * n2) / n

    return (n, avg(0), max(x[1], y[1]), avg(2), max(x[3], y[3]), max(x[4], y[4]), avg(5),
            min(x[6], y[6]), avg(7), max(x[8], y[8]), avg(9), max(x[10], y[10]))
