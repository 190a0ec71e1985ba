"""Semaphore's views (groups of templates) through a real hub: CRUD, order, templates'
view_id, roles, other projects."""

from tests.hub.test_users_api import logged_in, make_user


async def test_views_crud_positions_and_templates_view_id(api):
    pid = await api.project()
    base = f"/api/project/{pid}"
    build = await api.ok("POST", f"{base}/views", {"title": "Build", "position": 2}, 201)
    deploy = await api.ok("POST", f"{base}/views", {"title": "Deploy", "position": 1,
                                                    "project_id": pid}, 201)
    assert build == {"id": build["id"], "project_id": pid, "title": "Build", "position": 2}
    # Listed by position, as Semaphore's tabs are.
    assert [v["title"] for v in await api.ok("GET", f"{base}/views")] == ["Deploy", "Build"]
    assert [v["title"] for v in await api.ok(
        "GET", f"{base}/views?sort=title&order=desc")] == ["Deploy", "Build"]
    await api.ok("POST", f"{base}/views/positions",
                 {str(build["id"]): 0, str(deploy["id"]): 5}, 204)
    assert [v["title"] for v in await api.ok("GET", f"{base}/views")] == ["Build", "Deploy"]
    await api.ok("PUT", f"{base}/views/{build['id']}", {"title": "Builds", "position": 0}, 204)
    assert (await api.ok("GET", f"{base}/views/{build['id']}"))["title"] == "Builds"

    template = await api.ok("POST", f"{base}/templates",
                            {"name": "t", "app": "bash", "view_id": build["id"]}, 201)
    assert template["view_id"] == build["id"]
    other = await api.ok("POST", f"{base}/templates", {"name": "u", "app": "bash"}, 201)
    assert other["view_id"] is None
    shown = await api.ok("GET", f"{base}/views/{build['id']}/templates")
    assert [t["id"] for t in shown] == [template["id"]]
    assert await api.ok("GET", f"{base}/views/{deploy['id']}/templates") == []

    # Deleting a view leaves its templates in none.
    await api.ok("DELETE", f"{base}/views/{build['id']}", status=204)
    assert (await api.ok("GET", f"{base}/templates/{template['id']}"))["view_id"] is None
    assert (await api.request("GET", f"{base}/views/{build['id']}"))[0] == 404


async def test_views_bad_input_other_projects_and_roles(hub, api):
    pid, foreign = await api.project("P"), await api.project("Q")
    base = f"/api/project/{pid}"
    theirs = await api.ok("POST", f"/api/project/{foreign}/views", {"title": "Q"}, 201)
    status, body = await api.request("POST", f"{base}/views", {"position": 1})
    assert status == 400 and "title" in body["error"]
    status, body = await api.request("POST", f"{base}/views", {"title": "x", "position": -1})
    assert status == 400 and "position" in body["error"]
    status, body = await api.request("POST", f"{base}/templates",
                                     {"name": "t", "app": "bash", "view_id": theirs["id"]})
    assert status == 400 and "`view_id`" in body["error"]
    assert (await api.request("GET", f"{base}/views/{theirs['id']}"))[0] == 404
    assert (await api.request("DELETE", f"{base}/views/{theirs['id']}"))[0] == 404
    assert (await api.request("GET", f"{base}/views/{theirs['id']}/templates"))[0] == 404
    status, body = await api.request("POST", f"{base}/views/positions", {str(theirs["id"]): 1})
    assert status == 400 and f"`{theirs['id']}`" in body["error"]
    assert (await api.ok("GET", f"/api/project/{foreign}/views/{theirs['id']}"))[
        "position"] == 0  # nothing changed
    status, body = await api.request("POST", f"{base}/views/positions", {"x": "first"})
    assert status == 400
    status, body = await api.request("GET", f"{base}/views?sort=secret")
    assert status == 400 and "`sort`" in body["error"]

    mine = await api.ok("POST", f"{base}/views", {"title": "Mine"}, 201)
    for name, role in (("guest", "guest"), ("runner", "task_runner")):
        user_id = await make_user(api, name)
        await api.ok("POST", f"{base}/users", {"user_id": user_id, "role": role}, 204)
        member = await logged_in(hub, name)
        assert [v["id"] for v in await member.ok("GET", f"{base}/views")] == [mine["id"]]
        status, body = await member.request("POST", f"{base}/views", {"title": "no"})
        assert status == 403 and "manager" in body["error"]
        assert (await member.request("PUT", f"{base}/views/{mine['id']}",
                                     {"title": "no"}))[0] == 403
        assert (await member.request("DELETE", f"{base}/views/{mine['id']}"))[0] == 403
        assert (await member.request("POST", f"{base}/views/positions",
                                     {str(mine["id"]): 3}))[0] == 403
