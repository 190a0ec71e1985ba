"""The hub's Prometheus metrics: the metric objects, and the probe of the event loop's lag.

Names, types and labels are the contract of docs/monitoring.md (issue 14); no label ever
holds a task or runner id, so every label set stays small. Each hub application has its own
registry (tests run many hubs in one process; the library's global REGISTRY is never used).

Two kinds of figures:
- events (frames, finished tasks, output stored, refusals) are counted where they happen,
  through children bound to their label values once, so a hot path pays one `inc()`;
- states (runners, sessions, unfinished tasks, the queue) are read from the hub's live state
  when a scrape asks (`HubStateCollector`), never kept up to date on every change.
"""

import asyncio
import gc
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate

import msgspec
import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from protocol import frames
from protocol.version import PACKAGE_VERSION

log = structlog.get_logger("hub.telemetry")

# Counters would each carry a `<name>_created` series too: noise next to the contract's names.
disable_created_metrics()

TASK_SOURCES = ("api", "schedule", "integration")
# The probe's default period (config metrics.loop_probe_interval_sec): cheap (4 wake-ups a
# second), but it sees only the pauses that overlap its sleeps' ends; a benchmark hunting
# 50 ms pauses sets ~0.01 s.
LOOP_PROBE_INTERVAL = 0.25
LOOP_LAG_WINDOW = 60.0
# A single lag at least this long is logged (hub.loop_paused), with the garbage collection
# done during it (config metrics.loop_lag_log_sec).
LOOP_LAG_LOG = 0.5

# Seconds, from a fast dispatch (a few ms) to a task that waited an hour for a runner.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   300.0, 900.0, 3600.0)
DURATION_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
                    21600.0, 86400.0)
BATCH_BUCKETS = (0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
              0.5, 1.0)


def _frame_tags(union: object) -> dict[type, str]:
    """Each frame class of a union (RunnerFrame, HubFrame) and its wire tag."""
    return {cls: str(cls.__struct_config__.tag) for cls in union.__args__  # type: ignore[attr-defined]
            if issubclass(cls, msgspec.Struct)}


class HubTelemetry:
    """One hub's registry and the metrics its parts count into."""

    def __init__(self, version: str = PACKAGE_VERSION,
                 probe_interval: float = LOOP_PROBE_INTERVAL, lag_log: float = LOOP_LAG_LOG):
        self.probe_interval, self.lag_log = probe_interval, lag_log
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        Gauge("semaphore_hub_info", "The hub's version (always 1).", ["version"],
              registry=registry).labels(version).set(1)

        self.tasks_created = Counter(
            "semaphore_hub_tasks_created", "Tasks created, by what created them.", ["source"],
            registry=registry)
        self._created = {source: self.tasks_created.labels(source) for source in TASK_SOURCES}
        self.tasks_finished = Counter(
            "semaphore_hub_tasks_finished", "Tasks that reached a final status.",
            ["app", "status"], registry=registry)
        self.task_duration = Histogram(
            "semaphore_hub_task_duration_seconds", "Start to end of finished tasks.",
            ["app", "status"], buckets=DURATION_BUCKETS, registry=registry)
        # Semaphore 2.20's own name, for dashboards moved from Semaphore (finished tasks).
        self.semaphore_tasks = Counter(
            "semaphore_tasks", "Finished tasks by outcome (Semaphore's name).", ["status"],
            registry=registry)
        # (app, status) -> bound children: apps and final statuses are few.
        self._finished: dict[tuple[str, str], tuple[Counter, Histogram, Counter]] = {}

        dispatch = Histogram(
            "semaphore_hub_dispatch_latency_seconds",
            "Task created -> assign sent (assigned) / accepted frame received (accepted).",
            ["stage"], buckets=LATENCY_BUCKETS, registry=registry)
        self.dispatch_assigned = dispatch.labels("assigned")
        self.dispatch_accepted = dispatch.labels("accepted")

        self.output_bytes = Counter("semaphore_hub_output_bytes", "Output bytes stored.",
                                    registry=registry)
        self.output_lines = Counter("semaphore_hub_output_lines", "Output lines stored.",
                                    registry=registry)
        self.output_frames = Counter("semaphore_hub_output_frames", "Output frames stored.",
                                     registry=registry)
        self.db_batch_rows = Histogram(
            "semaphore_hub_db_write_batch_rows", "Output chunks per write transaction.",
            buckets=BATCH_BUCKETS, registry=registry)
        self.db_commit = Histogram(
            "semaphore_hub_db_commit_seconds", "Duration of an output write transaction.",
            buckets=COMMIT_BUCKETS, registry=registry)

        received = Counter("semaphore_hub_frames_received", "Frames from runners, by type.",
                           ["type"], registry=registry)
        sent = Counter("semaphore_hub_frames_sent", "Frames to runners, by type.", ["type"],
                       registry=registry)
        # Frame class -> its bound child: counting a frame is a dict lookup and an inc().
        self.frames_received = {cls: received.labels(tag)
                                for cls, tag in _frame_tags(frames.RunnerFrame).items()}
        self.frames_sent = {cls: sent.labels(tag)
                            for cls, tag in _frame_tags(frames.HubFrame).items()}
        self.protocol_errors = Counter(
            "semaphore_hub_protocol_errors", "Runner sessions closed for a protocol error, by "
            "websocket close code.", ["code"], registry=registry)
        self.runner_reconnects = Counter(
            "semaphore_hub_runner_reconnects",
            "A runner's session replaced or resumed after a drop.", registry=registry)
        self._runners_seen: set[int] = set()
        self.rejected_logins = Counter(
            "semaphore_hub_rejected_logins", "Failed password logins (incl. rate limited).",
            registry=registry)
        self.rejected_registrations = Counter(
            "semaphore_hub_rejected_registrations",
            "Refused runner registrations and runner token authentications.",
            registry=registry)

        self.loop_lag = Histogram(
            "semaphore_hub_event_loop_lag_seconds",
            f"How late a periodic sleep ({probe_interval:g} s) of the event loop woke.",
            buckets=LAG_BUCKETS, registry=registry)
        self._lags: deque[tuple[float, float]] = deque()
        Gauge("semaphore_hub_event_loop_lag_max_seconds",
              f"Largest event loop lag seen in the last {LOOP_LAG_WINDOW:g} s.",
              registry=registry).set_function(self.lag_max)
        self._probe: asyncio.Task | None = None
        # Collections run thousands of times a second under load: counted in plain lists
        # (a Histogram's observe takes a lock), written out at scrape time.
        self._gc_pause = GcPauses()
        registry.register(self._gc_pause)
        self._gc_started, self._gc_started_cpu = 0.0, 0.0
        # Collections since the probe last woke: what a lag it then measures may be made of
        # (wall and CPU seconds: a collection on a starved machine lasts longer than its work).
        self._gc_window_seconds, self._gc_window_cpu, self._gc_window_generation = 0.0, 0.0, -1
        self._gc_window_longest = (0.0, -1)  # (seconds, generation) of the longest one
        self._state = HubStateCollector()
        registry.register(self._state)

    def scrape(self, state: "HubState") -> bytes:
        """The registry in Prometheus' text format, the live gauges from `state`."""
        self._state.state = state
        return generate_latest(self.registry)

    # Counted where it happens.

    def task_created(self, source: str) -> None:
        self._created[source].inc()

    def task_finished(self, app: str, status: str, started_at: float) -> None:
        """A task reached a final status; `started_at` (Unix time, 0: it never started)."""
        bound = self._finished.get((app, status))
        if bound is None:
            bound = self._finished[(app, status)] = (
                self.tasks_finished.labels(app, status), self.task_duration.labels(app, status),
                self.semaphore_tasks.labels(status))
        finished, duration, semaphore_total = bound
        finished.inc()
        semaphore_total.inc()
        if started_at:
            duration.observe(max(time.time() - started_at, 0.0))

    def runner_session(self, runner_id: int) -> None:
        """A runner's session began: after its first one in this hub's life, a reconnect."""
        if runner_id in self._runners_seen:
            self.runner_reconnects.inc()
        else:
            self._runners_seen.add(runner_id)

    def protocol_error(self, close_code: int) -> None:
        self.protocol_errors.labels(str(close_code)).inc()

    # The event loop's lag.

    def start(self) -> None:
        self._probe = asyncio.get_running_loop().create_task(self._probe_loop())
        gc.callbacks.append(self._on_gc)

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
            self._probe = None

    async def _probe_loop(self) -> None:
        """Sleep a fixed time and measure how much later than asked the loop woke us: the
        time a callback that was due waited behind others (blocking code, long handlers)."""
        loop = asyncio.get_running_loop()
        interval = self.probe_interval
        while True:
            asked, cpu = loop.time() + interval, time.thread_time()
            self._gc_window_seconds, self._gc_window_cpu, self._gc_window_generation = (
                0.0, 0.0, -1)
            self._gc_window_longest = (0.0, -1)
            await asyncio.sleep(interval)
            now = loop.time()
            lag = max(now - asked, 0.0)
            self.loop_lag.observe(lag)
            lags = self._lags
            lags.append((now, lag))
            while lags and lags[0][0] < now - LOOP_LAG_WINDOW:
                lags.popleft()
            if lag >= self.lag_log:
                # gc_ms: collections during the sleep and the lag; cpu_ms: the loop thread's
                # CPU time over the same window. A lag much longer than cpu_ms is time the
                # process waited for a CPU (a loaded machine), not work of its own.
                log.warning("hub.loop_paused", lag_ms=round(lag * 1000, 1),
                            cpu_ms=round((time.thread_time() - cpu) * 1000, 1),
                            gc_ms=round(self._gc_window_seconds * 1000, 1),
                            gc_cpu_ms=round(self._gc_window_cpu * 1000, 1),
                            gc_generation=self._gc_window_generation,
                            gc_longest_ms=round(self._gc_window_longest[0] * 1000, 1),
                            gc_longest_generation=self._gc_window_longest[1])

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        """gc.callbacks: the time each collection holds the interpreter (and so the loop)."""
        if phase == "start":
            self._gc_started, self._gc_started_cpu = time.perf_counter(), time.thread_time()
            return
        pause = time.perf_counter() - self._gc_started
        generation = info["generation"]
        self._gc_pause.observe(generation, pause)
        self._gc_window_seconds += pause
        self._gc_window_cpu += time.thread_time() - self._gc_started_cpu
        self._gc_window_generation = max(self._gc_window_generation, generation)
        if pause > self._gc_window_longest[0]:
            self._gc_window_longest = (pause, generation)

    def lag_max(self) -> float:
        if not self._lags:
            return 0.0
        since = self._lags[-1][0] - LOOP_LAG_WINDOW
        return max((lag for at, lag in self._lags if at >= since), default=0.0)


class GcPauses(Collector):
    """semaphore_hub_gc_pause_seconds{generation}: a histogram kept as plain counts."""

    def __init__(self) -> None:
        # Per generation: a count per bucket (the last one +Inf), and the sum.
        self.buckets = [[0] * (len(GC_BUCKETS) + 1) for _ in range(3)]
        self.sums = [0.0, 0.0, 0.0]

    def observe(self, generation: int, seconds: float) -> None:
        self.buckets[generation][bisect_left(GC_BUCKETS, seconds)] += 1
        self.sums[generation] += seconds

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(
            "semaphore_hub_gc_pause_seconds",
            "Garbage collections (each one stops the event loop), by generation.",
            labels=["generation"])
        for generation in range(3):
            counts = list(accumulate(self.buckets[generation]))
            family.add_metric([str(generation)], list(zip(
                [*map(str, GC_BUCKETS), "+Inf"], counts, strict=True)),
                self.sums[generation])
        yield family


class HubStateCollector(Collector):
    """Gauges read from the hub's live state at scrape time: `HubTelemetry.scrape` hands
    it the figures (hub/api/monitoring.py gathers them, the database's part included) just
    before the registry is written out."""

    def __init__(self) -> None:
        self.state: HubState | None = None

    def collect(self) -> Iterable[Metric]:
        state = self.state
        if state is None:  # no scrape yet (a registry read some other way)
            return
        runners = GaugeMetricFamily("semaphore_hub_runners", "Registered runners.",
                                    labels=["state", "scope"])
        for (runner_state, scope), count in sorted(state.runners.items()):
            runners.add_metric([runner_state, scope], count)
        yield runners
        yield GaugeMetricFamily("semaphore_hub_runner_sessions",
                                "Live runner websocket sessions.", value=state.runner_sessions)
        yield GaugeMetricFamily("semaphore_hub_browser_sessions",
                                "Live dashboard sockets (/api/ws).", value=state.browser_sessions)
        tasks = GaugeMetricFamily("semaphore_hub_tasks", "Unfinished tasks by status.",
                                  labels=["status"])
        for status, count in state.tasks.items():
            tasks.add_metric([status], count)
        yield tasks
        yield GaugeMetricFamily("semaphore_hub_queue_waiting_tasks",
                                "Tasks waiting for a runner.", value=state.waiting)
        yield GaugeMetricFamily("semaphore_hub_queue_oldest_waiting_seconds",
                                "Age of the oldest waiting task (0 if none).",
                                value=state.oldest_waiting)
        yield GaugeMetricFamily("semaphore_hub_ready", "1 when /api/ready would answer 200.",
                                value=1 if state.ready else 0)
        yield GaugeMetricFamily("semaphore_tasks_running",
                                "Tasks running now (Semaphore's name).",
                                value=state.tasks.get("running", 0))


@dataclass
class HubState:
    """The live figures of one scrape."""

    runners: dict[tuple[str, str], int]
    runner_sessions: int
    browser_sessions: int
    tasks: dict[str, int]
    waiting: int
    oldest_waiting: float
    ready: bool
