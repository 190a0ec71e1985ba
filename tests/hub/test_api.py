"""The REST API through a real hub on loopback: auth, projects, resources, tasks, errors."""

import json

import pytest

from tests.hubkit import write_script


async def test_ping_is_public_and_everything_else_needs_auth(hub):
    anonymous = await hub.api(login=False)
    assert await anonymous.request("GET", "/api/ping") == (200, "pong")
    for path in ("/api/info", "/api/projects", "/api/user", "/api/runners"):
        status, body = await anonymous.request("GET", path)
        assert status == 401, path
        assert "authentication required" in body["error"]


async def test_login_wrong_password_and_logout(hub):
    client = await hub.api(login=False)
    status, body = await client.request("POST", "/api/auth/login",
                                        {"auth": "admin", "password": "nope"})
    assert status == 401 and body["error"] == "wrong login or password"
    await client.login()
    cookie = next(c for c in client.session.cookie_jar if c.key == "semaphore")
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    user = await client.ok("GET", "/api/user")
    assert user["username"] == "admin" and user["admin"] is True
    assert "password" not in user
    await client.ok("POST", "/api/auth/logout", status=204)
    assert (await client.request("GET", "/api/user"))[0] == 401


async def test_logout_without_credentials_clears_the_cookie(hub):
    """As in Semaphore: logout needs no session; it ends the one the cookie names, if any."""
    anonymous = await hub.api(login=False)
    assert (await anonymous.request("POST", "/api/auth/logout"))[0] == 204
    client = await hub.api(login=False)
    await client.login()
    await client.ok("POST", "/api/auth/logout", status=204)
    # A second logout with the session gone (and its cookie cleared) still answers 204.
    assert (await client.request("POST", "/api/auth/logout"))[0] == 204
    assert (await client.request("GET", "/api/user"))[0] == 401


async def test_login_with_email_and_info(api, hub):
    other = await hub.api(login=False)
    await other.ok("POST", "/api/auth/login",
                   {"auth": "admin@example.com", "password": "admin-password-1"}, 204)
    info = await other.ok("GET", "/api/info")
    assert info["use_remote_runner"] is True and "version" in info


async def test_api_tokens_authenticate_and_expire(hub, api):
    created = await api.ok("POST", "/api/user/tokens", status=201)
    token = created["id"]
    assert len(token) >= 40 and created["expired"] is False
    bearer = await hub.api(login=False)
    headers = {"Authorization": f"Bearer {token}"}
    status, user = await bearer.request("GET", "/api/user", headers=headers)
    assert status == 200 and user["username"] == "admin"
    listed = await api.ok("GET", "/api/user/tokens")
    assert [t["id"] for t in listed] == [token[:8]]  # never the whole token again
    await api.ok("DELETE", f"/api/user/tokens/{token[:8]}", status=204)
    assert (await bearer.request("GET", "/api/user", headers=headers))[0] == 401
    assert (await bearer.request("GET", "/api/user", headers={
        "Authorization": "Bearer not-a-token"}))[0] == 401


async def test_trailing_slash_paths_as_semaphore_clients_use(api):
    project = await api.project()
    assert (await api.ok("GET", f"/api/project/{project}/"))["id"] == project
    assert (await api.ok("GET", "/api/user/"))["username"] == "admin"


async def test_project_crud(api):
    created = await api.ok("POST", "/api/projects", {"name": "Alpha", "max_parallel_tasks": 2},
                           201)
    pid = created["id"]
    assert created["name"] == "Alpha" and created["max_parallel_tasks"] == 2
    await api.ok("PUT", f"/api/project/{pid}", {"name": "Beta"}, 204)
    assert (await api.ok("GET", f"/api/project/{pid}"))["name"] == "Beta"
    assert [p["name"] for p in await api.ok("GET", "/api/projects")] == ["Beta"]
    await api.ok("DELETE", f"/api/project/{pid}", status=204)
    status, body = await api.request("GET", f"/api/project/{pid}")
    assert status == 404 and "not found" in body["error"]


@pytest.mark.parametrize(("body", "field"), [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": 5}, "name"),
    ({"name": "x", "max_parallel_tasks": "two"}, "max_parallel_tasks"),
    ({"name": "x", "max_parallel_tasks": -1}, "max_parallel_tasks"),
])
async def test_bad_project_body_is_400_naming_the_field(api, body, field):
    status, answer = await api.request("POST", "/api/projects", body)
    assert status == 400
    assert field in answer["error"]


async def test_non_json_body_is_400(api):
    status, answer = await api.request("POST", "/api/projects", raw=b"{nope")
    assert status == 400 and "not valid JSON" in answer["error"]
    status, answer = await api.request("POST", "/api/projects", raw=b"")
    assert status == 400


async def test_keys_repositories_inventory_environment_templates(api):
    pid = await api.project()
    base = f"/api/project/{pid}"
    key = await api.ok("POST", f"{base}/keys", {
        "name": "deploy", "type": "login_password",
        "login_password": {"login": "u", "password": "s3cret"}}, 201)
    assert key == {"id": key["id"], "name": "deploy", "type": "login_password",
                   "project_id": pid}
    keys = await api.ok("GET", f"{base}/keys")
    assert "s3cret" not in json.dumps(keys)
    repo = await api.ok("POST", f"{base}/repositories", {
        "name": "r", "git_url": "https://example.com/x.git", "git_branch": "main",
        "ssh_key_id": key["id"]}, 201)
    assert repo["git_branch"] == "main" and repo["ssh_key_id"] == key["id"]
    inventory = await api.ok("POST", f"{base}/inventory", {
        "name": "i", "type": "static", "inventory": "[all]\nlocalhost"}, 201)
    env = await api.ok("POST", f"{base}/environment", {"name": "e", "env": '{"A": "1"}'}, 201)
    template = await api.ok("POST", f"{base}/templates", {
        "name": "t", "app": "bash", "playbook": "x.sh", "repository_id": repo["id"],
        "inventory_id": inventory["id"], "environment_id": env["id"]}, 201)
    assert template["arguments"] == "[]" and template["app"] == "bash"
    await api.ok("PUT", f"{base}/templates/{template['id']}", {
        "name": "t2", "app": "python", "playbook": "y.py", "repository_id": repo["id"]}, 204)
    got = await api.ok("GET", f"{base}/templates/{template['id']}")
    assert (got["name"], got["app"], got["environment_id"]) == ("t2", "python", None)
    await api.ok("DELETE", f"{base}/inventory/{inventory['id']}", status=204)
    assert (await api.request("GET", f"{base}/inventory/{inventory['id']}"))[0] == 404


async def test_references_must_exist_in_the_same_project(api):
    first, second = await api.project("one"), await api.project("two")
    repo = await api.ok("POST", f"/api/project/{first}/repositories",
                        {"name": "r", "git_url": "/tmp"}, 201)
    status, body = await api.request("POST", f"/api/project/{second}/templates", {
        "name": "t", "app": "bash", "playbook": "x.sh", "repository_id": repo["id"]})
    assert status == 400 and "repository_id" in body["error"]
    # Rows of another project are not visible through this one.
    assert (await api.request("GET",
                              f"/api/project/{second}/repositories/{repo['id']}"))[0] == 404


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "t", "app": "cobol"}, "app"),
    ({"name": "t", "app": "bash", "arguments": "not json"}, "arguments"),
    ({"name": "t", "app": "bash", "arguments": "[1, 2]"}, "arguments"),
    ({"name": "t", "app": "bash", "repository_id": "one"}, "repository_id"),
])
async def test_bad_template_is_400_naming_the_field(api, body, field):
    pid = await api.project()
    status, answer = await api.request("POST", f"/api/project/{pid}/templates", body)
    assert status == 400 and field in answer["error"], answer


async def test_bad_task_requests(api):
    pid = await api.project()
    template = await api.template(pid, None, "x.sh")
    for body, field in (({}, "template_id"), ({"template_id": "x"}, "template_id"),
                        ({"template_id": 999}, "template_id"),
                        ({"template_id": template, "arguments": '["-v"]'}, "arguments"),
                        ({"template_id": template, "environment": "[]"}, "environment")):
        status, answer = await api.request("POST", f"/api/project/{pid}/tasks", body)
        assert status == 400 and field in answer["error"], (body, answer)


async def test_task_listing_output_and_delete(hub, api, tmp_path):
    scripts = tmp_path / "s"
    write_script(scripts, "two.sh", "echo one\necho two\n")
    await hub.start_runner(tmp_path)
    pid = await api.project()
    template = await api.template(pid, scripts, "two.sh")
    task_id = await api.run(pid, template, message="first run")
    task = await api.wait_status(pid, task_id)
    assert task["status"] == "success" and task["message"] == "first run"
    assert task["start"] and task["end"] and task["runner_id"] is not None
    lines = await api.ok("GET", f"/api/project/{pid}/tasks/{task_id}/output")
    assert [line["output"] for line in lines] == ["one", "two"]
    assert all(line["task_id"] == task_id and line["time"].endswith("Z") for line in lines)
    listed = await api.ok("GET", f"/api/project/{pid}/tasks")
    assert [t["id"] for t in listed] == [task_id]
    assert [t["id"] for t in await api.ok("GET", f"/api/project/{pid}/tasks/last")] == [task_id]
    await api.ok("DELETE", f"/api/project/{pid}/tasks/{task_id}", status=204)
    assert (await api.request("GET", f"/api/project/{pid}/tasks/{task_id}"))[0] == 404


async def test_project_roles_limit_what_members_do(hub, api):
    guest = await api.ok("POST", "/api/users", {"name": "Guest", "username": "guest",
                                                "email": "g@example.com",
                                                "password": "guest-pw-1"}, 201)
    pid = await api.project()
    await api.ok("POST", f"/api/project/{pid}/users", {"user_id": guest["id"], "role": "guest"},
                 204)
    client = await hub.api(login=False)
    await client.login("guest", "guest-pw-1")
    assert (await client.ok("GET", f"/api/project/{pid}"))["id"] == pid
    status, body = await client.request("POST", f"/api/project/{pid}/templates",
                                        {"name": "t", "app": "bash"})
    assert status == 403 and "guest" in body["error"]
    other = await api.project("hidden")
    assert (await client.request("GET", f"/api/project/{other}"))[0] == 404
    assert (await client.request("GET", "/api/runners"))[0] == 403


async def test_lists_sort_by_semaphores_columns_and_refuse_others(api):
    pid = await api.project()
    base = f"/api/project/{pid}"
    for name, kind in (("b", "ssh"), ("c", "none"), ("a", "login_password")):
        body: dict = {"name": name, "type": kind}
        if kind == "ssh":
            body["ssh"] = {"private_key": "x"}
        if kind == "login_password":
            body["login_password"] = {"login": "u", "password": "p"}
        await api.ok("POST", f"{base}/keys", body, 201)
    by = [k["name"] for k in await api.ok("GET", f"{base}/keys?sort=name&order=asc")]
    assert by == ["a", "b", "c"]
    by = [k["name"] for k in await api.ok("GET", f"{base}/keys?sort=name&order=desc")]
    assert by == ["c", "b", "a"]
    by = [k["type"] for k in await api.ok("GET", f"{base}/keys?sort=type")]
    assert by == sorted(by) and len(by) == 3
    assert [k["name"] for k in await api.ok("GET", f"{base}/keys")] == ["b", "c", "a"]

    inventories = {}
    for name in ("zeta", "alpha"):
        inventories[name] = (await api.ok("POST", f"{base}/inventory",
                                          {"name": name, "type": "static"}, 201))["id"]
    for name, playbook, inventory in (("t1", "b.yml", "alpha"), ("t2", "a.yml", "zeta")):
        await api.ok("POST", f"{base}/templates",
                     {"name": name, "app": "bash", "playbook": playbook,
                      "inventory_id": inventories[inventory]}, 201)
    playbooks = [t["playbook"] for t in await api.ok("GET", f"{base}/templates?sort=playbook")]
    assert playbooks == ["a.yml", "b.yml"]
    # A reference sorts by the name of the row it points to.
    names = [t["name"] for t in await api.ok(
        "GET", f"{base}/templates?sort=inventory&order=desc")]
    assert names == ["t2", "t1"]

    status, body = await api.request("GET", f"{base}/keys?sort=secret")
    assert status == 400 and "`sort`" in body["error"] and "name, type" in body["error"]
    status, body = await api.request("GET", f"{base}/templates?sort=name&order=up")
    assert status == 400 and "`order`" in body["error"]
    status, body = await api.request("GET", f"{base}/tasks?sort=name")
    assert status == 400 and "`sort`" in body["error"]


async def test_tasks_sort_by_created_newest_first_unless_asked(api):
    pid = await api.project()
    template = await api.template(pid, None, "x.sh", runner_tag="none")
    ids = [await api.run(pid, template) for _ in range(3)]
    base = f"/api/project/{pid}/tasks"
    assert [t["id"] for t in await api.ok("GET", base)] == ids[::-1]
    assert [t["id"] for t in await api.ok("GET", f"{base}?sort=created")] == ids[::-1]
    assert [t["id"] for t in await api.ok("GET", f"{base}?sort=created&order=asc")] == ids
    assert [t["id"] for t in await api.ok("GET", f"{base}/last?order=asc")] == ids
