"""Cutting a runner off while it works: its session, its tasks and its token."""

import asyncio
import time

import pytest

from tests.hubkit import write_script


@pytest.mark.parametrize("action", ["disabled", "deleted"])
async def test_revoking_a_runner_mid_task_cuts_it_off_at_once(hub, api, tmp_path, action):
    scripts = tmp_path / "s"
    marker = tmp_path / "still-running"
    write_script(scripts, "long.sh", f"echo started\nwhile true; do touch {marker}; "
                                     "sleep 0.05; done\n")
    runner = await hub.start_runner(tmp_path, name="victim")
    runner_id = runner.connection.runner_id
    pid = await api.project()
    task_id = await api.run(pid, await api.template(pid, scripts, "long.sh"))
    await api.wait_status(pid, task_id, {"running"})
    started = time.monotonic()
    if action == "disabled":
        await api.ok("POST", f"/api/runners/{runner_id}/active", {"active": False}, 204)
    else:
        await api.ok("DELETE", f"/api/runners/{runner_id}", status=204)
    task = await api.task(pid, task_id)
    assert task["status"] == "error"
    assert task["status_message"] == f"runner {action} while the task ran"
    while runner.connection.connected.is_set():  # its session is closed within a second
        assert time.monotonic() - started < 1.0
        await asyncio.sleep(0.01)
    # The cancel reached it before the close: the task's processes are gone.
    await asyncio.sleep(0.5)
    marker.unlink(missing_ok=True)
    await asyncio.sleep(0.3)
    assert not marker.exists()
    # It receives nothing after that.
    other = await api.run(pid, await api.template(pid, scripts, "long.sh"))
    await asyncio.sleep(0.3)
    assert (await api.task(pid, other))["status"] == "waiting"


async def test_one_time_token_binds_tags_whatever_the_runner_asks(hub, api, tmp_path):
    created = await api.ok("POST", "/api/runners/registration_tokens",
                           {"tags": ["gpu"], "expires_in_sec": 600}, 201)
    client = await hub.api(login=False)
    answer = await client.ok("POST", "/api/internal/runners", {
        "registration_token": created["token"], "name": "bound", "tags": ["own"]})
    assert answer["tags"] == ["gpu"]
    await hub.start_runner(tmp_path, name="bound", tags=["own"], token=answer["token"])
    runner = (await api.ok("GET", "/api/runners"))[0]
    assert runner["tags"] == ["gpu"]  # neither registration nor hello added `own`
    scripts = tmp_path / "s"
    write_script(scripts, "t.sh", "echo gpu\n")
    pid = await api.project()
    task = await api.wait_status(pid, await api.run(pid, await api.template(
        pid, scripts, "t.sh", runner_tag="gpu")))
    assert task["status"] == "success"
