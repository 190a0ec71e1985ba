"""The runner's session with the hub: connect out, hello/welcome, then frames both ways.

One persistent websocket; on any loss it reconnects with jittered, capped exponential backoff
and resends, from the hub's last acked seq, every output frame the hub has not stored. A
refused token is not a loss: it ends the runner with a message saying to register.
"""

import asyncio
import platform
import random
import ssl
import time
from collections.abc import Callable
from typing import Any

import structlog
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from agent.backoff import backoff_delays
from agent.errors import RunnerError
from agent.metrics import read_metrics
from agent.worker import TaskWorker
from protocol.codec import ProtocolError, encode
from protocol.frames import (
    Ack,
    Assign,
    Cancel,
    Decision,
    Error,
    Heartbeat,
    Hello,
    RunnerFrame,
    Update,
    Welcome,
)
from protocol.limits import MAX_FRAME_BYTES
from protocol.session import RunnerSession, SessionRefused
from protocol.version import PACKAGE_VERSION, PROTOCOL_VERSION

log = structlog.get_logger("agent.connection")

HANDSHAKE_TIMEOUT = 10.0
# Until the hub's welcome says its own (hub/config.py's default).
DEFAULT_HEARTBEAT_INTERVAL = 5.0


class RunnerRefused(RunnerError):
    """The hub will not take this runner as it is (bad token, disabled, wrong version)."""


class Outbox:
    """Where the runner's frames for the hub go: queued while a session is live.

    The worker emits into it from its construction on. Between sessions what is emitted is
    dropped: every output and finished frame stays in its task's ledger and spool until the hub
    acks it, and the next session queues those first (`open`), so nothing is lost.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[RunnerFrame] | None = None

    def emit(self, frame: RunnerFrame) -> None:
        """Queue a frame for the live session; without one, the ledger keeps output for later."""
        if self._queue is not None:
            self._queue.put_nowait(frame)

    def open(self, resend: list[RunnerFrame]) -> asyncio.Queue[RunnerFrame]:
        """A session is live: its queue, holding `resend`; new frames queue behind them."""
        queue: asyncio.Queue[RunnerFrame] = asyncio.Queue()
        for frame in resend:
            queue.put_nowait(frame)
        self._queue = queue
        return queue

    def close(self) -> None:
        self._queue = None

    @property
    def live(self) -> bool:
        """A session takes frames now (what is emitted is queued, not dropped)."""
        return self._queue is not None

    def flushed(self) -> bool:
        """Nothing queued waits to be sent (or no session)."""
        return self._queue is None or self._queue.empty()


class RunnerConnection:
    """The I/O shell of the runner's sessions: one websocket at a time, reconnecting.

    It sends the hello, feeds each message to that session's `RunnerSession` (the rules) and
    acts on what comes back: the hub's task frames go to the worker, a refusal ends the runner,
    a protocol error ends the session. What the worker emits reaches the hub through `outbox`.
    """

    def __init__(self, url: str, token: str, worker: TaskWorker, outbox: Outbox, *,
                 name: str, tags: list[str], disk_path: str,
                 ssl_context: ssl.SSLContext | None = None):
        self.url = url
        # websockets refuses any ssl argument (even None) for ws:// URLs, and ssl=None for
        # wss://; without a context of our own, wss:// uses the system trust store.
        self._tls: dict[str, Any] = (
            {"ssl": ssl_context} if ssl_context is not None and url.startswith("wss:") else {})
        self.token = token
        self.worker = worker
        self.outbox = outbox
        self.name = name
        self.tags = tags
        self.disk_path = disk_path
        self.connected = asyncio.Event()
        self.runner_id: int | None = None
        self._welcomed = False
        # Self-update (agent/update.py): where the hub's Update frames go, what the first
        # welcome confirms, and why the last update did not take (said in the next hello).
        self.on_update: Callable[[Update], None] | None = None
        self.on_welcome: Callable[[], None] | None = None
        self.update_error = ""
        # Health figures (agent/health.py reads them when asked): plain numbers, set where
        # things happen, so that counting costs nothing on the output path.
        self.connected_since: float | None = None  # Unix time of the current session's welcome
        self.disconnected_since = time.time()  # since start, or the last session's end
        self.last_hub_contact: float | None = None  # Unix time of the hub's last frame
        self.heartbeat_interval = DEFAULT_HEARTBEAT_INTERVAL  # the hub's, from its welcome
        self.sessions = 0  # welcomed sessions; all but the first are reconnects
        self.heartbeats_sent = 0

    async def run(self, until: asyncio.Event) -> None:
        """Stay connected until `until` is set; raises RunnerRefused if the hub says no."""
        delays = backoff_delays()
        attempt = 0
        while not until.is_set():
            attempt += 1
            self._welcomed = False
            try:
                await self._session(until)
                if until.is_set():
                    return
                log.warning("runner.disconnected", url=self.url)
            except RunnerRefused:
                raise
            except InvalidStatus as exc:
                status = exc.response.status_code
                body = exc.response.body.decode(errors="replace").strip()
                if status == 401:
                    raise RunnerRefused(f"the hub refused this runner's token ({status}: "
                                        f"{body or 'unauthorized'}); register it again with "
                                        f"`semaphore runner register`") from None
                # 403: disabled by an admin. Keep knocking (with backoff) so that enabling
                # it again brings it back without touching this host.
                log.warning("runner.connect.failed", url=self.url, attempt=attempt,
                            error=f"HTTP {status} {body}")
            except (OSError, TimeoutError, ConnectionClosed, websockets.InvalidHandshake,
                    ProtocolError) as exc:
                event = "runner.disconnected" if self._welcomed else "runner.connect.failed"
                log.warning(event, url=self.url, attempt=attempt,
                            error=str(exc) or type(exc).__name__)
            finally:
                self.outbox.close()
                if self.connected.is_set():
                    self.disconnected_since = time.time()
                self.connected.clear()
            if self._welcomed:
                # A session that got going resets the backoff, however it ended: the next
                # try comes quickly, and only repeated failures to connect slow it down.
                delays, attempt = backoff_delays(), 0
            delay = next(delays)
            log.info("runner.reconnect.wait", seconds=round(delay, 2), attempt=attempt)
            try:
                await asyncio.wait_for(until.wait(), delay)
            except TimeoutError:
                pass

    async def _session(self, until: asyncio.Event) -> None:
        async with connect(self.url, additional_headers={"Authorization":
                                                         f"Bearer {self.token}"},
                           max_size=MAX_FRAME_BYTES, compression=None,
                           open_timeout=HANDSHAKE_TIMEOUT, ping_interval=20,
                           ping_timeout=20, close_timeout=5, **self._tls) as ws:
            session, welcome = await self._handshake(ws)
            self._welcomed = True
            self.sessions += 1
            self.connected_since = self.last_hub_contact = time.time()
            self.heartbeat_interval = welcome.heartbeat_interval
            self.runner_id = welcome.runner_id
            self.worker.max_output_bytes = welcome.max_output_bytes
            structlog.contextvars.bind_contextvars(runner_id=welcome.runner_id)
            acked = {a.task_id: a.seq for a in welcome.acked}
            outbox = self.outbox.open(self.worker.unacked_frames(acked))
            self.connected.set()
            self.update_error = ""  # said once
            if self.on_welcome is not None:
                self.on_welcome()
            log.info("runner.connected", url=self.url, session_id=welcome.session_id,
                     resent=outbox.qsize(), tags=welcome.tags)
            if welcome.notice:
                # The hub, not this config, decides the runner's tags: say so where the
                # operator who edited the config will look.
                log.warning("runner.hub.notice", notice=welcome.notice, tags=welcome.tags,
                            config_tags=self.tags)
            tasks = [asyncio.create_task(coro) for coro in (
                self._send_loop(ws, outbox), self._receive_loop(ws, session),
                self._heartbeat_loop(ws, welcome.heartbeat_interval), until.wait())]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                if not task.cancelled() and (error := task.exception()) is not None:
                    raise error

    async def _handshake(self, ws: ClientConnection) -> tuple[RunnerSession, Welcome]:
        hello = Hello(protocol_version=PROTOCOL_VERSION, runner_version=PACKAGE_VERSION,
                      name=self.name, tags=self.tags,
                      max_parallel_tasks=self.worker.max_parallel_tasks,
                      platform=f"{platform.system().lower()}/{platform.machine()}",
                      held_tasks=self.worker.held_tasks(),
                      shared_identity=self.worker.shared_identity, apps=self.worker.apps,
                      update_error=self.update_error)
        await ws.send(encode(hello).decode())
        session = RunnerSession(asyncio.get_running_loop().time(),
                                handshake_timeout=HANDSHAKE_TIMEOUT)
        async with asyncio.timeout_at(session.next_deadline()):
            verdict = session.receive(await ws.recv())
        if isinstance(verdict, SessionRefused):
            raise RunnerRefused(f"the hub refused the session: {verdict.message}")
        if isinstance(verdict, ProtocolError):
            raise verdict
        assert isinstance(verdict, Welcome)  # the session hands on nothing else first
        return session, verdict

    async def _send_loop(self, ws: ClientConnection, outbox: asyncio.Queue) -> None:
        while True:
            frame = await outbox.get()
            await ws.send(encode(frame).decode())

    async def _receive_loop(self, ws: ClientConnection, session: RunnerSession) -> None:
        async for message in ws:
            self.last_hub_contact = time.time()
            verdict = session.receive(message)
            if isinstance(verdict, ProtocolError):
                log.error("hub.frame.invalid", error=verdict.message)
                await ws.close(verdict.close_code, verdict.code)
                return
            if isinstance(verdict, Assign | Ack | Cancel | Decision):
                self.worker.handle(verdict)
            elif isinstance(verdict, Update):
                if self.on_update is not None:
                    self.on_update(verdict)
            elif isinstance(verdict, Error):
                log.warning("hub.error", code=verdict.code, message=verdict.message)
        if ws.close_code not in (None, 1000, 1001):
            log.warning("runner.closed_by_hub", code=ws.close_code, reason=ws.close_reason)

    def send_heartbeat(self) -> None:
        """A heartbeat now (e.g. to tell the hub at once that this runner is draining)."""
        if self.outbox.live:
            self.heartbeats_sent += 1
        self.outbox.emit(Heartbeat(time=time.time(), running=self.worker.running_ids,
                                   metrics=read_metrics(self.disk_path),
                                   draining=self.worker.draining))

    async def _heartbeat_loop(self, ws: ClientConnection, interval: float) -> None:
        while True:
            self.send_heartbeat()
            # A little early and never in step with the rest of the fleet (runners that
            # reconnected together after a hub restart would otherwise beat together).
            await asyncio.sleep(interval * random.uniform(0.8, 1.0))

