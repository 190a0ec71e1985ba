"""A template's survey in the dashboard, in a real browser against a real hub and runner: the
template form adds, edits and removes survey variables; the run dialog asks for each (a
number for `int`, a choice for `enum`, a password for `secret`), shows the hub's refusal at
the variable's own input, and the answers reach the script (the secret masked)."""

import json

from tests.browser import test_dashboard_ui as ui
from tests.browser.test_dashboard_ui import login, project_with_script

# The dashboard tests' fixtures: an in-process hub, async Playwright on the same loop.
hub, browser, page = ui.hub, ui.browser, ui.page

SECRET = "tok-secret-7731"


async def test_survey_edited_in_the_template_form(hub, page, tmp_path):
    api, project_id, template_id = await project_with_script(hub, tmp_path, "echo hi\n")
    base = f"/api/project/{project_id}"
    await login(page, hub)
    await page.goto(f"{hub.base_url}/#/project/{project_id}/templates")
    await page.get_by_role("row", name="t-job.sh").get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_role("button", name="Add variable").click()
    first = dialog.locator("tr.survey-var").nth(0)
    await first.get_by_label("Variable name").fill("replicas")
    await first.get_by_label("Variable title").fill("Replicas")
    await first.get_by_label("Variable type").select_option("int")
    await first.get_by_label("Required").check()
    assert await first.get_by_label("Choices").is_hidden()  # an enum's only
    await dialog.get_by_role("button", name="Add variable").click()
    second = dialog.locator("tr.survey-var").nth(1)
    await second.get_by_label("Variable name").fill("replicas")  # twice: refused
    await second.get_by_label("Variable type").select_option("enum")
    await second.get_by_label("Choices").fill("Europe = eu\nus")
    await dialog.get_by_role("button", name="Save").click()
    error = dialog.locator('.field[data-field="survey_vars"] .field-error')
    await error.get_by_text("declared twice").wait_for()
    await second.get_by_label("Variable name").fill("region")
    await second.get_by_label("Variable description").fill("where it runs")
    await dialog.get_by_role("button", name="Add variable").click()
    third = dialog.locator("tr.survey-var").nth(2)
    await third.get_by_label("Variable name").fill("token")
    await third.get_by_label("Variable type").select_option("secret")
    await dialog.get_by_role("button", name="Save").click()
    await dialog.wait_for(state="detached")
    template = await api.ok("GET", f"{base}/templates/{template_id}")
    assert [(v["name"], v["type"], v["required"]) for v in template["survey_vars"]] == [
        ("replicas", "int", True), ("region", "enum", False), ("token", "secret", False)]
    assert template["survey_vars"][1]["values"] == [{"name": "Europe", "value": "eu"},
                                                    {"name": "us", "value": "us"}]
    assert template["survey_vars"][1]["description"] == "where it runs"

    # Shown again on edit; one removed.
    await page.get_by_role("row", name="t-job.sh").get_by_role("button", name="Edit").click()
    await dialog.locator("tr.survey-var").nth(2).wait_for()
    region = dialog.locator("tr.survey-var").nth(1)
    assert await region.get_by_label("Choices").input_value() == "Europe = eu\nus"
    await dialog.locator("tr.survey-var").nth(2).get_by_role(
        "button", name="Remove variable").click()
    await dialog.get_by_role("button", name="Save").click()
    await dialog.wait_for(state="detached")
    template = await api.ok("GET", f"{base}/templates/{template_id}")
    assert [v["name"] for v in template["survey_vars"]] == ["replicas", "region"]


async def test_run_dialog_asks_for_each_survey_variable(hub, page, tmp_path):
    await hub.start_runner(tmp_path)
    api, project_id, template_id = await project_with_script(hub, tmp_path,
                                                             'echo "args: $*"\n')
    base = f"/api/project/{project_id}"
    template = await api.ok("GET", f"{base}/templates/{template_id}")
    template["survey_vars"] = [
        {"name": "replicas", "title": "Replicas", "type": "int", "required": True},
        {"name": "region", "title": "Region", "type": "enum", "required": True,
         "values": [{"name": "Europe", "value": "eu"}, {"name": "US", "value": "us"}]},
        {"name": "token", "title": "Token", "type": "secret", "description": "api token"}]
    await api.ok("PUT", f"{base}/templates/{template_id}", template, 204)
    await login(page, hub)
    await page.goto(f"{hub.base_url}/#/project/{project_id}/templates")
    await page.get_by_role("row", name="t-job.sh").get_by_role("button", name="Run").click()
    dialog = page.get_by_role("dialog")
    replicas = dialog.get_by_label("Replicas *")
    assert await replicas.get_attribute("type") == "number"
    assert await dialog.get_by_label("Region *").evaluate("el => el.tagName") == "SELECT"
    assert await dialog.get_by_label("Token").get_attribute("type") == "password"
    # Required, left empty: the hub's 400 is shown at the variable's own input.
    await dialog.get_by_label("Region *").select_option("eu")
    await dialog.get_by_role("button", name="Run").click()
    error = dialog.locator('.field[data-field="survey.replicas"] .field-error')
    await error.get_by_text("is required").wait_for()
    await replicas.fill("4")
    await dialog.get_by_label("Token").fill(SECRET)
    await dialog.get_by_role("button", name="Run").click()
    await page.locator(".output .line", has_text="args: replicas=4 region=eu token=********"
                       ).wait_for()
    assert SECRET not in await page.content()
    tasks = await api.ok("GET", f"{base}/tasks")
    assert json.loads(tasks[0]["environment"]) == {"replicas": 4, "region": "eu"}
    assert SECRET not in json.dumps(tasks)


async def test_run_dialog_offers_tags_only_where_the_template_allows(hub, page, tmp_path):
    api, project_id, template_id = await project_with_script(hub, tmp_path, "- hosts: all\n",
                                                             app="ansible")
    base = f"/api/project/{project_id}"
    await login(page, hub)
    await page.goto(f"{hub.base_url}/#/project/{project_id}/templates")
    await page.get_by_role("row", name="t-job.sh").get_by_role("button", name="Run").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Limit").wait_for()
    assert await dialog.get_by_label("Tags").count() == 0
    await dialog.get_by_role("button", name="Close").click()
    template = await api.ok("GET", f"{base}/templates/{template_id}")
    template["task_params"] = {"allow_override_tags": True, "tags": ["deploy"]}
    await api.ok("PUT", f"{base}/templates/{template_id}", template, 204)
    await page.reload()
    await page.get_by_role("row", name="t-job.sh").get_by_role("button", name="Run").click()
    tags = dialog.get_by_label("Tags", exact=True)
    assert await tags.input_value() == "deploy"  # the template's, to change
    assert await dialog.get_by_label("Skip tags").count() == 0
    await tags.fill("deploy, db")
    await dialog.get_by_role("button", name="Run").click()
    await page.wait_for_url("**/tasks/*")
    tasks = await api.ok("GET", f"{base}/tasks")
    assert tasks[0]["params"]["tags"] == ["deploy", "db"]
