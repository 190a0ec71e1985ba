"""The hub's CLI with a watchdog that says what the event loop was doing while it stalled:
`bench_hub.py` starts the hub through this file when BENCH_STALL_LOG names an output file.

A loop task stamps the time every TICK; a watchdog thread checks the stamp every TICK and,
while it is older than SAMPLE_AFTER, samples the main thread's stack (`sys._current_frames`;
the thread gets the GIL at the interpreter's switch interval, 5 ms, or after a garbage
collection ends). When the stamp moves again, a stall longer than REPORT_FROM becomes one JSON
line: wall time of its end, its length, the gc time inside it (gc.callbacks) and the sampled
stacks (hub and library frames, outermost first, counted). Bench tooling only; nothing in hub/
knows about it.
"""

import asyncio
import gc
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TICK = 0.005
SAMPLE_AFTER = 0.02
REPORT_FROM = 0.04


class Watchdog:
    def __init__(self, out_path: str):
        self.out = open(out_path, "a", buffering=1)  # open for the process's life
        self.tick = time.monotonic()
        self.main = threading.main_thread().ident
        self.gc_total, self._gc_start = 0.0, 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_total += time.perf_counter() - self._gc_start

    async def stamp(self) -> None:
        while True:
            self.tick = time.monotonic()
            await asyncio.sleep(TICK)

    def watch(self) -> None:
        stall_from, stacks, gc_at_start = None, Counter(), 0.0
        while True:
            time.sleep(TICK)
            tick = self.tick
            late = time.monotonic() - tick
            if late > SAMPLE_AFTER:
                if stall_from != tick:
                    stall_from, stacks, gc_at_start = tick, Counter(), self.gc_total
                frame = sys._current_frames().get(self.main)
                stacks[collapse(frame)] += 1
            elif stall_from is not None:
                length = tick - stall_from  # the stamp moved: the stall ended by then
                if length >= REPORT_FROM:
                    self.out.write(json.dumps({
                        "t": time.time() - (time.monotonic() - tick), "ms": length * 1000,
                        "gc_ms": (self.gc_total - gc_at_start) * 1000,
                        "stacks": stacks.most_common(8)}) + "\n")
                stall_from = None


def collapse(frame) -> str:  # type: ignore[no-untyped-def]
    names = []
    while frame is not None:
        code = frame.f_code
        path = code.co_filename
        if "/hub/" in path or "site-packages" in path or "asyncio" in path:
            names.append(f"{Path(path).stem}.{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return ";".join(reversed(names[:25]))


def install(out_path: str) -> None:
    from hub.core import telemetry

    dog = Watchdog(out_path)
    threading.Thread(target=dog.watch, name="bench-stall-watchdog", daemon=True).start()
    original_start = telemetry.HubTelemetry.start

    def start(self):  # type: ignore[no-untyped-def]
        original_start(self)
        self._bench_stamp = asyncio.get_running_loop().create_task(dog.stamp())

    telemetry.HubTelemetry.start = start  # type: ignore[method-assign]


if __name__ == "__main__":
    install(os.environ["BENCH_STALL_LOG"])
    from hub.cli import main

    sys.exit(main())
