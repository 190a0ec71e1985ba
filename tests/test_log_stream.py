"""One log chain (protocol/logs.py): with `--log-format json` a hub's and a runner's stderr are
JSON lines and nothing else, the standard library's records (aiohttp, asyncio, websockets,
Python warnings) included, and every line names its side (`component`) and module (`logger`)."""

import json
import socket
import subprocess
import sys
from typing import Any

from tests.faults import ROOT, tail, wait_until
from tests.lab import Lab, lines_script, wait_final

# Test helpers mark each start in the log file; the hub says where it listens on stdout (a
# line for people and scripts, not a log event: tests/test_tls.py reads it).
NOT_LOGGED = ("===== ", "semaphore hub listening on ")

# Emits what a hub or runner process may meet: its own events, a library's error with a
# traceback, an asyncio task whose exception nobody retrieved, a Python warning.
PROBE = """
import asyncio, gc, logging, sys, warnings
import structlog
from protocol.logs import configure_logging

configure_logging(sys.argv[1], "json")
structlog.get_logger("probe.own").info("probe.event", n=1)
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("aiohttp.server").exception("Error handling request from %s", "1.2.3.4")
    structlog.get_logger("probe.own").exception("probe.failed")
logging.getLogger("aiohttp.access").info("below the libraries' level: not shown")

async def main():
    async def fail():
        raise RuntimeError("nobody asked")
    task = asyncio.get_running_loop().create_task(fail())
    await asyncio.sleep(0.01)
    del task
    gc.collect()

asyncio.run(main())
warnings.warn("probe warning")
"""


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as JSON (the helpers' markers aside); fails on the first that is
    not one object."""
    events = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(NOT_LOGGED):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n---\n{text[-3000:]}") from None
        assert isinstance(event, dict), line
        events.append(event)
    return events


def test_standard_library_records_render_as_json_lines_with_component_and_logger():
    for component in ("hub", "runner"):
        done = subprocess.run([sys.executable, "-c", PROBE, component], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=True)
        assert done.stdout == ""
        events = json_lines(done.stderr)
        assert all(e["component"] == component for e in events), events
        by_logger = {e["logger"]: e for e in events}
        assert set(by_logger) == {"probe.own", "aiohttp.server", "asyncio", "py.warnings"}
        server = by_logger["aiohttp.server"]
        assert server["level"] == "error"
        assert server["event"] == "Error handling request from 1.2.3.4"
        assert "ZeroDivisionError" in server["exception"] and "timestamp" in server
        assert "RuntimeError: nobody asked" in by_logger["asyncio"]["exception"]
        assert "probe warning" in by_logger["py.warnings"]["event"]
        own = [e for e in events if e["logger"] == "probe.own"]
        assert [e["event"] for e in own] == ["probe.event", "probe.failed"]
        assert own[0]["n"] == 1 and "ZeroDivisionError" in own[1]["exception"]


def upgrade_with_unknown_subprotocol(port: int, token: str) -> bytes:
    """A runner's websocket upgrade asking for a subprotocol the hub does not speak: aiohttp
    accepts it and logs a warning through the standard library (logger aiohttp.websocket)."""
    request = (f"GET /api/internal/runners/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Protocol: no-such-protocol\r\nAuthorization: Bearer {token}\r\n"
               "\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return sock.recv(4096)


def test_hub_and_runner_processes_log_only_json_lines(lab: Lab):
    json_format = ("--log-format", "json")
    hub = lab.hub(options=json_format)
    runner, rest, project = lab.online_runner(hub, "logs", options=json_format)
    template = rest.template(project, lab.scripts, lines_script(lab, "lines.sh", 3, 0.01))
    task_id = rest.run(project, template)
    assert wait_final(rest, lab, project, task_id)["status"] == "success"
    # A standard-library record in the hub: aiohttp's own warning.
    token = rest.ok("POST", "/api/runners", {"name": "probe"}, 201)["token"]
    assert upgrade_with_unknown_subprotocol(hub.port, token).startswith(b"HTTP/1.1 101")
    wait_until(lambda: '"aiohttp.websocket"' in hub.log(), timeout=30,
               message=lambda: f"no aiohttp.websocket record:\n{tail(hub.log_file)}")
    runner.sigterm()
    runner.wait()

    hub_events, runner_events = json_lines(hub.log()), json_lines(runner.log())
    assert {e["component"] for e in hub_events} == {"hub"}
    assert {e["component"] for e in runner_events} == {"runner"}
    library = [e for e in hub_events if e["logger"] == "aiohttp.websocket"]
    assert library and library[0]["level"] == "warning" and "no-such-protocol" in (
        library[0]["event"]), library
    # Who logged what stays apparent: the runner's task events come from agent/, the hub's
    # from hub/, even where both use the same event name.
    runner_task = {e["logger"] for e in runner_events if e.get("task_id") == task_id}
    hub_task = {e["logger"] for e in hub_events if e.get("task_id") == task_id}
    assert runner_task and all(name.startswith("agent.") for name in runner_task), runner_task
    assert hub_task and all(name.startswith("hub.") for name in hub_task), hub_task
    assert any(e["event"] == "task.finished" for e in runner_events), runner_events
