"""The Schedules tab, a template's schedules and the templates tab's views in a real browser
(Debian's chromium) against a real `semaphore server` process (tests/browser/conftest.py):
create a schedule and see its next run, toggle it, a bad cron's error inline; create views,
move a template into one, reorder them; a guest sees all of it and can change none."""

from tests.browser.conftest import log_in
from tests.faults import write_script


def _project(rest, tmp_path, name: str) -> tuple[int, int]:
    project = rest.project(name)
    scripts = tmp_path / "scripts"
    write_script(scripts, "job.sh", "echo scheduled\n")
    return project, rest.template(project, scripts, "job.sh")


def test_create_a_schedule_see_its_next_run_toggle_it_and_a_bad_cron(
        logged_in_page, rest, tmp_path, screenshot):
    page = logged_in_page
    project, template = _project(rest, tmp_path, "sched-ui")
    page.goto(f"/#/project/{project}/schedules")
    page.get_by_role("link", name="Schedules").wait_for()
    page.get_by_text("No schedules yet.").wait_for()
    page.get_by_role("button", name="New schedule").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name").fill("nightly")
    cron = dialog.get_by_label("Cron")
    # Far past the minute field's range: the hub's answer shows beside the field as typed.
    cron.fill("*/500 * * * *")
    error = dialog.locator('.field[data-field="cron_format"] .field-error')
    error.filter(has_text="cron_format").wait_for()
    assert "minute" in error.inner_text()
    assert cron.get_attribute("aria-invalid") == "true"
    # Saved anyway: the create's 400 lands in the same place and nothing is made.
    dialog.get_by_role("button", name="Create").click()
    error.filter(has_text="cron_format").wait_for()
    assert rest.ok("GET", f"/api/project/{project}/schedules") == []
    cron.fill("0 3 * * *")
    error.filter(has_text="cron_format").wait_for(state="detached")
    dialog.get_by_role("button", name="Create").click()
    dialog.wait_for(state="detached")

    [schedule] = rest.ok("GET", f"/api/project/{project}/schedules")
    assert schedule["cron_format"] == "0 3 * * *" and schedule["template_id"] == template
    row = page.locator(f'tr[data-id="{schedule["id"]}"]')
    next_run = row.locator("td.next-run time")
    next_run.wait_for()
    assert next_run.get_attribute("datetime") == schedule["next_run"]
    assert next_run.inner_text().strip()
    assert row.locator("code").inner_text() == "0 3 * * *"
    screenshot(page, "schedules")

    # Switched off: the API agrees and there is no next run; on again, it is back.
    toggle = row.get_by_label("Active: nightly")
    toggle.uncheck()
    row.locator("td.next-run time").wait_for(state="detached")
    assert rest.ok("GET", f"/api/project/{project}/schedules/{schedule['id']}")[
        "active"] is False
    page.locator(f'tr[data-id="{schedule["id"]}"]').get_by_label("Active: nightly").check()
    page.locator(f'tr[data-id="{schedule["id"]}"] td.next-run time').wait_for()
    assert rest.ok("GET", f"/api/project/{project}/schedules/{schedule['id']}")["active"] is True

    # The template's page lists it too, and makes new ones for that template.
    page.locator(f'tr[data-id="{schedule["id"]}"]').get_by_role("link", name="t-job.sh").click()
    page.get_by_role("heading", name="t-job.sh").wait_for()
    page.locator(f'tr[data-id="{schedule["id"]}"]').get_by_text("nightly").wait_for()
    page.get_by_role("button", name="New schedule").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name").fill("hourly")
    dialog.get_by_label("Cron").fill("0 * * * *")
    dialog.get_by_role("button", name="Create").click()
    dialog.wait_for(state="detached")
    page.get_by_role("row", name="hourly").wait_for()
    got = rest.ok("GET", f"/api/project/{project}/templates/{template}/schedules")
    assert sorted(s["name"] for s in got) == ["hourly", "nightly"]


def _view_tabs(page) -> list[str]:
    return page.get_by_role("navigation", name="Views").get_by_role("link").all_inner_texts()


def test_views_create_move_a_template_in_and_reorder(logged_in_page, rest, tmp_path,
                                                     screenshot):
    page = logged_in_page
    project, template = _project(rest, tmp_path, "views-ui")
    scripts = tmp_path / "other"
    write_script(scripts, "other.sh", "echo other\n")
    other = rest.template(project, scripts, "other.sh")
    page.goto(f"/#/project/{project}/templates")
    page.get_by_role("row", name="t-other.sh").wait_for()
    assert _view_tabs(page) == ["All"]
    for title in ("Deploy", "Maintenance"):
        page.get_by_role("button", name="Add view").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("Title").fill(title)
        dialog.get_by_role("button", name="Create").click()
        dialog.wait_for(state="detached")
        page.get_by_role("link", name=title).and_(page.locator("[aria-current]")).wait_for()
    assert _view_tabs(page) == ["All", "Deploy", "Maintenance"]
    views = {v["title"]: v["id"] for v in rest.ok("GET", f"/api/project/{project}/views")}

    # The template form puts t-job.sh in Maintenance; that tab then lists it alone.
    page.get_by_role("link", name="All").click()
    page.get_by_role("row", name="t-job.sh").get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("View").select_option(label="Maintenance")
    dialog.get_by_role("button", name="Save").click()
    dialog.wait_for(state="detached")
    assert rest.ok("GET", f"/api/project/{project}/templates/{template}")["view_id"] == \
        views["Maintenance"]
    page.get_by_role("link", name="Maintenance").click()
    page.get_by_role("row", name="t-job.sh").wait_for()
    page.get_by_role("row", name="t-other.sh").wait_for(state="detached")
    page.get_by_role("link", name="Deploy").click()
    page.get_by_text("None yet.").wait_for()
    page.get_by_role("link", name="All").click()
    page.get_by_role("row", name="t-other.sh").wait_for()
    assert rest.ok("GET", f"/api/project/{project}/templates/{other}")["view_id"] is None

    # Maintenance moves left of Deploy, through POST .../views/positions.
    page.get_by_role("link", name="Maintenance").click()
    page.get_by_role("button", name="Move view left").click()
    page.wait_for_function("() => [...document.querySelectorAll('nav[aria-label=Views] a')]"
                           ".map((a) => a.textContent).join() === 'All,Maintenance,Deploy'")
    order = sorted(rest.ok("GET", f"/api/project/{project}/views"),
                   key=lambda v: v["position"])
    assert [v["title"] for v in order] == ["Maintenance", "Deploy"]
    assert page.get_by_role("button", name="Move view left").is_disabled()
    screenshot(page, "views")
    # Renamed, then deleted: its template stays, in no view.
    page.get_by_role("button", name="Rename view").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Title").fill("Upkeep")
    dialog.get_by_role("button", name="Save").click()
    dialog.wait_for(state="detached")
    page.get_by_role("link", name="Upkeep").wait_for()
    page.get_by_role("button", name="Delete view").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    page.wait_for_function("() => [...document.querySelectorAll('nav[aria-label=Views] a')]"
                           ".map((a) => a.textContent).join() === 'All,Deploy'")
    assert rest.ok("GET", f"/api/project/{project}/templates/{template}")["view_id"] is None


def test_a_guest_sees_schedules_and_views_but_cannot_change_them(page, rest, tmp_path):
    project, template = _project(rest, tmp_path, "guest-ui")
    rest.ok("POST", f"/api/project/{project}/schedules",
            {"name": "nightly", "template_id": template, "cron_format": "0 3 * * *"}, 201)
    view = rest.ok("POST", f"/api/project/{project}/views", {"title": "Ops"}, 201)
    user = rest.ok("POST", "/api/users", {"name": "Gus", "username": "gus",
                                          "email": "gus@example.com",
                                          "password": "gus-password"}, 201)
    rest.ok("POST", f"/api/project/{project}/users", {"user_id": user["id"], "role": "guest"},
            204)
    log_in(page, "gus", "gus-password")
    page.goto(f"/#/project/{project}/schedules")
    row = page.get_by_role("row", name="nightly")
    row.wait_for()
    assert row.get_by_label("Active: nightly").is_disabled()
    assert row.get_by_role("button").count() == 0
    assert page.get_by_role("button", name="New schedule").count() == 0
    page.goto(f"/#/project/{project}/templates?view={view['id']}")
    page.get_by_role("link", name="Ops").and_(page.locator("[aria-current]")).wait_for()
    page.get_by_text("None yet.").wait_for()
    for name in ("Add view", "Rename view", "Delete view", "Move view left", "New"):
        assert page.get_by_role("button", name=name, exact=True).count() == 0
