"""Benchmark of output volume: a task printing as fast as it can, through a real runner.

Starts a hub and a runner (`semaphore runner setup/register/start`) as separate processes, runs
`yes | head -c SIZE` as a bash task, and samples both processes' RSS while it streams. Prints
the duration, the rate the runner's pipe was drained at, what the hub stored (cut at the
per-task output limit) and peak RSS of hub and runner: backpressure and the limit should keep
both flat whatever SIZE is.
Run from the repo root: .venv/bin/python bench/bench_flood.py --size-mib 2048
"""

import argparse
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hub import HubProcess
from realrunner import client, start_runner, wait_for_hub

MIB = 1024 * 1024


class Sampler(threading.Thread):
    """Peak RSS of a few processes, sampled every 100 ms."""

    def __init__(self, pids: dict[str, int]):
        super().__init__(daemon=True)
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = dict.fromkeys(pids, 0)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            for name, proc in self.procs.items():
                try:
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss)
                except psutil.Error:
                    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512, help="what the task prints")
    parser.add_argument("--limit-mib", type=int, default=100, help="hub max_task_output_bytes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as folder:
        tmp = Path(folder)
        hub = HubProcess(tmp, args.limit_mib * MIB)
        runner = None
        try:
            hub.start()
            call = client(hub.base)
            wait_for_hub(hub, call)
            runner = start_runner(hub, tmp, call)
            scripts = tmp / "scripts"
            scripts.mkdir()
            (scripts / "flood.sh").write_text(
                f"yes 0123456789abcdef | head -c {args.size_mib * MIB}\necho\necho END\n")
            pid = call("POST", "/api/projects", {"name": "flood"})["id"]
            repo = call("POST", f"/api/project/{pid}/repositories",
                        {"name": "r", "git_url": str(scripts)})["id"]
            template = call("POST", f"/api/project/{pid}/templates", {
                "name": "flood", "app": "bash", "playbook": "flood.sh", "repository_id": repo})
            sampler = Sampler({"hub": hub.proc.pid, "runner": runner.pid})
            before = {name: p.memory_info().rss for name, p in sampler.procs.items()}
            sampler.start()
            started = time.monotonic()
            task = call("POST", f"/api/project/{pid}/tasks", {"template_id": template["id"]})
            while (status := call("GET", f"/api/project/{pid}/tasks/{task['id']}")["status"]) \
                    not in ("success", "error", "stopped"):
                time.sleep(0.05)
            seconds = time.monotonic() - started
            sampler.stop.set()
            stored = call("GET", f"/api/project/{pid}/tasks/{task['id']}/raw_output")
            cpu = platform.processor() or platform.machine()
            print(f"machine : {psutil.cpu_count()} CPUs ({cpu}), Python "
                  f"{platform.python_version()}")
            print(f"task    : yes | head -c {args.size_mib} MiB; hub output limit "
                  f"{args.limit_mib} MiB")
            print(f"result  : {status} in {seconds:.1f} s "
                  f"({args.size_mib / seconds:.0f} MiB/s drained from the task's pipe)")
            print(f"stored  : {len(stored) / MIB:.1f} MiB; cut notice present: "
                  f"{b'[output cut' in stored}")
            for name in ("hub", "runner"):
                print(f"{name:7} : RSS {before[name] / MIB:.0f} MiB before, peak "
                      f"{sampler.peak[name] / MIB:.0f} MiB while streaming")
            return 0 if status == "success" else 1
        finally:
            if runner is not None:
                runner.terminate()
                runner.wait(30)
            hub.stop()


if __name__ == "__main__":
    sys.exit(main())
