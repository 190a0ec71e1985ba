"""The event log in a real browser (Debian's chromium) against a real hub and runner: the
top bar's Activity page (every project the user is a member of; admins also see events of no
project, such as a runner's registration) and a project's Activity tab, newest first; a
guest reads its project's log, a non-member gets no other project's."""

from tests.browser.conftest import log_in
from tests.faults import Rest


def _user(rest: Rest, username: str) -> int:
    return rest.ok("POST", "/api/users", {
        "name": username.title(), "username": username, "email": f"{username}@example.com",
        "password": f"{username}-password"}, 201)["id"]


def _rows(page) -> list[list[str]]:
    page.locator("table.events tbody tr").first.wait_for()
    return [[cell.strip() for cell in row.locator("td").all_inner_texts()]
            for row in page.locator("table.events tbody tr").all()]


def test_admin_reads_the_global_log_and_a_projects_activity_tab(logged_in_page, rest,
                                                                live_runner, screenshot):
    page = logged_in_page
    project = rest.project("Audited")
    base = f"/api/project/{project}"
    rest.ok("POST", f"{base}/keys", {"name": "deploy-key", "type": "none"}, 201)
    view = rest.ok("POST", f"{base}/views", {"title": "Releases"}, 201)
    rest.ok("DELETE", f"{base}/views/{view['id']}", status=204)

    page.get_by_role("link", name="Activity").click()
    page.get_by_role("heading", name="Activity").wait_for()
    rows = _rows(page)
    # Time, user, project, object, description; newest first.
    assert [row[1:] for row in rows[:4]] == [
        ["admin", "Audited", "view Releases", "View Releases deleted"],
        ["admin", "Audited", "view Releases", "View Releases created"],
        ["admin", "Audited", "key deploy-key", "Access Key deploy-key created"],
        ["admin", "Audited", "project Audited", "Project created"]]
    assert all(row[0] for row in rows)  # a time on each
    # The runner registered itself, the admin was made at the console: no user, no project
    # (admins see them).
    assert ["system", "—", "runner browser-runner", "Runner browser-runner registered"] in [
        row[1:] for row in rows]
    assert ["system", "—", "user admin", "User admin created (semaphore user add)"] in [
        row[1:] for row in rows]
    screenshot(page, "events-global")

    page.get_by_role("link", name="Audited").first.click()
    page.wait_for_url(f"**/#/project/{project}/activity")
    tab = page.get_by_role("navigation", name="Project").get_by_role("link", name="Activity")
    assert tab.get_attribute("aria-current") == "page"
    assert [row[1:] for row in _rows(page)] == [
        ["admin", "view Releases", "View Releases deleted"],
        ["admin", "view Releases", "View Releases created"],
        ["admin", "key deploy-key", "Access Key deploy-key created"],
        ["admin", "project Audited", "Project created"]]
    screenshot(page, "events-project")


def test_guest_reads_its_projects_log_and_nothing_of_others(page, rest, live_hub):
    shared, private = rest.project("Shared"), rest.project("Private")
    guest = _user(rest, "gina")
    rest.ok("POST", f"/api/project/{shared}/users", {"user_id": guest, "role": "guest"}, 204)
    rest.ok("POST", f"/api/project/{private}/views", {"title": "Hidden"}, 201)

    log_in(page, "gina", "gina-password")
    page.goto(f"/#/project/{shared}/templates")
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Activity").click()
    assert [row[1:] for row in _rows(page)] == [
        ["admin", "user gina", "User gina added to team as guest"],
        ["admin", "project Shared", "Project created"]]

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Activity").click()
    page.get_by_role("heading", name="Activity").wait_for()
    rows = _rows(page)
    assert {row[2] for row in rows} == {"Shared"}  # the project column
    assert "Hidden" not in page.content() and "gina created" not in page.content()

    page.goto(f"/#/project/{private}/activity")
    page.get_by_role("alert").filter(has_text="Not found").wait_for()
