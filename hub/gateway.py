"""The runners' websocket endpoint: one persistent session per runner.

Authentication happens at the upgrade (a bad token is an HTTP 401 before any websocket
exists). Then hello/welcome, then frames both ways until the runner leaves, goes silent for
3 heartbeat intervals, or sends something the protocol forbids. Bad input ends that one
session with an error frame and a close code; the hub and every other session go on.
"""

import asyncio
import json
import time
import uuid
from collections import deque

import structlog
from aiohttp import WSMsgType, web

from hub.context import HUB, Hub
from hub.links import RunnerLink
from hub.ratelimit import SlidingWindow, TokenBucket, per_app
from hub.reports import NotYourTask
from hub.security import hash_token
from hub.store.base import decode_tags
from hub.store.sqlite import utcnow
from protocol.codec import CloseCode, ProtocolError, decode_runner_frame, encode
from protocol.frames import Ack, Error, Heartbeat, Hello, HubFrame, Welcome
from protocol.limits import MAX_FRAME_BYTES, MISSED_HEARTBEATS_OFFLINE
from protocol.version import PROTOCOL_VERSION, SUPPORTED_VERSIONS

log = structlog.get_logger("hub.gateway")

HELLO_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0  # how long a close waits for the runner's close frame

# Frames per second one session may send, and the burst it may save up. Real runners coalesce
# output into frames of up to 16 KiB (at most one per 5 ms per task), so this only stops a
# session that floods the hub; it is ended with `rate_limited` (it may reconnect, and a real
# runner resumes from what was acked) while every other session goes on.
FRAME_RATE = 10000.0
FRAME_BURST = 40000.0  # a reconnect resends up to 32 MiB per task in 16 KiB frames

# Failed registrations (POST /api/internal/runners) per client address and window (seconds);
# past that, every attempt from the address is a 429 until the window moves on. Successful
# ones do not count: a fleet behind one NAT may enrol many runners at once.
REGISTRATION_FAILURES = 10
REGISTRATION_WINDOW = 60.0


def registration_failures(app: web.Application) -> SlidingWindow:
    """Recent failed runner registrations per client address, for this hub."""
    return per_app(app, "registrations",
                   lambda: SlidingWindow(REGISTRATION_FAILURES, REGISTRATION_WINDOW))


class WebSocketLink(RunnerLink):
    """A runner reached through its websocket; frames go out in order from one sender task."""

    def __init__(self, ws: web.WebSocketResponse, **kwargs):
        super().__init__(**kwargs)
        self.ws = ws
        self._outbox: deque[HubFrame] = deque()
        self._acks: dict[int, Ack] = {}
        self._ready = asyncio.Event()

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


async def runner_websocket(request: web.Request) -> web.StreamResponse:
    hub: Hub = request.app[HUB]
    auth = request.headers.get("Authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    runner = await hub.store.find_runner_by_token_hash(hash_token(token)) if token else None
    if runner is None:
        log.warning("runner.auth.refused", remote=request.remote)
        raise web.HTTPUnauthorized(text='{"error": "invalid runner token"}',
                                   content_type="application/json")
    if not runner["active"]:
        raise web.HTTPForbidden(text='{"error": "runner is disabled"}',
                                content_type="application/json")
    # Websocket pings catch half-open connections that frames alone would not.
    ws = web.WebSocketResponse(max_msg_size=2 * MAX_FRAME_BYTES, timeout=CLOSE_TIMEOUT,
                               heartbeat=max(hub.config.heartbeat_interval, 1.0),
                               compress=False, decode_text=False)
    await ws.prepare(request)
    session = RunnerSession(hub, ws, runner, request.remote or "")
    await session.run()
    return ws


class RunnerSession:
    def __init__(self, hub: Hub, ws: web.WebSocketResponse, runner: dict, remote: str):
        self.hub = hub
        self.remote = remote
        self.ws = ws
        self.runner = runner
        self.session_id = uuid.uuid4().hex
        self.log = log.bind(runner_id=runner["id"], session_id=self.session_id)
        self.link: WebSocketLink | None = None
        self.frames = TokenBucket(FRAME_RATE, FRAME_BURST)

    async def run(self) -> None:
        sender = None
        try:
            hello = await self._receive_hello()
            if hello is None:
                return
            self.link = link = await self._open_link(hello)
            reconciliation = await self.hub.tasks.reconcile(link, hello.held_tasks)
            interval = self.hub.config.heartbeat_interval
            await self.ws.send_str(encode(Welcome(
                protocol_version=PROTOCOL_VERSION, session_id=self.session_id,
                runner_id=self.runner["id"], heartbeat_interval=interval,
                max_frame_bytes=MAX_FRAME_BYTES,
                max_output_bytes=self.hub.config.max_task_output_bytes,
                acked=reconciliation.acked)).decode())
            for frame in reconciliation.then_send:
                link.send(frame)
            sender = asyncio.create_task(link.run_sender())
            self.hub.dispatcher.attach(link)
            self.log.info("runner.connected", name=link.name, remote=self.remote,
                          held=len(hello.held_tasks))
            await self._receive_loop(link, interval * MISSED_HEARTBEATS_OFFLINE)
        except ProtocolError as exc:
            await self._refuse(exc)
        except ConnectionError:
            pass
        finally:
            if sender is not None:
                sender.cancel()
            if self.link is not None:
                await self.hub.dispatcher.detach(self.link)
                await self.hub.store.update_runner(self.runner["id"], {"touched": utcnow()})
            if not self.ws.closed:
                await self.ws.close(code=CloseCode.GOING_AWAY)
            self.log.info("runner.disconnected", close_code=self.ws.close_code)

    async def _receive_hello(self) -> Hello | None:
        try:
            message = await self.ws.receive(timeout=HELLO_TIMEOUT)
        except TimeoutError:
            raise ProtocolError("no_hello", f"no hello within {HELLO_TIMEOUT} s",
                                CloseCode.POLICY_VIOLATION) from None
        if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return None
        frame = decode_runner_frame(message.data)
        if not isinstance(frame, Hello):
            raise ProtocolError("hello_expected", f"the first frame must be hello, got "
                                f"{type(frame).__name__.lower()}", CloseCode.PROTOCOL_ERROR)
        if frame.protocol_version not in SUPPORTED_VERSIONS:
            raise ProtocolError(
                "unsupported_version", f"runner speaks protocol version "
                f"{frame.protocol_version}, this hub speaks {sorted(SUPPORTED_VERSIONS)}",
                CloseCode.PROTOCOL_ERROR)
        return frame

    async def _open_link(self, hello: Hello) -> WebSocketLink:
        runner = self.runner
        tags = list(hello.tags) if hello.tags else decode_tags(runner["tags"])
        # Tags a one-time registration token bound it to stay, whatever its config says.
        tags += [t for t in await self.hub.store.bound_tags(runner["id"]) if t not in tags]
        values = {"touched": utcnow(), "platform": hello.platform,
                  "version": hello.runner_version, "tags": json.dumps(tags),
                  "max_parallel_tasks": hello.max_parallel_tasks}
        if hello.name and not runner["name"]:
            values["name"] = hello.name
        await self.hub.store.update_runner(runner["id"], values)
        return WebSocketLink(self.ws, runner_id=runner["id"],
                             name=runner["name"] or hello.name or f"runner-{runner['id']}",
                             project_id=runner["project_id"], tags=frozenset(tags),
                             max_parallel_tasks=hello.max_parallel_tasks,
                             public_key=runner["public_key"],
                             last_seen=time.time(),
                             info={"platform": hello.platform, "version": hello.runner_version})

    async def _receive_loop(self, link: WebSocketLink, silence_limit: float) -> None:
        reports = self.hub.reports
        while True:
            try:
                message = await self.ws.receive(timeout=silence_limit)
            except TimeoutError:
                # Offline now: the caller detaches it before closing the socket, which may
                # take a moment with a peer that does not answer.
                self.log.warning("runner.offline", silent_for=silence_limit)
                return
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                if message.type == WSMsgType.ERROR:
                    self.log.warning("runner.socket.error", error=str(self.ws.exception()))
                return
            if not self.frames.take():
                raise ProtocolError("rate_limited", f"more than {FRAME_RATE:.0f} frames per "
                                    f"second (bursts of {FRAME_BURST:.0f})",
                                    CloseCode.POLICY_VIOLATION)
            link.last_seen = time.time()
            frame = decode_runner_frame(message.data)
            if isinstance(frame, Heartbeat):
                self._heartbeat(link, frame)
            elif isinstance(frame, Hello):
                raise ProtocolError("duplicate_hello", "hello was already received",
                                    CloseCode.PROTOCOL_ERROR)
            elif isinstance(frame, Error):
                self.log.warning("runner.error", code=frame.code, message=frame.message)
            else:
                try:
                    await reports.handle(link, frame)
                except NotYourTask as exc:
                    self.log.warning("runner.frame.refused", reason=str(exc),
                                     frame=type(frame).__name__.lower())
                    link.send(Error(code="not_your_task", message=str(exc)))

    def _heartbeat(self, link: WebSocketLink, frame: Heartbeat) -> None:
        link.metrics = frame.metrics
        if frame.draining != link.draining:
            link.draining = frame.draining
            self.log.info("runner.draining" if frame.draining else "runner.resumed")

    async def _refuse(self, exc: ProtocolError) -> None:
        self.log.warning("runner.frame.invalid", code=exc.code, error=exc.message,
                         close_code=exc.close_code)
        if self.ws.closed:
            return
        try:
            await self.ws.send_str(encode(Error(code=exc.code, message=exc.message)).decode())
            await self.ws.close(code=exc.close_code, message=exc.code.encode())
        except ConnectionError:
            pass

