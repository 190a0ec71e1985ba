"""A registered runner that sends numbers no one can store or show (`time: 1e308`, NaN,
negative seqs, ids past 64 bits), over a real websocket session to a live hub: the frame is
refused naming the field, the session ends, nothing of it is stored, and the task's output
still reads. Rows stored badly before the codec checked (an older hub) are repaired when read,
never a broken answer."""

import json
import time

import aiohttp
import pytest
import structlog

from hub.store.base import OutputChunk
from protocol.codec import decode_hub_frame, encode
from protocol.frames import Accepted, Ack, Assign, Finished, HeldTask, Hello, Output
from protocol.version import PROTOCOL_VERSION
from tests.hub.test_gateway import expect_error_and_close, handshake, raw_session

GOOD_LINE = "good line\n"


async def receive_frame(ws, kind: type, timeout: float = 10.0):
    """The next frame of `kind` the hub sends (others, like heartbeat acks, skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        message = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        assert message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), message
        frame = decode_hub_frame(message.data)
        if isinstance(frame, kind):
            return frame


async def runner_with_output(hub, api) -> tuple[aiohttp.ClientWebSocketResponse, str, int, str]:
    """A raw runner session holding a running task with one stored, acked line; the task's
    URL, its id and the runner's token."""
    token = await hub.register("raw", tags=["raw"])
    ws, _ = await handshake(hub, token)
    pid = await api.project()
    task_id = await api.run(pid, await api.template(pid, None, "x.sh", runner_tag="raw"))
    assign = await receive_frame(ws, Assign)
    assert assign.task_id == task_id
    await ws.send_bytes(encode(Accepted(task_id=task_id)))
    await ws.send_bytes(encode(Output(task_id=task_id, seq=1, stream="stdout",
                                      data=GOOD_LINE, time=time.time())))
    ack = await receive_frame(ws, Ack)
    assert (ack.task_id, ack.seq) == (task_id, 1)
    return ws, f"/api/project/{pid}/tasks/{task_id}", task_id, token


def _output(task_id: int, **numbers) -> dict:
    return {"type": "output", "task_id": task_id, "seq": 2, "stream": "stdout",
            "data": "bad line\n", "time": time.time(), **numbers}


def _finished(task_id: int, **numbers) -> dict:
    return {"type": "finished", "task_id": task_id, "status": "success", "last_seq": 1,
            **numbers}


# (frame text for task T, error code, close code, what the message must name)
BAD_FRAMES = [
    (lambda t: json.dumps(_output(t, time=1e308)), "invalid_frame", 1007, "field `time`"),
    (lambda t: json.dumps(_output(t, time=-1.0)), "invalid_frame", 1007, "field `time`"),
    (lambda t: json.dumps(_output(t)).replace('"time": ', '"time": 1e999, "x": '),
     "invalid_frame", 1007, "field `time`"),
    (lambda t: json.dumps(_output(t)).replace('"time": ', '"time": NaN, "x": '),
     "malformed_frame", 1007, "not valid JSON"),
    (lambda t: json.dumps(_output(t, seq=-1)), "invalid_frame", 1007, "field `seq`"),
    (lambda t: json.dumps(_output(t, seq=2**64)), "invalid_frame", 1007, "field `seq`"),
    (lambda t: json.dumps(_output(2**64)), "invalid_frame", 1007, "field `task_id`"),
    (lambda t: json.dumps({"type": "heartbeat", "time": 1e308}), "invalid_frame", 1007,
     "field `time`"),
    (lambda t: json.dumps({"type": "heartbeat", "time": 1, "running": [t, 2**63]}),
     "invalid_frame", 1007, "field `running[1]`"),
    (lambda t: json.dumps({"type": "heartbeat", "time": 1,
                           "metrics": {"memory_used": 2**80}}),
     "invalid_frame", 1007, "field `metrics.memory_used`"),
    (lambda t: json.dumps(_finished(t, exit_code=2**70)), "invalid_frame", 1007,
     "field `exit_code`"),
    (lambda t: json.dumps(_finished(t, last_seq=-5)), "invalid_frame", 1007,
     "field `last_seq`"),
    (lambda t: json.dumps({"type": "accepted", "task_id": -t}), "invalid_frame", 1007,
     "field `task_id`"),
]


@pytest.mark.parametrize(("frame", "code", "close_code", "named"), BAD_FRAMES)
async def test_a_bad_number_ends_the_session_and_the_output_still_reads(hub, api, frame, code,
                                                                       close_code, named):
    ws, task, task_id, _ = await runner_with_output(hub, api)
    with structlog.testing.capture_logs() as events:
        await ws.send_str(frame(task_id))
        error = await expect_error_and_close(ws, close_code, code)
        assert named in error.message, error
        assert "Traceback" not in error.message and len(error.message) < 400
        # The task's output is whole, in both forms, and the hub serves everyone.
        lines = await api.ok("GET", f"{task}/output")
        assert [line["output"] for line in lines] == [GOOD_LINE.strip()]
        assert await api.raw_output(*_ids(task)) == GOOD_LINE
        assert await api.request("GET", "/api/ping") == (200, "pong")
    assert not [e for e in events if e["log_level"] in ("error", "critical")], events


async def test_the_runner_comes_back_and_the_task_ends_well(hub, api):
    ws, task, task_id, token = await runner_with_output(hub, api)
    await ws.send_str(json.dumps(_output(task_id, time=1e308)))
    await expect_error_and_close(ws, 1007, "invalid_frame")
    # A new session, as the real runner's reconnect: it holds the task, resends from seq 2.
    ws = await raw_session(hub, token)
    await ws.send_bytes(encode(Hello(protocol_version=PROTOCOL_VERSION, runner_version="t",
                                     held_tasks=[HeldTask(task_id=task_id, state="running",
                                                          last_seq=1)])))
    await ws.send_bytes(encode(Output(task_id=task_id, seq=2, stream="stdout",
                                      data="second line\n", time=time.time())))
    await ws.send_bytes(encode(Finished(task_id=task_id, status="success", last_seq=2)))
    ack = await receive_frame(ws, Ack)
    while not ack.finished:
        ack = await receive_frame(ws, Ack)
    done = await api.wait_status(*_ids(task))
    assert done["status"] == "success"
    assert await api.raw_output(*_ids(task)) == GOOD_LINE + "second line\n"


async def test_rows_stored_badly_before_are_repaired_when_read(hub, api):
    """An older hub stored what runners sent: times no date can show, data that is not text.
    Each such row is read as well as it can be; the answer is never broken."""
    pid = await api.project()
    task_id = await api.run(pid, await api.template(pid, None, "x.sh", runner_tag="nobody"))
    good = 1_700_000_000.25
    await hub.hub.store.write_output([
        OutputChunk(task_id, 1, good, "stdout", "one\n"),
        OutputChunk(task_id, 2, 1e308, "stdout", "two\n"),
        OutputChunk(task_id, 3, -5.0, "stdout", "three\n"),
        OutputChunk(task_id, 4, good + 1, "stdout", b"four \xff\n"),
        OutputChunk(task_id, 5, float(2**63), "stdout", "fi"),
        OutputChunk(task_id, 6, good + 2, "stdout", "ve\n"),
    ])
    with structlog.testing.capture_logs() as events:
        lines = await api.ok("GET", f"/api/project/{pid}/tasks/{task_id}/output")
    assert [(line["output"], line["time"]) for line in lines] == [
        ("one", "2023-11-14T22:13:20.250000Z"),
        ("two", "2023-11-14T22:13:20.250000Z"),  # the time before it
        ("three", "2023-11-14T22:13:20.250000Z"),
        ("four \ufffd", "2023-11-14T22:13:21.250000Z"),
        ("five", "2023-11-14T22:13:21.250000Z"),  # its first piece's (repaired) time
    ]
    repaired = [e for e in events if e["event"] == "task.output.repaired"]
    assert len(repaired) == 1 and repaired[0]["rows"] == 4, events
    assert await api.raw_output(pid, task_id) == "one\ntwo\nthree\nfour \ufffd\nfive\n"


def _ids(task: str) -> tuple[int, int]:
    parts = task.split("/")
    return int(parts[3]), int(parts[5])


@pytest.mark.parametrize(("field", "value"), [("max_parallel_tasks", 2**70),
                                              ("max_parallel_tasks", -1),
                                              ("protocol_version", 2**64)])
async def test_a_hello_with_numbers_out_of_range_is_refused_naming_the_field(hub, api, field,
                                                                             value):
    token = await hub.register("big-hello")
    ws = await raw_session(hub, token)
    hello = {"type": "hello", "protocol_version": PROTOCOL_VERSION, "runner_version": "t",
             field: value}
    await ws.send_bytes(json.dumps(hello).encode())
    error = await expect_error_and_close(ws, 1007, "invalid_frame")
    assert f"field `{field}`" in error.message
    runners = await api.ok("GET", "/api/runners")  # the hub serves on
    assert [r["name"] for r in runners] == ["big-hello"]
