"""Split create->assign with the hub's own log (`--log-format json`): where the time goes.

The hub logs `task.created` after inserting a task and `task.dispatched` after handing the
assign frame to the runner's link (its sender sends it). The hub and the simulators run on the
same machine, so their clocks compare: POST sent -> created -> dispatched -> assign received.
"""

import json
from datetime import datetime
from pathlib import Path


def task_events(log_path: Path):
    """(task_id, event, time.time()) of each `task.*` line with a task id in a JSON log."""
    with open(log_path, errors="replace") as log:
        for line in log:
            if '"task.' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("task_id"), int):
                yield entry["task_id"], entry.get("event"), datetime.fromisoformat(
                    entry["timestamp"].replace("Z", "+00:00")).timestamp()


def hub_times(log_path: Path, ids: list[int]) -> dict[str, dict[int, float]]:
    """time.time() of `task.created` and `task.dispatched` per task id, from the hub's log."""
    wanted, times = set(ids), {"task.created": {}, "task.dispatched": {}}
    for task_id, event, stamp in task_events(log_path):
        found = times.get(event)
        if found is not None and task_id in wanted:
            found.setdefault(task_id, stamp)
    return times


def split_latency(log_path: Path, ids: list[int], starts: list[float],
                  received: list[float]) -> dict[str, list[float]]:
    """Per task (ms): POST sent -> created, created -> dispatched, dispatched -> received.
    Tasks missing from the log are left out (empty lists if the log has none)."""
    times = hub_times(log_path, ids)
    created, dispatched = times["task.created"], times["task.dispatched"]
    out = {"to_created": [], "in_hub": [], "to_runner": []}
    for task_id, t0, t3 in zip(ids, starts, received, strict=True):
        if task_id in created and task_id in dispatched:
            t1, t2 = created[task_id], dispatched[task_id]
            out["to_created"].append((t1 - t0) * 1000)
            out["in_hub"].append((t2 - t1) * 1000)
            out["to_runner"].append((t3 - t2) * 1000)
    return out
