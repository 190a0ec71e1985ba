"""The web dashboard in a real browser (Debian's chromium, headless) against a real hub with a
real runner: log in, runners, run a template and watch its output, stop, waiting reason,
disable a runner, roles, form errors, stale pages.

Own minimal fixtures (an in-process hub from tests/hubkit and async Playwright on the same
event loop); screenshots of the main pages go to tests.browser.screenshots_dir()
(SEMAPHORE_SCREENSHOTS_DIR=docs/screenshots refreshes the README's).
"""

import asyncio
import json
import shutil
from pathlib import Path

import playwright.async_api as playwright_api
import pytest

from tests.browser import screenshots_dir
from tests.hubkit import ADMIN_LOGIN, ADMIN_PASSWORD, RUNNER_PUBLIC_KEY, start_hub, write_script
from tests.proxy import CuttingProxy

# Debian's chromium, which .ci/run installs: missing, the tests fail rather than skip.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

TIMEOUT_MS = 15_000


@pytest.fixture
async def hub(tmp_path):
    running = await start_hub(tmp_path)
    yield running
    await running.close()


@pytest.fixture
async def browser():
    async with playwright_api.async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM,
                                           args=["--no-sandbox", "--disable-gpu"])
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser):
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


async def login(page, hub, user=ADMIN_LOGIN, password=ADMIN_PASSWORD):
    await page.goto(hub.base_url + "/")
    await page.get_by_label("Login").fill(user)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("button", name="Sign out").wait_for()


async def shot(page, name):
    await page.screenshot(path=str(screenshots_dir() / f"{name}.png"), full_page=True)


async def output_lines(page) -> list[str]:
    return await page.locator(".output .line").all_inner_texts()


async def project_with_script(hub, tmp_path, script: str, **template) -> tuple:
    api = await hub.api()
    project_id = await api.project("Demo")
    scripts = tmp_path / "scripts"
    write_script(scripts, "job.sh", script)
    template_id = await api.template(project_id, scripts, "job.sh", **template)
    return api, project_id, template_id


async def test_root_serves_the_login_page_and_a_wrong_password_says_so(hub, page):
    await page.goto(hub.base_url + "/")
    await page.get_by_label("Login").fill(ADMIN_LOGIN)
    await page.get_by_label("Password").fill("wrong-password")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_text("wrong login or password").wait_for()
    await shot(page, "login")
    await page.get_by_label("Password").fill(ADMIN_PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("heading", name="Projects").wait_for()
    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_role("button", name="Sign in").wait_for()
    # Signed out for real: the API refuses the browser's cookie now.
    status = await page.evaluate("fetch('/api/user').then(r => r.status)")
    assert status == 401


async def test_runners_page_shows_the_runner_online_with_its_chart(hub, page, tmp_path):
    await hub.start_runner(tmp_path, name="web-1", tags=["prod", "web"])
    await login(page, hub)
    await page.get_by_role("link", name="Runners").click()
    row = page.locator("tr[data-runner]", has_text="web-1")
    await row.locator(".state.online").wait_for()
    assert "prod, web" in await row.inner_text()
    # A chart with a line drawn from the runner's heartbeats.
    await row.locator("svg.spark polyline").first.wait_for(state="attached")
    await shot(page, "runners")


async def test_add_runner_shows_a_working_token_once_with_the_setup_lines(hub, page):
    await login(page, hub)
    await page.goto(hub.base_url + "/#/runners")
    await page.get_by_role("button", name="Add runner").click()
    await page.get_by_label("Tags").fill("edge")
    await page.get_by_role("button", name="Create registration token").click()
    token = await page.locator("#new-token").inner_text()
    download = await page.locator("#setup-download").inner_text()
    assert download == (
        f"curl -fsSLo semaphore '{hub.base_url}/api/runner/binary?arch=amd64' && curl -fsSL "
        f"'{hub.base_url}/api/runner/binary.sha256?arch=amd64' | sha256sum -c - "
        "&& chmod +x semaphore")
    config = json.loads(await page.locator("#setup-config").inner_text())
    assert config["web_host"] == hub.base_url
    assert config["runner"]["registration_token"] == token
    assert f"--registration-token '{token}'" in await page.locator("#setup-command").inner_text()
    assert "ExecStart=" in await page.locator("#setup-unit").inner_text()
    await shot(page, "add-runner")
    # The token shown registers a runner, with the tags chosen, once.
    api = await hub.api(login=False)
    body = {"registration_token": token, "name": "edge-1", "public_key": RUNNER_PUBLIC_KEY}
    answer = await api.ok("POST", "/api/internal/runners", body)
    assert answer["tags"] == ["edge"]
    status, _ = await api.request("POST", "/api/internal/runners", body)
    assert status == 401


async def test_disable_runner_after_confirmation(hub, page, tmp_path):
    await hub.start_runner(tmp_path, name="web-1")
    await login(page, hub)
    await page.goto(hub.base_url + "/#/runners")
    row = page.locator("tr[data-runner]", has_text="web-1")
    await row.get_by_role("button", name="Disable").click()
    await page.get_by_role("dialog").get_by_role("button", name="Disable").click()
    await row.locator(".state.disabled").wait_for()
    api = await hub.api()
    runners = await api.ok("GET", "/api/runners")
    assert runners[0]["active"] is False
    await row.get_by_role("button", name="Enable").wait_for()


SCRIPT = ("for i in $(seq 1 30); do printf '\\033[32mline %02d\\033[0m\\n' $i; sleep 0.05; done\n"
          "printf 'no newline at the end'\n")
EXPECTED = [f"line {i:02d}" for i in range(1, 31)] + ["no newline at the end"]


async def test_run_template_and_watch_output_in_order(hub, page, tmp_path):
    await hub.start_runner(tmp_path, name="builder")
    _, project_id, _ = await project_with_script(hub, tmp_path, SCRIPT)
    await login(page, hub)
    await page.goto(f"{hub.base_url}/#/project/{project_id}/templates")
    await shot(page, "templates")
    await page.get_by_role("row", name="t-job.sh").get_by_role("button", name="Run").click()
    await page.get_by_role("dialog").get_by_role("button", name="Run").click()
    await page.locator(".task-head .status.success").wait_for()
    await page.wait_for_function(
        "document.querySelectorAll('.output .line').length >= 31")
    assert await output_lines(page) == EXPECTED
    assert await page.locator(".output").get_attribute("data-source") == "live"
    # ANSI green rendered as a class, the escape codes gone.
    assert await page.locator(".output .line span.fg2").count() == 30
    assert "on builder · by Admin" in await page.locator(".task-head").inner_text()
    await shot(page, "task")
    await page.get_by_role("link", name="Tasks").click()
    await page.locator("tr[data-task] .status.success").wait_for()
    assert "builder" in await page.locator("tr[data-task]").inner_text()
    await shot(page, "tasks")


async def test_open_a_running_task_midway_shows_every_line_once(hub, page, tmp_path):
    gate = tmp_path / "gate"
    script = ("for i in $(seq 1 10); do echo before $i; done\n"
              f"while [ ! -e {gate} ]; do sleep 0.05; done\n"
              "for i in $(seq 1 10); do echo after $i; sleep 0.02; done\n")
    await hub.start_runner(tmp_path)
    api, project_id, template_id = await project_with_script(hub, tmp_path, script)
    task_id = await api.run(project_id, template_id)
    deadline = asyncio.get_running_loop().time() + 15
    while "before 10" not in await api.raw_output(project_id, task_id):
        assert asyncio.get_running_loop().time() < deadline, "no output"
        await asyncio.sleep(0.05)
    await login(page, hub)
    await page.goto(f"{hub.base_url}/#/project/{project_id}/tasks/{task_id}")
    await page.get_by_text("before 10").wait_for()
    gate.touch()
    await page.locator(".task-head .status.success").wait_for()
    await page.get_by_text("after 10").wait_for()
    await asyncio.sleep(1.5)  # a late duplicate would show up here
    assert await output_lines(page) == ([f"before {i}" for i in range(1, 11)]
                                        + [f"after {i}" for i in range(1, 11)])


async def test_stop_a_running_task(hub, page, tmp_path):
    await hub.start_runner(tmp_path)
    api, project_id, template_id = await project_with_script(
        hub, tmp_path, "echo started\nwhile true; do sleep 0.1; done\n")
    task_id = await api.run(project_id, template_id)
    await login(page, hub)
    await page.goto(f"{hub.base_url}/#/project/{project_id}/tasks/{task_id}")
    await page.locator(".output .line", has_text="started").wait_for()
    await page.get_by_role("button", name="Stop").click()
    await page.get_by_role("dialog").get_by_role("button", name="Stop").click()
    await page.locator(".task-head .status.stopped").wait_for()
    assert (await api.task(project_id, task_id))["status"] == "stopped"
    assert await page.get_by_role("button", name="Stop").count() == 0


async def test_a_waiting_task_shows_why(hub, page, tmp_path):
    api, project_id, template_id = await project_with_script(
        hub, tmp_path, "echo never\n", runner_tag="gpu")
    task_id = await api.run(project_id, template_id)
    reason = ""
    for _ in range(100):
        reason = (await api.task(project_id, task_id)).get("waiting_reason", "")
        if reason:
            break
        await asyncio.sleep(0.05)
    assert reason
    await login(page, hub)
    await page.goto(f"{hub.base_url}/#/project/{project_id}/tasks/{task_id}")
    text = await page.locator(".waiting-reason").inner_text()
    assert text == f"Waiting: {reason}"
    await shot(page, "task-waiting")


async def test_guest_sees_no_run_button_and_the_api_refuses(hub, page, tmp_path):
    api, project_id, template_id = await project_with_script(hub, tmp_path, "echo hi\n")
    guest = await api.ok("POST", "/api/users", {"name": "Guest", "username": "guest",
                                                "email": "guest@example.com",
                                                "password": "guest-password-1"}, 201)
    await api.ok("POST", f"/api/project/{project_id}/users",
                 {"user_id": guest["id"], "role": "guest"}, 204)
    await login(page, hub, "guest", "guest-password-1")
    await page.goto(f"{hub.base_url}/#/project/{project_id}/templates")
    await page.get_by_role("row", name="t-job.sh").wait_for()
    assert await page.get_by_role("button", name="Run").count() == 0
    assert await page.get_by_role("button", name="New").count() == 0
    assert await page.get_by_role("button", name="Delete").count() == 0
    assert await page.get_by_role("link", name="Runners").count() == 0
    # A task that waits (no runner here): the guest sees why, but no Stop.
    task_id = await api.run(project_id, template_id)
    await page.goto(f"{hub.base_url}/#/project/{project_id}/tasks/{task_id}")
    await page.locator(".task-head .status.waiting").wait_for()
    assert await page.get_by_role("button", name="Stop").count() == 0
    status = await page.evaluate(
        """([p, t]) => fetch(`/api/project/${p}/tasks`, {method: 'POST',
             headers: {'Content-Type': 'application/json'},
             body: JSON.stringify({template_id: t})}).then(r => r.status)""",
        [project_id, template_id])
    assert status == 403


async def test_form_shows_the_api_error_next_to_its_field(hub, page, tmp_path):
    api = await hub.api()
    project_id = await api.project("Demo")
    await login(page, hub)
    await page.goto(f"{hub.base_url}/#/project/{project_id}/repositories")
    await page.get_by_role("button", name="New").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Name").fill("repo")
    await dialog.get_by_role("button", name="Create").click()
    error = dialog.locator('.field[data-field="git_url"] .field-error')
    await error.wait_for()
    assert "git_url" in await error.inner_text()
    assert await dialog.get_by_label("Git URL").get_attribute("aria-invalid") == "true"
    await dialog.get_by_label("Git URL").fill(str(tmp_path))
    await dialog.get_by_role("button", name="Create").click()
    await page.get_by_role("row", name="repo").wait_for()


async def test_stale_page_acting_on_a_deleted_object_says_so(hub, page, tmp_path):
    api, project_id, template_id = await project_with_script(hub, tmp_path, "echo hi\n")
    await login(page, hub)
    await page.goto(f"{hub.base_url}/#/project/{project_id}/templates")
    row = page.get_by_role("row", name="t-job.sh")
    await row.wait_for()
    await api.ok("DELETE", f"/api/project/{project_id}/templates/{template_id}", status=204)
    await row.get_by_role("button", name="Edit").click()
    await page.get_by_text("no longer exists").wait_for()
    await page.goto(f"{hub.base_url}/#/project/{project_id}/tasks/999")
    await page.get_by_text("Not found").wait_for()



async def test_connection_lost_is_shown_and_output_catches_up_once(hub, page, tmp_path):
    gate = tmp_path / "gate"
    script = ("for i in $(seq 1 5); do echo line $i; done\n"
              f"while [ ! -e {gate} ]; do sleep 0.05; done\n"
              "for i in $(seq 6 12); do echo line $i; sleep 0.02; done\n")
    await hub.start_runner(tmp_path)
    api, project_id, template_id = await project_with_script(hub, tmp_path, script)
    task_id = await api.run(project_id, template_id)
    port = int(hub.base_url.rsplit(":", 1)[1])
    with CuttingProxy(port) as proxy:
        await page.goto(proxy.url + "/")
        await page.get_by_label("Login").fill(ADMIN_LOGIN)
        await page.get_by_label("Password").fill(ADMIN_PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("button", name="Sign out").wait_for()
        await page.goto(f"{proxy.url}/#/project/{project_id}/tasks/{task_id}")
        await page.locator(".output .line", has_text="line 5").wait_for()
        assert await page.locator(".output").get_attribute("data-source") == "live"
        proxy.pause()
        await page.get_by_text("Connection lost, reconnecting").wait_for()
        gate.touch()
        await api.wait_status(project_id, task_id)
        proxy.resume()
        await page.locator("#banner").wait_for(state="hidden")
        await page.locator(".task-head .status.success").wait_for()
        await page.locator(".output .line", has_text="line 12").wait_for()
        await asyncio.sleep(1)
        assert await output_lines(page) == [f"line {i}" for i in range(1, 13)]


async def test_task_list_filters_by_status_and_template(hub, page, tmp_path):
    await hub.start_runner(tmp_path)
    api, project_id, ok_template = await project_with_script(hub, tmp_path, "echo ok\n")
    bad_template = await api.template(project_id, tmp_path / "scripts", "job.sh",
                                      arguments=["--no-such-flag"], app="python")
    ok_task = await api.run(project_id, ok_template)
    bad_task = await api.run(project_id, bad_template)
    await api.wait_status(project_id, ok_task)
    assert (await api.wait_status(project_id, bad_task))["status"] == "error"
    await login(page, hub)
    await page.goto(f"{hub.base_url}/#/project/{project_id}/tasks")
    rows = page.locator("tr[data-task]")
    await rows.nth(1).wait_for()
    await page.get_by_label("Status").select_option("error")
    assert await rows.evaluate_all("rs => rs.map(r => +r.dataset.task)") == [bad_task]
    await page.get_by_label("Status").select_option("")
    await page.get_by_label("Template").select_option(str(ok_template))
    assert await rows.evaluate_all("rs => rs.map(r => +r.dataset.task)") == [ok_task]
    # Commit and who started it are shown.
    text = await rows.first.inner_text()
    assert "Admin" in text


async def test_rollout_error_is_shown_next_to_the_version(hub, page):
    await login(page, hub)
    await page.goto(hub.base_url + "/#/runners")
    await page.get_by_label("Version").fill("9.9.9")
    await page.get_by_role("button", name="Start rollout").click()
    error = page.locator('.rollout .field[data-field="version"] .field-error')
    await error.wait_for()
    api = await hub.api()
    status, answer = await api.request("PUT", "/api/runners/update", {"version": "9.9.9"})
    assert status == 400
    assert await error.inner_text() == answer["error"]


async def test_admin_adds_a_user_as_member_and_makes_an_api_token(hub, page, tmp_path):
    api = await hub.api()
    project_id = await api.project("Demo")
    await login(page, hub)
    await page.get_by_role("link", name="Users").click()
    await page.get_by_role("button", name="New user").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Username").fill("alice")
    await dialog.get_by_label("Name", exact=True).fill("Alice")
    await dialog.get_by_label("Email").fill("alice@example.com")
    await dialog.get_by_label("Password").fill("short")
    await dialog.get_by_role("button", name="Create").click()
    await dialog.locator('.field[data-field="password"] .field-error').wait_for()
    await dialog.get_by_label("Password").fill("alice-password-1")
    await dialog.get_by_role("button", name="Create").click()
    await page.get_by_role("row", name="alice").wait_for()
    await shot(page, "users")
    await page.goto(f"{hub.base_url}/#/project/{project_id}/members")
    await page.get_by_label("User").select_option(label="alice")
    await page.get_by_label("Role", exact=True).select_option("task_runner")
    await page.get_by_role("button", name="Add member").click()
    await page.get_by_role("row", name="alice").wait_for()
    members = await api.ok("GET", f"/api/project/{project_id}/users")
    assert {m["username"]: m["role"] for m in members}["alice"] == "task_runner"
    await page.get_by_label("Role of alice").select_option("manager")
    await page.get_by_text("alice is now manager").wait_for()
    members = await api.ok("GET", f"/api/project/{project_id}/users")
    assert {m["username"]: m["role"] for m in members}["alice"] == "manager"
    await page.get_by_role("link", name="API tokens").click()
    await page.get_by_role("button", name="New token").click()
    token = await page.locator("code.token").inner_text()
    # The token shown works as a Bearer token.
    bearer = await hub.api(login=False)
    async with bearer.session.get(hub.base_url + "/api/user",
                                  headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200
        assert (await response.json())["username"] == ADMIN_LOGIN


async def test_pages_fit_a_phone(hub, browser, tmp_path):
    await hub.start_runner(tmp_path, name="web-1")
    api = await hub.api()
    await api.project("Demo")
    context = await browser.new_context(viewport={"width": 390, "height": 844},
                                        device_scale_factor=1, is_mobile=True, has_touch=True)
    phone = await context.new_page()
    try:
        await login(phone, hub)
        await phone.get_by_role("link", name="Demo").wait_for()
        # Nothing wider than the screen but the scrollable tables.
        wide = await phone.evaluate("document.documentElement.scrollWidth")
        assert wide <= 390
        await phone.goto(hub.base_url + "/#/runners")
        await phone.locator("tr[data-runner] .state.online").wait_for()
        assert await phone.evaluate("document.documentElement.scrollWidth") <= 390
        await shot(phone, "phone-runners")
    finally:
        await context.close()


@pytest.fixture
def terraform_app():
    from agent import apps
    from agent.config import AppSetting
    from tests.test_terraform import terraform_binary
    path = str(terraform_binary())
    apps.configure_apps({"terraform": AppSetting(app_path=path)})
    yield path
    apps.configure_apps({})


async def test_terraform_plan_confirm_and_reject_with_colours(hub, page, tmp_path,
                                                              terraform_app):
    from tests.test_terraform import config_repo, terraform_template
    await hub.start_runner(tmp_path)
    api = await hub.api()
    project_id = await api.project("Infra")
    repo = config_repo(tmp_path / "repo")
    template_id = await terraform_template(api, project_id, f"file://{repo}")
    await login(page, hub)
    for decision, status, line in (("Confirm", "success", "Apply complete!"),
                                   ("Reject", "stopped", "nothing applied")):
        task_id = await api.run(project_id, template_id)
        await page.goto(f"{hub.base_url}/#/project/{project_id}/tasks/{task_id}")
        await page.get_by_role("button", name=decision).wait_for(timeout=60_000)
        # Terraform's own colours and bold, as classes; no escape code left.
        assert await page.locator(".output .line span.b").count() > 0
        assert "\x1b" not in await page.locator(".output").inner_text()
        if decision == "Confirm":
            await shot(page, "task-terraform-plan")
        await page.get_by_role("button", name=decision).click()
        await page.locator(f".task-head .status.{status}").wait_for(timeout=60_000)
        await page.locator(".output .line", has_text=line).first.wait_for()
        assert await page.get_by_role("button", name="Confirm").count() == 0


async def test_build_a_template_from_scratch_and_run_it(hub, page, tmp_path):
    """Key (secret write-only), repository, environment, template: all made in the forms."""
    await hub.start_runner(tmp_path)
    api = await hub.api()
    project_id = await api.project("Demo")
    scripts = tmp_path / "scripts"
    write_script(scripts, "hello.sh", 'echo "hello $GREETING"\n')
    await login(page, hub)
    base = f"{hub.base_url}/#/project/{project_id}"
    dialog = page.get_by_role("dialog")

    await page.goto(base + "/keys")
    await page.get_by_role("button", name="New").click()
    await dialog.get_by_label("Name").fill("deploy")
    await dialog.get_by_label("Type").select_option("login_password")
    assert await dialog.get_by_label("Private key").is_hidden()
    await dialog.get_by_label("Login").fill("deployer")
    await dialog.get_by_label("Password").fill("key-s3cret-value")
    await dialog.get_by_role("button", name="Create").click()
    await page.get_by_role("row", name="deploy").wait_for()
    # Write-only: the edit form comes back without the secret, and the page never had it.
    await page.get_by_role("row", name="deploy").get_by_role("button", name="Edit").click()
    assert await dialog.get_by_label("Password").input_value() == ""
    assert "key-s3cret-value" not in await page.content()
    await dialog.get_by_role("button", name="Close").click()

    await page.goto(base + "/repositories")
    await page.get_by_role("button", name="New").click()
    await dialog.get_by_label("Name").fill("scripts")
    await dialog.get_by_label("Git URL").fill(str(scripts))
    await dialog.get_by_label("Access key").select_option(label="deploy")
    await dialog.get_by_role("button", name="Create").click()
    await page.get_by_role("row", name="scripts").wait_for()

    await page.goto(base + "/environment")
    await page.get_by_role("button", name="New").click()
    await dialog.get_by_label("Name").fill("env")
    await dialog.get_by_label("Environment variables (JSON)").fill('{"GREETING": "from the form"}')
    await dialog.get_by_role("button", name="Create").click()
    await page.get_by_role("row", name="env").wait_for()

    await page.goto(base + "/templates")
    await page.get_by_role("button", name="New").click()
    await dialog.get_by_label("Name", exact=True).fill("hello")
    await dialog.get_by_label("App").select_option("bash")
    await dialog.get_by_label("Playbook / script").fill("hello.sh")
    await dialog.get_by_label("Repository").select_option(label="scripts")
    await dialog.get_by_label("Environment").select_option(label="env")
    await dialog.get_by_role("button", name="Create").click()
    row = page.get_by_role("row", name="hello")
    await row.wait_for()
    await row.get_by_role("button", name="Run").click()
    await dialog.get_by_role("button", name="Run").click()
    await page.locator(".task-head .status.success").wait_for()
    await page.locator(".output .line", has_text="hello from the form").wait_for()
    [repo] = await api.ok("GET", f"/api/project/{project_id}/repositories")
    [key] = await api.ok("GET", f"/api/project/{project_id}/keys")
    assert repo["ssh_key_id"] == key["id"] and key["type"] == "login_password"


async def test_keyboard_only_sign_in_with_visible_focus(hub, page):
    await page.goto(hub.base_url + "/")
    # The Login field has the focus at once; Tab moves on; Enter submits.
    login_field = page.get_by_label("Login")
    await login_field.wait_for()
    assert await login_field.evaluate("el => el === document.activeElement")
    await page.keyboard.type(ADMIN_LOGIN)
    await page.keyboard.press("Tab")
    await page.keyboard.type(ADMIN_PASSWORD)
    await page.keyboard.press("Tab")
    focused = await page.evaluate("""() => {
        const el = document.activeElement;
        return [el.textContent, getComputedStyle(el).outlineStyle,
                getComputedStyle(el).outlineWidth];
    }""")
    assert focused[0] == "Sign in" and focused[1] != "none" and focused[2] != "0px", focused
    await page.keyboard.press("Enter")
    await page.get_by_role("button", name="Sign out").wait_for()


async def test_output_is_text_never_markup(hub, page, tmp_path):
    await hub.start_runner(tmp_path)
    script = ("echo '<img src=x onerror=\"document.title=1\"><b>not bold</b>'\n"
              "printf '\\033[1;38;5;196mred256\\033[0m \\033[2K\\033[1Gcleared '\n"
              "printf '\\033]0;title\\007end\\n'\n")
    api, project_id, template_id = await project_with_script(hub, tmp_path, script)
    task_id = await api.run(project_id, template_id)
    await api.wait_status(project_id, task_id)
    await login(page, hub)
    await page.goto(f"{hub.base_url}/#/project/{project_id}/tasks/{task_id}")
    await page.locator(".output .line", has_text="end").wait_for()
    assert await output_lines(page) == [
        '<img src=x onerror="document.title=1"><b>not bold</b>', "red256 cleared end"]
    assert await page.locator(".output img, .output b").count() == 0
    assert await page.title() == "Semaphore"
    red = page.locator(".output span.b", has_text="red256")
    assert await red.evaluate("el => getComputedStyle(el).color") == "rgb(255, 0, 0)"


async def test_runner_going_away_shows_offline_then_delete_asks_first(hub, page, tmp_path):
    runner = await hub.start_runner(tmp_path, name="web-1")
    await login(page, hub)
    await page.goto(hub.base_url + "/#/runners")
    row = page.locator("tr[data-runner]", has_text="web-1")
    await row.locator(".state.online").wait_for()
    await runner.stop()
    await row.locator(".state.offline").wait_for()
    await row.get_by_role("button", name="Delete").click()
    await page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    api = await hub.api()
    assert len(await api.ok("GET", "/api/runners")) == 1
    await row.get_by_role("button", name="Delete").click()
    await page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    await page.get_by_text("No runners yet").wait_for()
    assert await api.ok("GET", "/api/runners") == []


async def test_run_with_the_overrides_the_template_allows(hub, page, tmp_path):
    await hub.start_runner(tmp_path)
    _, project_id, _ = await project_with_script(
        hub, tmp_path, 'echo "args: $*"\n', arguments=["default"], allow_override=True)
    await login(page, hub)
    await page.goto(f"{hub.base_url}/#/project/{project_id}/templates")
    await page.get_by_role("row", name="t-job.sh").get_by_role("button", name="Run").click()
    dialog = page.get_by_role("dialog")
    assert await dialog.get_by_label("Branch").count() == 0  # not allowed by this template
    await dialog.get_by_label("Arguments (JSON list)").fill('["unclosed"')
    await dialog.get_by_role("button", name="Run").click()
    error = dialog.locator('.field[data-field="arguments"] .field-error')
    await error.wait_for()
    assert "arguments" in await error.inner_text()
    await dialog.get_by_label("Arguments (JSON list)").fill('["one", "two"]')
    await dialog.get_by_label("Message").fill("by hand")
    await dialog.get_by_role("button", name="Run").click()
    await page.locator(".output .line", has_text="args: default one two").wait_for()
    assert "Message: by hand" in await page.locator(".task-head").inner_text()


async def test_task_list_updates_without_reloading(hub, page, tmp_path):
    api, project_id, template_id = await project_with_script(hub, tmp_path, "echo hi\n")
    await login(page, hub)
    await page.goto(f"{hub.base_url}/#/project/{project_id}/tasks")
    await page.get_by_text("No tasks.").wait_for()
    task_id = await api.run(project_id, template_id)  # no runner yet: it waits
    row = page.locator(f'tr[data-task="{task_id}"]')
    await row.locator(".status.waiting").wait_for()
    await hub.start_runner(tmp_path)
    await row.locator(".status.success").wait_for()


async def test_user_changes_their_own_password(hub, page):
    api = await hub.api()
    await api.ok("POST", "/api/users", {"name": "Bob", "username": "bob",
                                        "email": "bob@example.com",
                                        "password": "bob-password-1"}, 201)
    await login(page, hub, "bob", "bob-password-1")
    assert await page.get_by_role("link", name="Users").count() == 0
    await page.get_by_role("link", name="API tokens").click()
    await page.get_by_label("New password").fill("short")
    await page.get_by_role("button", name="Change my password").click()
    await page.locator('.field[data-field="password"] .field-error').wait_for()
    await page.get_by_label("New password").fill("bob-password-2")
    await page.get_by_role("button", name="Change my password").click()
    await page.get_by_text("Your password was changed.").wait_for()
    fresh = await hub.api(login=False)
    await fresh.login("bob", "bob-password-2")


async def test_rollout_canary_is_started_and_followed_from_the_runners_page(tmp_path, page):
    from hub.runner_binaries import add_binary
    builds = tmp_path / "builds"
    builds.mkdir()
    running = await start_hub(tmp_path, runner_binaries_path=str(builds))
    try:
        add_binary(str(builds), running.hub.release_key, Path("/bin/true"), "0.2.0", "amd64")
        await running.start_runner(tmp_path, name="web-1")
        await login(page, running)
        await page.goto(running.base_url + "/#/runners")
        await page.get_by_label("Version").fill("0.2.0")
        await page.get_by_label("Canary runners first").fill("1")
        await page.get_by_label("Healthy minutes before the rest").fill("0")
        await page.get_by_role("button", name="Start rollout").click()
        await page.locator(".rollout-state", has_text="Rollout to 0.2.0").wait_for()
        api = await running.api()
        rollout = await api.ok("GET", "/api/runners/update")
        assert rollout["version"] == "0.2.0" and rollout["canary"] == 1
        # The runner's part shows in its row (this in-process runner cannot update itself:
        # it says so, and the page shows it).
        row = page.locator("tr[data-runner]", has_text="web-1")
        await row.get_by_text("update:").wait_for(timeout=30_000)
        await page.locator(".rollout-standing").wait_for(timeout=30_000)
        await shot(page, "runners-rollout")
    finally:
        await running.close()


async def test_project_owner_adds_a_project_runner_that_connects(hub, page, tmp_path):
    api = await hub.api()
    project_id = await api.project("Team")
    owner = await api.ok("POST", "/api/users", {"name": "Olga", "username": "olga",
                                                "email": "olga@example.com",
                                                "password": "olga-password-1"}, 201)
    await api.ok("POST", f"/api/project/{project_id}/users",
                 {"user_id": owner["id"], "role": "owner"}, 204)
    await login(page, hub, "olga", "olga-password-1")
    await page.goto(f"{hub.base_url}/#/project/{project_id}/runners")
    await page.get_by_role("heading", name="Project runners").wait_for()
    assert await page.get_by_text("Runner updates").count() == 0  # admins only
    await page.get_by_role("button", name="Add runner").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Name").fill("team-1")
    await dialog.get_by_role("button", name="Create runner").click()
    token = await page.locator("#new-token").inner_text()
    config = json.loads(await page.locator("#setup-config").inner_text())
    assert config["runner"]["token"] == token
    await dialog.get_by_role("button", name="Close").click()
    await hub.start_runner(tmp_path, name="team-1", token=token)
    row = page.locator("tr[data-runner]", has_text="team-1")
    await row.locator(".state.online").wait_for()
    assert f"project {project_id}" in await row.inner_text()
    # The owner edits it (through the project's runners API).
    await row.get_by_role("button", name="Edit").click()
    await dialog.get_by_label("Tags").fill("team")
    await dialog.get_by_role("button", name="Save").click()
    await dialog.wait_for(state="detached")
    (runner,) = await api.ok("GET", f"/api/project/{project_id}/runners")
    assert (runner["name"], runner["tags"], runner["active"]) == ("team-1", ["team"], True)


async def test_edit_a_runner_name_tags_and_limit(hub, page, tmp_path):
    await hub.start_runner(tmp_path, name="web-1", tags=["prod"])
    await login(page, hub)
    await page.goto(hub.base_url + "/#/runners")
    row = page.locator("tr[data-runner]", has_text="web-1")
    await row.get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Max parallel tasks").fill("-1")
    await dialog.get_by_role("button", name="Save").click()
    error = dialog.locator('.field[data-field="max_parallel_tasks"] .field-error')
    await error.get_by_text("max_parallel_tasks").wait_for()
    await dialog.get_by_label("Name").fill("web-renamed")
    await dialog.get_by_label("Tags").fill("prod, gpu")
    await dialog.get_by_label("Max parallel tasks").fill("3")
    await dialog.get_by_role("button", name="Save").click()
    await dialog.wait_for(state="detached")
    await page.locator("tr[data-runner]", has_text="web-renamed").wait_for()
    api = await hub.api()
    (runner,) = await api.ok("GET", "/api/runners")
    assert (runner["name"], runner["tags"], runner["max_parallel_tasks"]) == (
        "web-renamed", ["prod", "gpu"], 3)
    assert runner["active"] is True


SECRET_SCRIPT = ('echo "TOKEN=${API_TOKEN:+set}"\n'
                 '[ "$API_TOKEN" = second-value-2 ] && echo "TOKEN=updated"\ntrue\n')


async def _run_output(api, project_id, template_id) -> str:
    task_id = await api.run(project_id, template_id)
    assert (await api.wait_status(project_id, task_id))["status"] == "success"
    return await api.raw_output(project_id, task_id)


async def _edit_environment(page, hub, project_id):
    await page.goto(f"{hub.base_url}/#/project/{project_id}/environment")
    await page.locator("tbody tr").first.get_by_role("button", name="Edit").click()
    return page.get_by_role("dialog")


async def test_environment_secrets_add_change_delete_never_shown(hub, page, tmp_path):
    await hub.start_runner(tmp_path)
    api, project_id, template_id = await project_with_script(hub, tmp_path, SECRET_SCRIPT,
                                                             env={})
    (environment,) = await api.ok("GET", f"/api/project/{project_id}/environment")
    await login(page, hub)
    dialog = await _edit_environment(page, hub, project_id)
    await dialog.get_by_role("button", name="Add secret").click()
    await dialog.get_by_label("Secret value").fill("first-value-1")
    await dialog.get_by_role("button", name="Save").click()
    # No name: the API's error shows next to the secrets.
    error = dialog.locator('.field[data-field="secrets"] .field-error')
    await error.get_by_text("needs a `name`").wait_for()
    await dialog.get_by_label("Secret name").fill("API_TOKEN")
    await dialog.get_by_role("button", name="Save").click()
    await dialog.wait_for(state="detached")
    assert "first-value-1" not in await page.content()
    path = f"/api/project/{project_id}/environment/{environment['id']}"
    secrets = (await api.ok("GET", path))["secrets"]
    assert [(s["name"], s["type"]) for s in secrets] == [("API_TOKEN", "env")]
    assert "first-value-1" not in json.dumps(await api.ok("GET", path))
    output = await _run_output(api, project_id, template_id)
    assert "TOKEN=set" in output and "TOKEN=updated" not in output
    # Listed (name and type, no value), given a new value.
    dialog = await _edit_environment(page, hub, project_id)
    row = dialog.locator("tr[data-secret-id]")
    assert "API_TOKEN" in await row.inner_text()
    assert await dialog.get_by_label("New value of API_TOKEN").input_value() == ""
    await dialog.get_by_label("New value of API_TOKEN").fill("second-value-2")
    await dialog.get_by_role("button", name="Save").click()
    await dialog.wait_for(state="detached")
    assert "second-value-2" not in await page.content()
    assert "TOKEN=updated" in await _run_output(api, project_id, template_id)
    # Deleted: gone from the API and from the task's environment.
    dialog = await _edit_environment(page, hub, project_id)
    await dialog.get_by_role("button", name="Delete secret API_TOKEN").click()
    await dialog.get_by_role("button", name="Save").click()
    await dialog.wait_for(state="detached")
    assert (await api.ok("GET", path))["secrets"] == []
    output = await _run_output(api, project_id, template_id)
    assert "TOKEN=set" not in output and "TOKEN=" in output


async def test_template_vaults_added_and_removed_ansible_only(hub, page, tmp_path):
    api, project_id, template_id = await project_with_script(hub, tmp_path, "- hosts: all\n",
                                                             app="ansible")
    base = f"/api/project/{project_id}"
    key = await api.ok("POST", f"{base}/keys", {
        "name": "vault-pass", "type": "login_password",
        "login_password": {"login": "", "password": "vault-secret-1"}}, 201)
    await api.ok("POST", f"{base}/keys", {"name": "no-password", "type": "none"}, 201)
    await login(page, hub)
    await page.goto(f"{hub.base_url}/#/project/{project_id}/templates")
    await page.get_by_role("row", name="t-job.sh").get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_role("button", name="Add vault").click()
    await dialog.get_by_label("Vault id").fill("bad id")
    # Only keys holding a password are offered.
    options = await dialog.get_by_label("Vault password key").locator("option").all_inner_texts()
    assert options[1:] == ["vault-pass"]
    await dialog.get_by_label("Vault password key").select_option("vault-pass")
    await dialog.get_by_role("button", name="Save").click()
    error = dialog.locator('.field[data-field="vaults"] .field-error')
    await error.get_by_text("a vault id of letters").wait_for()
    await dialog.get_by_label("Vault id").fill("prod")
    await dialog.get_by_role("button", name="Add vault").click()
    second = dialog.locator("tr.vault").nth(1)
    await second.get_by_label("Vault id").fill("dev")
    await second.get_by_label("Vault type").select_option("script")
    assert await second.get_by_label("Vault password key").is_hidden()
    await second.get_by_label("Vault script").fill("vault-pass.sh")
    await dialog.get_by_role("button", name="Save").click()
    await dialog.wait_for(state="detached")
    template = await api.ok("GET", f"{base}/templates/{template_id}")
    assert [(v["name"], v["type"], v["vault_key_id"], v["script"])
            for v in template["vaults"]] == [("prod", "password", key["id"], ""),
                                              ("dev", "script", None, "vault-pass.sh")]
    # Listed again on edit; one removed.
    await page.get_by_role("row", name="t-job.sh").get_by_role("button", name="Edit").click()
    await dialog.locator("tr.vault").nth(1).wait_for()
    assert await dialog.locator("tr.vault").count() == 2
    assert await dialog.locator("tr.vault").first.get_by_label("Vault id").input_value() == "prod"
    await dialog.locator("tr.vault").first.get_by_role("button", name="Remove vault").click()
    # Not ansible: no vaults shown.
    await dialog.get_by_label("App").select_option("bash")
    assert await dialog.locator('.field[data-field="vaults"]').is_hidden()
    await dialog.get_by_label("App").select_option("ansible")
    await dialog.get_by_role("button", name="Save").click()
    await dialog.wait_for(state="detached")
    template = await api.ok("GET", f"{base}/templates/{template_id}")
    assert [v["name"] for v in template["vaults"]] == ["dev"]
    assert "vault-secret-1" not in await page.content()


async def test_editing_a_template_keeps_the_view_it_is_in(hub, page, tmp_path):
    api, project_id, template_id = await project_with_script(hub, tmp_path, "echo hi\n")
    base = f"/api/project/{project_id}"
    view = await api.ok("POST", f"{base}/views", {"title": "Deploys"}, 201)
    template = await api.ok("GET", f"{base}/templates/{template_id}")
    template["view_id"] = view["id"]
    await api.ok("PUT", f"{base}/templates/{template_id}", template, 204)
    await login(page, hub)
    await page.goto(f"{hub.base_url}/#/project/{project_id}/templates")
    await page.get_by_role("row", name="t-job.sh").get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Description").fill("edited in the dashboard")
    await dialog.get_by_role("button", name="Save").click()
    await dialog.wait_for(state="detached")
    template = await api.ok("GET", f"{base}/templates/{template_id}")
    assert template["description"] == "edited in the dashboard"
    assert template["view_id"] == view["id"]
