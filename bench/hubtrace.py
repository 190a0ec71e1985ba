"""The hub's CLI with every SQLite round trip traced: `bench_hub.py` starts the hub through
this file instead of `python -m hub.cli` when BENCH_SQL_TRACE names an output file.

Each round trip through aiosqlite's worker thread becomes one JSON line: the request it served
(method and path, or the asyncio task for websocket and background work), the hub call chain
that awaited it, the SQL, and four clocks (perf_counter, s): `queued` when the event loop hands
it over, `start`/`end` inside the worker thread, `resumed` when the awaiting coroutine runs
again. `start - queued` is the hand-over to the thread, `end - start` SQLite itself, `resumed -
end` the way back through the event loop. Tracing costs time of its own (a stack walk per
round trip): use it to count and order round trips, and the clocks only relative to each other.
Bench tooling only; nothing in hub/ knows about it.
"""

import asyncio
import contextvars
import json
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("bench_request", default="")


def install(out_path: str) -> None:
    import aiosqlite.core
    from aiohttp import web_app

    out = open(out_path, "a", buffering=1)  # open for the process's life
    original_execute = aiosqlite.core.Connection._execute
    original_handle = web_app.Application._handle

    async def handle(self, request):  # type: ignore[no-untyped-def]
        token = REQUEST.set(f"{request.method} {request.path}")
        try:
            return await original_handle(self, request)
        finally:
            REQUEST.reset(token)

    async def execute(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        clocks: dict[str, float] = {}

        def timed(*a, **k):  # type: ignore[no-untyped-def]
            clocks["start"] = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                clocks["end"] = time.perf_counter()

        chain = [f"{Path(f.filename).stem}.{f.name}" for f in traceback.extract_stack()[:-1]
                 if "/hub/" in f.filename]
        task = asyncio.current_task()
        sql = args[0] if args and isinstance(args[0], str) else getattr(fn, "__name__", "?")
        clocks["queued"] = time.perf_counter()
        try:
            return await original_execute(self, timed, *args, **kwargs)
        finally:
            clocks["resumed"] = time.perf_counter()
            out.write(json.dumps({
                "request": REQUEST.get(), "task": task.get_name() if task else "",
                "coro": getattr(task.get_coro(), "__qualname__", "") if task else "",
                "chain": chain, "sql": " ".join(str(sql).split())[:160], **clocks}) + "\n")

    aiosqlite.core.Connection._execute = execute  # type: ignore[method-assign]
    web_app.Application._handle = handle  # type: ignore[method-assign]


if __name__ == "__main__":
    if os.environ.get("BENCH_SQL_TRACE"):
        install(os.environ["BENCH_SQL_TRACE"])
    from hub.cli import main

    sys.exit(main())
