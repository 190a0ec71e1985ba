"""Runs bench_hub.py (ours) and bench_celery.py (the peer) on this machine and writes a table.

Each benchmark runs --repeat times, alternating ours and the peer so that a change in the
machine's load hits both alike. The figures come from each benchmark's --json output. The
result goes to docs/benchmarks.md (--out): the machine, the versions, and per figure ours
(median, min-max), the peer (median, min-max) and their ratio.
Usage: .venv/bin/python bench/compare.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# (key, label, kind): kind "ms" means lower is better, "rate" means higher is better.
FIGURES = [
    ("start_p50", "submit -> task in the worker/runner, p50 (ms)", "ms"),
    ("start_p99", "submit -> task in the worker/runner, p99 (ms)", "ms"),
    ("process_p50", "submit -> real `date` process started, p50 (ms)", "ms"),
    ("process_p99", "submit -> real `date` process started, p99 (ms)", "ms"),
    ("process_rate", "real-process tasks/s (`true`, 8 workers)", "rate"),
    ("trivial_rate", "trivial tasks/s (concurrent submitters)", "rate"),
]
# Ours only, no ratio (the peer is a process pool behind Redis): (key, label), filled from
# trivial_and_pauses().
# Streamed output (ours only: the peer has no output path), from bench_hub.py's two cases.
OUTPUT_FIGURES = [("output_lines_s", "output stored and acked, short lines (lines/s)"),
                  ("output_mb_s", "output stored and acked, 32 KiB chunks (MB/s)")]
PAUSE_FIGURES = [(f"pause_{phase}", f"longest event-loop pause, {phase} phase (ms)")
                 for phase in ("connect", "latency", "trivial", "short lines", "chunks")]

# bench_process.py's rows (real runner processes). Ours only in these keys; each is compared
# with the peer's figure named in PEER_KEY (the peer has one `date` figure and one
# real-process rate, with 8 pool processes: as many slots as either of our setups).
PROCESS_FIGURES = [
    ("process_git_p50", "submit -> real `date` process started, git repository, p50 (ms)", "ms"),
    ("process_git_p99", "submit -> real `date` process started, git repository, p99 (ms)", "ms"),
    ("line_p50", "submit -> `date`'s line seen by an API client, p50 (ms)", "ms"),
    ("line_p99", "submit -> `date`'s line seen by an API client, p99 (ms)", "ms"),
    ("process_rate_4x2", "real-process tasks/s (`true`, 4 runners x 2 slots)", "rate"),
]
PEER_KEY = {"process_git_p50": "process_p50", "process_git_p99": "process_p99",
            "process_rate_4x2": "process_rate"}


def pct(values: list[float], p: float) -> float:
    """Nearest rank, as both benchmarks compute it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    return {"CPU": cpu, "cores": str(os.cpu_count()), "RAM": f"{mem_kib / 2**20:.1f} GiB",
            "kernel": f"{platform.system()} {platform.release()}"}


def versions() -> dict[str, str]:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    commit = out(["git", "rev-parse", "--short", "HEAD"])
    if out(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += " (with uncommitted changes)"
    redis = out(["redis-server", "--version"]).split()
    return {"Python": platform.python_version(),
            "celery": importlib.metadata.version("celery"),
            "redis (Python client)": importlib.metadata.version("redis"),
            "redis-server": next((w[2:] for w in redis if w.startswith("v=")), "unknown"),
            "our commit": commit}


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def run_json(cmd: list[str], json_path: Path) -> dict:
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return json.loads(json_path.read_text())


def ours(args: argparse.Namespace, tmp: Path, i: int) -> dict[str, float]:
    path = tmp / f"ours-{i}.json"
    raw = run_json([sys.executable, str(HERE / "bench_hub.py"), "--runners", str(args.runners),
                    "--tasks", str(args.tasks), "--idle", "0", "--lines", str(args.lines),
                    "--chunk-mib", str(args.chunk_mib), "--json", str(path),
                    # the same load as the peer's (d): as many clients, as many tasks
                    "--trivial", str(args.submitters * args.per_submitter),
                    "--trivial-clients", str(args.submitters)], path)
    assign = raw["latency_ms"]["assign"]
    # bench_hub.py has no real process and no process throughput: those figures stay
    # absent ("not measured").
    return {"start_p50": pct(assign, 50), "start_p99": pct(assign, 99),
            **trivial_and_pauses(raw)}


def trivial_and_pauses(raw: dict) -> dict[str, float]:
    """bench_hub.py's trivial tasks/s and its longest event-loop pause per phase (ms; below
    the hub's log threshold it is the bound of the lag histogram's bucket)."""
    figures = {}
    if raw.get("trivial"):
        figures["trivial_rate"] = raw["trivial"]["rate"]
    for phase, lag in raw.get("loop_lag", {}).items():
        figures[f"pause_{phase}"] = lag["max_ms"]
    streams = raw.get("throughput", {})
    if "short lines" in streams:
        figures["output_lines_s"] = streams["short lines"]["lines_s"]
    if "chunks" in streams:
        figures["output_mb_s"] = streams["chunks"]["mb_s"]
    return figures


def ours_process(args: argparse.Namespace, tmp: Path, i: int) -> dict[str, float]:
    """bench_process.py: a real hub and real runner processes running real tasks."""
    path = tmp / f"process-{i}.json"
    raw = run_json([sys.executable, str(HERE / "bench_process.py"), "--tasks",
                    str(args.process_tasks), "--burst", str(args.burst), "--json", str(path)],
                   path)
    path_, git = raw["latency_path"], raw["latency_git"]
    return {"process_p50": path_["process_ms"]["p50"], "process_p99": path_["process_ms"]["p99"],
            "process_git_p50": git["process_ms"]["p50"],
            "process_git_p99": git["process_ms"]["p99"],
            "line_p50": path_["line_ms"]["p50"], "line_p99": path_["line_ms"]["p99"],
            "process_rate": raw["throughput"]["1x8"]["rate"],
            "process_rate_4x2": raw["throughput"]["4x2"]["rate"]}


def process_notes(args: argparse.Namespace) -> list[str]:
    return [f"- ours, real processes: `bench/bench_process.py --tasks {args.process_tasks} "
            f"--burst {args.burst}` (a real hub and real runners; latency with one runner of "
            "8 slots, a folder used in place (and a git repository for the git rows); "
            "`true` tasks with one runner of 8 slots, then 4 runners of 2 slots, submitted "
            "over 8 connections of one process)"]


def peer(args: argparse.Namespace, tmp: Path, i: int) -> dict[str, float]:
    path = tmp / f"peer-{i}.json"
    raw = run_json([sys.executable, str(HERE / "bench_celery.py"), "--tasks", str(args.tasks),
                    "--burst", str(args.burst), "--submitters", str(args.submitters),
                    "--per-submitter", str(args.per_submitter), "--json", str(path)], path)
    return {"start_p50": raw["submit_to_start_ms"]["p50"],
            "start_p99": raw["submit_to_start_ms"]["p99"],
            "process_p50": raw["submit_to_process_ms"]["p50"],
            "process_p99": raw["submit_to_process_ms"]["p99"],
            "process_rate": raw["process_tasks_per_s"],
            "trivial_rate": raw["trivial_tasks_per_s"]}


def cell(values: list[float], kind: str) -> str:
    if not values:
        return "not measured"
    fmt = "{:.2f}" if kind == "ms" else "{:.0f}"
    return (f"{fmt.format(statistics.median(values))} "
            f"({fmt.format(min(values))}-{fmt.format(max(values))})")


def ratio(mine: list[float], theirs: list[float], kind: str) -> str:
    if not mine or not theirs:
        return "-"
    a, b = statistics.median(mine), statistics.median(theirs)
    value = b / a if kind == "ms" else a / b
    return f"{value:.2f}x"


def render(args: argparse.Namespace, info: dict, vers: dict, loads: list[tuple[str, str]],
           runs: dict[str, list[dict[str, float]]], started: str) -> str:
    lines = ["# Benchmarks: the hub next to Celery", "",
             f"Written by `bench/compare.py --repeat {args.repeat}` on {started} UTC "
             f"(see bench/README.md). Each benchmark ran {args.repeat} times, alternating "
             "ours and the peer on the same machine.", "",
             "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["- load average (1 / 5 / 15 min) before each run: "
              + "; ".join(f"{name} {value}" for name, value in loads), "",
              "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in vers.items()]
    lines += ["", "## Parameters", "",
              f"- ours: `bench/bench_hub.py --runners {args.runners} --tasks {args.tasks} "
              f"--idle 0 --lines {args.lines} --chunk-mib {args.chunk_mib} --trivial "
              f"{args.submitters * args.per_submitter} --trivial-clients {args.submitters}` "
              "(simulated runners; latency: tasks created one at a time over REST)",
              *process_notes(args),
              f"- peer: `bench/bench_celery.py --tasks {args.tasks} --burst {args.burst} "
              f"--submitters {args.submitters} --per-submitter {args.per_submitter}` (Celery "
              "worker, prefork pool of 8, Redis broker and result backend on 127.0.0.1)", "",
              "## Results", "",
              "Median over the runs, (min-max) in brackets. Ratio: the peer's median over "
              "ours for times, ours over the peer's for rates, so > 1x means ours is faster.",
              "", "| figure | ours | peer (Celery) | ratio |", "| --- | --- | --- | --- |"]
    for key, label, kind in FIGURES + PROCESS_FIGURES:
        mine = [r[key] for r in runs["ours"] if key in r]
        theirs = [r[PEER_KEY.get(key, key)] for r in runs["peer"] if PEER_KEY.get(key, key) in r]
        lines.append(f"| {label} | {cell(mine, kind)} | {cell(theirs, kind)} | "
                     f"{ratio(mine, theirs, kind)} |")
    lines += pause_rows(runs["ours"])
    lines += ["", "Per run:", ""]
    for side in ("ours", "peer"):
        for i, r in enumerate(runs[side], 1):
            lines.append(f"- {side} {i}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))
    lines += ["", "## What the figures mean", "",
              "- *submit -> task in the worker/runner*: ours is `create -> assign received` "
              "from bench_hub.py: `time.time()` just before `POST /api/project/{p}/tasks` to "
              "the moment a simulated runner receives the assign frame (so it includes the "
              "HTTP request, authentication and the SQLite insert). The peer's is "
              "`time.time()` just before `apply_async` to `time.time()` as the task body "
              "starts in a pool process.",
              "- *real `date` process started*: the task runs `date +%s.%N`; the time it "
              "prints is compared with the submit time (ours: `POST`, a bash template whose "
              "script is that line, the process started by a real runner; the git rows clone "
              "a `file://` repository per task, as the task's user). The peer's git rows "
              "repeat its one `date` figure (it has no repository).",
              "- *`date`'s line seen by an API client*: ours only: until a client following "
              "the task on `/api/ws` (as the UI does) receives the line `date` printed.",
              "- *real-process tasks/s*: N tasks that each run `true` are submitted at once; "
              "N / (first submit -> last result; ours: the last `success` seen on `/api/ws`). "
              "Both 4x2 and 1x8 are compared with the peer's 8 pool processes.",
              "- *trivial tasks/s*: several submitter processes each submit empty tasks at "
              "once and wait for the results. Ours: bench_hub.py's trivial phase, "
              "`--trivial-clients` API client processes (own session each) creating tasks one "
              "after another, simulated runners sending one output line; N / (first POST -> "
              "last task finished and acked, statuses checked over REST).",
              "- *longest event-loop pause*: the hub probes its loop every 10 ms through every "
              "phase (bench/looplag.py); exact from 20 ms on (logged pauses), below that the "
              "bound of the lag histogram's bucket. Target: none over 50 ms.",
              "- Both share the machine's cores with whatever else it runs (the two benchmarks "
              "never run at the same time): see "
              "the load averages.", ""]
    return "\n".join(lines)


def pause_rows(ours_runs: list[dict[str, float]]) -> list[str]:
    """Ours only: streamed output rates, and the hub's longest event-loop pause per phase
    (target: none over 50 ms)."""
    rows = []
    for key, label in OUTPUT_FIGURES:
        mine = [r[key] for r in ours_runs if key in r]
        if mine:
            rows.append(f"| {label} | {cell(mine, 'rate')} | none | - |")
    for key, label in PAUSE_FIGURES:
        mine = [r[key] for r in ours_runs if key in r]
        if mine:
            rows.append(f"| {label} | {cell(mine, 'ms')} | - | - |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each benchmark")
    parser.add_argument("--runners", type=int, default=100, help="ours: simulated runners")
    parser.add_argument("--tasks", type=int, default=300,
                        help="latency tasks (ours; the peer's (a) and (b) each)")
    parser.add_argument("--lines", type=int, default=300000,
                        help="ours: short-lines output case (the peer has no output path)")
    parser.add_argument("--chunk-mib", type=int, default=64,
                        help="ours: 32 KiB chunks output case")
    parser.add_argument("--burst", type=int, default=500,
                        help="real-process tasks (the peer's and bench_process.py's)")
    parser.add_argument("--process-tasks", type=int, default=200,
                        help="ours: bench_process.py's latency tasks per repository kind")
    parser.add_argument("--submitters", type=int, default=4,
                        help="trivial submitters (ours: API client processes)")
    parser.add_argument("--per-submitter", type=int, default=500,
                        help="trivial tasks per submitter (ours: the same total)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("need --repeat >= 1")
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    info, vers = machine(), versions()
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "peer": []}
    loads: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        for i in range(1, args.repeat + 1):
            for side, bench in (("ours", ours), ("ours", ours_process), ("peer", peer)):
                loads.append((f"{side} {i}", load()))
                result = bench(args, Path(tmp), i)
                if len(runs[side]) == i:  # a second benchmark of the same side: one run
                    runs[side][-1].update(result)
                else:
                    runs[side].append(result)
    text = render(args, info, vers, loads, runs, started)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
