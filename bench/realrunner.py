"""A hub process's REST client and a real runner process beside it, for the benchmarks that
run real tasks (bench_flood.py, bench_runner.py)."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

from bench_hub import ADMIN, PASSWORD, REGISTRATION_TOKEN, ROOT, HubProcess
from simrunners import clean_env


def client(base: str):
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def call(method: str, path: str, body=None):
        request = urllib.request.Request(base + path, method=method,
                                         data=json.dumps(body).encode() if body else None,
                                         headers={"Content-Type": "application/json"})
        with opener.open(request, timeout=60) as response:
            raw = response.read()
            return json.loads(raw) if response.headers.get_content_type().endswith(
                "json") and raw else raw
    return call


def wait_for_hub(hub: HubProcess, call, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            call("GET", "/api/ping")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("hub did not start:\n" + hub.log_tail()) from None
            time.sleep(0.1)


def start_runner(hub: HubProcess, tmp: Path, call, *start_args: str, name: str = "runner",
                 slots: int | None = None) -> subprocess.Popen:
    """`semaphore runner setup`, `register` and `start` against the hub, as processes; back
    once the hub shows the runner online, logged in as the admin. Its files: tmp/NAME.json
    (config), tmp/NAME.log, its state folder tmp/NAME-work (`runner` kept the old names:
    runner.json, runner.log, work). `slots`: its max_parallel_tasks (default: setup's)."""
    cli = [sys.executable, "-m", "hub.cli", "runner"]
    config = tmp / f"{name}.json"
    work = tmp / ("work" if name == "runner" else f"{name}-work")
    setup = ["setup", "--non-interactive", "--web-host", hub.base, "--registration-token",
             REGISTRATION_TOKEN, "--tmp-path", str(work), "--name", name]
    if name != "runner":  # several runners in one folder: a token file each
        setup += ["--token-file", str(tmp / f"{name}.token")]
    if slots is not None:
        setup += ["--max-parallel-tasks", str(slots)]
    for step in (setup, ["register"]):
        subprocess.run([*cli, step[0], "--config", str(config), *step[1:]], cwd=ROOT,
                       env=clean_env(), check=True, capture_output=True)
    if os.geteuid() == 0:
        # As root without a task user the runner refuses to start: tasks run as the runner's
        # own user here, allowed explicitly.
        settings = json.loads(config.read_text())
        settings["runner"]["allow_root_tasks"] = True
        config.write_text(json.dumps(settings))
    log = tmp / f"{name}.log"
    runner = subprocess.Popen([*cli, "start", "--config", str(config), *start_args],
                              cwd=ROOT, env=clean_env(), stdout=subprocess.DEVNULL,
                              stderr=open(log, "wb"))
    call("POST", "/api/auth/login", {"auth": ADMIN, "password": PASSWORD})
    while not any(r["online"] and r.get("name") == name for r in call("GET", "/api/runners")):
        if runner.poll() is not None:
            raise SystemExit("the runner exited:\n" + log.read_text()[-2000:])
        time.sleep(0.1)
    return runner


def stop_runner(runner: subprocess.Popen) -> None:
    runner.terminate()
    try:
        runner.wait(30)
    except subprocess.TimeoutExpired:
        runner.kill()
        runner.wait()
