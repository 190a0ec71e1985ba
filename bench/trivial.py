"""Trivial tasks/s: several API clients create tasks as fast as they can, simulated runners
run them (one output line, finished).

Each client is its own process (`python bench/trivial.py --submit ...`) with its own HTTP
session (login cookie, one kept-alive connection), as Celery's peer uses submitter processes
(bench_celery.py (d)). The clients log in and say `ready`; the clock starts when all have,
with the word `go` on their stdin. Each then sends its share of `POST /tasks` one after
another and reports the ids and its first/last POST times. The figure is
N / (first POST sent -> last task finished and acked by the hub), the acks coming after the
hub committed the end; afterwards every task must read `success` over REST.
"""

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp

BENCH = Path(__file__).resolve().parent


async def run_phase(rest, sim, base: str, login: dict, project: int, template: int,
                    total: int, clients: int, timeout: float) -> dict:
    """Start the client processes, time the phase, check every task's status."""
    from simrunners import BenchError, clean_env  # the benchmark's own helpers

    shares = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__)), "--submit", base, json.dumps(login), str(project),
        str(template), str(share), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, env=clean_env()) for share in shares if share]
    try:
        for proc in procs:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
            if json.loads(line or b'{"ev": "exited"}')["ev"] != "ready":
                raise BenchError(f"trivial client did not start: {line!r}")
        for proc in procs:
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        results = []
        for proc in procs:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
            result = json.loads(line or b'{"ev": "exited"}')
            if result["ev"] != "done":
                raise BenchError(f"trivial client failed: {result}")
            results.append(result)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    ids = [task_id for result in results for task_id in result["ids"]]
    dones = await sim.wait("done", ids, timeout)
    rows = await rest.call("GET", f"/api/project/{project}/tasks")
    status = {row["id"]: row["status"] for row in rows}
    bad = [(task_id, status.get(task_id)) for task_id in ids if status.get(task_id) != "success"]
    if bad:
        raise BenchError(f"{len(bad)} trivial tasks did not end in success: {bad[:10]}")
    first = min(r["first"] for r in results)
    last_created = max(r["last"] for r in results)
    last_done = max(d["t"] for d in dones)
    return {"tasks": len(ids), "clients": len(procs), "seconds": last_done - first,
            "rate": len(ids) / (last_done - first),
            "create_rate": len(ids) / (last_created - first),
            "runners_used": len({d["runner"] for d in dones})}


def report(result: dict) -> list[str]:
    return [f"Trivial tasks: {result['tasks']} created by {result['clients']} concurrent API "
            f"clients (each its own process and session), each task one output line",
            f"  {result['rate']:,.0f} tasks/s: first POST -> last task finished and acked "
            f"({result['seconds']:.2f} s; statuses checked over REST)",
            f"  POSTs alone: {result['create_rate']:,.0f}/s; tasks went to "
            f"{result['runners_used']} distinct runner(s)"]


async def submit(base: str, login: dict, project: int, template: int, count: int) -> None:
    """One client: log in, say ready, wait for go, create `count` tasks one at a time."""
    jar = aiohttp.CookieJar(unsafe=True)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(cookie_jar=jar, connector=connector) as http:
        async with http.post(base + "/api/auth/login", json=login) as response:
            if response.status != 204:
                raise RuntimeError(f"login -> {response.status}")
        async with http.get(base + "/api/ping") as response:  # the connection is open
            await response.read()
        print(json.dumps({"ev": "ready"}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        url = f"{base}/api/project/{project}/tasks"
        body = {"template_id": template}
        ids, first = [], time.time()
        for _ in range(count):
            async with http.post(url, json=body) as response:
                task = await response.json()
                if response.status != 201:
                    raise RuntimeError(f"POST /tasks -> {response.status} {task}")
                ids.append(task["id"])
        print(json.dumps({"ev": "done", "ids": ids, "first": first, "last": time.time()}),
              flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="a trivial-tasks client of bench_hub.py")
    parser.add_argument("--submit", nargs=5, required=True,
                        metavar=("BASE", "LOGIN_JSON", "PROJECT", "TEMPLATE", "COUNT"))
    base, login, project, template, count = parser.parse_args().submit
    try:
        asyncio.run(submit(base, json.loads(login), int(project), int(template), int(count)))
    except Exception as exc:  # reported to the benchmark, which fails the run
        print(json.dumps({"ev": "error", "msg": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    sys.exit(main())
