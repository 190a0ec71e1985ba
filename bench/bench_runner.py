"""Where a real runner spends a trivial task's time: `true` run as a bash task, one at a time.

Starts a hub and a real runner (`semaphore runner setup/register/start`) as processes, creates
`--tasks` tasks of a template whose script is `true`, each after the previous one ended, and
splits each task's life with the hub's and the runner's JSON logs (same machine, same clock):

  POST -> dispatched       (hub)    request, insert, dispatcher
  dispatched -> accepted   (runner) the assign frame's way, the runner's accept
  accepted -> started      (runner) work folder, checkout, command and environment, exec
  started -> ended         (runner) the `true` process itself, as the runner sees it
  ended -> finished        (runner) output flush, folder removal, the finished report
  finished -> stored       (hub/client) the finished frame stored, seen by the client's poll

With `--profile-runner FILE` py-spy samples the runner process over the task loop (FILE.json:
speedscope, else raw collapsed stacks for `bench/stacks.py`).
Run from the repo root: .venv/bin/python bench/bench_runner.py --tasks 100
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hub import (
    HubProcess,
    pct,
    start_profiler,
    stop_profiler,
)
from hublog import task_events
from realrunner import client, start_runner, wait_for_hub

STEPS = [("POST -> dispatched", "post", "task.dispatched"),
         ("dispatched -> accepted", "task.dispatched", "task.accepted"),
         ("accepted -> started", "task.accepted", "task.process.started"),
         ("started -> ended", "task.process.started", "task.process.ended"),
         ("ended -> finished", "task.process.ended", "task.finished"),
         ("finished -> stored", "task.finished", "done")]


def log_times(path: Path, into: dict[int, dict[str, float]]) -> None:
    """time.time() of each task.* event with a task_id, first occurrence, from a JSON log."""
    for task_id, event, stamp in task_events(path):
        into.setdefault(task_id, {}).setdefault(event, stamp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--profile-runner", metavar="FILE")
    parser.add_argument("--profile-rate", type=int, default=250, metavar="HZ")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as folder:
        tmp = Path(folder)
        hub = HubProcess(tmp, 2**20)
        runner = spy = None
        try:
            hub.start()
            call = client(hub.base)
            wait_for_hub(hub, call)
            runner = start_runner(hub, tmp, call, "--log-format", "json")
            runner_log = tmp / "runner.log"
            scripts = tmp / "scripts"
            scripts.mkdir()
            (scripts / "true.sh").write_text("true\n")
            pid = call("POST", "/api/projects", {"name": "true"})["id"]
            repo = call("POST", f"/api/project/{pid}/repositories",
                        {"name": "r", "git_url": str(scripts)})["id"]
            template = call("POST", f"/api/project/{pid}/templates", {
                "name": "true", "app": "bash", "playbook": "true.sh", "repository_id": repo})
            spy = start_profiler(args.profile_runner, runner.pid, args.profile_rate)
            times: dict[int, dict[str, float]] = {}
            for _ in range(args.tasks):
                posted = time.time()
                task = call("POST", f"/api/project/{pid}/tasks",
                            {"template_id": template["id"]})
                while (status := call("GET", f"/api/project/{pid}/tasks/{task['id']}")[
                        "status"]) not in ("success", "error", "stopped"):
                    time.sleep(0.002)
                if status != "success":
                    raise SystemExit(f"task {task['id']} ended {status}")
                times[task["id"]] = {"post": posted, "done": time.time()}
            stop_profiler(spy)
            log_times(hub.log_path, times)
            log_times(runner_log, times)
            print(f"{args.tasks} `true` tasks, one at a time, real runner process (ms)")
            print(f"  {'step':24} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}")
            for name, a, b in STEPS:
                values = [(t[b] - t[a]) * 1000 for t in times.values() if a in t and b in t]
                if values:
                    print(f"  {name:24} " + " ".join(f"{pct(values, p):7.2f}"
                                                     for p in (50, 90, 99, 100)))
            return 0
        finally:
            stop_profiler(spy)
            if runner is not None:
                runner.terminate()
                runner.wait(30)
            hub.stop()


if __name__ == "__main__":
    sys.exit(main())
