"""Benchmark of the peer, Celery (Redis broker and result backend), measured like bench_hub.py.

Figures (a separate `celery -A bench_celery worker` process, prefork pool, 8 processes):
  a. submit -> worker has the task: the submitter records time.time() just before
     apply_async, the task records time.time() first thing; p50/p99 (tasks one at a time).
  b. submit -> a real `date` process started: the task runs `date +%s.%N` in a subprocess;
     the time `date` prints is the moment the process ran; p50/p99 (one at a time).
  c. real-process tasks/s: N tasks that each run `true` in a subprocess are submitted at
     once; N / (first submit -> last result received).
  d. trivial tasks/s: S submitter processes each submit M empty tasks at once and wait for
     their results; S * M / (first submit -> last result received).

Redis must listen on --redis (Debian's redis-server on 127.0.0.1:6379 here). The benchmark
uses its own database number (--db, default 15) and flushes it before each run.
Usage: .venv/bin/python bench/bench_celery.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from celery import Celery

HERE = Path(__file__).resolve().parent
QUEUE = "bench"
# The worker process and the spawned submitters import this module too (`celery -A
# bench_celery`), so the broker URL comes from the environment the benchmark sets, and the
# task names are explicit (the same whether the module is __main__ or not).
BROKER = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/15")

app = Celery("bench_celery", broker=BROKER, backend=BROKER)
app.conf.update(task_default_queue=QUEUE, worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True, result_expires=600)


@app.task(name="bench_celery.stamp")
def stamp() -> float:
    return time.time()


@app.task(name="bench_celery.run_date")
def run_date() -> float:
    out = subprocess.run(["date", "+%s.%N"], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@app.task(name="bench_celery.run_true")
def run_true() -> None:
    subprocess.run(["true"], check=True)


@app.task(name="bench_celery.noop")
def noop() -> None:
    return None


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile, as bench_hub.py computes it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def one_at_a_time(task, count: int, timeout: float) -> list[float]:
    """Latencies in ms from just before apply_async to the time the task returns."""
    out = []
    for _ in range(count):
        t0 = time.time()
        started = task.apply_async().get(timeout=timeout)
        out.append((started - t0) * 1000)
    return out


def burst(task, count: int, timeout: float) -> tuple[float, float]:
    """Submit `count` tasks at once, wait for every result: (first submit, last result)."""
    t0 = time.time()
    results = [task.apply_async() for _ in range(count)]
    for result in results:
        result.get(timeout=timeout)
    return t0, time.time()


def submitter(go: Any, count: int, timeout: float,
              out: multiprocessing.Queue) -> None:
    noop.apply_async().get(timeout=timeout)  # connect to Redis before the clock starts
    go.wait(timeout)
    out.put(burst(noop, count, timeout))


def concurrent_trivial(submitters: int, count: int, timeout: float) -> float:
    """Trivial tasks/s over `submitters` processes that each submit `count` tasks."""
    # spawn, not fork: a forked child would share the parent's Redis result connection.
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Barrier(submitters + 1), ctx.Queue()
    procs = [ctx.Process(target=submitter, args=(go, count, timeout, out))
             for _ in range(submitters)]
    for proc in procs:
        proc.start()
    go.wait(timeout)  # every submitter has imported and connected
    spans = [out.get(timeout=timeout) for _ in procs]
    for proc in procs:
        proc.join(timeout)
    return submitters * count / (max(e for _, e in spans) - min(s for s, _ in spans))


def start_worker(concurrency: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "celery", "-A", "bench_celery", "worker", "--pool", "prefork",
           "--concurrency", str(concurrency), "-Q", QUEUE, "--loglevel", "WARNING",
           "--without-gossip", "--without-mingle", "--without-heartbeat"]
    return subprocess.Popen(cmd, cwd=HERE, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)


def wait_ready(worker: subprocess.Popen, concurrency: int, timeout: float) -> None:
    """Until every pool process answers: 4 * concurrency empty tasks all come back."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the celery worker exited ({worker.returncode})")
        try:
            burst(noop, 4 * concurrency, 5)
            return
        except Exception:  # the worker may still be starting
            time.sleep(0.2)
    raise RuntimeError("the celery worker did not become ready")


def run(args: argparse.Namespace) -> dict:
    import redis  # celery[redis]'s client: flush our own database before the run

    redis.Redis.from_url(args.broker).flushdb()
    # The worker and the spawned submitters read it from the environment at import.
    os.environ["BENCH_CELERY_BROKER"] = args.broker
    app.conf.update(broker_url=args.broker, result_backend=args.broker)
    env = dict(os.environ)
    log = Path(args.worker_log)
    worker = start_worker(args.concurrency, env, log)
    try:
        wait_ready(worker, args.concurrency, args.timeout)
        submit = one_at_a_time(stamp, args.tasks, args.timeout)
        date = one_at_a_time(run_date, args.tasks, args.timeout)
        t0, t1 = burst(run_true, args.burst, args.timeout)
        trivial = concurrent_trivial(args.submitters, args.per_submitter, args.timeout)
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return {
        "params": {k: v for k, v in vars(args).items() if k not in ("json", "worker_log")},
        "submit_to_start_ms": {"p50": pct(submit, 50), "p99": pct(submit, 99),
                               "samples": submit},
        "submit_to_process_ms": {"p50": pct(date, 50), "p99": pct(date, 99), "samples": date},
        "process_tasks_per_s": args.burst / (t1 - t0),
        "trivial_tasks_per_s": trivial,
    }


def table(result: dict) -> str:
    a, b = result["submit_to_start_ms"], result["submit_to_process_ms"]
    rows = [
        ("submit -> worker has the task, p50 / p99 (ms)", f"{a['p50']:.2f} / {a['p99']:.2f}"),
        ("submit -> `date` process started, p50 / p99 (ms)", f"{b['p50']:.2f} / {b['p99']:.2f}"),
        ("real-process tasks/s (`true`)", f"{result['process_tasks_per_s']:.0f}"),
        ("trivial tasks/s", f"{result['trivial_tasks_per_s']:.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value:>14}" for name, value in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/15",
                        help="Redis URL, broker and result backend (flushed before the run)")
    parser.add_argument("--concurrency", type=int, default=8, help="prefork pool processes")
    parser.add_argument("--tasks", type=int, default=300, help="tasks in (a) and in (b)")
    parser.add_argument("--burst", type=int, default=500, help="tasks in (c)")
    parser.add_argument("--submitters", type=int, default=4, help="submitter processes in (d)")
    parser.add_argument("--per-submitter", type=int, default=500, help="tasks each in (d)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per wait")
    parser.add_argument("--worker-log", default="/tmp/bench-celery-worker.log")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
