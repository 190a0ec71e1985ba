"""Runner management over REST, registration, and the structured logs a task leaves."""

import asyncio
import json

import structlog

from tests.hubkit import write_script


async def test_admin_creates_runner_and_sees_its_token_once(hub, api, tmp_path):
    created = await api.ok("POST", "/api/runners", {"name": "made", "tags": ["a"],
                                                    "max_parallel_tasks": 3}, 201)
    assert len(created["token"]) >= 43 and created["project_id"] is None
    listed = await api.ok("GET", "/api/runners")
    assert [r["name"] for r in listed] == ["made"] and "token" not in listed[0]
    assert created["token"] not in json.dumps(listed)
    # The token is stored hashed: nothing in the database equals it.
    row = await hub.hub.store.get_runner(created["id"])
    assert created["token"] not in json.dumps(row)
    runner = await hub.start_runner(tmp_path, name="made", token=created["token"])
    assert runner.connection.runner_id == created["id"]
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # the first heartbeat, sent at connect, carries the runner's metrics
        one = await api.ok("GET", f"/api/runners/{created['id']}")
        if one["metrics"]["memory_total"] > 0:
            break
        assert asyncio.get_running_loop().time() < deadline, one
        await asyncio.sleep(0.05)
    assert one["online"] is True and one["tags"] == ["a"] and one["tag"] == "a"
    assert one["metrics"]["memory_used"] > 0 and one["running_tasks"] == []


async def test_update_runner_and_runner_tags(hub, api):
    pid = await api.project()
    created = await api.ok("POST", f"/api/project/{pid}/runners", {"name": "p"}, 201)
    path = f"/api/project/{pid}/runners/{created['id']}"
    await api.ok("PUT", path, {"name": "renamed", "tag": "db", "tags": ["eu"],
                               "max_parallel_tasks": 5}, 204)
    got = await api.ok("GET", path)
    assert (got["name"], got["tags"], got["max_parallel_tasks"]) == ("renamed", ["db", "eu"], 5)
    await hub.register("global", tags=["eu"])
    tags = await api.ok("GET", f"/api/project/{pid}/runner_tags")
    assert tags == [{"tag": "db", "number_of_runners": 1}, {"tag": "eu", "number_of_runners": 2}]
    # A project runner is not reachable as a global one, nor through another project.
    assert (await api.request("GET", f"/api/runners/{created['id']}"))[0] == 404
    other = await api.project("other")
    assert (await api.request("GET", f"/api/project/{other}/runners/{created['id']}"))[0] == 404
    await api.ok("DELETE", path, status=204)
    assert await api.ok("GET", f"/api/project/{pid}/runners") == []


async def test_runner_management_needs_admin_or_project_manager(hub, api):
    user = await api.ok("POST", "/api/users", {"name": "Dev", "username": "dev",
                                               "email": "dev@example.com",
                                               "password": "dev-pw-12"}, 201)
    pid = await api.project()
    members = f"/api/project/{pid}/users"
    await api.ok("POST", members, {"user_id": user["id"], "role": "task_runner"}, 204)
    dev = await hub.api(login=False)
    await dev.login("dev", "dev-pw-12")
    status, body = await dev.request("POST", "/api/runners", {"name": "x"})
    assert status == 403 and "admin" in body["error"]
    status, body = await dev.request("POST", f"/api/project/{pid}/runners", {"name": "x"})
    assert status == 403 and "manager" in body["error"]
    await api.ok("PUT", f"{members}/{user['id']}", {"role": "manager"}, 204)
    created = await dev.ok("POST", f"/api/project/{pid}/runners", {"name": "x"}, 201)
    assert created["project_id"] == pid


async def test_runner_unregisters_itself_with_its_own_token(hub):
    token = await hub.register("leaving")
    client = await hub.api(login=False)
    status, _ = await client.request("DELETE", "/api/internal/runners",
                                     headers={"Authorization": "Bearer wrong"})
    assert status == 401
    status, _ = await client.request("DELETE", "/api/internal/runners",
                                     headers={"Authorization": f"Bearer {token}"})
    assert status == 204
    assert await hub.hub.store.list_runners(None) == []


async def test_registration_disabled_without_a_registration_token(tmp_path):
    from tests.hubkit import start_hub

    hub = await start_hub(tmp_path, runner_registration_token="")
    try:
        client = await hub.api(login=False)
        status, body = await client.request("POST", "/api/internal/runners",
                                            {"registration_token": "anything"})
        assert status == 401 and "disabled" in body["error"]
    finally:
        await hub.close()


async def test_task_leaves_named_log_events_with_ids_bound(hub, api, tmp_path):
    scripts = tmp_path / "s"
    write_script(scripts, "t.sh", "echo logged\n")
    await hub.start_runner(tmp_path)
    pid = await api.project()
    template = await api.template(pid, scripts, "t.sh")
    with structlog.testing.capture_logs() as events:
        task_id = await api.run(pid, template)
        await api.wait_status(pid, task_id)
    by_name = {}
    for event in events:
        by_name.setdefault(event["event"], event)
    for name in ("task.created", "task.dispatched", "task.accepted", "task.running",
                 "task.process.started", "task.finished"):
        assert name in by_name, sorted(by_name)
        assert by_name[name]["task_id"] == task_id
    assert by_name["task.dispatched"]["runner_id"] == by_name["task.running"]["runner_id"]


async def test_registration_refuses_a_public_key_it_could_not_seal_to(hub):
    client = await hub.api(login=False)
    status, body = await client.request("POST", "/api/internal/runners", {
        "registration_token": "test-registration-token", "public_key": "not-a-key"})
    assert status == 400 and "public_key" in body["error"]
    assert await hub.hub.store.list_runners(None) == []
