"""Fuzzing the live runner endpoint while a real runner runs a task: the hub keeps serving, the
task's output stays whole, and nothing a fuzzing session sends ends up stored."""

import asyncio
import gc
import json
import random
import string
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import msgspec
import psutil
import pytest

from hub import gateway
from protocol import session as protocol_session
from protocol.codec import decode_hub_frame, encode
from protocol.frames import (
    Accepted,
    Ack,
    Assign,
    Cancel,
    Error,
    Finished,
    Heartbeat,
    HeldTask,
    Hello,
    Metrics,
    Output,
    Rejected,
    TaskSpec,
    Welcome,
)
from protocol.limits import MAX_FRAME_BYTES
from protocol.numbers import INT64_MAX
from protocol.version import PROTOCOL_VERSION
from tests.hubkit import write_script

SEED = 20240611
FRAMES_WANTED = 100_000  # frames the hub must have read (at least 10,000 asked)
WORKERS = 3  # concurrent fuzzing clients, each with its own runner tokens
MARK = "FUZZ"  # in every text a fuzzer sends, so that it can be looked for in stored output
# A session's last frame: a finished frame for a task nobody has, which the hub answers with an
# ack once it has handled every frame before it.
SENTINEL_TASK = INT64_MAX
MAX_RSS_GROWTH = 150 * 1024 * 1024

# Prints numbered lines until the test drops the flag file (at least 2,000), then says how
# many it printed: the exact output is known afterwards.
SCRIPT = """i=0
while [ $i -lt 2000 ] || {{ [ ! -e {flag} ] && [ $i -lt 500000 ]; }}; do
  i=$((i+1))
  echo "line $i"
  if [ $((i % 50)) -eq 0 ]; then sleep 0.01; fi
done
echo $i > {count}
echo end
"""


class Fuzzer:
    """Frames from a seeded generator: hostile ones that may end a session, and "plausible"
    ones (valid frames about tasks that are not the session's) that a session survives."""

    def __init__(self, seed: int, real_task_id: int):
        self.rng = random.Random(seed)
        self.real_task_id = real_task_id

    # Building blocks.

    def text(self, limit: int = 40) -> str:
        alphabet = string.printable + "äß€漢字🙂\u0000\u200b\u202e\\\"{}[]"
        return MARK + "".join(self.rng.choice(alphabet)
                              for _ in range(self.rng.randint(0, limit)))

    def json_value(self, depth: int = 0):
        kind = self.rng.randrange(8 if depth < 3 else 5)
        if kind == 0:
            return None
        if kind == 1:
            return self.rng.choice([True, False])
        if kind == 2:
            return self.rng.randint(-2**63, 2**64)
        if kind == 3:
            return self.rng.choice([self.rng.uniform(-1e308, 1e308), 0.5, -0.0, 1e-300])
        if kind == 4:
            return self.text()
        if kind in (5, 6):
            return {self.text(8): self.json_value(depth + 1)
                    for _ in range(self.rng.randint(0, 5))}
        return [self.json_value(depth + 1) for _ in range(self.rng.randint(0, 5))]

    def task_id(self) -> int:
        """A task id in range (protocol.numbers), often the real task's or a neighbour's."""
        return self.rng.choice([self.real_task_id, self.real_task_id, self.real_task_id + 1,
                                max(1, self.real_task_id - 1), 1, 2**62,
                                self.rng.randint(1, 2**31)])

    def out_of_range(self) -> dict:
        """A valid frame with one number no receiver could store or show."""
        rng = self.rng
        frame = msgspec.to_builtins(rng.choice([
            Output(task_id=self.real_task_id, seq=1, stream="stdout", data=self.text(),
                   time=1.0),
            Heartbeat(time=1.0, running=[self.real_task_id]),
            Finished(task_id=self.real_task_id, status="success", last_seq=0),
            Accepted(task_id=self.real_task_id)]))
        field_name = rng.choice([key for key, value in frame.items()
                                 if isinstance(value, int | float) and key != "type"])
        frame[field_name] = rng.choice([1e308, -1, 0, -2**63, 2**63, 2**64, -1e-9])
        return frame

    # Frames a session survives (each may get a not_your_task error back).

    def plausible(self) -> msgspec.Struct:
        rng = self.rng
        kind = rng.randrange(6)
        if kind == 0:
            return Heartbeat(time=rng.uniform(0, 2e9), running=[self.task_id()],
                             metrics=Metrics(cpu_percent=rng.uniform(0, 1e6),
                                             memory_used=rng.randint(0, 2**62)),
                             draining=rng.random() < 0.2)
        if kind == 1:
            return Output(task_id=self.task_id(), seq=rng.randint(1, 2**40),
                          stream=rng.choice(["stdout", "stderr"]),
                          data=self.text(200) + "\n", time=rng.uniform(0, 2e9))
        if kind == 2:
            return Finished(task_id=self.task_id(), status=rng.choice(["success", "error"]),
                            last_seq=rng.randint(0, 2**40), exit_code=rng.randint(-9, 255),
                            message=self.text())
        if kind == 3:
            return Accepted(task_id=self.task_id())
        if kind == 4:
            return Rejected(task_id=self.task_id(), reason=self.text())
        return Error(code=self.text(10), message=self.text())

    # Anything at all; most of these end the session.

    def session(self, flood: int = 0, oversized: int = 0) -> list[bytes | str]:
        """One session's frames: hello (mostly), a run of plausible frames (or a flood of
        heartbeats), then (mostly) one hostile or oversized frame."""
        rng = self.rng
        first = 1.0 if flood or oversized else rng.random()
        if first < 0.05:
            frames = [self.hostile()]  # no hello first
        else:
            frames = [encode(self.hello() if first < 0.15 else Hello(
                protocol_version=PROTOCOL_VERSION, runner_version="fuzz"))]
        if flood:
            frames += [encode(Heartbeat(time=0.0))] * flood
        else:
            frames += [encode(self.plausible()) for _ in range(rng.randint(50, 800))]
        if oversized:
            frames.append(encode(Output(task_id=self.real_task_id, seq=1, stream="stdout",
                                        data=MARK * (oversized // len(MARK)), time=0.0)))
        elif rng.random() < 0.8:
            frames.append(self.hostile())
        frames.append(encode(Finished(task_id=SENTINEL_TASK, status="success", last_seq=0)))
        return frames

    def hostile(self) -> bytes | str:
        rng = self.rng
        kind = rng.randrange(9)
        if kind == 0:
            return rng.randbytes(rng.randint(0, 300))
        if kind == 1:
            return self.text(300)
        if kind == 2:
            return json.dumps(self.json_value())
        if kind == 3:
            return json.dumps(self.mutated())
        if kind == 4:  # frames only the hub may send
            return encode(rng.choice([
                Welcome(protocol_version=1, session_id=self.text(), runner_id=1,
                        heartbeat_interval=1.0, max_frame_bytes=1, max_output_bytes=1),
                Assign(task_id=self.task_id(), spec=TaskSpec(project_id=1, template_id=1,
                                                             app="bash", playbook=self.text())),
                Ack(task_id=self.task_id(), seq=1), Cancel(task_id=self.task_id())]))
        if kind == 5:
            return json.dumps({"type": self.text(10), "task_id": self.task_id()})
        if kind == 6:
            return encode(self.hello())  # a second hello
        if kind == 7:
            return json.dumps(self.out_of_range())
        return encode(self.plausible())

    def mutated(self) -> dict:
        """A valid frame as a dict with one field of the wrong type (or gone)."""
        frame = msgspec.to_builtins(self.rng.choice([self.plausible(), self.hello()]))
        field_name = self.rng.choice(sorted(frame))
        if self.rng.random() < 0.2:
            del frame[field_name]
        else:
            frame[field_name] = self.rng.choice(
                [None, "seven", 7, 7.5, [], {}, [MARK], {"a": MARK}, True, 2**70])
        return frame

    def hello(self) -> Hello:
        rng = self.rng
        held = [HeldTask(task_id=self.task_id(), state=rng.choice(["running", "finished"]),
                         last_seq=rng.randint(0, 2**40)) for _ in range(rng.randint(0, 3))]
        return Hello(protocol_version=PROTOCOL_VERSION, runner_version=self.text(10),
                     name=self.text(10), tags=[self.text(5)], held_tasks=held,
                     max_parallel_tasks=rng.randint(0, 5), platform=self.text(10))


@dataclass
class Tally:
    sent: int = 0
    sessions: int = 0
    replies: Counter = field(default_factory=Counter)
    close_codes: Counter = field(default_factory=Counter)


async def fuzz_session(url: str, token: str, frames: list[bytes | str], tally: Tally) -> None:
    """Send the frames over one websocket session, reading what comes back until the hub
    acks the sentinel or ends the session (anywhere: the rest is then not sent)."""
    async with aiohttp.ClientSession() as http, http.ws_connect(
            url, headers={"Authorization": f"Bearer {token}"}, max_msg_size=0) as ws:
        tally.sessions += 1

        async def read() -> None:
            async for message in ws:
                if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    frame = decode_hub_frame(message.data)
                    if isinstance(frame, Ack) and frame.task_id == SENTINEL_TASK:
                        return
                    tally.replies[frame.code if isinstance(frame, Error)
                                  else type(frame).__name__.lower()] += 1

        reader = asyncio.create_task(read())
        try:
            for data in frames:
                if ws.closed:
                    break
                if isinstance(data, str):
                    await ws.send_str(data)
                else:
                    await ws.send_bytes(data)
                tally.sent += 1
        except (ConnectionError, aiohttp.ClientError):
            pass
        await asyncio.wait({reader}, timeout=10)
        reader.cancel()
        await ws.close()
        tally.close_codes[ws.close_code] += 1


# 100,000 fuzzed frames: seconds alone, a minute or two on a loaded CI machine.
@pytest.mark.timeout(300)
async def test_fuzzed_runner_sessions_do_not_disturb_a_real_task(hub, api, tmp_path,
                                                                 monkeypatch):
    scripts, flag, count = tmp_path / "s", tmp_path / "flag", tmp_path / "count"
    write_script(scripts, "lines.sh", SCRIPT.format(flag=flag, count=count))
    runner = await hub.start_runner(tmp_path, name="real", tags=["real"])
    pid = await api.project()
    task_id = await api.run(pid, await api.template(pid, scripts, "lines.sh",
                                                    runner_tag="real"))
    await api.wait_status(pid, task_id, {"running"})
    tokens = [await hub.register(f"fuzz-{i}") for i in range(2 * WORKERS)]
    gc.collect()
    rss_before = psutil.Process().memory_info().rss

    pings: Counter = Counter()
    fuzzing_done = asyncio.Event()

    async def ping_all_along() -> None:
        client = await hub.api(login=False)
        while not fuzzing_done.is_set():
            status, body = await client.request("GET", "/api/ping")
            pings[(status, body)] += 1
            await asyncio.sleep(0.02)

    tally = Tally()
    # What the hub really read (sent is only what went into the socket): its frame decoder
    # (the session's), counted.
    decoded = Counter()
    real_decode = protocol_session.decode_runner_frame

    def counting_decode(data, *args):
        decoded["frames"] += 1
        return real_decode(data, *args)

    monkeypatch.setattr(protocol_session, "decode_runner_frame", counting_decode)
    # The flood must meet the frame rate limit however fast this machine decodes: at the
    # hub's own rate (10,000/s), a loaded machine reads the 90,000 frames slower than the
    # bucket refills and never limits them. A tenth of the rate, with the burst kept (so
    # the other sessions are not limited), trips it for any machine reading 2,000 frames/s.
    monkeypatch.setattr(gateway, "FRAME_RATE", 1000.0)

    async def worker(index: int) -> None:
        fuzzer = Fuzzer(SEED + index, task_id)
        mine = tokens[index::WORKERS]
        round_number = 0
        while decoded["frames"] < FRAMES_WANTED:
            # Worker 0 floods once (the frame rate limit is part of the game); worker 1 sends
            # frames over the hub's limit, and over the websocket's own message limit.
            flood = 90000 if (index, round_number) == (0, 1) else 0
            oversized = {(1, 1): MAX_FRAME_BYTES + 1, (1, 3): 3 * MAX_FRAME_BYTES}.get(
                (index, round_number), 0)
            await fuzz_session(hub.ws_url, mine[round_number % len(mine)],
                               fuzzer.session(flood, oversized), tally)
            round_number += 1

    pinger = asyncio.create_task(ping_all_along())
    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(WORKERS))), 120)
    finally:
        fuzzing_done.set()
        await pinger
    fuzz_seconds = time.monotonic() - started
    flag.write_text("")

    task = await api.wait_status(pid, task_id, timeout=60)
    gc.collect()
    rss_growth = psutil.Process().memory_info().rss - rss_before
    summary = (f"sent={tally.sent} decoded={decoded['frames']} sessions={tally.sessions} "
               f"in {fuzz_seconds:.1f} s, "
               f"replies={dict(tally.replies)}, closes={dict(tally.close_codes)}, "
               f"pings={sum(pings.values())}, rss growth={rss_growth / 2**20:.1f} MiB")
    print(summary)

    assert tally.sent >= 10_000 and decoded["frames"] >= 10_000, summary
    assert tally.replies["not_your_task"] >= 100 and tally.replies["rate_limited"], summary
    assert tally.replies["frame_too_big"] and 1009 in tally.close_codes, summary
    # The hub kept serving all along, and still does.
    assert list(pings) == [(200, "pong")] and sum(pings.values()) >= 10, summary
    assert await api.request("GET", "/api/ping") == (200, "pong")
    # The real task ended well with every line, exactly, and nothing of the fuzzers.
    assert task["status"] == "success", task
    lines = int(count.read_text())
    expected = "".join(f"line {i}\n" for i in range(1, lines + 1)) + "end\n"
    assert await api.raw_output(pid, task_id) == expected
    (stored_fuzz,) = await hub.hub.store._one_value(
        "SELECT COUNT(*) FROM task_output WHERE instr(data, ?) > 0", (MARK,))
    assert stored_fuzz == 0
    assert [t["id"] for t in await api.ok("GET", f"/api/project/{pid}/tasks")] == [task_id]
    assert runner.connection.runner_id in hub.hub.dispatcher.links
    assert rss_growth < MAX_RSS_GROWTH, summary
