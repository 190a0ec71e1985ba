"""Dispatch through a real hub and real runners: tags, project runners, slots, local mode."""

import asyncio
import subprocess

from tests.hub.test_users_api import logged_in, make_user
from tests.hubkit import start_hub, write_script


async def test_task_waits_with_a_reason_then_goes_when_a_runner_connects(hub, api, tmp_path):
    scripts = tmp_path / "s"
    write_script(scripts, "t.sh", "echo tagged\n")
    pid = await api.project()
    template = await api.template(pid, scripts, "t.sh", runner_tag="gpu")
    task_id = await api.run(pid, template)
    await asyncio.sleep(0.1)
    task = await api.task(pid, task_id)
    assert task["status"] == "waiting"
    assert task["waiting_reason"] == "no online runner with tag `gpu`"
    await hub.start_runner(tmp_path, name="cpu", tags=["cpu"])
    await asyncio.sleep(0.1)
    assert (await api.task(pid, task_id))["status"] == "waiting"
    await hub.start_runner(tmp_path, name="gpu", tags=["gpu", "big"])
    task = await api.wait_status(pid, task_id)
    assert task["status"] == "success"
    runners = {r["name"]: r["id"] for r in await api.ok("GET", "/api/runners")}
    assert task["runner_id"] == runners["gpu"]


async def test_slots_are_respected_and_freed_slots_are_filled_at_once(hub, api, tmp_path):
    scripts = tmp_path / "s"
    gate = tmp_path / "gate"
    write_script(scripts, "wait.sh", f"while [ ! -e {gate} ]; do sleep 0.02; done\necho done\n")
    await hub.start_runner(tmp_path, name="one", max_parallel_tasks=1)
    pid = await api.project()
    template = await api.template(pid, scripts, "wait.sh")
    first, second = await api.run(pid, template), await api.run(pid, template)
    await api.wait_status(pid, first, {"running"})
    await asyncio.sleep(0.2)
    waiting = await api.task(pid, second)
    assert waiting["status"] == "waiting"
    assert waiting["waiting_reason"] == "all 1 matching runner(s) busy"
    gate.touch()
    assert (await api.wait_status(pid, first))["status"] == "success"
    assert (await api.wait_status(pid, second))["status"] == "success"


async def test_project_runner_before_global_and_never_for_other_projects(hub, api, tmp_path):
    scripts = tmp_path / "s"
    write_script(scripts, "t.sh", "echo hi\n")
    mine, other = await api.project("mine"), await api.project("other")
    created = await api.ok("POST", f"/api/project/{mine}/runners",
                           {"name": "project-runner", "max_parallel_tasks": 0}, 201)
    await hub.start_runner(tmp_path, name="project-runner", token=created["token"])
    await hub.start_runner(tmp_path, name="global")
    for _ in range(3):
        task = await api.wait_status(mine, await api.run(mine, await api.template(
            mine, scripts, "t.sh")))
        assert task["runner_id"] == created["id"]
    task = await api.wait_status(other, await api.run(other, await api.template(
        other, scripts, "t.sh")))
    assert task["status"] == "success" and task["runner_id"] != created["id"]


async def test_least_loaded_runner_is_chosen(hub, api, tmp_path):
    scripts = tmp_path / "s"
    gate = tmp_path / "gate"
    write_script(scripts, "wait.sh", f"while [ ! -e {gate} ]; do sleep 0.02; done\n")
    await hub.start_runner(tmp_path, name="a", max_parallel_tasks=2)
    await hub.start_runner(tmp_path, name="b", max_parallel_tasks=2)
    pid = await api.project()
    template = await api.template(pid, scripts, "wait.sh")
    tasks = [await api.run(pid, template) for _ in range(4)]
    placed = [(await api.wait_status(pid, t, {"running"}))["runner_id"] for t in tasks]
    assert sorted(placed.count(r) for r in set(placed)) == [2, 2]
    gate.touch()
    for task_id in tasks:
        assert (await api.wait_status(pid, task_id))["status"] == "success"


async def test_disabled_runner_gets_nothing_and_its_session_ends(hub, api, tmp_path):
    scripts = tmp_path / "s"
    write_script(scripts, "t.sh", "echo hi\n")
    runner = await hub.start_runner(tmp_path, name="off")
    runner_id = runner.connection.runner_id
    await api.ok("POST", f"/api/runners/{runner_id}/active", {"active": False}, 204)
    listed = await api.ok("GET", f"/api/runners/{runner_id}")
    assert listed["active"] is False and listed["online"] is False
    pid = await api.project()
    task_id = await api.run(pid, await api.template(pid, scripts, "t.sh"))
    await asyncio.sleep(0.3)
    assert (await api.task(pid, task_id))["status"] == "waiting"
    await api.ok("POST", f"/api/runners/{runner_id}/active", {"active": True}, 204)
    # The runner keeps retrying with backoff and gets back in once enabled.
    assert (await api.wait_status(pid, task_id, timeout=30))["status"] == "success"


async def test_hub_without_remote_runners_runs_tasks_itself(tmp_path):
    hub = await start_hub(tmp_path, use_remote_runner=False)
    try:
        api = await hub.api()
        scripts = tmp_path / "s"
        write_script(scripts, "t.sh", 'echo "local $1"\nexit 3\n')
        pid = await api.project()
        task_id = await api.run(pid, await api.template(pid, scripts, "t.sh",
                                                        arguments=["run"]))
        task = await api.wait_status(pid, task_id)
        assert task["status"] == "error" and task["exit_code"] == 3
        assert task["runner_id"] is None
        assert await api.raw_output(pid, task_id) == "local run\n"
    finally:
        await hub.close()


async def test_git_repository_is_cloned_at_its_branch(hub, api, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, text=True,
                              capture_output=True).stdout.strip()

    git("init", "-q", "-b", "main")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "T")
    write_script(repo, "run.sh", "echo main\n")
    git("add", ".")
    git("commit", "-qm", "on main")
    git("checkout", "-qb", "feature")
    write_script(repo, "run.sh", "echo feature branch\n")
    git("commit", "-qam", "on feature")
    feature = git("rev-parse", "feature")
    await hub.start_runner(tmp_path)
    pid = await api.project()
    template = await api.template(pid, f"file://{repo}", "run.sh", git_branch="feature")
    task = await api.wait_status(pid, await api.run(pid, template))
    assert task["status"] == "success"
    assert (task["commit_hash"], task["commit_message"]) == (feature, "on feature")
    assert (await api.raw_output(pid, task["id"])).endswith("feature branch\n")


async def test_repository_that_cannot_be_cloned_ends_error_with_gits_message(hub, api,
                                                                             tmp_path):
    await hub.start_runner(tmp_path)
    pid = await api.project()
    template = await api.template(pid, f"file://{tmp_path}/missing-repo", "run.sh")
    task = await api.wait_status(pid, await api.run(pid, template))
    assert task["status"] == "error"
    assert "git clone failed" in task["status_message"]
    output = await api.raw_output(pid, task["id"])
    assert "fatal:" in output and "missing-repo" in output


async def test_stop_of_waiting_task_ends_it_without_a_runner(api):
    pid = await api.project()
    task_id = await api.run(pid, await api.template(pid, None, "x.sh", runner_tag="none"))
    await api.ok("POST", f"/api/project/{pid}/tasks/{task_id}/stop", status=204)
    task = await api.wait_status(pid, task_id)
    assert task["status"] == "stopped" and task["status_message"] == "stopped before it started"


async def test_project_max_parallel_tasks_is_respected(hub, api, tmp_path):
    scripts = tmp_path / "s"
    gate = tmp_path / "gate"
    write_script(scripts, "wait.sh", f"while [ ! -e {gate} ]; do sleep 0.02; done\n")
    await hub.start_runner(tmp_path, name="wide", max_parallel_tasks=0)
    pid = (await api.ok("POST", "/api/projects", {"name": "p", "max_parallel_tasks": 1},
                        201))["id"]
    template = await api.template(pid, scripts, "wait.sh")
    first, second = await api.run(pid, template), await api.run(pid, template)
    await api.wait_status(pid, first, {"running"})
    await asyncio.sleep(0.2)
    task = await api.task(pid, second)
    assert task["status"] == "waiting"
    assert task["waiting_reason"] == "project limit of 1 parallel task(s) reached"
    gate.touch()
    assert (await api.wait_status(pid, second))["status"] == "success"


async def test_repeated_assign_starts_one_process(hub, api, tmp_path):
    scripts = tmp_path / "s"
    pids = tmp_path / "pids"
    write_script(scripts, "once.sh", f"echo $$ >> {pids}\nsleep 0.5\necho done\n")
    runner = await hub.start_runner(tmp_path)
    pid = await api.project()
    task_id = await api.run(pid, await api.template(pid, scripts, "once.sh"))
    await api.wait_status(pid, task_id, {"running"})
    link = hub.hub.dispatcher.links[runner.connection.runner_id]
    spec = hub.hub.lifecycle.get(task_id).spec
    for _ in range(3):
        link.assign(task_id, spec)  # as a hub that lost track of its assign would resend it
    task = await api.wait_status(pid, task_id)
    assert task["status"] == "success"
    assert len(pids.read_text().split()) == 1
    assert await api.raw_output(pid, task_id) == "done\n"


async def test_stop_all_tasks_of_a_template_stops_only_its_unfinished_tasks(hub, api):
    pid = await api.project()
    template = await api.template(pid, None, "x.sh", runner_tag="none")
    other = await api.template(pid, None, "y.sh", runner_tag="none")
    mine = [await api.run(pid, template) for _ in range(2)]
    kept = await api.run(pid, other)
    guest_id = await make_user(api, "guest")
    await api.ok("POST", f"/api/project/{pid}/users", {"user_id": guest_id, "role": "guest"},
                 204)
    guest = await logged_in(hub, "guest")
    url = f"/api/project/{pid}/templates/{template}/stop_all_tasks"
    status, body = await guest.request("POST", url)
    assert status == 403 and "task_runner" in body["error"]
    foreign = await api.project("Q")
    assert (await api.request(
        "POST", f"/api/project/{foreign}/templates/{template}/stop_all_tasks"))[0] == 404
    await api.ok("POST", url, status=204)
    for task_id in mine:
        assert (await api.wait_status(pid, task_id))["status"] == "stopped"
    assert (await api.task(pid, kept))["status"] == "waiting"
    await api.ok("POST", url, status=204)  # nothing left to stop: still fine


async def test_a_task_created_with_a_free_runner_is_stored_starting_on_it_in_one_write(
        hub, api, tmp_path):
    # The runner is chosen before the insert: the 201 already names it, and the hub sends
    # the assign after that commit with no second write of the task.
    scripts = tmp_path / "s"
    write_script(scripts, "t.sh", "echo quick\n")
    runner = await hub.start_runner(tmp_path, name="free")
    pid = await api.project()
    template = await api.template(pid, scripts, "t.sh")
    created = await api.ok("POST", f"/api/project/{pid}/tasks", {"template_id": template}, 201)
    assert created["status"] == "starting"
    assert created["runner_id"] == runner.connection.runner_id
    assert (await api.wait_status(pid, created["id"]))["status"] == "success"
    events = await api.ok("GET", f"/api/project/{pid}/events")
    assert [e["description"] for e in events if e["object_type"] == "task"] == [
        f"Task ID {created['id']} queued for running"]


async def test_tasks_created_at_once_never_share_one_free_slot(hub, api, tmp_path):
    # Each claim holds the slot while its task is being stored: of eight tasks created
    # together for one single-slot runner, one starts and seven wait, all run in the end.
    scripts = tmp_path / "s"
    gate = tmp_path / "gate"
    write_script(scripts, "wait.sh", f"while [ ! -e {gate} ]; do sleep 0.02; done\necho done\n")
    await hub.start_runner(tmp_path, name="one", max_parallel_tasks=1)
    pid = await api.project()
    template = await api.template(pid, scripts, "wait.sh")
    created = await asyncio.gather(*(api.ok("POST", f"/api/project/{pid}/tasks",
                                            {"template_id": template}, 201)
                                     for _ in range(8)))
    assert sorted(task["status"] for task in created) == ["starting"] + ["waiting"] * 7
    await asyncio.sleep(0.3)
    statuses = [(await api.task(pid, task["id"]))["status"] for task in created]
    assert sorted(statuses) == ["running"] + ["waiting"] * 7, statuses
    gate.touch()
    for task in created:
        assert (await api.wait_status(pid, task["id"]))["status"] == "success"


async def test_a_long_queue_of_one_kind_does_not_hold_back_a_task_another_runner_can_take(
        hub, api, tmp_path):
    # The dispatcher offers each kind of task (scope, tag, app) once per pass: the queued
    # gpu tasks wait with their reason, the cpu task behind them starts at once.
    scripts = tmp_path / "s"
    gate = tmp_path / "gate"
    write_script(scripts, "wait.sh", f"while [ ! -e {gate} ]; do sleep 0.02; done\necho done\n")
    await hub.start_runner(tmp_path, name="gpu", tags=["gpu"], max_parallel_tasks=1)
    await hub.start_runner(tmp_path, name="cpu", tags=["cpu"], max_parallel_tasks=1)
    pid = await api.project()
    on_gpu = await api.template(pid, scripts, "wait.sh", runner_tag="gpu")
    on_cpu = await api.template(pid, scripts, "wait.sh", runner_tag="cpu")
    gpu_tasks = [await api.run(pid, on_gpu) for _ in range(20)]
    cpu_task = await api.run(pid, on_cpu)
    assert (await api.wait_status(pid, cpu_task, {"running"}))["status"] == "running"
    statuses = [await api.task(pid, task_id) for task_id in gpu_tasks]
    assert [t["status"] for t in statuses].count("running") == 1
    waiting = [t for t in statuses if t["status"] == "waiting"]
    assert len(waiting) == 19
    assert {t["waiting_reason"] for t in waiting} == {
        "all 1 matching runner(s) with tag `gpu` busy"}
    gate.touch()
    for task_id in [*gpu_tasks, cpu_task]:
        assert (await api.wait_status(pid, task_id, timeout=60))["status"] == "success"
