"""Benchmark of the hub: create->assign latency and output throughput with simulated runners.

Starts a real hub process on a free loopback port, registers N runners and connects them from
K separate simulator processes (bench/simrunners.py, bench/simprocs.py), then measures:
  0. idle: the hub's CPU and RSS while the N runners only heartbeat;
  1. latency: tasks created one at a time over REST, time until the assign frame is received;
  2. trivial tasks/s: several API client processes create tasks as fast as they can;
  3. throughput: output streamed with a window of unacked frames, until the last ack;
and, through every phase, the hub's event-loop pauses (bench/looplag.py).
Run from the repo root: .venv/bin/python bench/bench_hub.py --runners 100 --tasks 500
"""

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # protocol/ for the simulator and frame_data

import looplag  # noqa: E402
import trivial  # noqa: E402
from hublog import split_latency  # noqa: E402
from simprocs import Simulator, default_procs  # noqa: E402
from simrunners import BenchError, clean_env, frame_data, simulate  # noqa: E402

REGISTRATION_TOKEN = "bench-registration-token"
ADMIN, PASSWORD = "bench-admin", "bench-password-1"
MB = 1_000_000


class HubProcess:
    def __init__(self, tmp: Path, max_output_bytes: int):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "hub.log"
        self.config_path = tmp / "hub-config.json"
        self.config_path.write_text(json.dumps({
            "interface": "127.0.0.1", "port": self.port,
            "sqlite": {"host": str(tmp / "hub.sqlite")}, "tmp_path": str(tmp / "hub-tmp"),
            "runner_registration_token": REGISTRATION_TOKEN,
            "max_task_output_bytes": max_output_bytes, "metrics": looplag.HUB_METRICS}))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cli = [sys.executable, "-m", "hub.cli"]
        add = subprocess.run([*cli, "user", "add", "--config", str(self.config_path), "--admin",
                              "--login", ADMIN, "--password", PASSWORD, "--name", "Bench",
                              "--email", "bench@example.com"], cwd=ROOT, env=clean_env(),
                             capture_output=True, text=True)
        if add.returncode != 0:
            raise BenchError(f"`hub.cli user add` failed ({add.returncode}): "
                             f"{(add.stderr or add.stdout).strip()}")
        if os.environ.get("BENCH_SQL_TRACE"):  # every SQLite round trip logged: hubtrace.py
            cli = [sys.executable, str(ROOT / "bench" / "hubtrace.py")]
        elif os.environ.get("BENCH_STALL_LOG"):  # the loop's stalls with stacks: hubstall.py
            cli = [sys.executable, str(ROOT / "bench" / "hubstall.py")]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*cli, "server", "--config", str(self.config_path), "--log-format", "json"],
                cwd=ROOT, env=clean_env(), stdout=log, stderr=subprocess.STDOUT)

    async def wait_ready(self, http: aiohttp.ClientSession, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the hub exited with code {self.proc.returncode} at start; "
                                 f"log tail:\n{self.log_tail()}")
            try:
                async with http.get(self.base + "/api/ping",
                                    timeout=aiohttp.ClientTimeout(total=1)) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
        raise BenchError(f"the hub did not answer /api/ping within {timeout} s; log tail:\n"
                         f"{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Rest:
    def __init__(self, base: str, http: aiohttp.ClientSession):
        self.base, self.http = base, http

    async def call(self, method: str, path: str, body=None, expect: int = 200):
        async with self.http.request(method, self.base + path, json=body) as response:
            data = await response.read()
            if response.status != expect:
                raise BenchError(f"{method} {path} -> {response.status} {data[:300]!r}")
            if response.content_type == "application/json" and data:
                return json.loads(data)
            return data


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Probe:
    """RSS and CPU time of the hub and the simulator processes around a phase."""

    def __init__(self, hub_pid: int, sim_pids: list[int]):
        self.hub, self.sims = psutil.Process(hub_pid), [psutil.Process(p) for p in sim_pids]
        self.peak = 0

    async def watch(self) -> None:
        """Highest hub RSS seen (sampled every 20 ms); snap() with reset starts a new phase."""
        try:
            while True:
                self.peak = max(self.peak, self.hub.memory_info().rss)
                await asyncio.sleep(0.02)
        except psutil.Error:
            return  # the hub is gone: run() reports that

    def snap(self, reset: bool = False) -> dict:
        def cpu(proc: psutil.Process) -> float:
            times = proc.cpu_times()
            return times.user + times.system
        rss = self.hub.memory_info().rss
        self.peak = rss if reset else max(self.peak, rss)
        return {"rss": rss, "peak": self.peak, "hub_cpu": cpu(self.hub),
                "sim_cpu": sum(cpu(sim) for sim in self.sims), "wall": time.monotonic()}


def usage(before: dict, after: dict, checked: dict | None = None) -> dict:
    wall = after["wall"] - before["wall"]
    return {"rss_before": before["rss"], "rss_after": after["rss"], "seconds": wall,
            "rss_checked": (checked or after)["rss"], "rss_peak": (checked or after)["peak"],
            "hub_cpu": (after["hub_cpu"] - before["hub_cpu"]) / wall,
            "sim_cpu": (after["sim_cpu"] - before["sim_cpu"]) / wall}


async def idle_phase(probe: Probe, seconds: float) -> dict:
    """Nothing but heartbeats (and websocket pings) for `seconds`: what N runners cost."""
    before = probe.snap(reset=True)
    await asyncio.sleep(seconds)
    return usage(before, probe.snap())


async def latency_phase(rest: Rest, sim: Simulator, project: int, template: int, count: int,
                        timeout: float, hub_log: Path) -> dict:
    pings = []  # the floor: an HTTP round trip that touches no database
    for _ in range(min(count, 200)):
        t0 = time.time()
        await rest.call("GET", "/api/ping")
        pings.append((time.time() - t0) * 1000)
    created, stalls_before = [], len(sim.stalls)
    for _ in range(count):
        t0 = time.time()
        task = await rest.call("POST", f"/api/project/{project}/tasks",
                               {"template_id": template}, expect=201)
        created.append((task["id"], t0, time.time()))
    ids = [task_id for task_id, _, _ in created]
    assigns = await sim.wait("assign", ids, timeout)
    dones = await sim.wait("done", ids, timeout)
    rows = await rest.call("GET", f"/api/project/{project}/tasks")
    status = {row["id"]: row["status"] for row in rows}
    bad = [(task_id, status.get(task_id)) for task_id in ids if status.get(task_id) != "success"]
    if bad:
        raise BenchError(f"{len(bad)} latency tasks did not end in success: {bad[:10]}")
    starts = [t0 for _, t0, _ in created]
    split = split_latency(hub_log, ids, starts, [a["t"] for a in assigns])
    return {**split, "ping": pings, "post": [(t1 - t0) * 1000 for _, t0, t1 in created],
            "assign": [(a["t"] - t0) * 1000 for a, t0 in zip(assigns, starts, strict=True)],
            "done": [(d["t"] - t0) * 1000 for d, t0 in zip(dones, starts, strict=True)],
            "runners_used": len({a["runner"] for a in assigns}), "count": count, "ids": ids,
            "t0": starts, "sim_stalls": [(ms, k) for _, ms, k in sim.stalls[stalls_before:]]}


async def stream_phase(rest: Rest, sim: Simulator, project: int, template: int, frames: int,
                       lines: int, line_bytes: int, streams: int, window: int,
                       timeout: float) -> tuple[dict, list[tuple[int, int]]]:
    shares = [frames // streams + (1 if i < frames % streams else 0) for i in range(streams)]
    tasks = []
    for share in shares:
        plan = {"mode": "stream", "frames": share, "lines_per_frame": lines,
                "line_bytes": line_bytes, "window": window}
        task = await rest.call("POST", f"/api/project/{project}/tasks",
                               {"template_id": template, "playbook": json.dumps(plan)}, 201)
        tasks.append((task["id"], share))
    dones = await sim.wait("done", [task_id for task_id, _ in tasks], timeout)
    elapsed = max(d["last_ack"] for d in dones) - min(d["first"] for d in dones)
    total = {key: sum(d[key] for d in dones) for key in ("frames", "lines", "bytes")}
    return {**total, "seconds": elapsed, "lines_s": total["lines"] / elapsed,
            "frames_s": total["frames"] / elapsed, "mb_s": total["bytes"] / MB / elapsed}, tasks


async def check_stored(rest: Rest, project: int, tasks: list[tuple[int, int]], lines: int,
                       line_bytes: int) -> str:
    """Compare each task's raw_output (bytes, lines, sha256) with what was streamed."""
    problems = []
    for task_id, frames in tasks:
        expected = hashlib.sha256()
        for seq in range(1, frames + 1):
            expected.update(frame_data(task_id, seq, lines, line_bytes).encode())
        got, size, newlines = hashlib.sha256(), 0, 0
        path = f"/api/project/{project}/tasks/{task_id}/raw_output"
        async with rest.http.get(rest.base + path) as response:
            if response.status != 200:
                raise BenchError(f"GET {path} -> {response.status}")
            async for block in response.content.iter_chunked(1 << 20):
                got.update(block)
                size, newlines = size + len(block), newlines + block.count(b"\n")
        task = await rest.call("GET", f"/api/project/{project}/tasks/{task_id}")
        want = frames * lines * line_bytes
        if got.digest() != expected.digest() or task["status"] != "success":
            problems.append(f"task {task_id}: {size}/{want} bytes, {newlines}/{frames * lines} "
                            f"lines, status {task['status']}, sha256 "
                            f"{'ok' if got.digest() == expected.digest() else 'MISMATCH'}")
    if problems:
        raise BenchError("output not stored intact: " + "; ".join(problems))
    return f"ok ({len(tasks)} task(s): bytes, lines, sha256, status)"


def header(args: argparse.Namespace) -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "?"
    return (f"== hub benchmark ==\n"
            f"machine : {model}, {os.cpu_count()} CPUs, {platform.platform()}, "
            f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM\n"
            f"python  : {platform.python_implementation()} {platform.python_version()}; "
            f"repo commit {commit}\n"
            f"params  : runners={args.runners} sim-procs={args.sim_procs} tasks={args.tasks} "
            f"stream-runners={args.stream_runners} window={args.window} frames\n"
            f"          short lines: {args.lines:,} lines, {args.lines_per_frame} lines x "
            f"{args.line_bytes} B per frame; chunks: {args.chunk_mib} MiB in "
            f"{args.chunk_kib} KiB frames")


def report(setup: dict, latency: dict, streams: list[tuple[str, dict, str]],
           usages: list[tuple[str, dict]], trivial_result: dict | None,
           lag_summary: dict[str, dict]) -> str:
    out = [f"setup   : hub ready {setup['hub_s']:.2f} s; {setup['runners']} runners registered "
           f"{setup['register_s']:.2f} s, connected {setup['connect_s']:.2f} s by "
           f"{setup['procs']} simulator process(es)", ""]
    idle = dict(usages).get("idle")
    if idle:
        out += [f"idle: {setup['runners']} runners heartbeating every "
                f"{setup['heartbeat_interval']:g} s: hub CPU {idle['hub_cpu']:.2f} cores, "
                f"RSS {idle['rss_after'] / 2**20:.0f} MiB (over {idle['seconds']:.1f} s; "
                f"simulators {idle['sim_cpu']:.2f} cores)",
                "  target at 10,000 runners: RSS <= 512 MiB, hub CPU <= 0.5 cores", ""]
    out += [
           f"Latency: {latency['count']} tasks created one at a time "
           f"(tasks went to {latency['runners_used']} distinct runner(s))",
           f"  {'ms':<28}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}"]
    for key, label in (("ping", "GET /api/ping round trip"),
                       ("post", "POST /tasks round trip"),
                       ("assign", "create -> assign received"),
                       ("to_created", "  POST -> task.created"),
                       ("in_hub", "  created -> dispatched"),
                       ("to_runner", "  dispatched -> received"),
                       ("done", "create -> finished acked")):
        values = latency[key]
        if not values:
            continue
        out.append(f"  {label:<28}" + "".join(f"{pct(values, p):9.2f}" for p in (50, 90, 99))
                   + f"{max(values):9.2f}")
    if latency["in_hub"]:
        out.append("  (indented: create -> assign split by the hub log's task.created and "
                   "task.dispatched)")
    assign = latency["assign"]
    met = pct(assign, 50) <= 3 and pct(assign, 99) <= 10
    stalls = [ms for ms, _ in latency["sim_stalls"]]
    per_proc = [sum(1 for _, k in latency["sim_stalls"] if k == i) for i in range(setup["procs"])]
    out += [f"  simulator event-loop stalls > 5 ms during the phase: {len(stalls)}"
            + (f" (max {max(stalls):.1f} ms; per process {'/'.join(map(str, per_proc))})"
               if stalls else ""),
            f"  target create->assign p50 <= 3 ms, p99 <= 10 ms: {'met' if met else 'MISSED'}",
            ""]
    if trivial_result:
        out += [*trivial.report(trivial_result), ""]
    out += ["Throughput: stored-and-acked, first frame sent -> last ack received",
            f"  {'case':<13}{'frames':>8}{'lines':>11}{'MB':>8}{'s':>8}{'lines/s':>11}"
            f"{'frames/s':>10}{'MB/s':>8}  stored check"]
    for name, r, check in streams:
        out.append(f"  {name:<13}{r['frames']:>8}{r['lines']:>11,}{r['bytes'] / MB:>8.1f}"
                   f"{r['seconds']:>8.2f}{r['lines_s']:>11,.0f}{r['frames_s']:>10,.0f}"
                   f"{r['mb_s']:>8.1f}  {check}")
    out += ["  targets: >= 100,000 lines/s (short lines), >= 50 MB/s (chunks)", "",
            "Hub process RSS in MiB: before the phase, after it, highest seen during it and its",
            "stored check (GET raw_output), after the check; CPU = CPU-s per wall-s of the phase",
            f"(sim CPU: the sum over the {setup['procs']} simulator process(es))",
            f"  {'phase':<13}{'before':>8}{'after':>8}{'peak':>8}{'after check':>12}"
            f"{'hub CPU':>9}{'sim CPU':>9}"]
    for name, u in usages:
        out.append(f"  {name:<13}" + "".join(f"{u[key] / 2**20:>8.1f}" for key in (
            "rss_before", "rss_after", "rss_peak")) + f"{u['rss_checked'] / 2**20:>12.1f}"
            f"{u['hub_cpu']:>9.2f}{u['sim_cpu']:>9.2f}")
    out += ["", *looplag.report(lag_summary)]
    return "\n".join(out)


def start_profiler(path: str | None, pid: int, rate: int) -> subprocess.Popen | None:
    """py-spy sampling the hub over one phase (--profile-hub, --profile-phase): raw format is
    one collapsed stack per line with its sample count, ready for flamegraph tools."""
    if not path:
        return None
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise BenchError("--profile-hub needs py-spy (.venv/bin/pip install py-spy)")
    fmt = "speedscope" if path.endswith(".json") else "raw"
    proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", str(rate),
                             "--format", fmt, "--output", path, "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1)  # py-spy attaches before the phase starts, not during its first tasks
    if proc.poll() is not None:
        raise BenchError(f"py-spy could not attach: {proc.stderr.read().decode().strip()}")
    return proc


def stop_profiler(proc: subprocess.Popen | None) -> None:
    """SIGINT is how py-spy record is told to stop and write its output."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def run(args: argparse.Namespace, tmp: Path, hub: HubProcess) -> str:
    sim = Simulator()
    jar = aiohttp.CookieJar(unsafe=True)
    try:
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            started = time.monotonic()
            hub.start()
            await hub.wait_ready(http)
            setup = {"hub_s": time.monotonic() - started, "runners": args.runners}
            rest, started, gate = Rest(hub.base, http), time.monotonic(), asyncio.Semaphore(16)
            lag = looplag.LoopLag(hub.base, http)

            @contextlib.asynccontextmanager
            async def measured(name: str):
                """A phase: its loop pauses, and py-spy over it if --profile-phase names it."""
                spy = (start_profiler(args.profile_hub, hub.proc.pid, args.profile_rate)
                       if name == args.profile_phase else None)
                try:
                    async with lag.phase(name):
                        yield
                finally:
                    stop_profiler(spy)

            async def register(i: int) -> str:
                async with gate:
                    return (await rest.call("POST", "/api/internal/runners", {
                        "registration_token": REGISTRATION_TOKEN, "name": f"sim-{i}",
                        "tags": [], "max_parallel_tasks": 0}))["token"]

            async with measured("connect"):  # registration and websocket sessions
                tokens = await asyncio.gather(*(register(i) for i in range(args.runners)))
                setup["register_s"] = time.monotonic() - started
                ws_url = hub.base.replace("http://", "ws://") + "/api/internal/runners/ws"
                ready = await sim.start(ws_url, tokens, tmp, args.sim_procs, args.timeout)
            setup.update(connect_s=ready["connect_s"], procs=ready["procs"],
                         heartbeat_interval=ready["heartbeat_interval"])
            probe, usages, streams = Probe(hub.proc.pid, sim.pids), [], []
            watcher = asyncio.create_task(probe.watch())
            if args.idle > 0:
                async with measured("idle"):
                    usages.append(("idle", await idle_phase(probe, args.idle)))
            login = {"auth": ADMIN, "password": PASSWORD}
            await rest.call("POST", "/api/auth/login", login, 204)
            project = (await rest.call("POST", "/api/projects", {"name": "bench"}, 201))["id"]
            template = (await rest.call("POST", f"/api/project/{project}/templates", {
                "name": "bench", "app": "bash", "playbook": json.dumps({"mode": "latency"})},
                201))["id"]
            before = probe.snap(reset=True)
            async with measured("latency"):
                latency = await latency_phase(rest, sim, project, template, args.tasks,
                                              args.timeout, hub.log_path)
            usages.append(("latency", usage(before, probe.snap())))
            trivial_result = None
            if args.trivial > 0:
                before = probe.snap(reset=True)
                async with measured("trivial"):
                    trivial_result = await trivial.run_phase(
                        rest, sim, hub.base, login, project, template, args.trivial,
                        args.trivial_clients, args.timeout)
                usages.append(("trivial", usage(before, probe.snap())))
            cases = [("short lines", math.ceil(args.lines / args.lines_per_frame),
                      args.lines_per_frame, args.line_bytes),
                     ("chunks", args.chunk_mib * 1024 // args.chunk_kib, args.chunk_kib, 1024)]
            for name, frames, lines, line_bytes in cases:
                before = probe.snap(reset=True)
                async with measured(name):
                    result, tasks = await stream_phase(rest, sim, project, template, frames,
                                                       lines, line_bytes, args.stream_runners,
                                                       args.window, args.timeout)
                after = probe.snap()
                check = await check_stored(rest, project, tasks, lines, line_bytes)
                usages.append((name, usage(before, after, probe.snap())))
                streams.append((name, result, check))
            watcher.cancel()
            if hub.proc.poll() is not None:
                raise BenchError(f"the hub exited ({hub.proc.returncode}) during the run")
            if sim.exited():
                raise BenchError(f"simulator process(es) {sim.exited()} exited during the run")
            if sim.errors:
                raise BenchError(f"the simulator reported {len(sim.errors)} error(s): "
                                 f"{sim.errors[:5]}")
            lag_summary = lag.summary(hub.log_path)
            if args.json:
                Path(args.json).write_text(json.dumps({
                    "setup": setup, "latency_ms": latency, "usage": dict(usages),
                    "throughput": {name: {**r, "check": c} for name, r, c in streams},
                    "trivial": trivial_result, "loop_lag": lag_summary}))
            return report(setup, latency, streams, usages, trivial_result, lag_summary)
    finally:
        await sim.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runners", type=int, default=100, help="simulated runners")
    parser.add_argument("--tasks", type=int, default=500, help="tasks in the latency phase")
    parser.add_argument("--stream-runners", type=int, default=1,
                        help="tasks streamed in parallel in each throughput case")
    parser.add_argument("--window", type=int, default=64, help="max unacked output frames")
    parser.add_argument("--lines", type=int, default=1_000_000, help="short-lines case: lines")
    parser.add_argument("--lines-per-frame", type=int, default=100)
    parser.add_argument("--line-bytes", type=int, default=60, help="bytes per line, newline too")
    parser.add_argument("--chunk-mib", type=int, default=256, help="chunks case: MiB in total")
    parser.add_argument("--chunk-kib", type=int, default=32, help="chunks case: KiB per frame")
    parser.add_argument("--sim-procs", type=int, default=None, metavar="K",
                        help="simulator processes the runners are spread over (default: one "
                             "per 1,000 runners, at least 1, at most the CPU count)")
    parser.add_argument("--idle", type=float, default=10, metavar="S",
                        help="seconds of pure heartbeating measured before the latency phase "
                             "(0: skip)")
    parser.add_argument("--trivial", type=int, default=2000, metavar="N",
                        help="tasks of the trivial tasks/s phase (0: skip)")
    parser.add_argument("--trivial-clients", type=int, default=4, metavar="C",
                        help="concurrent API client processes of the trivial phase")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per wait")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (hub log, db)")
    parser.add_argument("--json", metavar="FILE", help="also write the raw results here")
    parser.add_argument("--profile-hub", metavar="FILE",
                        help="sample the hub with py-spy during one phase (--profile-phase, "
                             "default latency); FILE.json: "
                             "speedscope, else raw collapsed stacks")
    parser.add_argument("--profile-phase", default="latency",
                        choices=("connect", "idle", "latency", "trivial", "short lines",
                                 "chunks"), help="the phase --profile-hub samples")
    parser.add_argument("--profile-rate", type=int, default=250, metavar="HZ",
                        help="py-spy samples per second (with --profile-hub)")
    parser.add_argument("--simulate", nargs=2, metavar=("WS_URL", "TOKENS_FILE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.simulate:
        return simulate(*args.simulate)
    if args.line_bytes < 40 or min(args.runners, args.tasks, args.stream_runners) < 1 \
            or args.stream_runners > args.runners:
        parser.error("need --line-bytes >= 40 and 1 <= --stream-runners <= --runners")
    if args.trivial < 0 or args.trivial_clients < 1:
        parser.error("need --trivial >= 0 and --trivial-clients >= 1")
    if args.sim_procs is None:
        args.sim_procs = default_procs(args.runners)
    if not 1 <= args.sim_procs <= args.runners:
        parser.error("need 1 <= --sim-procs <= --runners")
    print(header(args), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    per_task = max(args.chunk_mib * 2**20, args.lines * args.line_bytes)
    hub = HubProcess(tmp, max(100 * 2**20, 2 * per_task))
    failed = True
    try:
        print(asyncio.run(run(args, tmp, hub)))
        failed = False
    except (BenchError, OSError, aiohttp.ClientError, TimeoutError) as exc:
        print(f"\nBENCHMARK FAILED: {type(exc).__name__}: {exc}\n(hub log and database kept "
              f"in {tmp})", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"\ninterrupted (files kept in {tmp})", file=sys.stderr)
    finally:
        hub.stop()
        if not failed and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif not failed:
            print(f"files kept in {tmp}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
