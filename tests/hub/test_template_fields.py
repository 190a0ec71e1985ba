"""Semaphore's template fields beyond the basics (survey_vars, task_params, the flags and the
build/deploy fields) through a real hub: stored, returned, checked; and a task's survey
answers checked against its template's survey when it is created."""

import json

import pytest

from tests.hubkit import start_hub

SURVEY = [
    {"name": "replicas", "title": "Replicas", "description": "how many", "type": "int",
     "required": True, "values": [], "default_value": ""},
    {"name": "region", "title": "Region", "description": "", "type": "enum",
     "required": True, "values": [{"name": "Europe", "value": "eu"},
                                  {"name": "United States", "value": "us"}],
     "default_value": "eu"},
    {"name": "note", "title": "Note", "description": "", "type": "", "required": False,
     "values": [], "default_value": ""},
    {"name": "token", "title": "Token", "description": "api token", "type": "secret",
     "required": False, "values": [], "default_value": ""},
]
TASK_PARAMS = {"allow_debug": True, "allow_override_inventory": False,
               "allow_override_limit": True, "allow_override_tags": False,
               "allow_override_skip_tags": False, "limit": ["web"], "tags": ["deploy"],
               "skip_tags": []}


@pytest.fixture
async def project(api):
    return await api.project()


def full_template(**extra) -> dict:
    return {"name": "full", "app": "bash", "playbook": "run.sh", "survey_vars": SURVEY,
            "task_params": TASK_PARAMS, "allow_override_args_in_task": True,
            "allow_override_branch_in_task": True, "allow_parallel_tasks": True,
            "suppress_success_alerts": True, "autorun": True, "start_version": "1.0.0",
            **extra}


async def test_every_field_round_trips_through_post_put_and_get(api, project):
    build = await api.ok("POST", f"/api/project/{project}/templates",
                         {"name": "build", "playbook": "b.sh", "app": "bash",
                          "type": "build"}, 201)
    created = await api.ok("POST", f"/api/project/{project}/templates",
                           full_template(type="deploy", build_template_id=build["id"]), 201)
    shown = await api.ok("GET", f"/api/project/{project}/templates/{created['id']}")
    for got in (created, shown):
        assert got["survey_vars"] == SURVEY
        assert got["task_params"] == TASK_PARAMS
        assert got["allow_override_args_in_task"] is True
        assert got["allow_override_branch_in_task"] is True
        assert got["allow_parallel_tasks"] is True
        assert got["suppress_success_alerts"] is True
        assert got["autorun"] is True
        assert got["start_version"] == "1.0.0"
        assert got["build_template_id"] == build["id"] and got["type"] == "deploy"
    listed = await api.ok("GET", f"/api/project/{project}/templates")
    assert next(t for t in listed if t["id"] == created["id"])["survey_vars"] == SURVEY

    changed_survey = [{"name": "count", "title": "Count", "type": "int"}]
    await api.ok("PUT", f"/api/project/{project}/templates/{created['id']}",
                 {"name": "full", "app": "bash", "playbook": "run.sh",
                  "survey_vars": changed_survey, "task_params": {"allow_debug": False},
                  "allow_parallel_tasks": False, "suppress_success_alerts": False,
                  "autorun": False, "start_version": None, "build_template_id": None}, 204)
    shown = await api.ok("GET", f"/api/project/{project}/templates/{created['id']}")
    assert shown["survey_vars"] == [{"name": "count", "title": "Count", "description": "",
                                     "type": "int", "required": False, "values": [],
                                     "default_value": ""}]
    assert shown["task_params"] == {"allow_debug": False}
    assert not shown["allow_parallel_tasks"] and not shown["suppress_success_alerts"]
    assert not shown["autorun"] and shown["start_version"] is None
    assert shown["build_template_id"] is None

    # Left out of an update (a client that does not know them): kept, as vaults are.
    await api.ok("PUT", f"/api/project/{project}/templates/{created['id']}",
                 {"name": "renamed", "app": "bash", "playbook": "run.sh"}, 204)
    shown = await api.ok("GET", f"/api/project/{project}/templates/{created['id']}")
    assert shown["name"] == "renamed" and shown["survey_vars"][0]["name"] == "count"
    assert shown["task_params"] == {"allow_debug": False}
    # An empty survey clears it.
    await api.ok("PUT", f"/api/project/{project}/templates/{created['id']}",
                 {"name": "renamed", "app": "bash", "playbook": "run.sh", "survey_vars": [],
                  "task_params": {}}, 204)
    shown = await api.ok("GET", f"/api/project/{project}/templates/{created['id']}")
    assert shown["survey_vars"] == [] and shown["task_params"] == {}


async def test_a_template_without_them_gets_semaphore_defaults(api, project):
    created = await api.ok("POST", f"/api/project/{project}/templates",
                           {"name": "plain", "app": "bash", "playbook": "run.sh"}, 201)
    assert created["survey_vars"] == [] and created["task_params"] == {}
    assert created["allow_parallel_tasks"] is False and created["autorun"] is False
    assert created["suppress_success_alerts"] is False
    assert created["start_version"] is None and created["build_template_id"] is None


@pytest.mark.parametrize(("change", "field"), [
    ({"survey_vars": [{"name": "a", "type": "float"}]}, "survey_vars[0].type"),
    ({"survey_vars": [{"title": "no name"}]}, "survey_vars[0]"),
    ({"survey_vars": [{"name": ""}]}, "survey_vars[0].name"),
    ({"survey_vars": [{"name": "a", "required": "yes"}]}, "survey_vars[0].required"),
    ({"survey_vars": [{"name": "a"}, {"name": "a"}]}, "survey_vars[1].name"),
    ({"survey_vars": [{"name": "a", "type": "enum"}]}, "survey_vars[0].values"),
    ({"survey_vars": [{"name": "a", "type": "enum", "values": [{"name": "x", "value": 1}]}]},
     "survey_vars[0].values[0].value"),
    ({"survey_vars": [{"name": "a", "type": "int", "default_value": "ten"}]},
     "survey_vars[0].default_value"),
    ({"survey_vars": [{"name": "a", "type": "enum", "values": [{"name": "x", "value": "x"}],
                       "default_value": "y"}]}, "survey_vars[0].default_value"),
    ({"survey_vars": [{"name": "semaphore_vars"}]}, "survey_vars[0].name"),
    # A script gets `name=value` words: no option (`-rf=...`), no ambiguous word.
    ({"survey_vars": [{"name": "-rf"}]}, "survey_vars[0].name"),
    ({"survey_vars": [{"name": "a=b"}]}, "survey_vars[0].name"),
    ({"survey_vars": [{"name": "a b"}]}, "survey_vars[0].name"),
    ({"build_template_id": 2**64}, "build_template_id"),
    ({"survey_vars": "[]"}, "survey_vars"),
    ({"task_params": {"limit": "web"}}, "task_params.limit"),
    ({"task_params": {"allow_override_limit": "yes"}}, "task_params.allow_override_limit"),
    ({"task_params": []}, "task_params"),
    ({"allow_parallel_tasks": "no"}, "allow_parallel_tasks"),
    ({"suppress_success_alerts": 1}, "suppress_success_alerts"),
    ({"autorun": None}, "autorun"),
    ({"start_version": 3}, "start_version"),
    ({"build_template_id": 0}, "build_template_id"),
    ({"build_template_id": 999999}, "build_template_id"),
])
async def test_bad_fields_are_400s_naming_the_field(api, project, change, field):
    body = {"name": "bad", "app": "bash", "playbook": "run.sh", **change}
    for method, path in (("POST", f"/api/project/{project}/templates"),):
        status, answer = await api.request(method, path, body)
        assert status == 400, answer
        assert f"`{field}" in answer["error"], answer["error"]
    existing = await api.ok("POST", f"/api/project/{project}/templates",
                            {"name": "ok", "app": "bash", "playbook": "run.sh"}, 201)
    status, answer = await api.request(
        "PUT", f"/api/project/{project}/templates/{existing['id']}", body)
    assert status == 400 and f"`{field}" in answer["error"], answer


async def test_build_template_of_another_project_is_refused(api, project):
    other = await api.project("other")
    foreign = await api.ok("POST", f"/api/project/{other}/templates",
                           {"name": "b", "app": "bash", "playbook": "b.sh"}, 201)
    status, answer = await api.request(
        "POST", f"/api/project/{project}/templates",
        {"name": "d", "app": "bash", "playbook": "d.sh", "build_template_id": foreign["id"]})
    assert status == 400 and "`build_template_id`" in answer["error"]


async def survey_template(api, project: int, **extra) -> int:
    return (await api.ok("POST", f"/api/project/{project}/templates",
                         full_template(**extra), 201))["id"]


async def test_survey_answers_are_checked_when_the_task_is_created(api, project):
    template = await survey_template(api, project)
    tasks = f"/api/project/{project}/tasks"
    cases = [
        ({}, "`environment`", "'replicas' is required"),
        ({"environment": json.dumps({"replicas": ""})}, "`environment`", "'replicas'"),
        ({"environment": json.dumps({"replicas": "five"})}, "`environment`",
         "must be an integer"),
        ({"environment": json.dumps({"replicas": 2.5})}, "`environment`",
         "must be an integer"),
        ({"environment": json.dumps({"replicas": True})}, "`environment`",
         "must be an integer"),
        ({"environment": json.dumps({"replicas": 3, "region": "mars"})}, "`environment`",
         "must be one of ['eu', 'us']"),
        ({"environment": json.dumps({"replicas": 3}), "secret": "[1]"}, "`secret`",
         "JSON object"),
        ({"environment": json.dumps({"replicas": 3}), "secret": json.dumps({"token": 5})},
         "`secret`", "must be a string"),
        ({"environment": "[]"}, "`environment`", "JSON object"),
    ]
    for extra, field, words in cases:
        status, answer = await api.request("POST", tasks, {"template_id": template, **extra})
        assert status == 400, (extra, answer)
        assert field in answer["error"] and words in answer["error"], (extra, answer)
    assert await api.ok("GET", tasks) == []


async def test_required_secret_missing_is_a_400_naming_it(api, project):
    survey = [{"name": "token", "title": "Token", "type": "secret", "required": True}]
    template = await survey_template(api, project, survey_vars=survey)
    status, answer = await api.request("POST", f"/api/project/{project}/tasks",
                                       {"template_id": template, "secret": "{}"})
    assert status == 400 and "`secret`" in answer["error"] and "'token'" in answer["error"]


async def test_answers_are_typed_and_secrets_never_shown_back(api, project):
    template = await survey_template(api, project)
    secret_value = "tok-9d1e-secret"
    created = await api.ok("POST", f"/api/project/{project}/tasks", {
        "template_id": template, "secret": json.dumps({"token": secret_value}),
        # As Semaphore's run dialog sends them: text, the region left to its default.
        "environment": json.dumps({"replicas": "7", "note": "hello", "other": [1]})}, 201)
    assert json.loads(created["environment"]) == {"replicas": 7, "note": "hello",
                                                  "other": [1], "region": "eu"}
    for shown in (created,
                  await api.ok("GET", f"/api/project/{project}/tasks/{created['id']}"),
                  *await api.ok("GET", f"/api/project/{project}/tasks")):
        assert secret_value not in json.dumps(shown) and "secret" not in shown
    # A secret answer sent among the plain ones is moved out of the stored environment.
    moved = await api.ok("POST", f"/api/project/{project}/tasks", {
        "template_id": template,
        "environment": json.dumps({"replicas": 1, "token": secret_value})}, 201)
    assert json.loads(moved["environment"]) == {"replicas": 1, "region": "eu"}
    shown = await api.ok("GET", f"/api/project/{project}/tasks/{moved['id']}")
    assert secret_value not in json.dumps(shown)


async def test_task_params_overrides_follow_the_template(api, project):
    inventory = await api.ok("POST", f"/api/project/{project}/inventory",
                             {"name": "i", "inventory": "[all]\nlocalhost\n"}, 201)
    other_inventory = await api.ok("POST", f"/api/project/{project}/inventory",
                                   {"name": "j", "inventory": "[all]\nlocalhost\n"}, 201)
    body = {"name": "play", "app": "ansible", "playbook": "site.yml",
            "inventory_id": inventory["id"], "task_params": TASK_PARAMS}
    template = (await api.ok("POST", f"/api/project/{project}/templates", body, 201))["id"]
    tasks = f"/api/project/{project}/tasks"
    # limit: allowed; tags: only the template's own value (as the run dialog sends it back).
    task = await api.ok("POST", tasks, {"template_id": template,
                                        "params": {"limit": ["db"], "tags": ["deploy"]}}, 201)
    assert task["params"]["limit"] == ["db"] and task["params"]["tags"] == ["deploy"]
    status, answer = await api.request("POST", tasks, {"template_id": template,
                                                       "params": {"tags": ["other"]}})
    assert status == 400 and "`params.tags`" in answer["error"]
    assert "allow_override_tags" in answer["error"]
    status, answer = await api.request("POST", tasks, {"template_id": template,
                                                       "params": {"limit": "web"}})
    assert status == 400 and "`params.limit`" in answer["error"]
    status, answer = await api.request("POST", tasks, {"template_id": template,
                                                       "inventory_id": other_inventory["id"]})
    assert status == 400 and "allow_override_inventory" in answer["error"]
    # With allow_override_inventory, another inventory of the project, not another's.
    await api.ok("PUT", f"/api/project/{project}/templates/{template}",
                 {**body, "task_params": {"allow_override_inventory": True}}, 204)
    task = await api.ok("POST", tasks, {"template_id": template,
                                        "inventory_id": other_inventory["id"]}, 201)
    assert task["inventory_id"] == other_inventory["id"]
    status, answer = await api.request("POST", tasks, {"template_id": template,
                                                       "inventory_id": 987654})
    assert status == 400 and "`inventory_id`" in answer["error"]


async def test_secret_answers_are_stored_encrypted_and_gone_when_the_task_ends(hub, api,
                                                                              project):
    template = await survey_template(api, project)
    task = await api.ok("POST", f"/api/project/{project}/tasks", {
        "template_id": template, "environment": json.dumps({"replicas": 1}),
        "secret": json.dumps({"token": "tok-stored-3c9a"})}, 201)
    row = await hub.hub.store.get_task(task["id"])
    assert row["secret"] and "tok-stored-3c9a" not in row["secret"]
    assert json.loads(hub.hub.cipher.decrypt(row["secret"])) == {"token": "tok-stored-3c9a"}
    # No runner: it waits; stopped, it ends, and its secret answers go.
    await api.ok("POST", f"/api/project/{project}/tasks/{task['id']}/stop", status=204)
    assert (await api.wait_status(project, task["id"]))["status"] == "stopped"
    assert (await hub.hub.store.get_task(task["id"]))["secret"] == ""


async def test_a_hub_without_an_encryption_key_refuses_secret_answers(tmp_path):
    running = await start_hub(tmp_path, access_key_encryption="")
    try:
        api = await running.api()
        project = await api.project()
        template = await survey_template(api, project)
        status, answer = await api.request("POST", f"/api/project/{project}/tasks", {
            "template_id": template, "environment": json.dumps({"replicas": 1}),
            "secret": json.dumps({"token": "x"})})
        assert status == 400 and "access_key_encryption" in answer["error"]
        # Without secret answers it runs as ever.
        await api.ok("POST", f"/api/project/{project}/tasks", {
            "template_id": template, "environment": json.dumps({"replicas": 1})}, 201)
    finally:
        await running.close()
