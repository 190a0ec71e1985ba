"""docs/logging.md is the schema of the hub's and the runner's log lines, and this test holds
them to it: a real hub and a real runner (processes, JSON logs on stderr) go through a task
that succeeds, a stopped task, a cut connection and a malformed frame; every line either
process wrote must be JSON, with the standard fields, and an event, level and fields the
table lists for it. The code is read too: every event logged with a literal name, and every
field named at the call, must be in the table, and every row must be an event the code logs.

The table is the single source: a new event or field is a row (or a name) in the doc.
"""

import ast
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import websockets.sync.client

from hub.core.lifecycle import TaskState
from protocol.codec import decode_hub_frame, encode
from protocol.frames import Error, Hello, Welcome
from protocol.version import PROTOCOL_VERSION
from tests.faults import HubProcess, RunnerProcess, tail, wait_until, write_script

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "logging.md"
SIDES = {"hub": "hub", "agent": "runner"}  # the code's package -> the table's component
LEVELS = {"debug", "info", "warning", "error", "critical"}
LIBRARY_LEVELS = {"warning", "error", "critical"}  # protocol/logs.py's LIBRARY_LEVEL and up
STATES = "(?:" + "|".join(state.value for state in TaskState) + ")"
METHOD_LEVELS = {"debug": "debug", "info": "info", "warning": "warning", "error": "error",
                 "exception": "error", "critical": "critical"}


# The doc.


@dataclass
class Row:
    levels: set[str]
    fields: set[str]


@dataclass
class Schema:
    standard: set[str]
    events: dict[tuple[str, str], Row] = field(default_factory=dict)  # (event, component)


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every table of a markdown text: its header's cells (lower case) and its rows' cells."""
    tables: list[tuple[list[str], list[list[str]]]] = []
    block: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.lstrip().startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if len(block) >= 2:
            tables.append(([cell.lower() for cell in block[0]], block[2:]))
        block = []
    return tables


def names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def load_schema() -> Schema:
    tables = {tuple(header): rows for header, rows in markdown_tables(DOC.read_text())}
    standard_rows = tables[("field", "meaning")]
    event_rows = tables[("event", "component", "level", "fields", "meaning")]
    schema = Schema(standard={names(row[0])[0] for row in standard_rows})
    for row in event_rows:
        assert len(row) == 5, f"docs/logging.md: a row without 5 cells: {row}"
        event, component, levels, fields = names(row[0]), row[1], row[2], row[3]
        assert len(event) == 1 and component in SIDES.values(), f"docs/logging.md: {row}"
        key = (event[0], component)
        assert key not in schema.events, f"docs/logging.md: {key} has two rows"
        level_set = {level.strip() for level in levels.split(",")}
        assert level_set <= LEVELS, f"docs/logging.md: bad level in {row}"
        schema.events[key] = Row(level_set, set(names(fields)))
    return schema


def test_the_doc_parses_into_standard_fields_and_events():
    schema = load_schema()
    assert {"timestamp", "level", "logger", "component", "event"} <= schema.standard
    assert len(schema.events) > 50
    assert ("task.finished", "hub") in schema.events
    assert ("task.finished", "runner") in schema.events


# The code.


@dataclass
class LogCall:
    where: str
    component: str
    level: str
    event: str | None  # None: not a literal (a variable)
    pattern: re.Pattern[str] | None  # an f-string's family of names
    fields: set[str]


def log_calls() -> list[LogCall]:
    """Every structlog call of the hub's and the runner's code (`log.info(...)`,
    `self.log.warning(...)`, ...), with its event and the fields named at the call."""
    calls: list[LogCall] = []
    for package, component in SIDES.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in METHOD_LEVELS and node.args
                        and "log" in ast.unparse(node.func.value).lower()):
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                level = METHOD_LEVELS[node.func.attr]
                fields = {k.arg for k in node.keywords if k.arg is not None}
                first = node.args[0]
                events = ([first.body, first.orelse] if isinstance(first, ast.IfExp)
                          else [first])
                for event in events:
                    if isinstance(event, ast.Constant) and isinstance(event.value, str):
                        calls.append(LogCall(where, component, level, event.value, None,
                                             fields))
                    elif isinstance(event, ast.JoinedStr):
                        # The one family of names built at the call: `task.{state}`, one
                        # event per task state (hub/core/lifecycle.py). Another family needs
                        # its values here (or literal names at the call).
                        pattern = "".join(re.escape(part.value)
                                          if isinstance(part, ast.Constant) else STATES
                                          for part in event.values)
                        assert pattern.startswith(r"task\."), (
                            f"{where}: an event name built at the call, "
                            f"{ast.unparse(event)}: name its events, or give this test "
                            f"their values")
                        calls.append(LogCall(where, component, level, None,
                                             re.compile(pattern), fields))
                    else:
                        calls.append(LogCall(where, component, level, None, None, fields))
    return calls


def test_every_event_the_code_logs_is_in_the_doc_with_its_fields_and_level():
    schema = load_schema()
    calls = log_calls()
    assert len(calls) > 80, "the log calls were not found"
    problems = []
    for call in calls:
        if call.event is not None:
            matching = [(call.event, call.component)]
        elif call.pattern is not None:
            # Which names of the family a call logs depends on its callers: one row of the
            # family must take its level and fields (the run below checks the lines).
            family = [row for key, row in schema.events.items()
                      if key[1] == call.component and call.pattern.fullmatch(key[0])]
            if not any(call.level in row.levels and call.fields <= row.fields | schema.standard
                       for row in family):
                problems.append(f"{call.where}: no row of {call.pattern.pattern} takes level "
                                f"{call.level} and fields {sorted(call.fields)}")
            continue
        else:
            continue  # a name in a variable: the run below checks what it logs
        for key in matching:
            row = schema.events.get(key)
            if row is None:
                problems.append(f"{call.where}: event {key[0]!r} ({key[1]}) has no row")
                continue
            if call.level not in row.levels:
                problems.append(f"{call.where}: {key} logged at {call.level}, the doc says "
                                f"{sorted(row.levels)}")
            missing = call.fields - row.fields - schema.standard
            if missing:
                problems.append(f"{call.where}: {key} logs fields {sorted(missing)} the doc "
                                f"does not list")
    # The other way: no row for an event nothing logs.
    for event, component in schema.events:
        if not any(call.component == component and (
                call.event == event or (call.pattern is not None
                                        and call.pattern.fullmatch(event)))
                   for call in calls):
            problems.append(f"docs/logging.md: {event!r} ({component}) is logged nowhere")
    assert not problems, "\n".join(problems)


def test_every_task_state_has_its_event_row():
    """The hub logs each move of a task as `task.<state>` (hub/core/lifecycle.py)."""
    schema = load_schema()
    missing = [state.value for state in TaskState
               if (f"task.{state.value}", "hub") not in schema.events]
    assert not missing, f"docs/logging.md lacks task.<state> rows for {missing}"


# A run.


def check_lines(text: str, component: str, schema: Schema) -> tuple[list[str], list[dict]]:
    """The problems of one process's log stream, and its events."""
    problems: list[str] = []
    events: list[dict] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            problems.append(f"{component} line {number} is not JSON: {line[:300]}")
            continue
        if not isinstance(event, dict):
            problems.append(f"{component} line {number} is not an object: {line[:300]}")
            continue
        events.append(event)
        missing = {"timestamp", "level", "logger", "component", "event"} - event.keys()
        if missing:
            problems.append(f"{component} line {number} lacks {sorted(missing)}: {line[:300]}")
            continue
        if event["component"] != component:
            problems.append(f"{component} line {number} says component "
                            f"{event['component']!r}: {line[:300]}")
        extra = set(event) - schema.standard
        side = SIDES.get(str(event["logger"]).split(".")[0])
        if side is None:  # a library's record
            if event["level"] not in LIBRARY_LEVELS or extra:
                problems.append(f"{component} line {number}: a library record at "
                                f"{event['level']} with fields {sorted(extra)}: {line[:300]}")
            continue
        row = schema.events.get((event["event"], side))
        if row is None:
            problems.append(f"{component} line {number}: event {event['event']!r} ({side}) "
                            f"is not in docs/logging.md: {line[:300]}")
            continue
        if event["level"] not in row.levels:
            problems.append(f"{component} line {number}: {event['event']} at "
                            f"{event['level']}, the doc says {sorted(row.levels)}")
        unlisted = extra - row.fields
        if unlisted:
            problems.append(f"{component} line {number}: {event['event']} carries "
                            f"{sorted(unlisted)}, not in its row: {line[:300]}")
    return problems, events


def count(events: list[dict], name: str) -> int:
    return sum(1 for event in events if event.get("event") == name)


def logged(path: Path, name: str) -> int:
    """How many lines of a JSON log file are the event `name` (unparsable lines skipped)."""
    found = 0
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            found += json.loads(line).get("event") == name
        except (ValueError, AttributeError):
            pass
    return found


def send_malformed_frame(hub: HubProcess, token: str) -> Error:
    """A session as a registered runner: hello, welcome, then a frame that is not JSON; the
    hub answers an error frame and closes with 1007."""
    url = f"ws://127.0.0.1:{hub.port}/api/internal/runners/ws"
    with websockets.sync.client.connect(
            url, additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=10) as ws:
        ws.send(encode(Hello(protocol_version=PROTOCOL_VERSION, runner_version="test",
                             name="raw")))
        assert isinstance(decode_hub_frame(ws.recv(timeout=10)), Welcome)
        ws.send("{this is not json")
        while not isinstance(frame := decode_hub_frame(ws.recv(timeout=10)), Error):
            pass  # a heartbeat ack or the like, sent before the error
        try:
            while True:
                ws.recv(timeout=10)
        except websockets.ConnectionClosed:
            pass
        assert ws.close_code == 1007, ws.close_code
        return frame


def test_a_hub_and_a_runner_write_only_documented_json_lines(lab):
    schema = load_schema()
    hub = HubProcess(lab.folder / "hub", heartbeat_interval=0.5, runner_lost_timeout=60)
    hub.stderr_file = lab.folder / "hub.stderr"
    lab.hubs.append(hub)
    hub.start()
    proxy = lab.proxy(hub.port)
    runner = RunnerProcess(lab.folder / "runner-logs", proxy.url, "logs",
                           max_parallel_tasks=2)
    runner.stderr_file = lab.folder / "runner.stderr"
    lab.runners.append(runner)
    runner.start()

    def logs() -> str:
        return (f"--- hub stderr:\n{tail(hub.stderr_file)}\n"
                f"--- runner stderr:\n{tail(runner.stderr_file)}")

    rest = hub.rest()
    rest.wait_runner_online("logs", logs=logs)
    project = rest.project()

    # A task that succeeds.
    write_script(lab.scripts, "hello.sh", "echo hello\n")
    done = rest.wait_status(project, rest.run(project, rest.template(
        project, lab.scripts, "hello.sh")), logs=logs)
    assert done["status"] == "success", (done, logs())

    # A task that is stopped.
    write_script(lab.scripts, "long.sh", "sleep 300\n")
    long_task = rest.run(project, rest.template(project, lab.scripts, "long.sh"))
    rest.wait_status(project, long_task, {"running"}, logs=logs)
    rest.stop(project, long_task)
    done = rest.wait_status(project, long_task, logs=logs)
    assert done["status"] == "stopped", (done, logs())

    # A reconnect: the connection is cut; the runner comes back by itself.
    wait_until(lambda: proxy.live >= 1, 30, message="no connection through the proxy")
    assert proxy.cut() >= 1
    wait_until(lambda: logged(runner.stderr_file, "runner.connected") >= 2, 60,
               message=logs)
    rest.wait_runner_online("logs", logs=logs)

    # A malformed frame, on a session authenticated as another registered runner.
    raw = RunnerProcess(lab.folder / "runner-raw", hub.base_url, "raw")
    lab.runners.append(raw)
    error = send_malformed_frame(hub, (raw.folder / "runner.token").read_text().strip())
    assert error.code == "malformed_frame", error
    wait_until(lambda: logged(hub.stderr_file, "runner.frame.invalid") >= 1, 30,
               message=logs)

    # Both stop cleanly (their last lines are logged too).
    runner.sigterm()
    assert runner.wait(60) == 0, logs()
    assert hub.terminate() == 0, logs()
    time.sleep(0.1)

    hub_problems, hub_events = check_lines(hub.stderr_file.read_text(), "hub", schema)
    runner_problems, runner_events = check_lines(runner.stderr_file.read_text(), "runner",
                                                 schema)
    problems = hub_problems + runner_problems
    assert not problems, "\n".join(problems[:60])

    # What was driven shows in the logs: the check above saw these events, not an empty run.
    for name in ("hub.started", "task.created", "task.dispatched", "task.running",
                 "task.success", "task.stopping", "task.stopped", "task.finished",
                 "runner.connected", "runner.disconnected", "runner.frame.invalid",
                 "hub.stopped"):
        assert count(hub_events, name) >= 1, (name, logs())
    assert count(hub_events, "runner.connected") >= 3, logs()  # logs twice, raw once
    for name in ("runner.starting", "task.accepted", "task.process.started",
                 "task.process.ended", "task.cancelled", "task.finished",
                 "runner.disconnected", "runner.reconnect.wait", "runner.stopped"):
        assert count(runner_events, name) >= 1, (name, logs())
    assert count(runner_events, "runner.connected") >= 2, logs()
    assert all("runner_id" in event for event in runner_events
               if event["event"] in ("task.accepted", "task.finished")), logs()
