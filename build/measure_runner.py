"""Figures for the README, measured on this machine: the built runner's size, the cold start
of `--version` (best of 5), and the idle RSS of a runner connected to a hub (all its
processes: staticx's bootloader, PyInstaller's one-file bootloader and the Python process).
Usage: python build/measure_runner.py [--binary PATH] [--no-rss]   (after build_runner.sh;
--no-rss skips the connected runner, e.g. to compare builds by size and start alone)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.faults import REGISTRATION_TOKEN, HubProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", type=Path, default=ROOT / "dist" / "semaphore")
    parser.add_argument("--no-rss", action="store_true")
    args = parser.parse_args()
    binary = args.binary.resolve()
    size = binary.stat().st_size
    starts = []
    for _ in range(5):
        began = time.perf_counter()
        subprocess.run([str(binary), "--version"], check=True, capture_output=True)
        starts.append(time.perf_counter() - began)
    figures = {
        "binary_bytes": size, "binary_mib": round(size / 2**20, 1),
        # Best of 5: the figure the README gives (a shared machine's noise only adds time).
        "version_cold_start_s": {"best": round(min(starts), 3),
                                 "median": round(statistics.median(starts), 3),
                                 "max": round(max(starts), 3)},
        "glibc": subprocess.run(["ldd", "--version"], capture_output=True,
                                text=True).stdout.splitlines()[0],
    }
    if not args.no_rss:
        figures["idle_rss_mib"] = idle_rss(binary)
    print(json.dumps(figures, indent=2))
    return 0


def idle_rss(binary: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder, HubProcess(Path(folder) / "hub") as hub:
        hub.start()
        config = Path(folder) / "config.runner.json"
        for step in (["setup", "--non-interactive", "--web-host", hub.base_url,
                      "--registration-token", REGISTRATION_TOKEN, "--name", "measured",
                      "--tmp-path", str(Path(folder) / "w"),
                      # as root, a runner without a task user refuses to start
                      *(["--allow-root-tasks"] if os.geteuid() == 0 else [])], ["register"]):
            subprocess.run([str(binary), "runner", step[0], "--config", str(config),
                            *step[1:]], check=True, capture_output=True)
        runner = subprocess.Popen([str(binary), "runner", "start", "--config", str(config)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            rest = hub.rest()
            rest.wait_runner_online("measured")
            time.sleep(5)  # settle: a heartbeat or two
            processes = [psutil.Process(runner.pid),
                         *psutil.Process(runner.pid).children(recursive=True)]
            rss = [p.memory_info().rss for p in processes]
        finally:
            runner.terminate()
            runner.wait(30)
    return {"python": round(max(rss) / 2**20, 1),
            "bootloaders": round((sum(rss) - max(rss)) / 2**20, 1),
            "total": round(sum(rss) / 2**20, 1)}


if __name__ == "__main__":
    sys.exit(main())
