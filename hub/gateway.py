"""The runners' websocket endpoint: one persistent session per runner.

Authentication happens at the upgrade (a bad token is an HTTP 401 before any websocket
exists). Then hello/welcome, then frames both ways until the runner leaves, goes silent for
3 heartbeat intervals, or sends something the protocol forbids. Bad input ends that one
session with an error frame and a close code; the hub and every other session go on.

Every deadline (hello, silence, accept) is measured on protocol frames, never on websocket
traffic: a peer that only answers pings holds no session and no task.

The rules themselves (hello first, versions, one hello, deadlines, frame rate) are the
session's, `protocol.session.HubSession`: this module feeds it the socket's messages and the
time, and acts on what it hands back (a frame to apply, a refusal to send, a timer to arm).
"""

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable

import structlog
from aiohttp import WSMsgType, web
from prometheus_client import Counter

from hub.context import HUB, Hub
from hub.core.links import RunnerLink
from hub.core.reports import NotYourTask
from hub.deadline import ReceiveDeadline
from hub.security import bearer_token, hash_token
from hub.store import NotFound, utcnow
from hub.store.base import decode_tags
from protocol.codec import CloseCode, ProtocolError, encode
from protocol.frames import (
    Ack,
    Error,
    Heartbeat,
    Hello,
    HubFrame,
    RunnerFrame,
    TaskSecrets,
    TaskSpec,
    UpdateProgress,
    Welcome,
)
from protocol.limits import MAX_FRAME_BYTES, MISSED_HEARTBEATS_OFFLINE
from protocol.session import HubSession, Silent
from protocol.version import PROTOCOL_VERSION

log = structlog.get_logger("hub.gateway")

HELLO_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0  # how long a close waits for the runner's close frame

# Frames per second one session may send, and the burst it may save up. Real runners coalesce
# output into frames of up to 16 KiB (at most one per 5 ms per task), so this only stops a
# session that floods the hub; it is ended with `rate_limited` (it may reconnect, and a real
# runner resumes from what was acked) while every other session goes on.
FRAME_RATE = 10000.0
FRAME_BURST = 40000.0  # a reconnect resends up to 32 MiB per task in 16 KiB frames


class WebSocketLink(RunnerLink):
    """A runner reached through its websocket; frames go out in order from one sender task.

    Its session keeps when each assign is due an answer; one timer, armed at the earliest
    deadline, hands each overdue task to `on_overdue`.
    """

    def __init__(self, ws: web.WebSocketResponse, session: HubSession,
                 on_overdue: Callable[[int], None], sent: dict[type, Counter], **kwargs):
        super().__init__(**kwargs)
        self.ws = ws
        self._sent = sent  # frame class -> its frames_sent_total child
        self.session = session
        self._outbox: deque[HubFrame] = deque()
        self._acks: dict[int, Ack] = {}
        self._ready = asyncio.Event()
        self._on_overdue = on_overdue
        self._accept_timer: asyncio.TimerHandle | None = None

    @property
    def accept_timeout(self) -> float:
        return self.session.accept_timeout

    def assign(self, task_id: int, spec: TaskSpec, secrets: TaskSecrets | None = None) -> None:
        super().assign(task_id, spec, secrets)
        # The answer (accepted or rejected) is due within accept_timeout; a timer, not the
        # socket, keeps that time, so a session that is otherwise alive cannot sit on a task.
        self.session.assigned(task_id, asyncio.get_running_loop().time())
        if self._accept_timer is None:  # else armed already, for an earlier deadline
            self._arm()

    def drop_deadlines(self) -> None:
        """The session is over: whatever it did not answer, detach settles."""
        if self._accept_timer is not None:
            self._accept_timer.cancel()
            self._accept_timer = None

    def _arm(self) -> None:
        deadline = self.session.next_accept_deadline()
        self._accept_timer = None if deadline is None else (
            asyncio.get_running_loop().call_at(deadline, self._overdue))

    def _overdue(self) -> None:
        for task_id in self.session.overdue(asyncio.get_running_loop().time()):
            self._on_overdue(task_id)
        self._arm()

    def send(self, frame: HubFrame) -> None:
        self._outbox.append(frame)
        self._ready.set()

    def ack(self, task_id: int, seq: int, finished: bool = False) -> None:
        # Acks are cumulative: only the newest per task needs to go out.
        previous = self._acks.get(task_id)
        if previous is not None and previous.finished:
            finished = True
        self._acks[task_id] = Ack(task_id=task_id, seq=seq, finished=finished)
        self._ready.set()

    def close(self, code: int, reason: str) -> None:
        asyncio.get_running_loop().create_task(
            self.ws.close(code=code, message=reason.encode()[:120]))

    async def run_sender(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._outbox or self._acks:
                if self._outbox:
                    frame = self._outbox.popleft()
                else:
                    _, frame = self._acks.popitem()
                await self.ws.send_str(encode(frame).decode())
                self._sent[type(frame)].inc()


async def runner_websocket(request: web.Request) -> web.StreamResponse:
    hub: Hub = request.app[HUB]
    token = bearer_token(request.headers)
    runner = await hub.store.find_runner_by_token_hash(hash_token(token)) if token else None
    if runner is None:
        log.warning("runner.auth.refused", remote=request.remote)
        hub.telemetry.rejected_registrations.inc()
        raise web.HTTPUnauthorized(text='{"error": "invalid runner token"}',
                                   content_type="application/json")
    if not runner["active"]:
        hub.telemetry.rejected_registrations.inc()
        raise web.HTTPForbidden(text='{"error": "runner is disabled"}',
                                content_type="application/json")
    # Websocket pings catch half-open connections that frames alone would not.
    ws = RunnerWebSocket(max_msg_size=2 * MAX_FRAME_BYTES, timeout=CLOSE_TIMEOUT,
                               heartbeat=max(hub.config.heartbeat_interval, 1.0),
                               compress=False, decode_text=False)
    await ws.prepare(request)
    await RunnerSocket(hub, ws, runner, request.remote or "").run()
    return ws


class RunnerWebSocket(web.WebSocketResponse):
    """aiohttp's websocket, minus false pong timeouts after the event loop stood still.

    aiohttp cancels the pong timer from a callback it schedules (call_soon) when data
    arrives. After a pause longer than the pong wait (half the heartbeat, 2.5 s by default;
    a long collection or a starved machine), the due timer runs in the same loop iteration as
    the read that brought the pong, before that callback: the session was dropped though its
    pong had arrived, and at 10,000 runners thousands reconnected at once, pausing the loop
    again. Data received and not yet accounted for means the runner is there.
    """

    def _pong_not_received(self) -> None:
        if getattr(self, "_need_heartbeat_reset", False):
            return  # the pending reset (aiohttp's) re-arms the heartbeat
        super()._pong_not_received()


class RunnerSocket:
    """One runner's websocket on the hub: the I/O shell around its `HubSession`.

    It reads messages with the session's deadline, feeds them to the session, and applies
    what comes back: the hello opens the runner's link (welcome, reconcile, dispatch), task
    frames go to the hub's reports, a refusal is sent and closes the socket. However the
    session ends, the link is detached before the socket is closed.
    """

    def __init__(self, hub: Hub, ws: web.WebSocketResponse, runner: dict, remote: str):
        self.hub = hub
        self.remote = remote
        self.ws = ws
        self.runner = runner
        self.session_id = uuid.uuid4().hex
        self.log = log.bind(runner_id=runner["id"], session_id=self.session_id)
        self.link: WebSocketLink | None = None
        self.session = HubSession(
            asyncio.get_running_loop().time(), hello_timeout=HELLO_TIMEOUT,
            silence_limit=hub.config.heartbeat_interval * MISSED_HEARTBEATS_OFFLINE,
            accept_timeout=hub.config.runner_accept_timeout_sec, frame_rate=FRAME_RATE,
            frame_burst=FRAME_BURST)
        self._sender: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self._received = hub.telemetry.frames_received
        # The whole receive is bounded, not each read inside it: aiohttp's own receive
        # timeout starts again at every ping and pong it handles internally, so a peer that
        # answers pings but sends no frame would never reach it.
        self._deadline = ReceiveDeadline()

    async def run(self) -> None:
        try:
            verdict = await self._next()
            if isinstance(verdict, Hello):  # else no hello: refused, or the socket closed
                verdict = await self._serve(verdict)
            if isinstance(verdict, ProtocolError):
                await self._refuse(verdict)
            elif isinstance(verdict, Silent):
                # Offline now: detached (below) before the socket is closed, which may take
                # a moment with a peer that does not answer.
                self.log.warning("runner.offline", silent_for=verdict.seconds)
        except ProtocolError as exc:
            await self._refuse(exc)
        except ConnectionError:
            pass
        finally:
            self.session.close()
            self._deadline.close()
            if self._sender is not None:
                self._sender.cancel()
            if self.link is not None:
                self.link.drop_deadlines()
                await self.hub.dispatcher.detach(self.link)
                await self.hub.store.update_runner(self.runner["id"], {"touched": utcnow()})
            if not self.ws.closed:
                await self.ws.close(code=CloseCode.GOING_AWAY)
            self.log.info("runner.disconnected", close_code=self.ws.close_code)

    async def _serve(self, hello: Hello) -> ProtocolError | Silent | None:
        """Welcome the runner, hand it to the dispatcher and apply its frames until the
        session ends; what ended it."""
        self.link = link = await self._open_link(hello)
        telemetry = self.hub.telemetry
        telemetry.runner_session(link.runner_id)
        reconciliation = await self.hub.tasks.reconcile(link, hello.held_tasks)
        await self.ws.send_str(encode(Welcome(
            protocol_version=PROTOCOL_VERSION, session_id=self.session_id,
            runner_id=self.runner["id"], heartbeat_interval=self.hub.config.heartbeat_interval,
            max_frame_bytes=MAX_FRAME_BYTES,
            max_output_bytes=self.hub.config.max_task_output_bytes,
            acked=reconciliation.acked, tags=sorted(link.tags),
            notice=self._tags_notice(hello.tags, link.tags))).decode())
        telemetry.frames_sent[Welcome].inc()
        for order in reconciliation.then_send:
            link.send(order)
        self._sender = asyncio.create_task(link.run_sender())
        self.hub.dispatcher.attach(link)
        self.hub.rollout.connected(link)
        self.log.info("runner.connected", name=link.name, remote=self.remote,
                      held=len(hello.held_tasks), tags=sorted(link.tags))
        reports = self.hub.reports
        while True:
            frame = await self._next()
            if frame is None or isinstance(frame, ProtocolError | Silent):
                return frame
            link.last_seen = time.time()
            if isinstance(frame, Heartbeat):
                self._heartbeat(link, frame)
            elif isinstance(frame, Error):
                self.log.warning("runner.error", code=frame.code, message=frame.message)
            elif isinstance(frame, UpdateProgress):
                await self.hub.rollout.progress(link, frame)
            else:
                try:
                    await reports.handle(link, frame)
                except NotYourTask as exc:
                    self.log.warning("runner.frame.refused", reason=str(exc),
                                     frame=type(frame).__name__.lower())
                    link.send(Error(code="not_your_task", message=str(exc)))

    async def _next(self) -> RunnerFrame | ProtocolError | Silent | None:
        """The next frame the session hands on, or the verdict that ends it; None when the
        socket closed or failed."""
        loop = asyncio.get_running_loop()
        # Silence counts from the last protocol frame the hub has handled (a frame still
        # queued behind the hub's own backpressure is not the runner's silence).
        self.session.handled(loop.time())
        message = await self._deadline.wait(self.ws.receive(), self.session.next_deadline())
        if message is None:
            return self.session.expire()
        if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            if message.type == WSMsgType.ERROR and self.link is not None:
                self.log.warning("runner.socket.error", error=str(self.ws.exception()))
            return None
        verdict = self.session.receive(message.data, loop.time())
        counter = self._received.get(type(verdict))  # None for a verdict, not a frame
        if counter is not None:
            counter.inc()
        return verdict

    async def _current_record(self) -> dict:
        """The runner's row as it is now: the hello may come seconds after the upgrade, and an
        admin's edit (or revocation) in between must hold for this session too."""
        try:
            runner = await self.hub.store.get_runner(self.runner["id"])
        except NotFound:
            runner = None
        if runner is None or not runner["active"]:
            raise ProtocolError("runner_revoked", "this runner was deleted or disabled",
                                CloseCode.POLICY_VIOLATION)
        self.runner = runner
        return runner

    async def _open_link(self, hello: Hello) -> WebSocketLink:
        runner = await self._current_record()
        # The hub's record is the authority on tags (set at registration, by a one-time
        # token or an admin) and on scope (project_id): a hello's tags are never taken, or a
        # runner could pick the tags, and so the tasks and secrets, it is given.
        tags = decode_tags(runner["tags"])
        values = {"touched": utcnow(), "platform": hello.platform,
                  "version": hello.runner_version,
                  "max_parallel_tasks": hello.max_parallel_tasks,
                  "shared_identity": int(hello.shared_identity)}
        if hello.name and not runner["name"]:
            values["name"] = hello.name
        await self.hub.store.update_runner(runner["id"], values)
        name = runner["name"] or hello.name or f"runner-{runner['id']}"
        if hello.shared_identity:
            # Not refused (that is the admin's call), but said at every connect: its tasks
            # can read its token, key and spool, so one task may act as the runner.
            self.log.warning("runner.shared_identity", name=name,
                             project_id=runner["project_id"],
                             hint="its tasks run as the runner's own user; keep it "
                                  "bound to one project")
        return WebSocketLink(self.ws, self.session, self._accept_overdue,
                             self.hub.telemetry.frames_sent,
                             runner_id=runner["id"], name=name,
                             project_id=runner["project_id"], tags=frozenset(tags),
                             max_parallel_tasks=hello.max_parallel_tasks,
                             public_key=runner["public_key"],
                             last_seen=time.time(), apps=hello.apps,
                             version=hello.runner_version, platform=hello.platform,
                             update_error=hello.update_error[:1000])

    def _tags_notice(self, asked: list[str], tags: frozenset[str]) -> str:
        """What the welcome tells a runner whose hello asked for tags other than the ones the
        hub holds for it (empty when it asked for none, or for exactly those)."""
        if not asked or set(asked) == tags:
            return ""
        self.log.warning("runner.tags.refused", asked=asked, tags=sorted(tags))
        return (f"this runner's tags are {sorted(tags)}, as the hub holds them; the tags in "
                f"its hello ({asked}) are not taken: a registered runner's tags change only "
                f"on the hub (an admin, or the project's owner or manager, edits the runner)")

    def _heartbeat(self, link: WebSocketLink, frame: Heartbeat) -> None:
        link.metrics = frame.metrics
        self._record_metrics(link, frame)
        if frame.draining != link.draining:
            link.draining = frame.draining
            self.log.info("runner.draining" if frame.draining else "runner.resumed")

    def _record_metrics(self, link: WebSocketLink, frame: Heartbeat) -> None:
        """One point of the runner's history and one live event per heartbeat. The time is
        the hub's: a runner's clock may be off, and the chart's points must line up."""
        metrics = frame.metrics
        figures = {"cpu_percent": metrics.cpu_percent, "memory_used": metrics.memory_used,
                   "memory_total": metrics.memory_total, "disk_free": metrics.disk_free,
                   "load1": metrics.load1}
        now = time.time()
        running = len(frame.running)
        self.hub.metrics.add(link.runner_id, {"time": now, **figures, "running": running})
        self.hub.events.publish("runner_metrics", runner_id=link.runner_id,
                                project_id=link.project_id, time=now, running=running,
                                max_parallel_tasks=link.max_parallel_tasks,
                                draining=link.draining, metrics=figures)

    def _accept_overdue(self, task_id: int) -> None:
        job = asyncio.get_running_loop().create_task(self._give_back(task_id))
        self._background.add(job)  # keep a reference until it is done
        job.add_done_callback(self._background.discard)

    async def _give_back(self, task_id: int) -> None:
        """An assign this runner did not answer in time: it is told to drop the task, which
        goes back to waiting for another runner. Whatever it says about the task later is
        refused as not its own."""
        if self.link is None:
            return
        try:
            await self.hub.tasks.not_accepted(self.link, task_id, self.link.accept_timeout)
        except Exception:
            self.log.exception("task.accept.timeout.failed", task_id=task_id)

    async def _refuse(self, exc: ProtocolError) -> None:
        self.log.warning("runner.frame.invalid", code=exc.code, error=exc.message,
                         close_code=exc.close_code)
        self.hub.telemetry.protocol_error(exc.close_code)
        if self.ws.closed:
            return
        try:
            await self.ws.send_str(encode(Error(code=exc.code, message=exc.message)).decode())
            self.hub.telemetry.frames_sent[Error].inc()
            await self.ws.close(code=exc.close_code, message=exc.code.encode())
        except ConnectionError:
            pass

