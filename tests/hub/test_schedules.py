"""Schedules through the REST API of a real hub, and its scheduler on a clock the test sets
(the hub's own loop is stopped; each round is a `tick`), across a real hub restart."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from hub.config import load_config
from hub.core.schedules import latest_due, next_run
from tests.faults import ROOT, free_port
from tests.hub.test_users_api import logged_in, make_user
from tests.hubkit import start_hub, write_script


async def _template(api, tmp_path, project_id: int) -> int:
    scripts = tmp_path / "scripts"
    write_script(scripts, "ok.sh", "echo scheduled run\n")
    return await api.template(project_id, scripts, "ok.sh")


def _next_minute() -> datetime:
    """A minute boundary after every schedule the test creates now (their last_fire)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now + timedelta(minutes=1)


async def _manual_clock(running, start: datetime) -> list[datetime]:
    """Stop the hub's own scheduler loop; its rounds then run at the test's `clock[0]`."""
    scheduler = running.hub.scheduler
    await scheduler.stop()
    clock = [start]
    scheduler.now = lambda: clock[0]
    return clock


async def _scheduled_tasks(api, project_id: int, schedule_id: int) -> list[dict]:
    tasks = await api.ok("GET", f"/api/project/{project_id}/tasks")
    return [task for task in tasks if task["schedule_id"] == schedule_id]


async def test_crud_and_validation(hub, api, tmp_path):
    project = await api.project()
    template = await _template(api, tmp_path, project)
    base = f"/api/project/{project}/schedules"
    created = await api.ok("POST", base, {"name": "nightly", "template_id": template,
                                          "cron_format": "0 3 * * *"}, 201)
    assert created["active"] is True and created["cron_format"] == "0 3 * * *"
    path = f"{base}/{created['id']}"
    assert (await api.ok("GET", path))["name"] == "nightly"
    await api.ok("PUT", path, {"name": "hourly", "template_id": template,
                               "cron_format": "0 * * * *", "active": False}, 204)
    got = await api.ok("GET", path)
    assert got["name"] == "hourly" and got["active"] is False
    assert [row["id"] for row in await api.ok("GET", base)] == [created["id"]]
    templates = f"/api/project/{project}/templates"
    assert [row["id"] for row in await api.ok("GET", f"{templates}/{template}/schedules")] == [
        created["id"]]
    assert (await api.request("GET", f"{templates}/999/schedules"))[0] == 404
    daily = await api.ok("POST", base, {"name": "d", "template_id": template,
                                        "cron_format": "@daily"}, 201)
    await api.ok("DELETE", f"{base}/{daily['id']}", status=204)
    once = await api.ok("POST", base, {"name": "once", "template_id": template,
                                       "run_at": "2030-01-02T03:04:05+01:00"}, 201)
    assert once["run_at"] == "2030-01-02T02:04:05Z" and once["cron_format"] == ""

    for body, field in [
        ({"name": "x", "template_id": template, "cron_format": "61 * * * *"}, "cron_format"),
        ({"name": "x", "template_id": template, "cron_format": "every day"}, "cron_format"),
        ({"name": "x", "template_id": template, "cron_format": "* * * * * *"}, "cron_format"),
        ({"name": "x", "template_id": template, "cron_format": "@reboot"}, "cron_format"),
        ({"name": "x", "template_id": template}, "cron_format"),
        ({"name": "x", "cron_format": "* * * * *"}, "template_id"),
        ({"name": "x", "template_id": "1", "cron_format": "* * * * *"}, "template_id"),
        ({"name": "x", "template_id": 999, "cron_format": "* * * * *"}, "template_id"),
        ({"template_id": template, "cron_format": "* * * * *"}, "name"),
        ({"name": "x", "template_id": template, "cron_format": "* * * * *",
          "active": "yes"}, "active"),
        ({"name": "x", "template_id": template, "run_at": "tomorrow"}, "run_at"),
    ]:
        status, answer = await api.request("POST", base, body)
        assert status == 400 and f"`{field}`" in answer["error"], (body, answer)
    status, answer = await api.request("PUT", path, {"name": "x", "template_id": template,
                                                     "cron_format": "* * * 13 *"})
    assert status == 400 and "`cron_format`" in answer["error"]

    # Another project's schedule and template are not found from this one.
    other = await api.project("other")
    other_template = await _template(api, tmp_path / "o", other)
    for method in ("GET", "DELETE"):
        assert (await api.request(method, f"/api/project/{other}/schedules/"
                                          f"{created['id']}"))[0] == 404
    status, answer = await api.request("POST", f"/api/project/{other}/schedules",
                                       {"name": "x", "template_id": template,
                                        "cron_format": "* * * * *"})
    assert status == 400 and "`template_id`" in answer["error"]
    assert other_template
    await api.ok("DELETE", path, status=204)
    assert (await api.request("GET", path))[0] == 404


@pytest.mark.parametrize("role, read, edit, delete", [
    ("guest", True, False, False), ("task_runner", True, False, False),
    ("manager", True, True, False), ("owner", True, True, True)])
async def test_roles(hub, api, tmp_path, role, read, edit, delete):
    project = await api.project()
    template = await _template(api, tmp_path, project)
    base = f"/api/project/{project}/schedules"
    body = {"name": "s", "template_id": template, "cron_format": "0 3 * * *"}
    schedule = await api.ok("POST", base, body, 201)
    user = await make_user(api, f"u{role.replace('_', '')}")
    await api.ok("POST", f"/api/project/{project}/users", {"user_id": user, "role": role}, 204)
    member = await logged_in(hub, f"u{role.replace('_', '')}")
    path = f"{base}/{schedule['id']}"
    assert ((await member.request("GET", path))[0] == 200) is read
    assert ((await member.request("GET", base))[0] == 200) is read
    assert ((await member.request("POST", base, body))[0] == 201) is edit
    assert ((await member.request("PUT", path, body))[0] == 204) is edit
    assert ((await member.request("DELETE", path))[0] == 204) is delete
    stranger = await make_user(api, "stranger")
    assert stranger and (await (await logged_in(hub, "stranger")).request("GET", path))[0] == 404


async def test_fires_at_due_minutes_once_and_once_after_a_jump(hub, api, tmp_path):
    project = await api.project()
    template = await _template(api, tmp_path, project)
    schedule = await api.ok("POST", f"/api/project/{project}/schedules",
                            {"name": "every-minute", "template_id": template,
                             "cron_format": "* * * * *"}, 201)
    t = _next_minute()
    clock = await _manual_clock(hub, t - timedelta(seconds=30))
    tick = hub.hub.scheduler.tick
    assert await tick() == []
    clock[0] = t
    first = await tick()
    assert len(first) == 1
    assert await tick() == []  # the same minute again: nothing
    clock[0] = t + timedelta(seconds=59)
    assert await tick() == []
    clock[0] = t + timedelta(minutes=1, seconds=5)
    assert len(await tick()) == 1
    # The clock jumps ten minutes ahead: one task, not ten.
    clock[0] = t + timedelta(minutes=11)
    assert len(await tick()) == 1
    # ...and back five: nothing until it passes the last fire again.
    clock[0] = t + timedelta(minutes=6)
    assert await tick() == []
    clock[0] = t + timedelta(minutes=11, seconds=30)
    assert await tick() == []
    clock[0] = t + timedelta(minutes=12)
    assert len(await tick()) == 1
    tasks = await _scheduled_tasks(api, project, schedule["id"])
    assert len(tasks) == 4
    assert all(task["message"] == "scheduled: every-minute" and task["user_id"] is None
               for task in tasks)
    got = await api.ok("GET", f"/api/project/{project}/schedules/{schedule['id']}")
    assert got["last_fire"] == (t + timedelta(minutes=12)).strftime("%Y-%m-%dT%H:%M:%SZ")

    # Inactive: no fire; switched on again, the minutes it was off are not run.
    body = {"name": "every-minute", "template_id": template, "cron_format": "* * * * *"}
    await api.ok("PUT", f"/api/project/{project}/schedules/{schedule['id']}",
                 {**body, "active": False}, 204)
    clock[0] = t + timedelta(minutes=20)
    assert await tick() == []


@pytest.mark.parametrize("delete_after_run", [False, True])
async def test_run_at_fires_once(hub, api, tmp_path, delete_after_run):
    await hub.start_runner(tmp_path)
    project = await api.project()
    template = await _template(api, tmp_path, project)
    t = _next_minute() + timedelta(minutes=5)
    schedule = await api.ok("POST", f"/api/project/{project}/schedules",
                            {"name": "once", "template_id": template, "type": "run_at",
                             "cron_format": "* * * * *", "delete_after_run": delete_after_run,
                             "run_at": t.strftime("%Y-%m-%dT%H:%M:%SZ")}, 201)
    assert schedule["type"] == "run_at" and schedule["cron_format"] == ""
    clock = await _manual_clock(hub, t - timedelta(seconds=1))
    assert await hub.hub.scheduler.tick() == []
    clock[0] = t
    assert len(await hub.hub.scheduler.tick()) == 1
    clock[0] = t + timedelta(days=1)
    assert await hub.hub.scheduler.tick() == []
    tasks = await _scheduled_tasks(api, project, None if delete_after_run else schedule["id"])
    assert [task["message"] for task in tasks] == ["scheduled: once"]
    # It runs as any task does, on a real runner connection.
    assert (await api.wait_status(project, tasks[0]["id"]))["status"] == "success"
    assert "scheduled run" in await api.raw_output(project, tasks[0]["id"])
    status, got = await api.request("GET", f"/api/project/{project}/schedules/{schedule['id']}")
    if delete_after_run:
        assert status == 404
    else:
        assert status == 200 and got["active"] is False


async def test_set_active_and_validate(hub, api, tmp_path):
    project = await api.project()
    template = await _template(api, tmp_path, project)
    base = f"/api/project/{project}/schedules"
    schedule = await api.ok("POST", base, {"name": "s", "template_id": template,
                                           "cron_format": "* * * * *"}, 201)
    t = _next_minute()
    clock = await _manual_clock(hub, t)
    await api.ok("PUT", f"{base}/{schedule['id']}/active", {"active": False}, 204)
    assert (await api.ok("GET", f"{base}/{schedule['id']}"))["active"] is False
    assert await hub.hub.scheduler.tick() == []
    status, answer = await api.request("PUT", f"{base}/{schedule['id']}/active", {})
    assert status == 400 and "`active`" in answer["error"]
    assert (await api.request("PUT", f"{base}/999/active", {"active": True}))[0] == 404
    await api.ok("PUT", f"{base}/{schedule['id']}/active", {"active": True}, 204)
    clock[0] = t + timedelta(minutes=1)
    assert len(await hub.hub.scheduler.tick()) == 1

    await api.ok("POST", f"{base}/validate", {"cron_format": "*/15 9-17 * * 1-5"})
    status, answer = await api.request("POST", f"{base}/validate", {"cron_format": "* * *"})
    assert status == 400 and "`cron_format`" in answer["error"]


async def test_restart_neither_duplicates_nor_loses_a_fire(tmp_path):
    first = await start_hub(tmp_path)
    try:
        api = await first.api()
        project = await api.project()
        template = await _template(api, tmp_path, project)
        schedule = await api.ok("POST", f"/api/project/{project}/schedules",
                                {"name": "hourly", "template_id": template,
                                 "cron_format": "*/5 * * * *"}, 201)
        t = _next_minute()
        t += timedelta(minutes=(5 - t.minute % 5) % 5)
        await _manual_clock(first, t)
        assert len(await first.hub.scheduler.tick()) == 1
        # The hub stops just after creating the task, before last_fire was written.
        await first.hub.store.set_schedule_fire(schedule["id"], schedule["last_fire"])
    finally:
        await first.close()

    second = await start_hub(tmp_path)
    try:
        clock = await _manual_clock(second, t + timedelta(seconds=20))
        assert await second.hub.scheduler.tick() == []  # that fire's task exists already
    finally:
        await second.close()

    # Down for half an hour: the missed fires run once at start, not six times.
    third = await start_hub(tmp_path)
    try:
        clock = await _manual_clock(third, t + timedelta(minutes=31))
        assert len(await third.hub.scheduler.tick()) == 1
        assert await third.hub.scheduler.tick() == []
        clock[0] = t + timedelta(minutes=35)
        assert len(await third.hub.scheduler.tick()) == 1
        api = await third.api()
        tasks = await _scheduled_tasks(api, project, schedule["id"])
        assert len(tasks) == 3
    finally:
        await third.close()


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_cron_is_read_in_the_configured_timezone(tmp_path):
    # Kiritimati is UTC+14 all year: "0 3 * * *" there is 13:00 UTC the day before.
    running = await start_hub(tmp_path, schedule={"timezone": "Pacific/Kiritimati"})
    try:
        api = await running.api()
        assert (await api.ok("GET", "/api/info"))["schedule_timezone"] == "Pacific/Kiritimati"
        project = await api.project()
        template = await _template(api, tmp_path, project)
        schedule = await api.ok("POST", f"/api/project/{project}/schedules",
                                {"name": "three", "template_id": template,
                                 "cron_format": "0 3 * * *"}, 201)
        now = datetime.now(UTC).replace(microsecond=0)
        due = now.replace(hour=13, minute=0, second=0)
        if due <= now:
            due += timedelta(days=1)
        assert schedule["next_run"] == _stamp(due)
        clock = await _manual_clock(running, due - timedelta(seconds=1))
        assert await running.hub.scheduler.tick() == []
        clock[0] = due
        assert len(await running.hub.scheduler.tick()) == 1
        got = await api.ok("GET", f"/api/project/{project}/schedules/{schedule['id']}")
        assert got["last_fire"] == _stamp(due)  # stored in UTC
        assert got["next_run"] == _stamp(due + timedelta(days=1))
    finally:
        await running.close()


@pytest.mark.parametrize("content, environ", [
    ({"schedule": {"timezone": "Mars/Olympus"}}, {}),
    ({}, {"SEMAPHORE_SCHEDULE_TIMEZONE": "../../etc/passwd"}),
    ({}, {"SEMAPHORE_SCHEDULE_TIMEZONE": ""}),
])
def test_bad_timezone_stops_the_hub_naming_the_key(tmp_path, content, environ):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"sqlite": {"host": str(tmp_path / "db.sqlite")},
                                  "port": free_port(), **content}))
    result = subprocess.run([sys.executable, "-m", "hub.cli", "server", "--config",
                             str(config)], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={**os.environ, **environ})
    assert result.returncode == 2, result.stderr
    assert "`schedule.timezone`" in result.stderr and "Traceback" not in result.stderr


def test_timezone_from_the_environment():
    assert load_config(environ={"SEMAPHORE_SCHEDULE_TIMEZONE": "Europe/Berlin"}).schedule_zone \
        == ZoneInfo("Europe/Berlin")
    assert load_config(environ={}).schedule.timezone == "UTC"
    assert load_config(environ={}).schedule_zone is UTC


def test_dst_changes_in_the_configured_zone():
    """Berlin: 03:00 is 02:00 UTC in winter, 01:00 UTC in summer; the autumn night that has
    02:30 twice runs "30 2 * * *" once, and an hourly schedule through both hours."""
    berlin = ZoneInfo("Europe/Berlin")

    def row(cron: str, last: str) -> dict:
        return {"active": 1, "type": "", "cron_format": cron, "run_at": None,
                "last_fire": last, "created": "2027-01-01T00:00:00Z"}

    def at(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    def upcoming(cron: str, now: str) -> str:
        found = next_run(row(cron, now), at(now), berlin)
        assert found is not None
        return _stamp(found)

    assert upcoming("0 3 * * *", "2027-01-10T12:00:00Z") == "2027-01-11T02:00:00Z"
    assert upcoming("0 3 * * *", "2027-07-01T12:00:00Z") == "2027-07-02T01:00:00Z"
    # Spring: 02:30 does not exist that night; it runs when the clock has jumped (03:00).
    assert upcoming("30 2 * * *", "2027-03-27T12:00:00Z") == "2027-03-28T01:00:00Z"
    # Autumn: 02:30 CEST (00:30Z) runs; 02:30 CET (01:30Z) does not; the next is a day on.
    assert upcoming("30 2 * * *", "2027-10-30T12:00:00Z") == "2027-10-31T00:30:00Z"
    assert upcoming("30 2 * * *", "2027-10-31T00:30:00Z") == "2027-11-01T01:30:00Z"
    assert latest_due(row("30 2 * * *", "2027-10-31T00:30:00Z"), at("2027-10-31T01:35:00Z"),
                      berlin) is None
    assert upcoming("30 * * * *", "2027-10-31T00:30:00Z") == "2027-10-31T01:30:00Z"


async def test_step_past_the_field_range_is_refused(hub, api, tmp_path):
    project = await api.project()
    template = await _template(api, tmp_path, project)
    base = f"/api/project/{project}/schedules"
    for cron in ("*/500 * * * *", "0 */25 * * *", "0 0 1-31/32 * *", "0 0 * */13 *",
                 "0 0 * * */8", "*/0 * * * *"):
        for path, body in [(base, {"name": "x", "template_id": template, "cron_format": cron}),
                           (f"{base}/validate", {"cron_format": cron})]:
            status, answer = await api.request("POST", path, body)
            assert status == 400 and "`cron_format`" in answer["error"], (cron, answer)
    for cron in ("*/59 * * * *", "0 */24 * * *", "0 0 * * */7", "5-50/15 1,*/6 * * *"):
        await api.ok("POST", f"{base}/validate", {"cron_format": cron})


async def test_editing_a_fired_run_once_fires_it_again_only_for_a_new_future_time(
        hub, api, tmp_path):
    project = await api.project()
    template = await _template(api, tmp_path, project)
    t = _next_minute() + timedelta(minutes=5)
    body = {"name": "once", "template_id": template, "type": "run_at", "run_at": _stamp(t)}
    schedule = await api.ok("POST", f"/api/project/{project}/schedules", body, 201)
    assert schedule["next_run"] == _stamp(t)
    path = f"/api/project/{project}/schedules/{schedule['id']}"
    clock = await _manual_clock(hub, t)
    tick = hub.hub.scheduler.tick
    assert len(await tick()) == 1
    assert (await api.ok("GET", path))["next_run"] is None
    # Renamed and switched on again with the same time: it has run, it does not run again.
    await api.ok("PUT", path, {**body, "name": "renamed", "active": True}, 204)
    await api.ok("PUT", f"{path}/active", {"active": True}, 204)
    clock[0] = t + timedelta(minutes=1)
    assert await tick() == []
    assert (await api.ok("GET", path))["next_run"] is None
    # Moved to a time already past: still not.
    await api.ok("PUT", path, {**body, "run_at": _stamp(t - timedelta(days=1))}, 204)
    assert await tick() == []
    # Moved to a time to come: it fires then, once.
    later = _next_minute() + timedelta(minutes=30)
    await api.ok("PUT", path, {**body, "run_at": _stamp(later)}, 204)
    assert (await api.ok("GET", path))["next_run"] == _stamp(later)
    clock[0] = later
    assert len(await tick()) == 1
    assert await tick() == []
    assert len(await _scheduled_tasks(api, project, schedule["id"])) == 2


@pytest.mark.parametrize("kind", ["cron", "run_at"])
async def test_failed_fire_is_shown_and_retried_not_used_up(hub, api, tmp_path, kind):
    project = await api.project()
    scripts = tmp_path / "scripts"
    write_script(scripts, "site.yml", "- hosts: all\n")
    inventories = f"/api/project/{project}/inventory"
    inventory = await api.ok("POST", inventories, {"name": "i", "type": "static",
                                                   "inventory": "localhost\n"}, 201)
    repository = await api.ok("POST", f"/api/project/{project}/repositories",
                              {"name": "r", "git_url": str(scripts), "git_branch": ""}, 201)
    template = (await api.ok("POST", f"/api/project/{project}/templates",
                             {"name": "site", "app": "ansible", "playbook": "site.yml",
                              "repository_id": repository["id"],
                              "inventory_id": inventory["id"]}, 201))["id"]
    t = _next_minute() + timedelta(minutes=2)
    body: dict = {"name": "s", "template_id": template}
    body |= ({"cron_format": "* * * * *"} if kind == "cron"
             else {"type": "run_at", "run_at": _stamp(t), "delete_after_run": True})
    schedule = await api.ok("POST", f"/api/project/{project}/schedules", body, 201)
    path = f"/api/project/{project}/schedules/{schedule['id']}"
    # Meanwhile the inventory becomes one an ansible template cannot use.
    await api.ok("PUT", f"{inventories}/{inventory['id']}",
                 {"name": "i", "type": "terraform-workspace", "inventory": "w"}, 204)
    clock = await _manual_clock(hub, t)
    tick = hub.hub.scheduler.tick
    assert await tick() == []
    got = await api.ok("GET", path)
    assert got["active"] is True and got["last_error"]["due"] == _stamp(t)
    assert "cannot use" in got["last_error"]["error"]
    assert got["next_run"] == _stamp(t)  # still due: tried again each round
    clock[0] = t + timedelta(seconds=10)
    assert await tick() == []
    assert (await api.ok("GET", path))["last_error"]["since"] == _stamp(t)
    # Put right: the next round makes the task, and the error is gone.
    await api.ok("PUT", f"{inventories}/{inventory['id']}",
                 {"name": "i", "type": "static", "inventory": "localhost\n"}, 204)
    clock[0] = t + timedelta(seconds=20)
    assert len(await tick()) == 1
    tasks = await _scheduled_tasks(api, project, None if kind == "run_at" else schedule["id"])
    assert [task["message"] for task in tasks] == ["scheduled: s"]
    status, got = await api.request("GET", path)
    if kind == "run_at":
        assert status == 404  # delete_after_run, now that it has really run
    else:
        assert got["last_error"] is None and got["last_fire"] == _stamp(t)


async def test_changes_are_in_the_audit_trail(hub, api, tmp_path):
    project = await api.project()
    template = await _template(api, tmp_path, project)
    base = f"/api/project/{project}/schedules"
    body = {"name": "nightly", "template_id": template, "cron_format": "0 3 * * *"}
    schedule = await api.ok("POST", base, body, 201)
    await api.ok("PUT", f"{base}/{schedule['id']}", {**body, "name": "daily"}, 204)
    await api.ok("PUT", f"{base}/{schedule['id']}/active", {"active": False}, 204)
    await api.ok("DELETE", f"{base}/{schedule['id']}", status=204)
    views = [await api.ok("POST", f"/api/project/{project}/views", {"title": title}, 201)
             for title in ("a", "b")]
    await api.ok("POST", f"/api/project/{project}/views/positions",
                 {str(views[0]["id"]): 1, str(views[1]["id"]): 0}, 204)
    events = await hub.hub.store.list_events([project])
    mine = [(e["object_type"], e["object_id"], e["description"], e["username"])
            for e in reversed(events) if e["object_type"] in ("schedule", "view")]
    assert mine[:4] == [
        ("schedule", schedule["id"], "Schedule nightly created", "admin"),
        ("schedule", schedule["id"], "Schedule daily updated", "admin"),
        ("schedule", schedule["id"], "Schedule daily deactivated", "admin"),
        ("schedule", schedule["id"], "Schedule daily deleted", "admin")]
    assert mine[-1] == ("view", None, "View order changed", "admin")
