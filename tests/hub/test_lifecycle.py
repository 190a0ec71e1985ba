"""The task life cycle: its table of moves, refusals, and what each move leaves behind (memory,
database, `start`/`end` times, events), on a real hub with a real runner."""

import asyncio

import structlog

from hub.core.lifecycle import FINAL, TRANSITIONS, TaskState
from hub.store import open_store
from tests.hubkit import start_hub, write_script


def test_every_state_has_its_moves_and_ended_tasks_move_no_more():
    assert set(TRANSITIONS) == set(TaskState)
    for state in FINAL:
        assert TRANSITIONS[state] == frozenset()
    for state, targets in TRANSITIONS.items():
        assert state not in targets  # staying put is not a move
    # A task is given to a runner before it runs, and ends only after it was waiting.
    assert TaskState.RUNNING not in TRANSITIONS[TaskState.WAITING]
    assert TaskState.WAITING not in TRANSITIONS[TaskState.RUNNING]


async def test_a_task_moves_waiting_starting_running_success_and_every_move_is_published(
        hub, api, tmp_path):
    scripts = tmp_path / "s"
    write_script(scripts, "ok.sh", "echo fine\n")
    pid = await api.project()
    template = await api.template(pid, scripts, "ok.sh")
    seen: list[str] = []
    reasons: list[str] = []
    async with hub.hub.events.subscribe() as events:
        task_id = await api.run(pid, template)
        await asyncio.sleep(0.1)  # the dispatcher finds no runner and says why
        await hub.start_runner(tmp_path)
        while not seen or seen[-1] not in ("success", "error", "stopped"):
            event = await asyncio.wait_for(events.get(), 10)
            if event["type"] != "task" or event["task_id"] != task_id:
                continue
            if event["status"] == "waiting":
                # Why it waits, said when it is created (no runner was free to take it
                # at once) and again whenever that changes (live views).
                reasons.append(event["waiting_reason"])
            if seen and event["status"] == seen[-1] == "waiting":
                continue  # not a move: the same state said again
            seen.append(event["status"])
    assert seen == ["waiting", "starting", "running", "success"]
    assert reasons == ["no online runner"]
    task = await api.task(pid, task_id)
    assert task["status"] == "success" and task["start"] and task["end"]
    assert task["start"] <= task["end"]
    assert not hub.hub.lifecycle.is_active(task_id)


async def test_an_illegal_move_is_refused_logged_and_changes_nothing(hub, api, tmp_path):
    scripts = tmp_path / "s"
    write_script(scripts, "ok.sh", "echo fine\n")
    pid = await api.project()
    task_id = await api.run(pid, await api.template(pid, scripts, "ok.sh"))
    lifecycle = hub.hub.lifecycle
    task = lifecycle.get(task_id)
    with structlog.testing.capture_logs() as logs:
        assert await lifecycle.run(task) is False  # waiting -> running skips starting
    refused = [e for e in logs if e["event"] == "task.transition.refused"]
    assert refused and refused[0]["status"] == "waiting" and refused[0]["to"] == "running"
    assert task.status == TaskState.WAITING and not task.started_at
    stored = await api.task(pid, task_id)
    assert stored["status"] == "waiting" and stored["start"] is None
    # An ended task moves no more, whatever asks.
    assert await lifecycle.end(task, TaskState.STOPPED, "stopped by a test")
    assert await lifecycle.end(task, TaskState.ERROR, "again") is False
    assert (await api.task(pid, task_id))["status"] == "stopped"


async def test_tasks_ended_at_hub_start_get_an_end_time(tmp_path):
    """A task the embedded runner was running when the hub died cannot go on: it is ended at
    the next start, with an end time like every other ended task."""
    first = await start_hub(tmp_path)
    api = await first.api()
    pid = await api.project()
    scripts = tmp_path / "s"
    write_script(scripts, "ok.sh", "echo fine\n")
    task_id = await api.run(pid, await api.template(pid, scripts, "ok.sh"))
    await first.close()
    store = await open_store(str(tmp_path / "hub.sqlite"))
    await store.update_task(task_id, {"status": "running", "start": "2026-01-01T00:00:00Z"})
    await store.close()
    second = await start_hub(tmp_path)
    try:
        api = await second.api()
        task = await api.task(pid, task_id)
        assert task["status"] == "error" and task["end"]
        assert task["status_message"] == "hub restarted while the task ran"
    finally:
        await second.close()
