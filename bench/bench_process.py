"""Real processes on real runners: how soon a task's process runs, and how many run per second.

A hub and real runners (`semaphore runner setup/register/start`), all as processes on this
machine (one clock). Figures, comparable with bench_celery.py's (b) and (c):

  latency, one task at a time, a bash template whose script is `date +%s.%N`:
    create -> process started: the time `date` prints minus time.time() just before the POST;
    create -> first output line: until an API client following the task on /api/ws (as the
      UI does) receives the line `date` printed.
    Both with a folder used in place (an absolute path: no clone) and with a git repository
    (a real one made in the temp dir, `file://` URL: the task's user clones it per task).
  throughput: --burst tasks that each run `true` (folder used in place), submitted at once by
    --clients concurrent connections of this one process; tasks / (first submit -> the last
    task seen `success` on /api/ws). With one runner of 8 slots, then 4 runners of 2 slots.

With --profile-runner FILE py-spy samples the 8-slot runner over its throughput phase (FILE.json:
speedscope, else raw collapsed stacks for bench/stacks.py).
Run from the repo root: .venv/bin/python bench/bench_process.py [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hub import (
    ADMIN,
    PASSWORD,
    HubProcess,
    Rest,
    pct,
    start_profiler,
    stop_profiler,
)
from realrunner import client, start_runner, stop_runner, wait_for_hub

FINAL = ("success", "error", "stopped")
DATE_LINE = re.compile(r"^(\d{9,}\.\d+)$", re.M)


class Follower:
    """One /api/ws connection of the admin: task status events, and the output of the tasks
    subscribed to. Times are time.time() when a message arrives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.final: dict[int, tuple[str, float]] = {}
        self.first_line: dict[int, tuple[float, float]] = {}  # (date printed, line received)
        self.resynced = False
        self.changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            now = time.time()
            if message.type != aiohttp.WSMsgType.TEXT:
                continue  # (a close or an error ends the iteration: the waits say so)
            event = json.loads(message.data)
            kind = event.get("type")
            if kind == "task" and event["status"] in FINAL:
                self.final.setdefault(event["task_id"], (event["status"], now))
            elif kind == "output" and event["task_id"] not in self.first_line:
                found = DATE_LINE.search(event.get("data", ""))
                if found:
                    self.first_line[event["task_id"]] = (float(found.group(1)), now)
            elif kind == "resync":  # events lost: the caller asks REST instead
                self.resynced = True
            self.changed.set()

    async def subscribe(self, task_id: int) -> None:
        # The hub ends the subscription itself once the task is over (output_end).
        await self.ws.send_str(json.dumps({"subscribe_output": task_id}))

    async def wait(self, done, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            self.changed.clear()
            left = deadline - time.monotonic()
            if self.reader.done():
                failure = self.reader.exception()
                raise SystemExit(f"/api/ws closed ({self.ws.close_code}, {failure!r}) while "
                                 "waiting for tasks to end")
            if left <= 0:
                raise SystemExit("timed out waiting for tasks to end")
            try:
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))
            except TimeoutError:
                pass


async def latency(rest: Rest, follower: Follower, project: int, template: int, count: int,
                  timeout: float) -> dict[str, list[float]]:
    """create -> process started, create -> first output line (ms), one task at a time."""
    started, line = [], []
    for _ in range(count):
        posted = time.time()
        task = (await rest.call("POST", f"/api/project/{project}/tasks",
                                {"template_id": template}, 201))["id"]
        await follower.subscribe(task)
        await follower.wait(lambda t=task: t in follower.final and t in follower.first_line,
                            timeout)
        if follower.final[task][0] != "success":
            raise SystemExit(f"task {task} ended {follower.final[task][0]}")
        printed, received = follower.first_line[task]
        started.append((printed - posted) * 1000)
        line.append((received - posted) * 1000)
    return {"process_ms": started, "line_ms": line}


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """(user + system CPU seconds of these processes, of their reaped children)."""
    own = children = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        own += times.user + times.system
        children += times.children_user + times.children_system
    return own, children


async def burst(rest: Rest, follower: Follower, project: int, template: int, count: int,
                clients: int, timeout: float, hub_pid: int,
                runner_pids: list[int]) -> dict[str, float]:
    """`count` tasks submitted at once over `clients` connections: tasks per second from the
    first submit to the last task seen `success`; and the CPU time per task of the hub and
    of the runners (their own; and their children: the tasks' processes), less noisy than
    rates on a shared machine."""
    hub_before, runners_before = cpu_seconds([hub_pid]), cpu_seconds(runner_pids)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    ids: list[int] = []

    async def submit() -> None:
        while not queue.empty():
            queue.get_nowait()
            ids.append((await rest.call("POST", f"/api/project/{project}/tasks",
                                        {"template_id": template}, 201))["id"])

    first = time.time()
    await asyncio.gather(*(submit() for _ in range(clients)))
    submitted = time.time()
    await follower.wait(lambda: follower.resynced or all(i in follower.final for i in ids),
                        timeout)
    if follower.resynced:  # some events were lost: REST has the truth (the end time is late)
        for task in ids:
            # Polling REST is the point here (no event left to wait for).
            while (status := (await rest.call(  # noqa: ASYNC110
                    "GET", f"/api/project/{project}/tasks/{task}"))["status"]) not in FINAL:
                await asyncio.sleep(0.01)
            follower.final.setdefault(task, (status, time.time()))
    failed = [i for i in ids if follower.final[i][0] != "success"]
    if failed:
        raise SystemExit(f"{len(failed)} task(s) did not succeed, e.g. {failed[:5]}")
    last = max(follower.final[i][1] for i in ids)
    hub_after, runners_after = cpu_seconds([hub_pid]), cpu_seconds(runner_pids)
    return {"tasks": count, "clients": clients, "seconds": last - first,
            "hub_cpu_ms_per_task": (hub_after[0] - hub_before[0]) * 1000 / count,
            "runner_cpu_ms_per_task": (runners_after[0] - runners_before[0]) * 1000 / count,
            "task_processes_cpu_ms_per_task":
                (runners_after[1] - runners_before[1]) * 1000 / count,
            "submit_seconds": submitted - first, "rate": count / (last - first),
            "events_lost": follower.resynced}


def make_git_repository(folder: Path) -> str:
    folder.mkdir()
    (folder / "date.sh").write_text("date +%s.%N\n")
    env = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com",
           "PATH": "/usr/bin:/bin", "HOME": str(folder)}
    for args in (["init", "-q", "-b", "main"], ["add", "date.sh"], ["commit", "-q", "-m", "date"]):
        subprocess.run(["git", "-C", str(folder), *args], env=env, check=True)
    return f"file://{folder}"


def summary(values: list[float]) -> dict:
    return {"p50": pct(values, 50), "p99": pct(values, 99), "max": max(values),
            "samples": values}


async def run(args: argparse.Namespace, tmp: Path, hub: HubProcess,
              runners: list[subprocess.Popen]) -> dict:
    call = client(hub.base)
    wait_for_hub(hub, call)
    runners.append(start_runner(hub, tmp, call, "--log-format", "json", name="slots8",
                                slots=8))
    scripts = tmp / "scripts"
    scripts.mkdir()
    (scripts / "date.sh").write_text("date +%s.%N\n")
    (scripts / "true.sh").write_text("true\n")
    git_url = make_git_repository(tmp / "git-repo")
    result: dict = {"params": {k: v for k, v in vars(args).items() if k != "json"}}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                     connector=aiohttp.TCPConnector(limit=0)) as http:
        rest = Rest(hub.base, http)
        await rest.call("POST", "/api/auth/login", {"auth": ADMIN, "password": PASSWORD}, 204)
        project = (await rest.call("POST", "/api/projects", {"name": "process"}, 201))["id"]

        async def template(name: str, url: str, playbook: str) -> int:
            repo = (await rest.call("POST", f"/api/project/{project}/repositories",
                                    {"name": name, "git_url": url}, 201))["id"]
            return (await rest.call("POST", f"/api/project/{project}/templates", {
                "name": name, "app": "bash", "playbook": playbook, "repository_id": repo},
                201))["id"]

        date_path = await template("date-path", str(scripts), "date.sh")
        date_git = await template("date-git", git_url, "date.sh")
        true_path = await template("true-path", str(scripts), "true.sh")
        ws = await http.ws_connect(hub.base.replace("http", "ws", 1) + "/api/ws")
        follower = Follower(ws)
        try:
            for name, tpl in (("path", date_path), ("git", date_git)):
                await latency(rest, follower, project, tpl, min(10, args.tasks), args.timeout)
                raw = await latency(rest, follower, project, tpl, args.tasks, args.timeout)
                result[f"latency_{name}"] = {k: summary(v) for k, v in raw.items()}
            result["throughput"] = {}
            spy = start_profiler(args.profile_runner, runners[0].pid, args.profile_rate)
            try:
                result["throughput"]["1x8"] = await burst(
                    rest, follower, project, true_path, args.burst, args.clients, args.timeout,
                    hub.proc.pid, [r.pid for r in runners])
            finally:
                stop_profiler(spy)
            # In threads: the websocket above must keep answering the hub's pings meanwhile.
            await asyncio.to_thread(stop_runner, runners.pop())
            for i in range(4):
                runners.append(await asyncio.to_thread(
                    start_runner, hub, tmp, call, "--log-format", "json",
                    name=f"slots2-{i}", slots=2))
            result["throughput"]["4x2"] = await burst(
                rest, follower, project, true_path, args.burst, args.clients, args.timeout,
                hub.proc.pid, [r.pid for r in runners])
        finally:
            follower.reader.cancel()
            await ws.close()
    return result


def report(result: dict) -> str:
    out = [f"real runner processes; latency: {result['params']['tasks']} tasks one at a time "
           "(ms)", f"  {'figure':44} {'p50':>7} {'p99':>7} {'max':>7}"]
    for name in ("path", "git"):
        for key, label in (("process_ms", "create -> process started"),
                           ("line_ms", "create -> first output line (client)")):
            s = result[f"latency_{name}"][key]
            out.append(f"  {label + f' ({name})':44} {s['p50']:7.2f} {s['p99']:7.2f} "
                       f"{s['max']:7.2f}")
    for setup, r in result["throughput"].items():
        out.append(f"  `true` tasks/s, {setup} runners x slots: {r['rate']:.0f} "
                   f"({r['tasks']} tasks in {r['seconds']:.2f} s, submitted in "
                   f"{r['submit_seconds']:.2f} s over {r['clients']} connections"
                   + (", events lost: end times from REST" if r["events_lost"] else "") + ")")
        out.append(f"    CPU ms per task: hub {r['hub_cpu_ms_per_task']:.2f}, runner(s) "
                   f"{r['runner_cpu_ms_per_task']:.2f}, the tasks' processes "
                   f"{r['task_processes_cpu_ms_per_task']:.2f}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200, help="latency tasks per repository")
    parser.add_argument("--burst", type=int, default=500, help="tasks per throughput setup")
    parser.add_argument("--clients", type=int, default=8,
                        help="concurrent connections submitting the burst (one process)")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json", metavar="FILE", help="also write the figures and samples")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    parser.add_argument("--profile-runner", metavar="FILE",
                        help="py-spy on the 8-slot runner during its throughput phase")
    parser.add_argument("--profile-rate", type=int, default=250, metavar="HZ")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-process-"))
    hub = HubProcess(tmp, 2**20)
    runners: list[subprocess.Popen] = []
    ok = False
    try:
        hub.start()
        result = asyncio.run(run(args, tmp, hub, runners))
        ok = True
    finally:
        for runner in runners:
            stop_runner(runner)
        hub.stop()
        if ok and not args.keep:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
        else:
            print(f"temp dir kept: {tmp}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result))
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
