"""The benchmark's handle on its simulator processes (bench/simrunners.py, `--simulate`).

The N registered runners are dealt round-robin over K processes (runner i goes to process
i mod K), so that no single simulator event loop has to carry all the websocket sessions. The
events of all processes are merged into one set of per-task futures; stalls are kept with the
number of the process that reported them.
"""

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from simrunners import BenchError, clean_env

BENCH_SCRIPT = Path(__file__).with_name("bench_hub.py")


def default_procs(runners: int) -> int:
    """One simulator process per 1,000 runners (rounded up), at least 1, at most the CPUs."""
    return max(1, min(-(-runners // 1000), os.cpu_count() or 1))


class Simulator:
    """The simulator processes, and futures for the events they report per task."""

    def __init__(self):
        self.procs: list[asyncio.subprocess.Process] = []
        self.futures: dict[tuple[str, int], asyncio.Future] = {}
        self.errors: list[str] = []
        self.stalls: list[tuple[float, float, int]] = []  # (time.time(), ms late, process no.)
        self.readers: list[asyncio.Task] = []
        self.ready: list[asyncio.Future] = []

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def future(self, kind: str, task_id: int) -> asyncio.Future:
        key = (kind, task_id)
        if key not in self.futures:
            self.futures[key] = asyncio.get_running_loop().create_future()
        return self.futures[key]

    async def start(self, url: str, tokens: list[str], tmp: Path, procs: int,
                    timeout: float) -> dict:
        """Start `procs` processes on shares of `tokens`; wait until all runners have their
        welcome. Returns the slowest process's connect time and the heartbeat interval."""
        procs = max(1, min(procs, len(tokens)))
        loop = asyncio.get_running_loop()
        for k in range(procs):
            share = [[i, tokens[i]] for i in range(k, len(tokens), procs)]
            tokens_file = tmp / f"tokens-{k}.json"
            tokens_file.write_text(json.dumps(share))
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(BENCH_SCRIPT), "--simulate", url, str(tokens_file),
                stdout=asyncio.subprocess.PIPE, env=clean_env(), limit=1 << 20)
            self.procs.append(proc)
            self.ready.append(loop.create_future())
            self.readers.append(asyncio.create_task(self._read(k, proc)))
        try:
            ready = await asyncio.wait_for(
                asyncio.gather(*(asyncio.shield(f) for f in self.ready)), timeout)
        except TimeoutError:
            raise BenchError(f"simulated runners not connected within {timeout} s; "
                             f"errors: {self.errors[:5]}") from None
        return {"connect_s": max(r["connect_s"] for r in ready), "procs": procs,
                "runners": sum(r["runners"] for r in ready),
                "heartbeat_interval": ready[0]["heartbeat_interval"]}

    async def _read(self, k: int, proc: asyncio.subprocess.Process) -> None:
        async for line in proc.stdout:
            event = json.loads(line)
            kind = event.pop("ev")
            if kind in ("assign", "done"):
                future = self.future(kind, event["task"])
                if not future.done():
                    future.set_result(event)
            elif kind == "stall":
                self.stalls.append((event["t"], event["ms"], k))
            elif kind == "ready" and not self.ready[k].done():
                self.ready[k].set_result(event)
            elif kind == "error":
                self.errors.append(f"[sim {k}] {event['msg']}")
                print(f"simulator {k}: {event}", file=sys.stderr)
        if not self.ready[k].done():
            self.ready[k].set_exception(BenchError(f"simulator {k} exited: {self.errors[:5]}"))

    async def wait(self, kind: str, ids: list[int], timeout: float) -> list[dict]:
        futures = [self.future(kind, task_id) for task_id in ids]
        done, _ = await asyncio.wait(futures, timeout=timeout)
        if len(done) < len(futures):
            missing = [task_id for task_id, f in zip(ids, futures, strict=True) if not f.done()]
            raise BenchError(f"tasks lost: {len(missing)} of {len(ids)} got no `{kind}` within "
                             f"{timeout} s (first: {missing[:10]}); simulator errors: "
                             f"{self.errors[:5]}")
        return [f.result() for f in futures]

    def exited(self) -> list[int]:
        """Numbers of the simulator processes that are no longer running."""
        return [k for k, proc in enumerate(self.procs) if proc.returncode is not None]

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for reader in self.readers:
            reader.cancel()
        for future in self.ready:  # a start() that failed half-way leaves some unawaited
            if future.done() and not future.cancelled():
                future.exception()
