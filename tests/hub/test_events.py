"""The audit trail (Semaphore's events) through a real hub: each change writes one event with
the right fields, and who sees which events."""

import json
from datetime import timedelta

from tests.hub.test_schedules import _manual_clock, _next_minute
from tests.hub.test_users_api import logged_in, make_user
from tests.hubkit import REGISTRATION_TOKEN, RUNNER_PUBLIC_KEY, write_script

FIELDS = ("project_id", "user_id", "integration_id", "object_id", "object_type", "object_name",
          "description", "created", "project_name", "username")


async def _events(api, path: str = "/api/events") -> list[dict]:
    rows = await api.ok("GET", path)
    assert all(tuple(row) == FIELDS for row in rows), rows
    return rows


async def _new(api, before: int, path: str = "/api/events") -> list[tuple]:
    """The events written since the log held `before`, oldest first, without their time."""
    rows = (await _events(api, path))[:-before or None]
    return [(row["object_type"], row["object_id"], row["object_name"], row["description"])
            for row in reversed(rows)]


async def test_each_change_writes_one_event(api):
    project = await api.ok("POST", "/api/projects", {"name": "Ops"}, 201)
    pid = project["id"]
    base = f"/api/project/{pid}"
    [created] = await _events(api, f"{base}/events")
    assert created == created | {
        "project_id": pid, "user_id": 1, "integration_id": None, "object_id": pid,
        "object_type": "project", "object_name": "Ops", "description": "Project created",
        "project_name": "Ops", "username": "admin"}
    assert created["created"].startswith("20")
    count = 1

    async def changes(*expected: tuple) -> None:
        nonlocal count
        got = await _new(api, count, f"{base}/events")
        assert got == list(expected)
        count += len(expected)

    key = await api.ok("POST", f"{base}/keys", {
        "name": "deploy", "type": "login_password",
        "login_password": {"login": "bot", "password": "key-secret-1"}}, 201)
    await api.ok("PUT", f"{base}/keys/{key['id']}", {"name": "deploy2", "type": "none"}, 204)
    await changes(("key", key["id"], "deploy", "Access Key deploy created"),
                  ("key", key["id"], "deploy2", "Access Key deploy2 updated"))
    repo = await api.ok("POST", f"{base}/repositories", {
        "name": "code", "git_url": "https://bot:url-secret-2@git.example.com/x.git",
        "git_branch": "main"}, 201)
    inventory = await api.ok("POST", f"{base}/inventory", {"name": "hosts", "type": "static",
                                                           "inventory": "localhost"}, 201)
    environment = await api.ok("POST", f"{base}/environment", {"name": "env", "json": "{}"},
                               201)
    view = await api.ok("POST", f"{base}/views", {"title": "Deploys"}, 201)
    template = await api.ok("POST", f"{base}/templates", {
        "name": "deploy site", "playbook": "site.yml", "repository_id": repo["id"],
        "inventory_id": inventory["id"], "environment_id": environment["id"]}, 201)
    await changes(("repository", repo["id"], "code", "Repository code created"),
                  ("inventory", inventory["id"], "hosts", "Inventory hosts created"),
                  ("environment", environment["id"], "env", "Environment env created"),
                  ("view", view["id"], "Deploys", "View Deploys created"),
                  ("template", template["id"], "deploy site", "Template deploy site created"))
    await api.ok("PUT", f"{base}/views/{view['id']}", {"title": "Releases"}, 204)
    await api.ok("DELETE", f"{base}/views/{view['id']}", status=204)
    await changes(("view", view["id"], "Releases", "View Releases updated"),
                  ("view", view["id"], "Releases", "View Releases deleted"))
    # A refused change writes nothing.
    assert (await api.request("DELETE", f"{base}/views/{view['id']}"))[0] == 404
    assert (await api.request("POST", f"{base}/views", {"title": ""}))[0] == 400
    await changes()

    schedules = f"{base}/schedules"
    schedule = await api.ok("POST", schedules, {"name": "nightly", "cron_format": "0 3 * * *",
                                                "template_id": template["id"]}, 201)
    sid = schedule["id"]
    await api.ok("PUT", f"{schedules}/{sid}", {"name": "hourly", "cron_format": "0 * * * *",
                                                "template_id": template["id"]}, 204)
    await api.ok("PUT", f"{schedules}/{sid}/active", {"active": False}, 204)
    await api.ok("DELETE", f"{schedules}/{sid}", status=204)
    await changes(("schedule", sid, "nightly", "Schedule nightly created"),
                  ("schedule", sid, "hourly", "Schedule hourly updated"),
                  ("schedule", sid, "hourly", "Schedule hourly deactivated"),
                  ("schedule", sid, "hourly", "Schedule hourly deleted"))

    bob = await make_user(api, "bob")
    await api.ok("POST", f"{base}/users", {"user_id": bob, "role": "guest"}, 204)
    await api.ok("PUT", f"{base}/users/{bob}", {"role": "manager"}, 204)
    await api.ok("DELETE", f"{base}/users/{bob}", status=204)
    await changes(("user", bob, "bob", "User bob added to team as guest"),
                  ("user", bob, "bob", "Changed role for user bob to manager"),
                  ("user", bob, "bob", "User bob removed from team"))

    await api.ok("PUT", base, {"name": "Operations"}, 204)
    await api.ok("DELETE", f"{base}/templates/{template['id']}", status=204)
    await changes(("project", pid, "Operations", "Project Operations updated"),
                  ("template", template["id"], "deploy site", "Template deploy site deleted"))
    [latest] = (await _events(api, f"{base}/events"))[:1]
    assert latest["project_name"] == "Operations"  # the name when the event was written

    # Users (no project): an admin's log has them, the project's does not.
    await api.ok("PUT", f"/api/users/{bob}", {"name": "Bob", "username": "bobby",
                                              "email": "bob@example.com"}, 204)
    await api.ok("POST", f"/api/users/{bob}/password", {"password": "pass-secret-3"}, 204)
    await api.ok("DELETE", f"/api/users/{bob}", status=204)
    mine = await _events(api)
    assert [(row["object_type"], row["object_id"], row["description"], row["project_id"])
            for row in mine[:4]] == [
        ("user", bob, "User bobby deleted", None),
        ("user", bob, "Password of user bobby changed", None),
        ("user", bob, "User bobby updated", None),
        ("template", template["id"], "Template deploy site deleted", pid)]
    assert [row["description"] for row in mine if row["description"] == "User bob created"]
    await changes()
    text = json.dumps(mine)
    assert not any(secret in text for secret in ("key-secret-1", "url-secret-2",
                                                  "pass-secret-3"))


async def test_who_sees_which_events(hub, api):
    alice, bob = await make_user(api, "alice"), await make_user(api, "bob")
    pid = await api.project("Secret")
    other = await api.project("Other")
    await api.ok("POST", f"/api/project/{pid}/users", {"user_id": bob, "role": "guest"}, 204)
    await api.ok("POST", f"/api/project/{pid}/views", {"title": "V"}, 201)
    await api.ok("POST", f"/api/project/{other}/users", {"user_id": alice, "role": "owner"},
                 204)

    outsider = await logged_in(hub, "alice")
    for path in (f"/api/project/{pid}/events", f"/api/project/{pid}/events/last"):
        status, body = await outsider.request("GET", path)
        assert status == 404 and "not found" in body["error"]
    seen = await _events(outsider)
    assert seen and {row["project_id"] for row in seen} == {other}
    assert await _events(outsider, "/api/events/last") == seen

    guest = await logged_in(hub, "bob")
    project_events = await _events(guest, f"/api/project/{pid}/events")
    assert [row["description"] for row in project_events] == [
        "View V created", "User bob added to team as guest", "Project created"]
    # Nothing of another project, nor the project-less user events.
    assert await _events(guest) == project_events
    assert (await guest.request("GET", f"/api/project/{other}/events"))[0] == 404

    everything = await _events(api)
    assert {row["project_id"] for row in everything} == {pid, other, None}
    assert [row["description"] for row in everything if row["project_id"] is None] == [
        "User bob created", "User alice created"]
    times = [row["created"] for row in everything]
    assert times == sorted(times, reverse=True)  # newest first
    assert (await api.request("GET", "/api/project/99/events"))[0] == 404
    assert (await api.request("GET", "/api/project/x/events"))[0] in (400, 404)


async def test_last_returns_semaphores_200_newest(hub, api):
    pid = await api.project()
    for number in range(205):
        await hub.hub.store.add_event({"project_id": pid, "object_type": "view",
                                       "description": f"e{number}"})
    last = await _events(api, f"/api/project/{pid}/events/last")
    assert len(last) == 200 and last[0]["description"] == "e204"
    assert len(await _events(api, "/api/events/last")) == 200
    assert len(await _events(api, f"/api/project/{pid}/events")) == 206


async def test_deleted_project_keeps_its_events_for_admins(hub, api):
    alice = await make_user(api, "alice")
    pid = await api.project("Doomed")
    await api.ok("POST", f"/api/project/{pid}/users", {"user_id": alice, "role": "owner"}, 204)
    owner = await logged_in(hub, "alice")
    await owner.ok("POST", f"/api/project/{pid}/views", {"title": "V"}, 201)
    await owner.ok("DELETE", f"/api/project/{pid}", status=204)
    rows = [row for row in await _events(api) if row["project_name"] == "Doomed"]
    assert [(row["description"], row["project_id"], row["username"]) for row in rows] == [
        ("Project Doomed deleted", None, "alice"), ("View V created", None, "alice"),
        ("User alice added to team as owner", None, "admin"),
        ("Project created", None, "admin")]
    assert rows[0]["object_id"] == pid and rows[0]["object_type"] == "project"
    # The former owner is no member of anything now: the project's events are gone for them.
    assert await _events(owner) == []
    assert (await owner.request("GET", f"/api/project/{pid}/events"))[0] == 404


async def test_runner_registration_and_management_write_events(hub, api):
    anonymous = await hub.api(login=False)
    registered = await anonymous.ok("POST", "/api/internal/runners", {
        "registration_token": REGISTRATION_TOKEN, "name": "edge-1", "tags": [],
        "public_key": RUNNER_PUBLIC_KEY})
    rid = registered["id"]
    await api.ok("POST", f"/api/runners/{rid}/active", {"active": False}, 204)
    await api.ok("POST", f"/api/runners/{rid}/active", {"active": True}, 204)
    await api.ok("PUT", f"/api/runners/{rid}", {"name": "edge-2"}, 204)
    await api.ok("DELETE", f"/api/runners/{rid}", status=204)
    rows = [row for row in await _events(api) if row["object_type"] == "runner"]
    assert [(row["description"], row["object_id"], row["username"], row["project_id"])
            for row in reversed(rows)] == [
        ("Runner edge-1 registered", rid, None, None),
        ("Runner edge-1 disabled", rid, "admin", None),
        ("Runner edge-1 enabled", rid, "admin", None),
        ("Runner edge-2 updated", rid, "admin", None),
        ("Runner edge-2 deleted", rid, "admin", None)]
    assert registered["token"] not in json.dumps(rows)

    # A project's runner: its events are the project's, which its members read.
    pid = await api.project("Fleet")
    token = await api.ok("POST", "/api/runners/registration_tokens",
                         {"project_id": pid, "tags": []}, 201)
    bound = await anonymous.ok("POST", "/api/internal/runners", {
        "registration_token": token["token"], "name": "p-1", "public_key": RUNNER_PUBLIC_KEY})
    await api.ok("POST", f"/api/project/{pid}/runners/{bound['id']}/active",
                 {"active": False}, 204)
    project_rows = await _events(api, f"/api/project/{pid}/events")
    assert [(row["description"], row["username"]) for row in project_rows[:2]] == [
        ("Runner p-1 disabled", "admin"), ("Runner p-1 registered", None)]
    everything = await _events(api)
    assert token["token"] not in json.dumps(everything)
    assert f"Registration token {token['id']} created" in [
        row["description"] for row in everything]
    runner_api = await hub.api(login=False)
    status, _ = await runner_api.request(
        "DELETE", "/api/internal/runners",
        headers={"Authorization": f"Bearer {bound['token']}"})
    assert status == 204
    [gone] = (await _events(api, f"/api/project/{pid}/events"))[:1]
    assert (gone["description"], gone["username"]) == ("Runner p-1 unregistered itself", None)


async def test_tasks_write_events(hub, api, tmp_path):
    await hub.start_runner(tmp_path)
    pid = await api.project()
    scripts = tmp_path / "scripts"
    write_script(scripts, "ok.sh", "echo done\n")
    write_script(scripts, "slow.sh", "echo started\nsleep 60\n")
    template = await api.template(pid, scripts, "ok.sh")
    slow = await api.template(pid, scripts, "slow.sh")
    base = f"/api/project/{pid}"

    task = await api.run(pid, template)
    [queued] = (await _events(api, f"{base}/events"))[:1]
    assert queued == queued | {
        "object_type": "task", "object_id": task, "object_name": "t-ok.sh",
        "description": f"Task ID {task} queued for running", "username": "admin",
        "user_id": 1, "project_id": pid}
    await api.wait_status(pid, task)

    long = await api.run(pid, slow)
    await api.wait_status(pid, long, {"running"})
    await api.ok("POST", f"{base}/tasks/{long}/stop", status=204)
    await api.wait_status(pid, long)
    await api.ok("POST", f"{base}/tasks/{long}/stop", status=204)  # ended: no change
    await api.ok("DELETE", f"{base}/tasks/{task}", status=204)
    status, _ = await api.request("POST", f"{base}/tasks/{long}/confirm")
    assert status == 400
    assert [row["description"] for row in (await _events(api, f"{base}/events"))[:4]] == [
        f"Task ID {task} deleted", f"Task ID {long} stopped",
        f"Task ID {long} queued for running", f"Task ID {task} queued for running"]

    # A schedule's task: no user, the schedule named.
    t = _next_minute() + timedelta(minutes=5)
    await api.ok("POST", f"{base}/schedules", {"name": "nightly", "template_id": template,
                                               "type": "run_at",
                                               "run_at": t.strftime("%Y-%m-%dT%H:%M:%SZ")},
                 201)
    await _manual_clock(hub, t)
    [scheduled] = await hub.hub.scheduler.tick()
    [row] = (await _events(api, f"{base}/events"))[:1]
    assert row == row | {
        "object_type": "task", "object_id": scheduled, "object_name": "t-ok.sh",
        "description": f"Task ID {scheduled} queued for running by schedule nightly",
        "user_id": None, "username": None, "project_id": pid}
    await api.wait_status(pid, scheduled)
