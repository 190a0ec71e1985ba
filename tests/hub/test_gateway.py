"""The runner websocket endpoint with real sessions: auth at the upgrade, hostile frames."""

import asyncio

import aiohttp
import pytest

from hub.security import hash_token
from protocol.codec import decode_hub_frame, encode
from protocol.frames import Error, Finished, Hello, Output, Welcome
from protocol.version import PROTOCOL_VERSION
from tests.hubkit import write_script


def hello(**extra) -> bytes:
    return encode(Hello(protocol_version=PROTOCOL_VERSION, runner_version="test",
                        name="raw", **extra))


async def raw_session(hub, token: str) -> aiohttp.ClientWebSocketResponse:
    session = aiohttp.ClientSession()
    hub.sessions.append(session)
    return await session.ws_connect(hub.ws_url, headers={"Authorization": f"Bearer {token}"},
                                    max_msg_size=0)


async def handshake(hub, token: str) -> tuple[aiohttp.ClientWebSocketResponse, Welcome]:
    ws = await raw_session(hub, token)
    await ws.send_bytes(hello())
    welcome = decode_hub_frame((await ws.receive(timeout=5)).data)
    assert isinstance(welcome, Welcome)
    return ws, welcome


async def expect_error_and_close(ws, code: int, error_code: str | None = None) -> Error:
    message = await ws.receive(timeout=5)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    frame = decode_hub_frame(message.data)
    assert isinstance(frame, Error), frame
    if error_code:
        assert frame.code == error_code, frame
    closing = await ws.receive(timeout=5)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == code, (ws.close_code, frame)
    return frame


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer "])
async def test_bad_runner_token_is_401_before_upgrade(hub, header):
    headers = {"Authorization": header} if header else {}
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
            await session.ws_connect(hub.ws_url, headers=headers)
    assert raised.value.status == 401


async def test_disabled_runner_is_refused_and_deleted_token_stops_working(hub, api):
    token = await hub.register("r")
    runner = (await api.ok("GET", "/api/runners"))[0]
    await api.ok("POST", f"/api/runners/{runner['id']}/active", {"active": False}, 204)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
            await session.ws_connect(hub.ws_url, headers={"Authorization": f"Bearer {token}"})
    assert raised.value.status == 403
    await api.ok("DELETE", f"/api/runners/{runner['id']}", status=204)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
            await session.ws_connect(hub.ws_url, headers={"Authorization": f"Bearer {token}"})
    assert raised.value.status == 401


async def test_registration_with_wrong_token_is_401(hub):
    client = await hub.api(login=False)
    status, body = await client.request("POST", "/api/internal/runners",
                                        {"registration_token": "wrong"})
    assert status == 401 and body["error"] == "wrong registration token"
    status, body = await client.request("POST", "/api/internal/runners", {})
    assert status == 400 and "registration_token" in body["error"]


@pytest.mark.parametrize(("payload", "close_code", "error_code"), [
    (b"not json at all", 1007, "malformed_frame"),
    (b'{"type": "output", "task_id": "seven"}', 1007, "invalid_frame"),
    (b'{"type": "teleport"}', 1002, "unknown_type"),
    (b'{"type": "welcome", "protocol_version": 1}', 1002, "unknown_type"),
    (b"[1, 2, 3]", 1007, "invalid_frame"),
    (b'{"type": "heartbeat", "time": 1}' + b" " * (1024 * 1024), 1009, "frame_too_big"),
])
async def test_bad_frames_end_only_that_session(hub, api, tmp_path, payload, close_code,
                                                error_code):
    scripts = tmp_path / "s"
    write_script(scripts, "ok.sh", "echo still fine\n")
    await hub.start_runner(tmp_path, name="good")
    ws, _ = await handshake(hub, await hub.register("bad"))
    await ws.send_bytes(payload)
    frame = await expect_error_and_close(ws, close_code, error_code)
    assert frame.message
    # The hub and the other runner did not notice.
    pid = await api.project()
    task_id = await api.run(pid, await api.template(pid, scripts, "ok.sh", runner_tag=""))
    task = await api.wait_status(pid, task_id)
    assert task["status"] == "success"
    assert "still fine" in await api.raw_output(pid, task_id)


async def test_first_frame_must_be_hello(hub):
    ws = await raw_session(hub, await hub.register())
    await ws.send_bytes(b'{"type": "heartbeat", "time": 1.0}')
    frame = await expect_error_and_close(ws, 1002, "hello_expected")
    assert "hello" in frame.message


async def test_unsupported_protocol_version_names_both(hub):
    ws = await raw_session(hub, await hub.register())
    await ws.send_bytes(encode(Hello(protocol_version=99, runner_version="future")))
    frame = await expect_error_and_close(ws, 1002, "unsupported_version")
    assert "99" in frame.message and str(PROTOCOL_VERSION) in frame.message


async def test_frames_about_other_runners_tasks_are_refused(hub, api, tmp_path):
    scripts = tmp_path / "s"
    write_script(scripts, "slow.sh", "echo start\nsleep 1\necho end\n")
    await hub.start_runner(tmp_path, name="owner", tags=["own"])
    pid = await api.project()
    task_id = await api.run(pid, await api.template(pid, scripts, "slow.sh", runner_tag="own"))
    await api.wait_status(pid, task_id, {"running"})
    ws, _ = await handshake(hub, await hub.register("intruder"))
    await ws.send_bytes(encode(Output(task_id=task_id, seq=1, stream="stdout",
                                      data="forged\n", time=0.0)))
    await ws.send_bytes(encode(Finished(task_id=task_id, status="error", last_seq=1)))
    for _ in range(2):
        frame = decode_hub_frame((await ws.receive(timeout=5)).data)
        assert isinstance(frame, Error) and frame.code == "not_your_task"
    task = await api.wait_status(pid, task_id)
    assert task["status"] == "success"
    output = await api.raw_output(pid, task_id)
    assert "forged" not in output and "end" in output


async def test_silent_runner_goes_offline(tmp_path):
    from tests.hubkit import start_hub

    hub = await start_hub(tmp_path, heartbeat_interval=0.2)
    try:
        ws, welcome = await handshake(hub, await hub.register("quiet"))
        assert welcome.heartbeat_interval == 0.2
        message = await ws.receive(timeout=5)  # no heartbeats sent: closed within 3 intervals
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        api = await hub.api()
        runner = (await api.ok("GET", "/api/runners"))[0]
        assert runner["online"] is False and runner["touched"]
    finally:
        await hub.close()


async def test_second_session_with_same_token_replaces_the_first(hub):
    token = await hub.register()
    first, _ = await handshake(hub, token)
    second, _ = await handshake(hub, token)
    message = await first.receive(timeout=5)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert first.close_code == 1008
    await second.send_bytes(b'{"type": "heartbeat", "time": 1.0}')
    await asyncio.sleep(0.1)
    assert not second.closed
    runner_id = (await hub.hub.store.find_runner_by_token_hash(hash_token(token)))["id"]
    assert list(hub.hub.dispatcher.links) == [runner_id]
    assert hub.hub.dispatcher.links[runner_id].ws is not None


async def test_hub_ends_a_task_whose_runner_ignores_its_timeout(tmp_path):
    from protocol.frames import Accepted, Assign, Heartbeat
    from tests.hubkit import start_hub

    hub = await start_hub(tmp_path, max_task_duration_sec=1, heartbeat_interval=0.5)
    try:
        api = await hub.api()
        ws, _ = await handshake(hub, await hub.register("deaf"))
        pid = await api.project()
        task_id = await api.run(pid, await api.template(pid, None, "x.sh"))
        assign = decode_hub_frame((await ws.receive(timeout=5)).data)
        assert isinstance(assign, Assign) and assign.spec.timeout_sec == 1
        await ws.send_bytes(encode(Accepted(task_id=task_id)))

        async def keep_alive():
            while True:
                await ws.send_bytes(encode(Heartbeat(time=0.0)))
                await asyncio.sleep(0.2)

        beating = asyncio.create_task(keep_alive())
        try:
            task = await api.wait_status(pid, task_id, timeout=30)
        finally:
            beating.cancel()
        assert task["status"] == "error"
        assert task["status_message"].startswith("timed out after 1 s (ended by the hub")
    finally:
        await hub.close()


async def test_hub_cuts_output_of_a_runner_that_ignores_the_limit(tmp_path):
    from hub.core.reports import OUTPUT_LIMIT_SLACK
    from protocol.frames import Accepted, Assign
    from tests.hubkit import start_hub

    hub = await start_hub(tmp_path, max_task_output_bytes=1000)
    try:
        api = await hub.api()
        ws, welcome = await handshake(hub, await hub.register("chatty"))
        assert welcome.max_output_bytes == 1000
        pid = await api.project()
        task_id = await api.run(pid, await api.template(pid, None, "x.sh"))
        assert isinstance(decode_hub_frame((await ws.receive(timeout=5)).data), Assign)
        await ws.send_bytes(encode(Accepted(task_id=task_id)))
        for seq in range(1, 11):
            await ws.send_bytes(encode(Output(task_id=task_id, seq=seq, stream="stdout",
                                              data="y" * 16383 + "\n", time=0.0)))
        await ws.send_bytes(encode(Finished(task_id=task_id, status="success", last_seq=10)))
        task = await api.wait_status(pid, task_id)
        assert task["status"] == "success"
        output = await api.raw_output(pid, task_id)
        assert "[output cut" in output
        assert len(output) < 1000 + OUTPUT_LIMIT_SLACK + 200
    finally:
        await hub.close()


def test_a_pong_timer_due_with_data_unread_does_not_drop_the_session(monkeypatch):
    """After a long loop pause the pong timer and the read that brought the pong run in the
    same iteration, the timer first: data received since means the runner is there."""
    from aiohttp import web

    from hub.gateway import RunnerWebSocket

    timeouts = []
    monkeypatch.setattr(web.WebSocketResponse, "_pong_not_received",
                        lambda self: timeouts.append(self))
    ws = RunnerWebSocket(heartbeat=5.0)
    ws._need_heartbeat_reset = True  # a read brought data; aiohttp's reset is pending
    ws._pong_not_received()
    assert timeouts == []
    ws._need_heartbeat_reset = False  # nothing since the ping: a real timeout
    ws._pong_not_received()
    assert timeouts == [ws]
