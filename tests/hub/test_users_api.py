"""Users and project members through the REST API, with Semaphore's roles."""

import pytest

from tests.hubkit import start_hub, write_script


async def make_user(api, username: str, admin: bool = False) -> int:
    created = await api.ok("POST", "/api/users", {
        "name": username.title(), "username": username, "email": f"{username}@example.com",
        "password": f"{username}-password", "admin": admin}, 201)
    assert "password" not in created and created["admin"] is admin
    return created["id"]


async def logged_in(hub, username: str):
    client = await hub.api(login=False)
    await client.login(username, f"{username}-password")
    return client


async def test_admin_creates_users_who_manage_only_themselves(hub, api):
    alice = await make_user(api, "alice")
    client = await logged_in(hub, "alice")
    assert (await client.ok("GET", "/api/user"))["id"] == alice
    assert len(await client.ok("GET", "/api/users")) == 2
    status, body = await client.request("POST", "/api/users", {
        "name": "M", "username": "mallory", "email": "m@example.com", "password": "12345678"})
    assert status == 403 and "admin" in body["error"]
    await client.ok("PUT", f"/api/users/{alice}", {"name": "Alice A", "username": "alice",
                                                   "email": "alice@example.com"}, 204)
    status, _ = await client.request("PUT", f"/api/users/{alice}", {
        "name": "A", "username": "alice", "email": "alice@example.com", "admin": True})
    assert status == 403
    assert (await client.request("GET", "/api/users/1"))[0] == 403
    await client.ok("POST", f"/api/users/{alice}/password", {"password": "new-password-1"}, 204)
    fresh = await hub.api(login=False)
    status, _ = await fresh.request("POST", "/api/auth/login",
                                    {"auth": "alice", "password": "alice-password"})
    assert status == 401
    await fresh.login("alice", "new-password-1")


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x", "username": "x", "email": "x@e.com", "password": "short"}, "password"),
    ({"name": "x", "username": "x", "email": "x@e.com"}, "password"),
    ({"name": "x", "username": "admin", "email": "new@e.com", "password": "long-enough"},
     "username"),
])
async def test_bad_user_bodies_name_the_field(api, body, field):
    status, answer = await api.request("POST", "/api/users", body)
    assert status == 400 and field in answer["error"], answer


async def test_admin_deletes_users_but_not_itself(hub, api):
    bob = await make_user(api, "bob")
    assert (await api.request("DELETE", "/api/users/1"))[0] == 400
    await api.ok("DELETE", f"/api/users/{bob}", status=204)
    assert (await api.request("GET", f"/api/users/{bob}"))[0] == 404


async def test_members_get_what_their_role_allows(hub, api, tmp_path):
    runner_id, guest_id = await make_user(api, "runner"), await make_user(api, "guest")
    scripts = tmp_path / "s"
    write_script(scripts, "t.sh", "echo ran\n")
    await hub.start_runner(tmp_path)
    pid = await api.project()
    template = await api.template(pid, scripts, "t.sh")
    await api.ok("POST", f"/api/project/{pid}/users",
                 {"user_id": runner_id, "role": "task_runner"}, 204)
    await api.ok("POST", f"/api/project/{pid}/users", {"user_id": guest_id, "role": "guest"},
                 204)
    members = await api.ok("GET", f"/api/project/{pid}/users")
    assert [(m["username"], m["role"]) for m in members] == [
        ("admin", "owner"), ("runner", "task_runner"), ("guest", "guest")]

    runner = await logged_in(hub, "runner")
    task_id = await runner.run(pid, template)
    assert (await runner.wait_status(pid, task_id))["status"] == "success"
    status, _ = await runner.request("POST", f"/api/project/{pid}/templates",
                                     {"name": "t", "app": "bash"})
    assert status == 403
    guest = await logged_in(hub, "guest")
    status, body = await guest.request("POST", f"/api/project/{pid}/tasks",
                                       {"template_id": template})
    assert status == 403 and "task_runner" in body["error"]
    assert await guest.raw_output(pid, task_id) == "ran\n"
    # Only owners manage members.
    status, _ = await runner.request("POST", f"/api/project/{pid}/users",
                                     {"user_id": guest_id, "role": "owner"})
    assert status == 403
    await api.ok("PUT", f"/api/project/{pid}/users/{guest_id}", {"role": "manager"}, 204)
    await guest.ok("POST", f"/api/project/{pid}/templates",
                   {"name": "by-guest-now-manager", "app": "bash"}, 201)
    await api.ok("DELETE", f"/api/project/{pid}/users/{guest_id}", status=204)
    assert (await guest.request("GET", f"/api/project/{pid}"))[0] == 404


async def test_only_admins_create_or_restore_projects_unless_the_hub_allows_all(hub, api,
                                                                                tmp_path):
    """Semaphore's non_admin_can_create_project: off, a user who is not an admin cannot make
    themselves the owner of a new project, by creating it or by restoring a backup."""
    await make_user(api, "bob")
    bob = await logged_in(hub, "bob")
    assert (await bob.ok("GET", "/api/user"))["can_create_project"] is False
    assert (await api.ok("GET", "/api/user"))["can_create_project"] is True
    before = await api.ok("GET", "/api/projects")
    status, body = await bob.request("POST", "/api/projects", {"name": "mine"})
    assert status == 401 and "non_admin_can_create_project" in body["error"]
    project = await api.ok("POST", "/api/projects", {"name": "theirs"}, 201)
    backup = await api.ok("GET", f"/api/project/{project['id']}/backup")
    status, body = await bob.request("POST", "/api/projects/restore", backup)
    assert status == 401 and "non_admin_can_create_project" in body["error"]
    assert len(await api.ok("GET", "/api/projects")) == len(before) + 1

    # The same request on a hub that lets everyone create projects.
    (tmp_path / "open").mkdir()
    open_hub = await start_hub(tmp_path / "open", non_admin_can_create_project=True)
    try:
        admin = await open_hub.api()
        await make_user(admin, "bob")
        bob = await logged_in(open_hub, "bob")
        assert (await bob.ok("GET", "/api/user"))["can_create_project"] is True
        mine = await bob.ok("POST", "/api/projects", {"name": "mine"}, 201)
        restored = await bob.ok("POST", "/api/projects/restore",
                                {**backup, "meta": {**backup["meta"], "name": "copy"}})
        assert {p["id"] for p in await bob.ok("GET", "/api/projects")} == {
            mine["id"], restored["id"]}
        members = await bob.ok("GET", f"/api/project/{restored['id']}/users")
        assert [(m["username"], m["role"]) for m in members] == [("bob", "owner")]
    finally:
        await open_hub.close()
