"""Simulated runners for bench_hub.py: N websocket sessions speaking the protocol frame by frame.

No processes are run. What a runner does with a task is read from the task's `playbook`, a JSON
plan: {"mode": "latency"} sends one small output frame and finished; {"mode": "stream", ...}
streams `frames` output frames keeping at most `window` unacked. Events go to stdout as JSON
lines (assign receipt times, per-task results) for the benchmark process to read. The
benchmark may start several such processes, each with a share of the runners; its handle on
them is `Simulator` in bench/simprocs.py.
"""

import asyncio
import functools
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect

from protocol.codec import decode_hub_frame, encode
from protocol.frames import (
    Accepted,
    Ack,
    Assign,
    Cancel,
    Error,
    Finished,
    Heartbeat,
    Hello,
    Output,
    Welcome,
)
from protocol.limits import MAX_FRAME_BYTES
from protocol.version import PROTOCOL_VERSION


@functools.lru_cache(maxsize=8)
def _filler(lines: int, line_bytes: int) -> str:
    return ("x" * (line_bytes - 1) + "\n") * lines


def frame_data(task_id: int, seq: int, lines: int, line_bytes: int) -> str:
    """Output of one frame: `lines` lines of `line_bytes` bytes, the first naming the frame."""
    head = f"task {task_id} frame {seq:09d} ".ljust(line_bytes - 1, "-") + "\n"
    return head + _filler(lines - 1, line_bytes)


class BenchError(Exception):
    """The benchmark cannot go on (hub not starting, tasks lost, output not stored)."""


def clean_env() -> dict[str, str]:
    """Our own config file decides: drop any SEMAPHORE_* the caller's shell has set."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SEMAPHORE_")}


def emit(event: str, **fields) -> None:
    sys.stdout.write(json.dumps({"ev": event, **fields}) + "\n")
    sys.stdout.flush()


@dataclass(eq=False)
class TaskState:
    acked: int = 0
    ack_time: float = 0.0
    acked_changed: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class SimRunner:
    def __init__(self, index: int, url: str, token: str):
        self.index = index
        self.url = url
        self.token = token
        self.tasks: dict[int, TaskState] = {}
        self.ws: ClientConnection | None = None
        self.welcome: Welcome | None = None
        self._handlers: set[asyncio.Task] = set()
        self._heartbeat_task: asyncio.Task | None = None

    async def send(self, frame) -> None:
        await self.ws.send(encode(frame).decode())

    async def open(self) -> None:
        self.ws = await connect(self.url, additional_headers={
            "Authorization": f"Bearer {self.token}"}, compression=None,
            max_size=2 * MAX_FRAME_BYTES, open_timeout=60, close_timeout=5,
            # The hub pings every session (and answers runner heartbeats); 10,000 client
            # pings more only load the shared CPUs and fail the run when the hub is late.
            ping_interval=None)
        await self.send(Hello(protocol_version=PROTOCOL_VERSION, runner_version="bench",
                              name=f"sim-{self.index}", platform="bench/sim"))
        frame = decode_hub_frame(await asyncio.wait_for(self.ws.recv(), 120))
        if not isinstance(frame, Welcome):
            raise RuntimeError(f"runner {self.index}: expected welcome, got {frame!r}")
        self.welcome = frame
        # From the welcome on, as a real runner: connecting thousands of sessions takes
        # longer than the hub waits for a silent runner before it calls it offline.
        self._heartbeat_task = asyncio.create_task(self._heartbeats())

    async def run(self) -> None:
        try:
            async for message in self.ws:
                received = time.time()  # as early as possible: this is the assign receipt
                frame = decode_hub_frame(message)
                if isinstance(frame, Assign):
                    emit("assign", task=frame.task_id, t=received, runner=self.index)
                    self.tasks[frame.task_id] = TaskState()
                    handler = asyncio.create_task(self._task(frame))
                    self._handlers.add(handler)
                    handler.add_done_callback(self._handlers.discard)
                elif isinstance(frame, Ack):
                    self._ack(frame, received)
                elif isinstance(frame, Cancel | Error):
                    emit("error", runner=self.index, msg=repr(frame))
        finally:
            if self._heartbeat_task is not None:
                self._heartbeat_task.cancel()

    def _ack(self, frame: Ack, received: float) -> None:
        state = self.tasks.get(frame.task_id)
        if state is None:
            return
        if frame.seq > state.acked:
            state.acked, state.ack_time = frame.seq, received
            state.acked_changed.set()
        if frame.finished:
            state.finished.set()

    async def _heartbeats(self) -> None:
        while True:
            # Jittered like the real runner's (agent/connection.py), so the fleet is not in step.
            await asyncio.sleep(self.welcome.heartbeat_interval * random.uniform(0.8, 1.0))
            await self.send(Heartbeat(time=time.time(), running=list(self.tasks)))

    async def _task(self, assign: Assign) -> None:
        task_id, state = assign.task_id, self.tasks[assign.task_id]
        try:
            plan = json.loads(assign.spec.playbook)
            await self.send(Accepted(task_id=task_id))
            stats = {}
            if plan["mode"] == "stream":
                stats = await self._stream(task_id, state, plan)
                last_seq = plan["frames"]
            else:
                await self.send(Output(task_id=task_id, seq=1, stream="stdout",
                                       data="hello from a simulated runner\n", time=time.time()))
                last_seq = 1
            await self.send(Finished(task_id=task_id, status="success", last_seq=last_seq,
                                     exit_code=0))
            await asyncio.wait_for(state.finished.wait(), 120)
            emit("done", task=task_id, t=time.time(), runner=self.index, **stats)
        except Exception as exc:
            emit("error", runner=self.index, task=task_id, msg=f"{type(exc).__name__}: {exc}")
        finally:
            self.tasks.pop(task_id, None)

    async def _stream(self, task_id: int, state: TaskState, plan: dict) -> dict:
        frames, window = plan["frames"], plan["window"]
        lines, line_bytes = plan["lines_per_frame"], plan["line_bytes"]
        first = time.time()
        for seq in range(1, frames + 1):
            while seq - state.acked > window:
                state.acked_changed.clear()
                await asyncio.wait_for(state.acked_changed.wait(), 120)
            await self.send(Output(task_id=task_id, seq=seq, stream="stdout", time=time.time(),
                                   data=frame_data(task_id, seq, lines, line_bytes)))
        while state.acked < frames:
            state.acked_changed.clear()
            await asyncio.wait_for(state.acked_changed.wait(), 120)
        return {"first": first, "last_ack": state.ack_time, "frames": frames,
                "lines": frames * lines, "bytes": frames * lines * line_bytes}


async def watch_stalls(tick: float = 0.002, threshold: float = 0.005) -> None:
    """Report when this process's event loop was late by more than `threshold`: receipts
    recorded during such a stall are late by the simulator's fault, not the hub's."""
    while True:
        start = time.monotonic()
        await asyncio.sleep(tick)
        late = time.monotonic() - start - tick
        if late > threshold:
            emit("stall", t=time.time(), ms=late * 1000)


async def run_runners(url: str, tokens: list[tuple[int, str]],
                      connect_concurrency: int = 25) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runners = [SimRunner(index, url, token) for index, token in tokens]
    gate = asyncio.Semaphore(connect_concurrency)

    async def open_one(runner: SimRunner) -> None:
        async with gate:
            await runner.open()

    started = time.monotonic()
    await asyncio.gather(*(open_one(runner) for runner in runners))
    emit("ready", runners=len(runners), connect_s=time.monotonic() - started,
         heartbeat_interval=runners[0].welcome.heartbeat_interval if runners else None)
    sessions = [asyncio.create_task(runner.run()) for runner in runners]
    sessions.append(asyncio.create_task(watch_stalls()))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*sessions, stopper], return_when=asyncio.FIRST_COMPLETED)
    if stopper not in done:
        ended = next(iter(done))
        emit("error", msg=f"a runner session ended early: {ended.exception()!r}")
    await asyncio.gather(*(runner.ws.close() for runner in runners), return_exceptions=True)
    for session in sessions:
        session.cancel()


def simulate(url: str, tokens_file: str) -> int:
    """Entry point of a simulator process (`bench_hub.py --simulate URL TOKENS_FILE`). The
    file holds [[runner index, token], ...]: this process's share of the registered runners."""
    with open(tokens_file) as handle:
        tokens = [(int(index), token) for index, token in json.load(handle)]
    try:
        asyncio.run(run_runners(url, tokens))
    except Exception as exc:
        emit("error", msg=f"simulator failed: {type(exc).__name__}: {exc}")
        return 1
    return 0
