"""The browser's websocket, `/api/ws`: live task, runner and output events for the dashboard.

Authenticated as the REST API (session cookie or API token, by the auth middleware, so a
stranger gets a 401 before any websocket exists); a page of another origin gets a 403 before
the upgrade (browsers send the cookie with any page's websocket: CSRF for websockets).

Each socket is three coroutines: `_pump` moves the hub's events (EventBus) into this socket's
bounded state without ever waiting on the network; `_sender` writes to the browser; the
receive loop takes the client's (un)subscribe messages. A browser that reads slowly only
fills its own bounded buffers; past them it loses events, never the hub's memory or time:

- task and runner events: a backlog of EVENT_BACKLOG; past it the backlog is cleared and the
  client gets `{"type": "resync"}` (re-read the lists over REST).
- output: the store is the truth. Live frames are a shortcut kept per subscription (at most
  LIVE_BUFFER); whenever one may be missing (buffer full, an event the bus dropped, a seq that
  does not follow), the socket re-reads the stored frames after the last seq it sent. So the
  client gets each stored frame once, in seq order, with no gap.

Who may see an event is decided when it is sent, from the database: a user removed from a
project stops getting its events at once, and the session itself is checked again every
RECHECK_SECONDS (logged out or expired: the socket is closed).
"""

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from aiohttp import WSMsgType, web

from hub.api.common import ROLE_RANK, ApiError, current_user
from hub.api.middleware import refuse_cross_site
from hub.context import HUB, Hub
from hub.core.events import Subscription
from hub.core.lifecycle import FINAL
from hub.security import SESSION_COOKIE, bearer_token, hash_token
from hub.store import NotFound

log = structlog.get_logger("hub.live")

HEARTBEAT = 20.0           # websocket pings: a vanished browser is noticed within ~30 s
SEND_TIMEOUT = 30.0        # one message the browser does not take this long: cut it off
MAX_CLIENT_MESSAGE = 4096  # the client only sends small (un)subscribe messages
MAX_SUBSCRIPTIONS = 20     # output subscriptions per socket
MAX_SOCKETS_PER_USER = 20  # open live sockets per user (tabs); more get a 429
EVENT_BACKLOG = 500        # task/runner events waiting for a slow socket
LIVE_BUFFER = 256          # live output frames per subscription before the store is re-read
CATCH_UP_PAGE = 100        # stored frames per read (each up to 16 KiB)
RECHECK_SECONDS = 2.0      # how often the session (and the admin flag) is checked again

class LiveSockets:
    """The app's open browser sockets: counted per user, and closed when the hub stops."""

    def __init__(self) -> None:
        self.per_user: Counter[int] = Counter()
        self.open: set[LiveSocket] = set()

    async def close_all(self, app: web.Application) -> None:
        """on_shutdown: "going away", so pages reconnect to the next hub at once. A browser
        that does not read cannot hold the shutdown up: closes get 2 s together."""
        closing = [asyncio.create_task(socket.ws.close(code=1001, message=b"hub shutting down"))
                   for socket in self.open]
        if closing:
            await asyncio.wait(closing, timeout=2.0)


LIVE_SOCKETS: web.AppKey[LiveSockets] = web.AppKey("live_sockets", LiveSockets)


def install(app: web.Application) -> None:
    sockets = app[LIVE_SOCKETS] = LiveSockets()
    app.on_shutdown.append(sockets.close_all)


async def browser_websocket(request: web.Request) -> web.StreamResponse:
    user = current_user(request)  # the auth middleware answered 401 without one
    refuse_cross_site(request)
    sockets = request.app[LIVE_SOCKETS]
    if sockets.per_user[user["id"]] >= MAX_SOCKETS_PER_USER:
        raise ApiError(429, f"too many live connections for this user "
                            f"(at most {MAX_SOCKETS_PER_USER})")
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_CLIENT_MESSAGE,
                               compress=False)
    await ws.prepare(request)
    sockets.per_user[user["id"]] += 1
    socket = LiveSocket(request.app[HUB], ws, user, _credential(request))
    sockets.open.add(socket)
    try:
        await socket.run()
    finally:
        sockets.open.discard(socket)
        sockets.per_user[user["id"]] -= 1
        if sockets.per_user[user["id"]] <= 0:
            del sockets.per_user[user["id"]]
    return ws


def _credential(request: web.Request) -> tuple[str, str]:
    """How the socket was authenticated, to check again later: ("token" | "session", hash)."""
    token = bearer_token(request.headers)
    if token is not None:
        return "token", hash_token(token)
    return "session", hash_token(request.cookies.get(SESSION_COOKIE, ""))


class ClientError(Exception):
    """A client message the socket cannot use; answered with an error message."""


@dataclass
class OutputSubscription:
    task_id: int
    project_id: int
    sent: int                  # the last seq sent to the client
    stale: bool = True         # re-read the store after `sent` before trusting live frames
    final: bool = False        # the task ended: send what is stored, then output_end
    recheck: bool = False      # events were lost (maybe its end): ask the store if it ended
    live: deque[dict[str, Any]] = field(default_factory=deque)


class LiveSocket:
    def __init__(self, hub: Hub, ws: web.WebSocketResponse, user: dict[str, Any],
                 credential: tuple[str, str]):
        self.hub = hub
        self.ws = ws
        self.user = user
        self.credential = credential
        self.checked_at = time.monotonic()
        self.subscriptions: dict[int, OutputSubscription] = {}
        self.backlog: deque[dict[str, Any]] = deque()
        self.resync = False
        self.wake = asyncio.Event()
        self.dropped_seen = 0
        self.close_code, self.close_reason = 1000, b""
        self.log = log.bind(user_id=user["id"])

    async def run(self) -> None:
        async with self.hub.events.subscribe() as queue:
            await self._send({"type": "hello", "user": {
                "id": self.user["id"], "username": self.user["username"],
                "admin": bool(self.user["admin"])}})
            workers = [asyncio.create_task(self._pump(queue)),
                       asyncio.create_task(self._sender())]
            receiver = asyncio.create_task(self._receive())
            try:
                # Whichever ends first (the browser left, a send failed) ends the socket.
                done, _ = await asyncio.wait([receiver, *workers],
                                             return_when=asyncio.FIRST_COMPLETED)
                for job in done:
                    failure = job.exception()
                    if failure is not None and not isinstance(
                            failure, ConnectionError | TimeoutError):
                        self.log.error("live.failed", error=repr(failure)[:500])
            finally:
                for job in (receiver, *workers):
                    job.cancel()
                await asyncio.gather(receiver, *workers, return_exceptions=True)
                if not self.ws.closed:
                    await self.ws.close(code=self.close_code, message=self.close_reason)

    # Events in: never waits on the network.

    async def _pump(self, queue: Subscription) -> None:
        while True:
            event = await queue.get()
            if queue.dropped != self.dropped_seen:
                self.dropped_seen = queue.dropped
                self._lost_events()
            self._take(event)
            self.wake.set()

    def _lost_events(self) -> None:
        """The bus dropped events for this socket: output comes from the store again, and
        the client is told to re-read what it shows."""
        self.resync = True
        for subscription in self.subscriptions.values():
            subscription.stale = subscription.recheck = True
            subscription.live.clear()

    def _take(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "output":
            subscription = self.subscriptions.get(event["task_id"])
            if subscription is None or event["seq"] <= subscription.sent:
                return
            if len(subscription.live) >= LIVE_BUFFER:
                subscription.live.clear()  # the store has them; read it when there is time
                subscription.stale = True
            else:
                subscription.live.append(event)
            return
        if kind == "task" and event["status"] in FINAL:
            subscription = self.subscriptions.get(event["task_id"])
            if subscription is not None:
                subscription.final = True
        if len(self.backlog) >= EVENT_BACKLOG:
            self.backlog.clear()
            self.resync = True
        else:
            self.backlog.append(event)

    # Events out.

    async def _sender(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if not await self._still_authenticated():
                await self._send({"type": "error", "message": "session ended: log in again"})
                self.close_code, self.close_reason = 1008, b"session ended"
                return  # run() closes, once the receiver stopped
            roles: dict[int, str | None] = {}  # this round's answers, one query per project
            if self.resync:
                self.resync = False
                await self._send({"type": "resync"})
            # What is queued now, not what comes meanwhile: a stream of events must not
            # keep the output below from ever being sent.
            for _ in range(len(self.backlog)):
                if not self.backlog:
                    break  # cleared by an overflow meanwhile
                event = self.backlog.popleft()
                if await self._may_see(event, roles):
                    await self._send(event)
            for subscription in list(self.subscriptions.values()):
                await self._flush_output(subscription, roles)

    async def _flush_output(self, subscription: OutputSubscription,
                            roles: dict[int, str | None]) -> None:
        if self.subscriptions.get(subscription.task_id) is not subscription:
            return  # unsubscribed meanwhile
        if await self._role(subscription.project_id, roles) is None:
            del self.subscriptions[subscription.task_id]
            await self._send({"type": "error", "message": f"no access to task "
                              f"{subscription.task_id} any more: unsubscribed"})
            return
        if subscription.recheck:
            # The status first: a task final in the store has all its output stored.
            subscription.recheck = False
            try:
                task = await self.hub.store.get_task(subscription.task_id)
            except NotFound:
                task = None
            if task is None or task["status"] in FINAL:
                subscription.final = True
        if subscription.stale:
            await self._catch_up(subscription)
        while subscription.live and not subscription.stale:
            event = subscription.live.popleft()
            if event["seq"] <= subscription.sent:
                continue  # sent already, from the store
            if event["seq"] != subscription.sent + 1:
                # Not the next one: something may be missing. The store has every frame up
                # to this one (events go out after the commit): read it from there.
                subscription.stale = True
                subscription.live.appendleft(event)
                break
            await self._send_output(subscription, event)
        if subscription.stale:
            self.wake.set()  # events were lost while it read: read again next round
        if subscription.final and self.subscriptions.get(subscription.task_id) is subscription:
            # Its status is stored after all its output: one read to the end finds every
            # frame not sent yet, then the client hears it is complete.
            await self._catch_up(subscription)
            # The client may have unsubscribed during that read: then it wants no end.
            if self.subscriptions.pop(subscription.task_id, None) is subscription:
                await self._send({"type": "output_end", "task_id": subscription.task_id})

    async def _catch_up(self, subscription: OutputSubscription) -> None:
        """Send every stored frame after the last one sent, a page at a time. `stale` is
        cleared before the reads: an event lost meanwhile sets it again."""
        subscription.stale = False
        while True:
            rows = await self.hub.store.read_output(subscription.task_id, subscription.sent,
                                                    CATCH_UP_PAGE)
            for row in rows:
                if row["seq"] > subscription.sent:
                    await self._send_output(subscription, row)
            if len(rows) < CATCH_UP_PAGE:
                return

    async def _send_output(self, subscription: OutputSubscription,
                           frame: dict[str, Any]) -> None:
        subscription.sent = frame["seq"]
        await self._send({"type": "output", "task_id": subscription.task_id,
                          "seq": frame["seq"], "stream": frame["stream"],
                          "time": frame["time"], "data": frame["data"]})

    async def _send(self, message: dict[str, Any]) -> None:
        # A browser that takes nothing for this long is gone or hostile: its socket ends
        # (TimeoutError), and the hub holds nothing more for it.
        async with asyncio.timeout(SEND_TIMEOUT):
            await self.ws.send_str(msgspec.json.encode(message).decode())

    # Who may see what, asked when it is sent.

    async def _still_authenticated(self) -> bool:
        now = time.monotonic()
        if now - self.checked_at < RECHECK_SECONDS:
            return True
        self.checked_at = now
        kind, token_hash = self.credential
        store = self.hub.store
        user = (await store.find_api_token_user(token_hash) if kind == "token"
                else await store.find_session_user(token_hash, time.time()))
        if user is None or user["id"] != self.user["id"]:
            return False
        self.user = user  # an admin flag taken away holds from now on
        return True

    async def _role(self, project_id: int | None, roles: dict[int, str | None]) -> str | None:
        """The user's role in the project ("admin" for admins), None without access."""
        if self.user["admin"]:
            return "admin"
        if project_id is None:
            return None
        if project_id not in roles:
            roles[project_id] = await self.hub.store.project_role(project_id, self.user["id"])
        return roles[project_id]

    async def _may_see(self, event: dict[str, Any], roles: dict[int, str | None]) -> bool:
        role = await self._role(event.get("project_id"), roles)
        if role is None:
            return False
        if event["type"] in ("runner", "runner_metrics"):
            # Runners are managed by admins (global ones) and a project's owner or manager.
            return role == "admin" or ROLE_RANK[role] >= ROLE_RANK["manager"]
        return True

    # Client messages.

    async def _receive(self) -> None:
        async for message in self.ws:
            if message.type == WSMsgType.TEXT:
                try:
                    await self._handle(message.data)
                except ClientError as exc:
                    await self._send({"type": "error", "message": str(exc)})
            elif message.type == WSMsgType.BINARY:
                await self._send({"type": "error", "message": "send JSON text messages"})
            else:
                return

    async def _handle(self, text: str) -> None:
        try:
            message = msgspec.json.decode(text)
        except msgspec.DecodeError:
            raise ClientError("message is not valid JSON") from None
        if not isinstance(message, dict):
            raise ClientError("message must be a JSON object")
        if "subscribe_output" in message:
            task_id = _positive_int(message, "subscribe_output")
            after_seq = _positive_int(message, "after_seq", default=0)
            await self._subscribe(task_id, after_seq)
        elif "unsubscribe_output" in message:
            self.subscriptions.pop(_positive_int(message, "unsubscribe_output"), None)
        else:
            raise ClientError("unknown message: expected {\"subscribe_output\": <task id>, "
                              "\"after_seq\": <n>} or {\"unsubscribe_output\": <task id>}")

    async def _subscribe(self, task_id: int, after_seq: int) -> None:
        try:
            task = await self.hub.store.get_task(task_id)
        except NotFound:
            task = None
        roles: dict[int, str | None] = {}
        if task is None or await self._role(task["project_id"], roles) is None:
            # The same answer for a task that does not exist and one of another project.
            raise ClientError(f"subscribe_output: task {task_id} not found")
        if task_id not in self.subscriptions and len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise ClientError(f"subscribe_output: at most {MAX_SUBSCRIPTIONS} subscriptions "
                              "per connection; unsubscribe one first")
        # The status is read before the output: a task final now has all its output stored.
        self.subscriptions[task_id] = OutputSubscription(
            task_id, task["project_id"], after_seq, final=task["status"] in FINAL)
        self.wake.set()


def _positive_int(message: dict[str, Any], name: str, default: int | None = None) -> int:
    value = message.get(name, default)
    # bool is an int in Python; true is not a task id.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >= 2**63:
        raise ClientError(f"{name} must be a non-negative integer, got {str(value)[:40]}")
    return value
