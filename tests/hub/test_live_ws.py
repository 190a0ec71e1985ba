"""The browser websocket /api/ws against a real hub and real runners (aiohttp's client, no
browser): who may connect, who sees what, output with no gap and no duplicate across
subscribe/reconnect, slow readers, bad messages, runner metrics."""

import asyncio
import base64
import json
import os
import socket
import time

import aiohttp
import pytest
from yarl import URL

from hub.api.live import EVENT_BACKLOG, LIVE_BUFFER, LIVE_SOCKETS
from hub.core.events import SUBSCRIBER_QUEUE
from tests.hubkit import Api, RunningHub, start_hub, write_script

TIMEOUT = 30.0


async def connect(hub: RunningHub, api: Api, **kwargs) -> aiohttp.ClientWebSocketResponse:
    ws = await api.session.ws_connect(hub.base_url + "/api/ws", **kwargs)
    hello = await next_message(ws)
    assert hello["type"] == "hello", hello
    return ws


async def next_message(ws: aiohttp.ClientWebSocketResponse,
                       timeout: float = TIMEOUT) -> dict:
    message = await ws.receive(timeout=timeout)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data)


async def until(ws, predicate, timeout: float = TIMEOUT) -> tuple[dict, list[dict]]:
    """The first message `predicate` takes, and every message before it."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        message = await next_message(ws, max(deadline - time.monotonic(), 0.01))
        if predicate(message):
            return message, seen
        seen.append(message)


async def silent(ws, predicate, seconds: float) -> list[dict]:
    """Every message within `seconds`; asserts none of them matches `predicate`."""
    got: list[dict] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await ws.receive(timeout=left)
        except TimeoutError:
            break
        if message.type != aiohttp.WSMsgType.TEXT:
            break
        got.append(json.loads(message.data))
    assert not [m for m in got if predicate(m)], got
    return got


async def make_user(api: Api, hub: RunningHub, name: str, project_id: int | None = None,
                    role: str = "guest") -> Api:
    user = await api.ok("POST", "/api/users", {"name": name, "username": name,
                                              "email": f"{name}@example.com",
                                              "password": f"{name}-pw-123"}, 201)
    if project_id is not None:
        await api.ok("POST", f"/api/project/{project_id}/users",
                     {"user_id": user["id"], "role": role}, 204)
    client = await hub.api(login=False)
    await client.login(name, f"{name}-pw-123")
    client.user_id = user["id"]
    return client


async def output_of(ws, task_id: int) -> list[dict]:
    """Output messages of the task until its output_end."""
    _, before = await until(ws, lambda m: m["type"] == "output_end" and m["task_id"] == task_id)
    return [m for m in before if m["type"] == "output" and m["task_id"] == task_id]


async def stored_frames(hub: RunningHub, task_id: int) -> list[tuple[int, str]]:
    return [(row["seq"], row["data"]) for row in await hub.hub.store.read_output(task_id)]


def numbered_script(tmp_path, lines: int, pause: float = 0.0) -> object:
    scripts = tmp_path / "s"
    sleep = f"; sleep {pause}" if pause else ""
    write_script(scripts, "count.sh", f"for i in $(seq 1 {lines}); do echo line-$i{sleep}; done\n")
    return scripts


# Who may connect.


async def test_unauthenticated_is_401_before_the_upgrade(hub, api):
    stranger = await hub.api(login=False)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await stranger.session.ws_connect(hub.base_url + "/api/ws")
    assert refused.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await stranger.session.ws_connect(hub.base_url + "/api/ws",
                                          headers={"Authorization": "Bearer wrong"})
    assert refused.value.status == 401


async def test_another_origin_is_403_and_the_hubs_own_origin_or_a_token_is_welcome(hub, api):
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.session.ws_connect(hub.base_url + "/api/ws", origin="http://evil.example")
    assert refused.value.status == 403
    # The same host on another port is another origin too (SameSite would not stop it).
    port = int(hub.base_url.rsplit(":", 1)[1])
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.session.ws_connect(hub.base_url + "/api/ws",
                                     origin=f"http://127.0.0.1:{port + 1}")
    assert refused.value.status == 403
    ws = await api.session.ws_connect(hub.base_url + "/api/ws", origin=hub.base_url)
    hello = await next_message(ws)
    assert hello == {"type": "hello", "user": {"id": 1, "username": "admin", "admin": True}}
    await ws.close()
    token = (await api.ok("POST", "/api/user/tokens", status=201))["id"]
    script = await hub.api(login=False)
    ws = await script.session.ws_connect(hub.base_url + "/api/ws",
                                         headers={"Authorization": f"Bearer {token}"})
    assert (await next_message(ws))["type"] == "hello"
    await ws.close()


async def test_logging_out_ends_the_socket(hub, api):
    user = await make_user(api, hub, "leaver")
    ws = await connect(hub, user)
    await user.ok("POST", "/api/auth/logout", status=204)
    pid = await api.project()
    template = await api.template(pid, None, "x.sh")
    deadline = time.monotonic() + TIMEOUT
    while True:
        await api.run(pid, template)  # an event, so the socket looks again
        try:
            message = await ws.receive(timeout=0.5)
        except TimeoutError:
            assert time.monotonic() < deadline, "the socket outlived its session"
            continue
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
        assert json.loads(message.data)["type"] == "error", message.data  # "session ended"
    assert ws.close_code == 1008


# Who sees what.


async def test_a_guest_of_one_project_sees_nothing_of_another(hub, api, tmp_path):
    scripts = numbered_script(tmp_path, 3)
    a, b = await api.project("A"), await api.project("B")
    guest = await make_user(api, hub, "guest", a, "guest")
    template_a = await api.template(a, scripts, "count.sh")
    template_b = await api.template(b, scripts, "count.sh")
    await hub.start_runner(tmp_path)
    ws = await connect(hub, guest)
    task_b = await api.run(b, template_b)
    await api.wait_status(b, task_b)
    task_a = await api.run(a, template_a)
    final, before = await until(ws, lambda m: m["type"] == "task" and m["task_id"] == task_a
                                and m["status"] == "success")
    assert final["project_id"] == a and final["runner_id"]
    assert {m["project_id"] for m in before if "project_id" in m} <= {a}
    assert not [m for m in before if m["type"] in ("runner", "runner_metrics")]
    # Output of B's task cannot be asked for either; the answer is the same as for none.
    await ws.send_json({"subscribe_output": task_b})
    assert await next_message(ws) == {"type": "error",
                                      "message": f"subscribe_output: task {task_b} not found"}
    await ws.send_json({"subscribe_output": task_a})
    lines = "".join(m["data"] for m in await output_of(ws, task_a))
    assert lines == "line-1\nline-2\nline-3\n"
    # Removed from A: its events stop at once, on the same socket.
    await api.ok("DELETE", f"/api/project/{a}/users/{guest.user_id}", status=204)
    task_a2 = await api.run(a, template_a)
    await api.wait_status(a, task_a2)
    await silent(ws, lambda m: m.get("task_id") == task_a2, 1.0)
    await ws.send_json({"subscribe_output": task_a})
    assert (await next_message(ws))["type"] == "error"


async def test_a_waiting_task_says_why(hub, api, tmp_path):
    pid = await api.project()
    template = await api.template(pid, numbered_script(tmp_path, 1), "count.sh",
                                  runner_tag="gpu")
    ws = await connect(hub, api)
    task_id = await api.run(pid, template)
    event, _ = await until(ws, lambda m: m["type"] == "task" and m["task_id"] == task_id
                           and m["waiting_reason"])
    assert event["status"] == "waiting"
    assert event["waiting_reason"] == "no online runner with tag `gpu`"


# Output: catch-up, live, reconnect.


async def test_output_catch_up_then_live_with_no_gap_or_duplicate_across_reconnects(
        hub, api, tmp_path):
    pid = await api.project()
    template = await api.template(pid, numbered_script(tmp_path, 150, 0.01), "count.sh")
    await hub.start_runner(tmp_path)
    task_id = await api.run(pid, template)
    # Subscribe in the middle: some output stored already, more to come.
    deadline = time.monotonic() + TIMEOUT
    while len(await stored_frames(hub, task_id)) < 5:
        assert time.monotonic() < deadline, "no output stored"
        await asyncio.sleep(0.02)
    whole = await connect(hub, api)
    await whole.send_json({"subscribe_output": task_id, "after_seq": 0})
    # A second page reads a bit, drops, and comes back with the last seq it has.
    parts: list[dict] = []
    for _ in range(3):
        ws = await connect(hub, api)
        after = parts[-1]["seq"] if parts else 0
        await ws.send_json({"subscribe_output": task_id, "after_seq": after})
        for _ in range(5):
            message, _ = await until(ws, lambda m: m["type"] in ("output", "output_end"))
            if message["type"] == "output_end":
                break
            parts.append(message)
        await ws.close()
    ws = await connect(hub, api)
    await ws.send_json({"subscribe_output": task_id, "after_seq": parts[-1]["seq"]})
    parts += await output_of(ws, task_id)
    got = await output_of(whole, task_id)
    stored = await stored_frames(hub, task_id)
    assert [(m["seq"], m["data"]) for m in got] == stored
    assert [(m["seq"], m["data"]) for m in parts] == stored
    text = "".join(data for _, data in stored)
    assert text == "".join(f"line-{i}\n" for i in range(1, 151))
    assert all(m["stream"] in ("stdout", "stderr") and m["time"] > 0 for m in got)
    # Subscribing to a finished task: what is stored after after_seq, then the end.
    ws = await connect(hub, api)
    await ws.send_json({"subscribe_output": task_id, "after_seq": stored[-3][0]})
    assert [(m["seq"], m["data"]) for m in await output_of(ws, task_id)] == stored[-2:]


async def test_a_subscriber_that_falls_behind_the_bus_gets_every_frame_from_the_store(
        hub, api, tmp_path):
    """Frames the live path lost (the bus dropped them: this socket's queue was full of other
    events) come from the store, and the client is told to re-read its lists."""
    pid, other = await api.project("mine"), await api.project("other")
    guest = await make_user(api, hub, "watcher", pid, "guest")
    template = await api.template(pid, numbered_script(tmp_path, 400, 0.003), "count.sh")
    await hub.start_runner(tmp_path)
    ws = await connect(hub, guest)
    task_id = await api.run(pid, template)
    await ws.send_json({"subscribe_output": task_id})
    done = asyncio.Event()

    async def flood() -> None:
        # Events this user may not see, in bursts past the bus's per-subscriber queue.
        while not done.is_set():
            for _ in range(SUBSCRIBER_QUEUE + 200):
                hub.hub.events.publish("task", task_id=0, project_id=other, status="noise")
            await asyncio.sleep(0)

    flooding = asyncio.create_task(flood())
    try:
        _, before = await until(ws, lambda m: m["type"] == "output_end")
    finally:
        done.set()
        await flooding
    frames = [m for m in before if m["type"] == "output"]
    assert {"type": "resync"} in before
    assert not [m for m in before if m.get("status") == "noise"]
    stored = await stored_frames(hub, task_id)
    assert [(m["seq"], m["data"]) for m in frames] == stored
    assert "".join(d for _, d in stored) == "".join(f"line-{i}\n" for i in range(1, 401))


async def test_a_reader_that_never_reads_slows_neither_the_task_nor_other_sockets(
        hub, api, tmp_path):
    pid = await api.project()
    big = tmp_path / "big"
    # ~4 MB of output in many frames.
    write_script(big, "big.sh", "for i in $(seq 1 40000); do "
                                "printf 'line %06d %0100d\\n' $i 0; done\n")
    template = await api.template(pid, big, "big.sh")
    await hub.start_runner(tmp_path)
    reader = await connect(hub, api)
    task_id = await api.run(pid, template)
    slow = await never_reading_socket(hub, api, {"subscribe_output": task_id})
    await reader.send_json({"subscribe_output": task_id})
    # ...and never reads again. The other socket follows the task to its end.
    started = time.monotonic()
    frames = await output_of(reader, task_id)
    await api.wait_status(pid, task_id)
    elapsed = time.monotonic() - started
    stored = await stored_frames(hub, task_id)
    assert [(m["seq"], m["data"]) for m in frames] == stored
    assert sum(len(data) for _, data in stored) > 4_000_000
    assert elapsed < 60, elapsed
    # The slow one is really behind (its socket's buffers are full), and what the hub holds
    # for it stays bounded.
    [behind] = [live for live in hub.app[LIVE_SOCKETS].open if live.subscriptions]
    assert behind.subscriptions[task_id].sent < stored[-1][0]
    for live in hub.app[LIVE_SOCKETS].open:
        assert len(live.backlog) <= EVENT_BACKLOG
        assert all(len(s.live) <= LIVE_BUFFER for s in live.subscriptions.values())
    # The hub answers at once meanwhile.
    before = time.monotonic()
    assert await api.ok("GET", "/api/ping") == "pong"
    assert time.monotonic() - before < 2.0
    slow.close()


async def never_reading_socket(hub: RunningHub, api: Api, message: dict) -> socket.socket:
    """A websocket client that sends one message and then never reads: a raw socket with a
    small receive buffer, so the hub's sends really block (aiohttp's client would buffer)."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = hub.base_url.split("://", 1)[1].split(":")
    raw.connect((host, int(port)))
    cookies = api.session.cookie_jar.filter_cookies(URL(hub.base_url))
    cookie = "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items())
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall((f"GET /api/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 f"Sec-WebSocket-Version: 13\r\nCookie: {cookie}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await asyncio.to_thread(raw.recv, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = json.dumps(message).encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    raw.sendall(bytes([0x81, 0x80 | len(payload)]) + mask
                + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return raw


# The client's messages.


async def test_a_bad_message_gets_an_error_and_the_socket_stays_open(hub, api, tmp_path):
    ws = await connect(hub, api)
    for bad, says in [("not json", "not valid JSON"), ("[1]", "JSON object"),
                      ('{"hello": 1}', "unknown message"),
                      ('{"subscribe_output": "x"}', "subscribe_output must be"),
                      ('{"subscribe_output": true}', "subscribe_output must be"),
                      ('{"subscribe_output": 1, "after_seq": -1}', "after_seq must be"),
                      ('{"subscribe_output": 999}', "task 999 not found")]:
        await ws.send_str(bad)
        answer = await next_message(ws)
        assert answer["type"] == "error" and says in answer["message"], (bad, answer)
    await ws.send_bytes(b"\x00")
    assert (await next_message(ws))["type"] == "error"
    # Still open, and working.
    pid = await api.project()
    template = await api.template(pid, numbered_script(tmp_path, 2), "count.sh")
    await hub.start_runner(tmp_path)
    task_id = await api.run(pid, template)
    await ws.send_json({"subscribe_output": task_id})
    assert "".join(m["data"] for m in await output_of(ws, task_id)) == "line-1\nline-2\n"


# Runners.


@pytest.fixture
async def fast_hub(tmp_path):
    running = await start_hub(tmp_path, heartbeat_interval=0.5)
    yield running
    await running.close()


async def test_runner_metrics_for_admins_and_managers_not_for_others(fast_hub, tmp_path):
    hub = fast_hub
    api = await hub.api()
    a, b = await api.project("A"), await api.project("B")
    owner_a = await make_user(api, hub, "ownera", a, "owner")
    runner_b = await make_user(api, hub, "runnerb", b, "task_runner")
    created = await api.ok("POST", f"/api/project/{a}/runners",
                           {"name": "runner-a", "max_parallel_tasks": 0}, 201)
    admin_ws = await connect(hub, api)
    owner_ws = await connect(hub, owner_a)
    other_ws = await connect(hub, runner_b)
    await hub.start_runner(tmp_path, name="runner-a", token=created["token"])
    await hub.start_runner(tmp_path, name="global")
    for ws in (admin_ws, owner_ws):
        online, _ = await until(ws, lambda m: m["type"] == "runner"
                                and m["runner_id"] == created["id"])
        assert online == {"type": "runner", "runner_id": created["id"], "project_id": a,
                          "online": True, "active": True}
        metrics, _ = await until(ws, lambda m: m["type"] == "runner_metrics"
                                 and m["runner_id"] == created["id"])
        assert metrics["project_id"] == a and metrics["running"] == 0
        assert metrics["metrics"]["memory_total"] > 0
        assert set(metrics) >= {"time", "max_parallel_tasks", "draining"}
    await until(admin_ws, lambda m: m["type"] == "runner_metrics" and m["project_id"] is None)
    await silent(owner_ws, lambda m: m.get("project_id") is None, 1.2)  # global: admins only
    await silent(other_ws, lambda m: m["type"] in ("runner", "runner_metrics"), 1.2)
    # The history, with the same permissions as the runner itself.
    points = await api.ok("GET", f"/api/project/{a}/runners/{created['id']}/metrics")
    assert len(points) >= 2 and points == sorted(points, key=lambda p: p["time"])
    assert set(points[0]) == {"time", "cpu_percent", "memory_used", "memory_total",
                              "disk_free", "load1", "running"}
    mine = await owner_a.ok("GET", f"/api/project/{a}/runners/{created['id']}/metrics")
    assert len(mine) >= 2
    status, _ = await runner_b.request("GET", f"/api/project/{b}/runners/{created['id']}/metrics")
    assert status == 403
    status, _ = await owner_a.request("GET", f"/api/runners/{created['id']}/metrics")
    assert status == 403  # the global path is the admins'
    global_id = (await api.ok("GET", "/api/runners"))[0]["id"]
    assert len(await api.ok("GET", f"/api/runners/{global_id}/metrics")) >= 2
    # Disabled, deleted: said live.
    await api.ok("POST", f"/api/project/{a}/runners/{created['id']}/active",
                 {"active": False}, 204)
    await until(owner_ws, lambda m: m["type"] == "runner" and m["active"] is False)
    await api.ok("DELETE", f"/api/project/{a}/runners/{created['id']}", status=204)
    deleted, _ = await until(owner_ws, lambda m: m["type"] == "runner" and m.get("deleted"))
    assert deleted["runner_id"] == created["id"]
    path = f"/api/project/{a}/runners/{created['id']}/metrics"
    assert (await api.request("GET", path))[0] == 404


async def test_a_stopping_hub_says_going_away(tmp_path):
    hub = await start_hub(tmp_path)
    api = await hub.api()
    # A session of its own: the hub's close() closes the ones it made first.
    async with aiohttp.ClientSession(cookie_jar=api.session.cookie_jar) as own:
        ws = await connect(hub, Api(hub.base_url, own))
        stuck = await never_reading_socket(hub, api, {"unsubscribe_output": 1})
        started = time.monotonic()
        await hub.close()
        assert time.monotonic() - started < 10
        message = await ws.receive(timeout=TIMEOUT)
        assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1001, message
        stuck.close()


async def test_an_unsubscribe_during_the_last_catch_up_leaves_the_socket_open():
    """The client unsubscribes while the socket reads a just-ended task's last output (a
    browser closing the output panel as the task ends): no output_end for it, and no
    KeyError ending the whole socket."""
    from types import SimpleNamespace

    from hub.api.live import LiveSocket, OutputSubscription

    sent: list[str] = []

    class Ws:
        async def send_str(self, text: str) -> None:
            sent.append(text)

    async def read_output(task_id: int, after: int, limit: int) -> list:
        socket.subscriptions.pop(task_id, None)  # the unsubscribe, handled meanwhile
        return []

    hub = SimpleNamespace(store=SimpleNamespace(read_output=read_output))
    socket = LiveSocket(hub, Ws(), {"id": 1, "admin": 1}, ("session", "x"))  # type: ignore[arg-type]
    subscription = OutputSubscription(7, 1, 0, stale=False, final=True)
    socket.subscriptions[7] = subscription
    await socket._flush_output(subscription, {})
    assert 7 not in socket.subscriptions and not sent
