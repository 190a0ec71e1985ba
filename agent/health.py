"""The runner's own health address (`runner.health_addr`): GET /health and GET /metrics.

For a supervisor or a Prometheus next to the runner, to tell a runner that is up but cut off
from its hub from one that works. Nothing here is on the output path: the connection and the
worker keep plain numbers (a counter bump, a timestamp), and every figure is read from them,
or from the spool folder, only when someone asks (a custom collector, at scrape time).

Served by the `websockets` server the runner already ships: its `process_request` hook answers
plain HTTP requests itself, so no connection is ever upgraded and no second HTTP stack is
bundled. Its handshake timeout (10 s) bounds a slow client; one that sends no valid HTTP
request is disconnected.
"""

import email.utils
import http
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

import structlog
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from agent.connection import RunnerConnection
from agent.health_addr import parse_health_addr
from agent.worker import TaskWorker
from protocol.frames import TaskStatus
from protocol.version import PACKAGE_VERSION

log = structlog.get_logger("agent.health")

# /health answers 503 once the runner has been without a hub session this many heartbeat
# intervals (the hub marks a runner offline after missing about as many of its heartbeats).
MISSED_HEARTBEATS_UNHEALTHY = 3
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Bounded cost of a scrape: the spool walk stops counting after this many files (a task's
# spool holds a few segments of 4 MiB each, plus two small files).
SPOOL_FILES_LIMIT = 10_000

def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def spool_bytes(folder: Path) -> int:
    """Bytes of the spool's files on disk (spool/task_<id>/*), at most SPOOL_FILES_LIMIT of
    them stat'ed. A folder removed meanwhile (a task acked) is skipped."""
    total = files = 0
    try:
        tasks = list(os.scandir(folder))
    except OSError:
        return 0
    for task in tasks:
        try:
            if not task.is_dir(follow_symlinks=False):
                continue
            with os.scandir(task.path) as entries:
                for entry in entries:
                    files += 1
                    if files > SPOOL_FILES_LIMIT:
                        return total
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


class RunnerHealth:
    """The figures, read from the connection and the worker when asked."""

    def __init__(self, connection: RunnerConnection, worker: TaskWorker):
        self.connection = connection
        self.worker = worker

    def unhealthy(self, now: float) -> bool:
        """Without a session for longer than MISSED_HEARTBEATS_UNHEALTHY intervals."""
        c = self.connection
        if c.connected.is_set():
            return False
        return now - c.disconnected_since > MISSED_HEARTBEATS_UNHEALTHY * c.heartbeat_interval

    def status(self) -> tuple[int, dict]:
        c = self.connection
        connected = c.connected.is_set()
        body = {
            "status": "ok" if connected else "disconnected",
            "connected": connected,
            "connected_since": _iso(c.connected_since if connected else None),
            "last_hub_contact": _iso(c.last_hub_contact),
            "tasks_running": len(self.worker.running_ids),
            "version": PACKAGE_VERSION,
        }
        return (503 if self.unhealthy(time.time()) else 200), body


class RunnerCollector(Collector):
    """semaphore_runner_* (docs: the metrics contract's runner section), made at scrape time."""

    def __init__(self, health: RunnerHealth):
        self.health = health

    def collect(self) -> Iterator[Metric]:
        c, w = self.health.connection, self.health.worker
        connected = c.connected.is_set()
        info = GaugeMetricFamily("semaphore_runner_info", "The runner's version",
                                 labels=["version"])
        info.add_metric([PACKAGE_VERSION], 1)
        yield info
        yield GaugeMetricFamily("semaphore_runner_connected",
                                "1 while a session with the hub is up", value=int(connected))
        yield GaugeMetricFamily(
            "semaphore_runner_connected_since_seconds",
            "Unix time the current session started (0 if none)",
            value=(c.connected_since or 0.0) if connected else 0.0)
        yield GaugeMetricFamily("semaphore_runner_last_hub_contact_seconds",
                                "Unix time of the last frame from the hub (0 if none yet)",
                                value=c.last_hub_contact or 0.0)
        yield GaugeMetricFamily("semaphore_runner_tasks_running", "Tasks running",
                                value=len(w.running_ids))
        finished = CounterMetricFamily("semaphore_runner_tasks_finished_total",
                                       "Tasks finished, by status", labels=["status"])
        # Every final status from the start (0 until one ends so): rate() needs no gap.
        for status in sorted({*get_args(TaskStatus), *w.finished_counts}):
            finished.add_metric([status], w.finished_counts.get(status, 0))
        yield finished
        yield GaugeMetricFamily("semaphore_runner_spool_bytes", "Spool size on disk",
                                value=spool_bytes(w.work_root / "spool"))
        yield GaugeMetricFamily("semaphore_runner_frames_unacked",
                                "Output frames sent, not yet acked by the hub",
                                value=sum(s.ledger.last_seq - s.ledger.acked_seq
                                          for s in list(w.tasks.values())))
        yield CounterMetricFamily("semaphore_runner_reconnects_total",
                                  "Sessions started after the first",
                                  value=max(c.sessions - 1, 0))
        yield CounterMetricFamily("semaphore_runner_heartbeats_sent_total", "Heartbeats sent",
                                  value=c.heartbeats_sent)


class HealthServer:
    """GET|HEAD /health and /metrics on `health_addr`; anything else 404 (405 for a method
    other than GET or HEAD)."""

    def __init__(self, health: RunnerHealth):
        self.health = health
        # Its own registry: never the process-global one (tests run several in one process).
        self.registry = CollectorRegistry()
        self.registry.register(RunnerCollector(health))
        ProcessCollector(registry=self.registry)
        self._server: Server | None = None

    async def start(self, addr: str) -> None:
        """Listen on `addr` (validated by the config); OSError if it cannot be bound."""
        host, port = parse_health_addr(addr)
        self._server = await serve(self._never_upgraded, host, port,
                                   process_request=self._answer, server_header=None,
                                   open_timeout=10)
        bound = [sock.getsockname() for sock in self._server.sockets]
        log.info("runner.health.listening", addr=addr, bound=[f"{a[0]}:{a[1]}" for a in bound])

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _never_upgraded(self, connection: ServerConnection) -> None:
        """Every request is answered by _answer; no websocket is ever opened here."""

    def _answer(self, connection: ServerConnection, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        if request.method not in ("GET", "HEAD"):
            response = _response(405, b"only GET and HEAD\n", "text/plain; charset=utf-8",
                                 {"Allow": "GET, HEAD"})
        elif path == "/health":
            status, body = self.health.status()
            response = _response(status, json.dumps(body).encode(), "application/json")
        elif path == "/metrics":
            response = _response(200, generate_latest(self.registry), PROMETHEUS_TYPE)
        else:
            response = _response(404, b"not found: /health or /metrics\n",
                                 "text/plain; charset=utf-8")
        if request.method == "HEAD":  # the same headers (Content-Length too), no body
            response.body = b""
        return response


def _response(status: int, body: bytes, content_type: str,
              extra: dict[str, str] | None = None) -> Response:
    phrase = http.HTTPStatus(status).phrase
    headers = Headers([("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close"),
                       ("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), *(extra or {}).items()])
    return Response(status, phrase, headers, body)
