"""Deadlines measured on protocol frames, not on websocket traffic: raw clients that answer
every ping but send no frame lose their session, and a task assigned to one that never
answers goes to another, real runner."""

import asyncio

import aiohttp
import pytest
import structlog

from hub import gateway
from hub.config import ConfigError, load_config
from protocol.codec import decode_hub_frame, encode
from protocol.frames import Accepted, Assign, Cancel, Error, Heartbeat, HubFrame
from tests.hub.test_gateway import handshake, hello
from tests.hubkit import start_hub, write_script


async def only_pongs(hub, token: str) -> aiohttp.ClientWebSocketResponse:
    """A raw session that answers pings itself (so the test can count them)."""
    session = aiohttp.ClientSession()
    hub.sessions.append(session)
    return await session.ws_connect(hub.ws_url, headers={"Authorization": f"Bearer {token}"},
                                    autoping=False, max_msg_size=0)


async def answer_pings_until_closed(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, list]:
    """Pong every ping, send nothing else; (pings answered, hub frames) once the hub closes."""
    pings, frames = 0, []
    while True:
        message = await ws.receive(timeout=30)
        if message.type == aiohttp.WSMsgType.PING:
            await ws.pong(message.data)
            pings += 1
        elif message.type == aiohttp.WSMsgType.TEXT:
            frames.append(decode_hub_frame(message.data))
        elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                              aiohttp.WSMsgType.CLOSING):
            return pings, frames


@pytest.fixture
async def pinging_hub(tmp_path):
    # The hub pings every heartbeat interval (1 s at the least): silence ends a session after
    # 3 s, and a few pings come and go before that.
    running = await start_hub(tmp_path, heartbeat_interval=1.0)
    yield running
    await running.close()


async def test_hello_deadline_holds_for_a_client_that_answers_pings(pinging_hub, monkeypatch):
    monkeypatch.setattr(gateway, "HELLO_TIMEOUT", 2.5)
    ws = await only_pongs(pinging_hub, await pinging_hub.register("mute"))
    pings, frames = await answer_pings_until_closed(ws)
    assert pings >= 1  # the transport was alive all along
    assert [(f.code, type(f)) for f in frames] == [("no_hello", Error)]
    assert ws.close_code == 1008


async def test_session_that_only_answers_pings_after_hello_goes_offline(pinging_hub):
    token = await pinging_hub.register("pong-only")
    ws = await only_pongs(pinging_hub, token)
    await ws.send_bytes(hello())
    with structlog.testing.capture_logs() as logs:
        pings, frames = await answer_pings_until_closed(ws)
    assert pings >= 1 and type(frames[0]).__name__ == "Welcome"
    assert any(e["event"] == "runner.offline" for e in logs)
    api = await pinging_hub.api()
    runner = (await api.ok("GET", "/api/runners"))[0]
    assert runner["online"] is False


async def next_frame(ws, kind: type) -> HubFrame:
    """The next hub frame of `kind`, skipping acks and the like."""
    while True:
        frame = decode_hub_frame((await ws.receive(timeout=10)).data)
        if isinstance(frame, kind):
            return frame


async def keep_beating(ws) -> None:
    """Heartbeats, so that the session is alive and only the accept deadline can act."""
    while True:
        await ws.send_bytes(encode(Heartbeat(time=0.0)))
        await asyncio.sleep(0.1)


async def test_unanswered_assign_goes_back_to_waiting_then_runs_on_a_real_runner(tmp_path):
    hub = await start_hub(tmp_path, runner_accept_timeout_sec=0.5)
    beating = None
    try:
        api = await hub.api()
        scripts = tmp_path / "s"
        write_script(scripts, "t.sh", "echo ran on the second runner\n")
        ws, _ = await handshake(hub, await hub.register("slow"))
        beating = asyncio.create_task(keep_beating(ws))
        pid = await api.project()
        task_id = await api.run(pid, await api.template(pid, scripts, "t.sh"))
        assert (await next_frame(ws, Assign)).task_id == task_id
        # Never answered: the hub takes it back and tells the slow runner to drop it.
        cancel = await next_frame(ws, Cancel)
        assert cancel.task_id == task_id and "not accepted within 0.5 s" in cancel.reason
        task = await api.task(pid, task_id)
        assert task["status"] == "waiting" and task["runner_id"] is None
        assert task["waiting_reason"] == "runner `slow` did not accept it within 0.5 s"

        second = await hub.start_runner(tmp_path, name="second")
        task = await api.wait_status(pid, task_id)
        assert task["status"] == "success" and task["runner_id"] == second.connection.runner_id
        assert await api.raw_output(pid, task_id) == "ran on the second runner\n"
        # Too late: the task is not the slow runner's any more.
        await ws.send_bytes(encode(Accepted(task_id=task_id)))
        refused = await next_frame(ws, Error)
        assert refused.code == "not_your_task"
        assert (await api.task(pid, task_id))["status"] == "success"
    finally:
        if beating is not None:
            beating.cancel()
        await hub.close()


async def test_task_stopped_while_its_assign_is_unanswered_ends_stopped(tmp_path):
    hub = await start_hub(tmp_path, runner_accept_timeout_sec=0.5)
    beating = None
    try:
        api = await hub.api()
        ws, _ = await handshake(hub, await hub.register("slow"))
        beating = asyncio.create_task(keep_beating(ws))
        pid = await api.project()
        task_id = await api.run(pid, await api.template(pid, None, "x.sh"))
        assert (await next_frame(ws, Assign)).task_id == task_id
        await api.ok("POST", f"/api/project/{pid}/tasks/{task_id}/stop", {}, 204)
        task = await api.wait_status(pid, task_id)
        assert (task["status"], task["status_message"]) == ("stopped",
                                                            "stopped before it started")
    finally:
        if beating is not None:
            beating.cancel()
        await hub.close()


def test_accept_timeout_is_a_config_key_and_an_environment_variable(tmp_path):
    assert load_config(environ={}).runner_accept_timeout_sec == 15.0
    config = load_config(environ={"SEMAPHORE_RUNNER_ACCEPT_TIMEOUT_SEC": "2.5"})
    assert config.runner_accept_timeout_sec == 2.5
    with pytest.raises(ConfigError, match="runner_accept_timeout_sec"):
        load_config(environ={"SEMAPHORE_RUNNER_ACCEPT_TIMEOUT_SEC": "0"})
