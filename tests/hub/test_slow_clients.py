"""Slow and hoarding clients against a live hub with small deadlines: half-sent heads, bodies
that trickle, connections that say nothing, idle keep-alive, one address opening hundreds of
connections. Each is cut or refused, and other clients are served all along; what takes long
for good reasons (a runner's websocket, a big answer read slowly) is never cut."""

import asyncio
import socket
import time

import pytest
import structlog

from tests.hubkit import REGISTRATION_TOKEN, start_hub, write_script
from tests.rawhttp import address, connect, parse, read_until_closed, request

# Far above every deadline below: only a connection the hub forgot would hit it.
LIVENESS = 20.0
FAST = {"http_header_timeout_sec": 0.3, "http_body_timeout_sec": 0.3,
        "http_keepalive_timeout_sec": 0.3}


@pytest.fixture
async def slow_hub(tmp_path):
    """A hub whose deadlines are a fraction of a second (the defaults are 10, 60 and 75 s)."""
    started = []

    async def start(**overrides):
        folder = tmp_path / f"hub{len(started)}"
        folder.mkdir()
        running = await start_hub(folder, **{**FAST, **overrides})
        started.append(running)
        return running

    yield start
    for running in started:
        await running.close()


async def ping(hub) -> bytes:
    reader, writer = await connect(hub.base_url)
    writer.write(request("GET", "/api/ping"))
    data = await asyncio.wait_for(reader.read(), LIVENESS)
    writer.close()
    return data


async def test_half_sent_heads_are_cut_while_others_are_served(slow_hub):
    hub = await slow_hub(http_max_connections_per_address=0)
    connections = [await connect(hub.base_url) for _ in range(100)]
    for _, writer in connections:
        writer.write(b"GET /api/ping HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the rest
    with structlog.testing.capture_logs() as events:
        answer = await ping(hub)
        assert parse(answer).body == b"pong"
        cut = await asyncio.gather(*(read_until_closed(reader, LIVENESS)
                                     for reader, _ in connections))
    assert cut == [b""] * 100  # closed without an answer: no request was ever read
    timeouts = [e for e in events if e["event"] == "http.read_timeout"]
    assert len(timeouts) == 1 and timeouts[0]["reading"] == "head", events  # once a minute
    assert parse(await ping(hub)).body == b"pong"


async def test_a_connection_that_says_nothing_is_closed(slow_hub):
    hub = await slow_hub()
    reader, _ = await connect(hub.base_url)
    assert await read_until_closed(reader, LIVENESS) == b""


async def test_a_head_sent_in_pieces_within_the_deadline_is_answered(slow_hub):
    hub = await slow_hub(http_header_timeout_sec=5)
    reader, writer = await connect(hub.base_url)
    for piece in (b"GET /api/ping HTT", b"P/1.1\r\nHost: x\r\n", b"Connection: close\r\n\r\n"):
        writer.write(piece)
        await asyncio.sleep(0.05)
    assert parse(await read_until_closed(reader, LIVENESS)).body == b"pong"


async def test_a_trickling_body_is_cut_at_the_body_deadline(slow_hub):
    hub = await slow_hub()
    reader, writer = await connect(hub.base_url)
    head = request("POST", "/api/auth/login", close=False).replace(
        b"Content-Length: 0", b"Content-Length: 1000")
    writer.write(head + b'{"auth": "admin", ')  # then nothing more
    data = await read_until_closed(reader, LIVENESS)
    assert b"HTTP/1.1 2" not in data  # cut, never answered as if whole
    assert parse(await ping(hub)).body == b"pong"


async def test_a_body_sent_in_pieces_within_the_deadline_is_read(slow_hub):
    hub = await slow_hub(http_body_timeout_sec=5)
    body = b'{"auth": "admin", "password": "wrong-password"}'
    reader, writer = await connect(hub.base_url)
    writer.write(request("POST", "/api/auth/login", body)[:-len(body)])
    for start in range(0, len(body), 16):
        writer.write(body[start:start + 16])
        await asyncio.sleep(0.05)
    answer = parse(await read_until_closed(reader, LIVENESS))
    assert answer.status == 401, answer  # read whole, and judged


async def test_an_idle_kept_alive_connection_is_closed(slow_hub):
    hub = await slow_hub(http_header_timeout_sec=5, http_keepalive_timeout_sec=0.3)
    reader, writer = await connect(hub.base_url)
    writer.write(request("GET", "/api/ping", close=False))
    first = await asyncio.wait_for(reader.readuntil(b"pong"), LIVENESS)
    assert first.startswith(b"HTTP/1.1 200")
    assert await read_until_closed(reader, LIVENESS) == b""


async def test_a_kept_alive_connection_waits_longer_than_the_header_deadline(slow_hub):
    """Between requests the keep-alive bound applies, not the header deadline (which starts
    with the next request's first byte)."""
    hub = await slow_hub(http_header_timeout_sec=0.2, http_keepalive_timeout_sec=30)
    reader, writer = await connect(hub.base_url)
    writer.write(request("GET", "/api/ping", close=False))
    await asyncio.wait_for(reader.readuntil(b"pong"), LIVENESS)
    await asyncio.sleep(0.6)  # three header deadlines
    writer.write(request("GET", "/api/ping"))
    assert parse(await read_until_closed(reader, LIVENESS)).body == b"pong"


async def test_one_address_gets_a_bounded_number_of_connections(slow_hub):
    hub = await slow_hub(http_header_timeout_sec=60, http_max_connections_per_address=8)
    held = [await connect(hub.base_url) for _ in range(8)]
    with structlog.testing.capture_logs() as events:
        refused = []
        for _ in range(20):
            reader, writer = await connect(hub.base_url)
            writer.write(request("GET", "/api/ping"))
            refused.append(parse(await read_until_closed(reader, LIVENESS)))
    assert {(answer.status, answer.body) for answer in refused} == {
        (503, b'{"error": "too many connections from your address"}')}
    assert [e["event"] for e in events] == ["http.connections.refused"], events
    # One of the eight goes: a place is free again.
    held.pop()[1].close()
    for _ in range(200):
        answer = parse(await ping(hub))
        if answer.status == 200:
            break
        await asyncio.sleep(0.01)
    assert answer.body == b"pong"
    for _, writer in held:
        writer.close()


async def test_runner_sessions_and_long_answers_are_not_cut(slow_hub, tmp_path):
    """With every deadline at 0.3 s: a runner stays connected and runs a task, its 12 MB of
    output is read back by a client far slower than the deadlines, whole; runner sessions
    do not count toward the per-address cap."""
    hub = await slow_hub(http_max_connections_per_address=3)
    scripts = tmp_path / "s"
    write_script(scripts, "big.sh",
                 "sleep 1\nhead -c 12000000 /dev/zero | tr '\\0' 'x' | fold -w 99\n")
    api = await hub.api()  # one client, one connection at a time: registrations too
    runners = []
    for i in range(4):
        token = (await api.ok("POST", "/api/internal/runners", {
            "registration_token": REGISTRATION_TOKEN, "name": f"r{i}", "tags": ["big"]}))["token"]
        runners.append(await hub.start_runner(tmp_path, name=f"r{i}", tags=["big"], token=token))
    # Four runner sessions from this address, and still room under a cap of 3.
    assert parse(await ping(hub)).body == b"pong"
    pid = await api.project()
    task_id = await api.run(pid, await api.template(pid, scripts, "big.sh", runner_tag="big"))
    task = await api.wait_status(pid, task_id, timeout=60)
    assert task["status"] == "success", task
    assert all(runner.connection.connected.is_set() for runner in runners)

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the hub must wait for us
    sock.connect(address(hub.base_url))
    reader, writer = await asyncio.open_connection(sock=sock)
    cookie = next(iter(api.session.cookie_jar))
    writer.write(request("GET", f"/api/project/{pid}/tasks/{task_id}/raw_output",
                         headers={"Cookie": f"{cookie.key}={cookie.value}"}))
    data = b""
    while chunk := await asyncio.wait_for(reader.read(256 * 1024), LIVENESS):
        data += chunk
        await asyncio.sleep(0.02)  # about 1 s for the whole answer: several deadlines
    answer = parse(data)
    assert answer.status == 200
    assert answer.body == (b"x" * 99 + b"\n") * (12_000_000 // 99) + b"x" * (12_000_000 % 99)


async def test_a_head_that_arrived_in_time_is_not_cut_while_the_hub_is_busy(slow_hub):
    """The header deadline bounds the client's sending: a head that has arrived is answered
    even if the hub's loop only gets to it after the deadline (a long pause)."""
    hub = await slow_hub(http_header_timeout_sec=0.2)
    reader, writer = await connect(hub.base_url)
    await asyncio.sleep(0.05)  # the hub has the connection: its header deadline runs
    writer.write(request("GET", "/api/ping"))  # sent at once, read after the pause
    time.sleep(0.4)  # noqa: ASYNC251 (the loop stands still past the deadline)
    assert parse(await read_until_closed(reader, LIVENESS)).body == b"pong"
