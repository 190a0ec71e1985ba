"""Serving the app on a socket, with limits aiohttp does not have: a deadline for reading each
request (its head, then its body), and a cap on open connections per client address.

aiohttp's web.Server is the protocol factory of the listening socket; `HubSite` listens with
a factory that wraps each of its connections in a `GuardedConnection`. That wrapper sees the
connection open and close (so it counts it for its address) and every byte arrive (so it
knows when a request starts); `connection_middleware` tells it when aiohttp has read a head
and handed the request over, and the request's body stream when the body is complete. A
connection still reading a request past its deadline is aborted. A handler that runs long,
streaming output or serving a runner's websocket, has its whole request already and is
never cut. Idle kept-alive connections are closed by aiohttp's own keepalive_timeout.
"""

import asyncio
import enum
import ssl
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from hub.config import HubConfig

log = structlog.get_logger("hub.http")

# The answer to a connection over its address's cap, written before reading anything.
_TOO_MANY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
             b"Connection: close\r\nContent-Length: 51\r\n\r\n"
             b'{"error": "too many connections from your address"}')


class Phase(enum.Enum):
    HEAD = "head"  # reading a request's head: deadline http_header_timeout_sec
    BODY = "body"  # the head is in, reading its body: deadline http_body_timeout_sec
    BUSY = "busy"  # the whole request is in, the handler runs: no deadline
    IDLE = "idle"  # between requests: aiohttp's keepalive_timeout applies


class LogThrottle:
    """At most one log line per key (an event and a client address) per window: a client
    that sends garbage or hangs on purpose must not be able to fill the log."""

    def __init__(self, window: float = 60.0, max_keys: int = 10_000):
        self.window = window
        self.max_keys = max_keys
        self._last: dict[Any, float] = {}  # key -> when its last line was logged
        self._held: Counter[Any] = Counter()  # key -> lines held back since

    def allow(self, key: Any) -> int | None:
        """None: stay quiet; else log now, saying how many were held back since last time."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.window:
            self._held[key] += 1
            return None
        if len(self._last) >= self.max_keys:
            self._forget(now)
        self._last[key] = now
        return self._held.pop(key, 0)

    def _forget(self, now: float) -> None:
        for key, when in list(self._last.items()):
            if now - when >= self.window:
                del self._last[key]
                self._held.pop(key, None)
        if len(self._last) >= self.max_keys:  # all recent: start over rather than grow
            self._last.clear()
            self._held.clear()


class ConnectionGuard:
    """The limits of one app's connections: per-address counts, and the deadlines."""

    def __init__(self, config: HubConfig):
        self.header_timeout = config.http_header_timeout_sec
        self.body_timeout = config.http_body_timeout_sec
        self.max_per_address = config.http_max_connections_per_address
        self.open: Counter[str] = Counter()  # address -> connections counted
        self._connections: dict[asyncio.BaseTransport, GuardedConnection] = {}
        self.throttle = LogThrottle()

    def protocol_factory(self, server: Callable[[], asyncio.Protocol]
                         ) -> Callable[[], asyncio.Protocol]:
        """What the listening socket calls per connection: aiohttp's protocol, guarded."""
        return lambda: GuardedConnection(server(), self)

    def admit(self, address: str) -> bool:
        if self.max_per_address and self.open[address] >= self.max_per_address:
            held = self.throttle.allow(("refused", address))
            if held is not None:
                log.warning("http.connections.refused", remote=address,
                            limit=self.max_per_address, refused_before=held)
            return False
        self.open[address] += 1
        return True

    def release(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]

    def add(self, transport: asyncio.BaseTransport, connection: "GuardedConnection") -> None:
        self._connections[transport] = connection

    def remove(self, transport: asyncio.BaseTransport) -> None:
        self._connections.pop(transport, None)

    def connection_of(self, request: web.BaseRequest) -> "GuardedConnection | None":
        """The guarded connection a request came on (None: served without a guard)."""
        transport = request.transport
        return self._connections.get(transport) if transport is not None else None


class GuardedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, with its request-reading deadlines and its
    place in its address's count. Every event is passed on to aiohttp unchanged."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard):
        self._inner = inner
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._address = ""
        self._admitted = False
        self._counted = False
        self._phase = Phase.HEAD
        self._timer: asyncio.TimerHandle | None = None
        self._requests = 0  # tells a late end-of-body apart from the current request's
        # The last bytes of the head being read: its end (a blank line) may be split over
        # two reads.
        self._head_tail = b""

    # asyncio.Protocol, passed on.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._address = _address_of(transport)
        if not self._guard.admit(self._address):
            transport.write(_TOO_MANY)
            transport.close()
            return
        self._admitted = self._counted = True
        self._guard.add(transport, self)
        self._inner.connection_made(transport)
        self._start(Phase.HEAD, self._guard.header_timeout)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        if self._phase is Phase.IDLE:  # the first bytes of the next request
            self._start(Phase.HEAD, self._guard.header_timeout)
        if self._phase is Phase.HEAD and self._head_arrived(data):
            # The deadline bounds the client's sending, not the hub's turn: on a busy loop
            # (10,000 runners connecting) the middleware may report the request seconds
            # later, and aborting then cut clients that had sent everything in time.
            self._start(Phase.BUSY)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        transport, self._transport = self._transport, None
        if not self._admitted or transport is None:
            return
        self._guard.remove(transport)
        self._uncount()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # What the middleware reports.

    def request_started(self, request: web.BaseRequest) -> None:
        """aiohttp has read a head and hands the request over: now its body, if any."""
        self._requests += 1
        if request.content.is_eof():
            self._start(Phase.BUSY)
            return
        self._start(Phase.BODY, self._guard.body_timeout)
        serial = self._requests
        request.content.on_eof(lambda: self._body_read(serial))

    def request_done(self) -> None:
        self._start(Phase.IDLE)

    def upgraded(self) -> None:
        """A runner's websocket (its token checked before the upgrade): one per runner, so a
        fleet behind one NAT address is not held to the per-address cap."""
        self._uncount()

    # Deadlines.

    def _head_arrived(self, data: bytes) -> bool:
        """Whether `data` ends the head being read (the blank line after the headers)."""
        seen = self._head_tail + data
        if b"\r\n\r\n" in seen or b"\n\n" in seen:
            self._head_tail = b""
            return True
        self._head_tail = seen[-3:]
        return False

    def _body_read(self, serial: int) -> None:
        if serial == self._requests and self._phase is Phase.BODY:
            self._start(Phase.BUSY)

    def _start(self, phase: Phase, timeout: float | None = None) -> None:
        self._stop_timer()
        self._phase = phase
        self._head_tail = b""
        if timeout is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(timeout, self._expired, phase, timeout)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, phase: Phase, timeout: float) -> None:
        self._timer = None
        held = self._guard.throttle.allow(("timeout", self._address))
        if held is not None:
            log.info("http.read_timeout", remote=self._address, reading=phase.value,
                     timeout=timeout, timed_out_before=held)
        if self._transport is not None:
            # Abort, not close: a client that reads nothing must not keep it open either.
            self._transport.abort()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self._guard.release(self._address)


def _address_of(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "local"


CONNECTIONS: web.AppKey[ConnectionGuard] = web.AppKey("connections", ConnectionGuard)


@web.middleware
async def connection_middleware(request: web.Request,
                                handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                ) -> web.StreamResponse:
    """Tell the request's connection that its head is read, and when its handler is done."""
    connection = request.app[CONNECTIONS].connection_of(request)
    if connection is None:
        return await handler(request)
    connection.request_started(request)
    try:
        return await handler(request)
    finally:
        connection.request_done()


async def count_out_websockets(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: an accepted websocket upgrade leaves its address's count."""
    if isinstance(response, web.WebSocketResponse):
        connection = request.app[CONNECTIONS].connection_of(request)
        if connection is not None:
            connection.upgraded()


class ServerLog:
    """What aiohttp's connection handler logs (it is given this as its `logger`), as one short
    line per event instead of a stack trace. A malformed request is the client's fault:
    logged at most once a minute per address. Used only by aiohttp's RequestHandler, which
    calls debug(), warning() and exception()."""

    def __init__(self) -> None:
        self.throttle = LogThrottle()

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """aiohttp's debug lines (clients gone mid-request) are not worth a line."""

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        log.warning("http.server", message=_format(msg, args))

    def exception(self, msg: str, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else None
        if isinstance(exc, ConnectionError):  # the client went away, or was cut on purpose
            return
        if isinstance(exc, HttpProcessingError | web.RequestPayloadError):
            remote = args[0] if args else None
            held = self.throttle.allow(("bad_request", remote))
            if held is not None:
                log.info("http.bad_request", remote=remote, error=_client_error(exc),
                         held_back=held)
            return
        log.error("http.server_error", message=_format(msg, args), **describe_exception(exc))

    error = exception


# The project's own code: an error is placed there, not inside a library it called.
_PROJECT = Path(__file__).resolve().parents[1]


def describe_exception(exc: BaseException | None) -> dict[str, str]:
    """The error and where it was raised, for one log line: enough to find it in the code
    (the innermost line of the project's own), short enough that a flood of them does not
    flood the log."""
    if exc is None:
        return {}
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [frame for frame in frames if _is_ours(frame.filename)]
    frame = ours[-1] if ours else frames[-1] if frames else None
    where = f"{Path(frame.filename).name}:{frame.lineno} {frame.name}" if frame else ""
    return {"error": f"{type(exc).__name__}: {_first_line(exc)}", "where": where}


def _is_ours(filename: str) -> bool:
    path = Path(filename).resolve()
    return path.is_relative_to(_PROJECT) and "site-packages" not in path.parts


def _client_error(exc: BaseException) -> str:
    """aiohttp's text for a malformed request, without its "400, message:" and layout."""
    cause = (exc.__cause__ or exc) if isinstance(exc, web.RequestPayloadError) else exc
    text = " ".join(str(getattr(cause, "message", None) or cause).split())
    return text if len(text) <= 200 else text[:200] + "..."


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    return text if len(text) <= 200 else text[:200] + "..."


def _format(msg: str, args: tuple) -> str:
    try:
        return msg % args if args else msg
    except (TypeError, ValueError):
        return msg


def make_runner(app: web.Application, config: HubConfig, **kwargs: Any) -> web.AppRunner:
    """The app's runner, with the idle keep-alive bound and the concise server log."""
    return web.AppRunner(app, access_log=None, logger=ServerLog(),
                         keepalive_timeout=config.http_keepalive_timeout_sec, **kwargs)


class HubSite(web.BaseSite):
    """web.TCPSite's job, with every connection guarded (see the module's text)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *,
                 ssl_context: ssl.SSLContext | None = None, backlog: int = 128):
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return str(URL.build(scheme=scheme, host=self._host, port=self.port))

    @property
    def port(self) -> int:
        """The bound port (the one asked for until started; useful with port 0)."""
        if isinstance(self._server, asyncio.Server) and self._server.sockets:
            return self._server.sockets[0].getsockname()[1]
        return self._port

    async def start(self) -> None:
        await super().start()
        runner = self._runner
        assert isinstance(runner, web.AppRunner) and runner.server is not None
        factory = runner.app[CONNECTIONS].protocol_factory(runner.server)
        self._server = await asyncio.get_running_loop().create_server(
            factory, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog)


async def serve(app: web.Application, config: HubConfig, ssl_context: ssl.SSLContext | None,
                stop: asyncio.Event) -> None:
    """Serve until `stop` is set, then shut down in order (runner sessions, then the app)."""
    runner = make_runner(app, config, shutdown_timeout=10)
    await runner.setup()
    try:
        await HubSite(runner, config.interface, config.port, ssl_context=ssl_context).start()
        await stop.wait()
    finally:
        await runner.cleanup()
