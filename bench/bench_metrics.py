"""The runners' resource history at scale, without sockets: memory held, heartbeat cost,
flush time and database size for N runners over simulated minutes (hub/core/metrics.py).

    .venv/bin/python bench/bench_metrics.py --runners 10000 --minutes 65
"""

import argparse
import asyncio
import os
import tempfile
import time
import tracemalloc

from hub.core.metrics import MetricsHistory
from hub.store import open_store


async def run(runners: int, minutes: int, interval: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hub.sqlite")
        store = await open_store(path)
        now = [1_800_000_000.0]
        history = MetricsHistory(store, lambda: now[0])
        flushes: list[float] = []
        add_seconds = 0.0
        adds = 0
        tracemalloc.start()
        for minute in range(minutes):
            beats = int(60 / interval)
            for beat in range(beats):
                at = now[0] + beat * interval
                started = time.perf_counter()
                for runner in range(1, runners + 1):
                    history.add(runner, {"time": at, "cpu_percent": 12.5,
                                         "memory_used": 2**31, "memory_total": 2**33,
                                         "disk_free": 2**36, "load1": 0.5, "running": 1})
                add_seconds += time.perf_counter() - started
                adds += runners
            if minute == 0:  # traced for the first minute only: tracing slows every call
                held = tracemalloc.get_traced_memory()[0]
                tracemalloc.stop()
                print(f"held after a minute of heartbeats: {held / 2**20:.1f} MiB "
                      f"(add timed with tracing on)")
                add_seconds, adds = 0.0, 0
            now[0] += 60
            started = time.perf_counter()
            await history.flush()
            flushes.append(time.perf_counter() - started)
        size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))
        await store.close()
        flushes = sorted(flushes[1:] or flushes)  # the first also rolls up a day of hours
        print(f"{runners} runners, {minutes} minutes, a heartbeat every {interval} s: "
              f"add {add_seconds / adds * 1e6:.2f} us/heartbeat; flush p50 "
              f"{flushes[len(flushes) // 2] * 1000:.0f} ms, max {flushes[-1] * 1000:.0f} ms; "
              f"database + WAL {size / 2**20:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runners", type=int, default=10000)
    parser.add_argument("--minutes", type=int, default=65)
    parser.add_argument("--interval", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(run(args.runners, args.minutes, args.interval))


if __name__ == "__main__":
    main()
