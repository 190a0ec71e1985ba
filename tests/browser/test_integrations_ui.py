"""The Integrations tab in a real browser (Debian's chromium) against a real hub process:
create an integration with GitHub's signature check, a matcher and an extract value; copy its
webhook URL; a signed push to that URL starts the task; edit, bad input next to its field,
delete; what a guest sees."""

import hashlib
import hmac
import json
import urllib.request
from collections.abc import Iterator

import pytest

from tests.browser.conftest import log_in
from tests.faults import HubProcess, write_script
from tests.hubkit import ACCESS_KEY_ENCRYPTION

SECRET = "ui-webhook-secret"


@pytest.fixture(scope="module")
def live_hub(tmp_path_factory) -> Iterator[HubProcess]:
    """The browser tests' hub, able to store the key that holds the webhook's secret."""
    hub = HubProcess(tmp_path_factory.mktemp("integrations-hub"), use_remote_runner=True,
                     access_key_encryption=ACCESS_KEY_ENCRYPTION)
    with hub:
        hub.start()
        yield hub


def _project(rest, tmp_path) -> tuple[int, int]:
    project = rest.project("hooks")
    write_script(tmp_path / "scripts", "deploy.sh", 'echo "deploy $*"\n')
    template = rest.template(project, tmp_path / "scripts", "deploy.sh")
    rest.ok("POST", f"/api/project/{project}/keys", {
        "name": "github secret", "type": "login_password",
        "login_password": {"login": "", "password": SECRET}}, 201)
    return project, template


def _push(url: str, event: str = "push") -> tuple[int, dict]:
    body = json.dumps({"ref": "refs/heads/main", "repository": {"full_name": "acme/app"}}).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "X-GitHub-Event": event,
        "X-Hub-Signature-256": signature})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, dict(response.headers)


def test_create_copy_url_receive_push_edit_and_delete(logged_in_page, context, rest, tmp_path,
                                                     live_hub, screenshot):
    page = logged_in_page
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    project, template = _project(rest, tmp_path)
    page.goto(f"/#/project/{project}/integrations")
    page.get_by_role("link", name="Integrations").wait_for()
    page.get_by_text("None yet.").wait_for()

    # A name is required: the error shows next to the field, nothing is created.
    page.get_by_role("button", name="New").click()
    dialog = page.locator("dialog")
    dialog.get_by_role("button", name="Create").click()
    error = dialog.locator('.field[data-field="name"] .field-error')
    error.wait_for()
    assert "name" in error.inner_text()
    assert rest.ok("GET", f"/api/project/{project}/integrations") == []

    # GitHub's signature needs a key: the key field shows, the header field does not.
    dialog.get_by_label("Name").fill("github push")
    dialog.get_by_label("Auth method").select_option("github")
    assert dialog.get_by_label("Auth header").is_hidden()
    dialog.get_by_label("Secret (login and password key)").select_option(label="github secret")
    dialog.get_by_role("button", name="Create").click()

    # The dialog comes back for its matchers and extract values.
    dialog = page.locator("dialog", has_text="Edit integration")
    dialog.wait_for()
    matchers = dialog.locator("section.matchers")
    matchers.get_by_text("Add a matcher").click()
    matchers.get_by_label("Name").fill("push only")
    matchers.get_by_label("Key").fill("X-GitHub-Event")
    matchers.get_by_label("Value").fill("push")
    matchers.get_by_role("button", name="Add matcher").click()
    matchers.locator("ul.child-rows li", has_text="push only").wait_for()
    values = dialog.locator("section.values")
    values.get_by_text("Add a value").click()
    values.get_by_label("Name").fill("branch")
    values.get_by_label("Key").fill("ref")
    values.get_by_label("Variable").fill("not a name")
    values.get_by_role("button", name="Add value").click()
    bad = values.locator('.field[data-field="variable"] .field-error')
    bad.wait_for()
    assert "variable" in bad.inner_text()
    values.get_by_label("Variable").fill("branch")
    values.get_by_role("button", name="Add value").click()
    values.locator("ul.child-rows li", has_text="ref → branch").wait_for()
    screenshot(page, "integration-edit")
    dialog.get_by_role("button", name="Close").click()

    # The list shows the whole webhook URL, ready to copy.
    row = page.locator("table.integrations tbody tr", has_text="github push")
    url_box = row.get_by_label("Webhook URL")
    url = url_box.input_value()
    assert url.startswith(f"{live_hub.base_url}/api/integrations/")
    assert len(url.rsplit("/", 1)[1]) >= 32
    row.get_by_role("button", name="Copy").click()
    row.get_by_role("button", name="Copied").wait_for()
    assert page.evaluate("() => navigator.clipboard.readText()") == url
    assert row.locator("td", has_text="GitHub signature").count() == 1
    screenshot(page, "integrations")

    # GitHub's ping starts nothing; a signed push starts the template with the branch.
    assert _push(url, "ping")[0] == 204
    status, headers = _push(url)
    assert status == 204
    task = rest.ok("GET", f"/api/project/{project}/tasks/{headers['X-Semaphore-Task-ID']}")
    assert task["template_id"] == template
    assert json.loads(task["environment"]) == {"branch": "refs/heads/main"}

    # Rename, then delete.
    row.get_by_role("button", name="Edit").click()
    dialog = page.locator("dialog", has_text="Edit integration")
    dialog.get_by_label("Name").first.fill("renamed")
    dialog.get_by_role("button", name="Save").click()
    page.locator("table.integrations tbody tr", has_text="renamed").wait_for()
    page.locator("table.integrations tbody tr", has_text="renamed").get_by_role(
        "button", name="Delete").click()
    page.locator("dialog").get_by_role("button", name="Delete").click()
    page.get_by_text("None yet.").wait_for()
    assert rest.ok("GET", f"/api/project/{project}/integrations") == []


def test_a_guest_sees_integrations_but_no_urls_or_edit_buttons(browser, live_hub, rest, tmp_path):
    project, template = _project(rest, tmp_path)
    rest.ok("POST", f"/api/project/{project}/integrations",
            {"name": "open hook", "template_id": template}, 201)
    rest.ok("POST", "/api/users", {"name": "Gus", "username": "gus", "email": "gus@example.com",
                                   "password": "gus-password", "admin": False}, 201)
    user = next(u for u in rest.ok("GET", "/api/users") if u["username"] == "gus")
    rest.ok("POST", f"/api/project/{project}/users", {"user_id": user["id"], "role": "guest"},
            204)
    context = browser.new_context(base_url=live_hub.base_url)
    try:
        page = context.new_page()
        log_in(page, "gus", "gus-password")
        page.goto(f"/#/project/{project}/integrations")
        row = page.locator("table.integrations tbody tr", has_text="open hook")
        row.wait_for()
        assert row.get_by_label("Webhook URL").count() == 0
        assert page.get_by_role("button", name="New").count() == 0
        assert row.get_by_role("button", name="Delete").count() == 0
        row.get_by_role("button", name="View").click()
        assert page.locator("dialog").get_by_label("Name").first.is_disabled()
    finally:
        context.close()


def test_shared_project_url_for_searchable_integrations(logged_in_page, rest, tmp_path):
    page = logged_in_page
    project, template = _project(rest, tmp_path)
    base = f"/api/project/{project}/integrations"
    integration = rest.ok("POST", base, {"name": "main pushes", "template_id": template,
                                         "searchable": True}, 201)
    rest.ok("POST", f"{base}/{integration['id']}/matchers", {
        "name": "main", "match_type": "body", "body_data_type": "json", "key": "ref",
        "value": "refs/heads/main"})
    page.goto(f"/#/project/{project}/integrations")
    shared = page.locator("section.shared-urls")
    shared.get_by_role("button", name="Create URL").click()
    url_box = shared.get_by_label("Webhook URL")
    url_box.wait_for()
    url = url_box.input_value()
    assert [a["url"] for a in rest.ok("GET", f"{base}/aliases")] == [url]
    status, headers = _push(url)  # no auth on this one: the signature is not looked at
    assert status == 204
    task = rest.ok("GET", f"/api/project/{project}/tasks/{headers['X-Semaphore-Task-ID']}")
    assert task["integration_id"] == integration["id"]
    shared.get_by_role("button", name="Remove").click()
    page.locator("dialog").get_by_role("button", name="Remove").click()
    shared.get_by_role("button", name="Create URL").wait_for()
    assert rest.ok("GET", f"{base}/aliases") == []
