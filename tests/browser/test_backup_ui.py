"""Backup and restore in the dashboard, in a real browser against a real hub: restore a
Semaphore backup file from the projects page, land in the new project, download its backup
from the project's head; bad files are refused where they were chosen; guests see no Backup."""

import json
import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import log_in

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "semaphore_backup_2_16.json"


def restore_file(page: Page, path: Path) -> None:
    page.goto("/#/projects")
    section = page.locator("section", has=page.get_by_role("heading", name="Restore project"))
    section.get_by_label("Backup file").set_input_files(str(path))
    section.get_by_role("button", name="Restore project").click()


def test_restore_a_backup_file_then_download_its_backup(logged_in_page: Page, rest, tmp_path,
                                                         screenshot):
    page = logged_in_page
    restore_file(page, FIXTURE)
    expect(page).to_have_url(re.compile(r"#/project/\d+/templates$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Web platform")
    expect(page.get_by_text("Deploy site")).to_be_visible()
    expect(page.get_by_text("Rotate logs")).to_be_visible()
    project_id = int(re.search(r"#/project/(\d+)/", page.url).group(1))
    screenshot(page, "restored-project")

    with page.expect_download() as info:
        page.get_by_role("link", name="Backup").click()
    download = info.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert download.suggested_filename == f"project-{project_id}-backup.json"
    backup = json.loads(saved.read_text())
    assert backup == rest.ok("GET", f"/api/project/{project_id}/backup")
    assert backup["meta"]["name"] == "Web platform"
    assert [t["name"] for t in backup["templates"]] == ["Deploy site", "Rotate logs", "Build site"]


def test_bad_backup_files_are_refused_on_the_form(logged_in_page: Page, rest, tmp_path):
    page = logged_in_page
    before = rest.ok("GET", "/api/projects")
    bad = json.loads(FIXTURE.read_text())
    bad["templates"][1]["inventory"] = "x"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(bad))
    restore_file(page, broken)
    expect(page.get_by_role("alert").filter(has_text="templates[1].inventory")).to_be_visible()
    expect(page.get_by_role("alert").filter(has_text='unknown inventory "x"')).to_be_visible()
    assert page.url.endswith("#/projects")

    not_json = tmp_path / "notes.json"
    not_json.write_text("this is not a backup")
    restore_file(page, not_json)
    file_input = page.get_by_label("Backup file")
    expect(file_input).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_role("alert").filter(has_text="notes.json is not JSON")).to_be_visible()
    assert rest.ok("GET", "/api/projects") == before


def test_guests_see_no_backup_button(page: Page, rest):
    project = rest.ok("POST", "/api/projects/restore", json.loads(FIXTURE.read_text()))
    user = rest.ok("POST", "/api/users", {"name": "Gus", "username": "gus-backup",
                                          "email": "gus-backup@example.com",
                                          "password": "gus-password"}, 201)
    rest.ok("POST", f"/api/project/{project['id']}/users",
            {"user_id": user["id"], "role": "guest"}, 204)
    log_in(page, "gus-backup", "gus-password")
    page.goto(f"/#/project/{project['id']}/templates")
    expect(page.get_by_text("your role: guest")).to_be_visible()
    expect(page.get_by_role("link", name="Backup")).to_have_count(0)
    # Not an admin, on a hub without non_admin_can_create_project: no project to create or
    # restore (the API would answer 401).
    page.goto("/#/projects")
    expect(page.get_by_role("link", name=project["name"]).first).to_be_visible()
    expect(page.get_by_role("heading", name="New project")).to_have_count(0)
    expect(page.get_by_role("heading", name="Restore project")).to_have_count(0)
