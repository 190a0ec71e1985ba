"""Semaphore's project backup and restore through a real hub: a backup in Semaphore 2.16's
format restores into a project with every object and reference, backs up to the same JSON,
carries no secret, fails whole on a bad backup, and follows Semaphore's roles."""

import copy
import json
from pathlib import Path

from hub.api.models import TemplateRequest
from tests.hub.test_integrations import PUSH, SECRET, post, signed
from tests.hub.test_users_api import logged_in, make_user

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "semaphore_backup_2_16.json"
# A template's references by name in the backup (the hub stores ids).
TEMPLATE_REFS = {"repository", "inventory", "environment", "view", "vaults", "cron",
                 "build_template"}
# Template fields of Semaphore's format the hub's API does not take (yet): not restored, so
# not compared. A field TemplateRequest gains (survey_vars, task_params,
# suppress_success_alerts from the survey branch) is compared from then on.
NOT_KEPT: set[str] = set()


def fixture() -> dict:
    return json.loads(FIXTURE.read_text())


async def project_ids(api) -> set[int]:
    return {project["id"] for project in await api.ok("GET", "/api/projects")}


async def test_restore_makes_every_object_with_its_references(hub, api):
    project = await api.ok("POST", "/api/projects/restore", fixture())
    assert project["name"] == "Web platform" and project["alert"] is True
    assert project["alert_chat"] == "ops-alerts" and project["max_parallel_tasks"] == 2
    base = f"/api/project/{project['id']}"

    keys = {key["name"]: key for key in await api.ok("GET", f"{base}/keys")}
    assert {name: key["type"] for name, key in keys.items()} == {
        "deploy key": "ssh", "vault password": "login_password", "None": "none",
        "github webhook": "login_password"}
    [repo] = await api.ok("GET", f"{base}/repositories")
    assert (repo["name"], repo["git_url"], repo["git_branch"], repo["ssh_key_id"]) == (
        "site", "git@git.example.com:web/site.git", "main", keys["deploy key"]["id"])
    [inventory] = await api.ok("GET", f"{base}/inventory")
    assert inventory["ssh_key_id"] == keys["deploy key"]["id"]
    assert inventory["become_key_id"] == keys["vault password"]["id"]
    assert inventory["inventory"] == "[web]\nweb1.example.com\nweb2.example.com\n"
    [environment] = await api.ok("GET", f"{base}/environment")
    assert environment["env"] == '{"DEPLOY_ENV": "production"}'
    [view] = await api.ok("GET", f"{base}/views")
    assert (view["title"], view["position"]) == ("Deploys", 1)

    templates = {t["name"]: t for t in await api.ok("GET", f"{base}/templates")}
    deploy, rotate = templates["Deploy site"], templates["Rotate logs"]
    for template in (deploy, rotate):
        assert template["repository_id"] == repo["id"]
        assert template["environment_id"] == environment["id"]
        assert template["view_id"] == view["id"]
    assert deploy["inventory_id"] == inventory["id"] and rotate["inventory_id"] is None
    assert (deploy["app"], deploy["playbook"], deploy["arguments"]) == (
        "ansible", "deploy.yml", '["--diff"]')
    assert deploy["git_branch"] == "release" and deploy["runner_tag"] == "linux"
    assert deploy["allow_override_args_in_task"] and deploy["allow_override_branch_in_task"]
    assert [(v["name"], v["type"], v["vault_key_id"], v["script"]) for v in deploy["vaults"]] \
        == [("default", "password", keys["vault password"]["id"], ""),
            ("extra", "script", None, "vault/get-pass.sh")]

    schedules = {s["name"]: s for s in await api.ok("GET", f"{base}/schedules")}
    assert set(schedules) == {"Weekly deploy", "Rotate once"}  # not the template's `cron` too
    weekly, once = schedules["Weekly deploy"], schedules["Rotate once"]
    assert (weekly["template_id"], weekly["cron_format"], weekly["active"]) == (
        deploy["id"], "30 2 * * 1", True)
    assert (once["template_id"], once["type"], once["run_at"], once["active"],
            once["delete_after_run"]) == (rotate["id"], "run_at", "2031-05-04T03:02:00Z",
                                          False, True)

    [integration] = await api.ok("GET", f"{base}/integrations")
    assert (integration["name"], integration["template_id"], integration["auth_method"],
            integration["auth_secret_id"]) == ("GitHub push", rotate["id"], "github",
                                               keys["github webhook"]["id"])
    path = f"{base}/integrations/{integration['id']}"
    [matcher] = await api.ok("GET", f"{path}/matchers")
    assert (matcher["match_type"], matcher["key"], matcher["value"]) == (
        "header", "X-GitHub-Event", "push")
    [value] = await api.ok("GET", f"{path}/values")
    assert (value["value_source"], value["key"], value["variable"]) == ("body", "ref", "ref")
    # As many aliases as the backup had, but new ones (see test_restored_webhook...).
    [alias] = await api.ok("GET", f"{path}/aliases")
    assert alias["alias"] not in json.dumps(fixture())
    [project_alias] = await api.ok("GET", f"{base}/integrations/aliases")
    assert project_alias["integration_id"] is None
    assert project_alias["alias"] not in json.dumps(fixture())

    # The restoring user owns it; the audit trail says it was restored.
    members = await api.ok("GET", f"{base}/users")
    assert [(m["username"], m["role"]) for m in members] == [("admin", "owner")]
    events = await hub.hub.store.list_events([project["id"]])
    assert [(e["object_type"], e["object_id"], e["description"]) for e in events] == [
        ("project", project["id"], "Project Web platform restored from a backup")]


async def test_backup_of_a_restored_project_is_the_backup(api):
    original = fixture()
    project = await api.ok("POST", "/api/projects/restore", original)
    backup = await api.ok("GET", f"/api/project/{project['id']}/backup")

    for section in ("meta", "keys", "repositories", "inventories", "environments", "views",
                    "schedules"):
        assert backup[section] == original[section], section
    # Aliases are made anew on restore: the same number, none of the backup's strings.
    assert len(backup["integration_aliases"]) == len(original["integration_aliases"])
    assert not set(backup["integration_aliases"]) & set(original["integration_aliases"])
    for theirs, ours in zip(original["integrations"], backup["integrations"], strict=True):
        assert len(ours.pop("aliases")) == len(theirs["aliases"])
        assert ours == {k: v for k, v in theirs.items() if k != "aliases"}
    backup = await api.ok("GET", f"/api/project/{project['id']}/backup")
    assert len(backup["templates"]) == len(original["templates"])
    accepted = set(TemplateRequest.__struct_fields__) | TEMPLATE_REFS
    for theirs, ours in zip(original["templates"], backup["templates"], strict=True):
        for field, value in theirs.items():
            if field in accepted:
                assert ours[field] == value, (theirs["name"], field)
            else:
                assert field in NOT_KEPT, f"{field} is neither restored nor known as not kept"
    # And it restores again, to the same backup.
    again = await api.ok("POST", "/api/projects/restore", backup)
    assert without_aliases(await api.ok("GET", f"/api/project/{again['id']}/backup")) == \
        without_aliases(backup)


def without_aliases(backup: dict) -> dict:
    backup = copy.deepcopy(backup)
    backup.pop("integration_aliases")
    for integration in backup["integrations"]:
        integration.pop("aliases")
    return backup


async def test_backup_carries_no_secret(api):
    project = await api.ok("POST", "/api/projects/restore", fixture())
    base = f"/api/project/{project['id']}"
    keys = {key["name"]: key for key in await api.ok("GET", f"{base}/keys")}
    # Restored keys have no secret: the user fills them in.
    await api.ok("PUT", f"{base}/keys/{keys['deploy key']['id']}", {
        "name": "deploy key", "type": "ssh", "override_secret": True,
        "ssh": {"login": "deployer", "passphrase": "pass-PHRASE-1",
                "private_key": "-----BEGIN KEY-----SECRET-KEY-BODY"}}, 204)
    await api.ok("PUT", f"{base}/keys/{keys['vault password']['id']}", {
        "name": "vault password", "type": "login_password", "override_secret": True,
        "login_password": {"login": "v", "password": "vault-PASSWORD-2"}}, 204)
    [environment] = await api.ok("GET", f"{base}/environment")
    await api.ok("PUT", f"{base}/environment/{environment['id']}", {
        "name": "production", "json": "{}", "env": "{}", "password": "env-PASSWORD-3",
        "secrets": [{"name": "TOKEN", "secret": "env-SECRET-4", "type": "env"}]}, 204)
    status, raw = await api.request("GET", f"{base}/backup")
    text = json.dumps(raw)
    assert status == 200
    for secret in ("SECRET-KEY-BODY", "pass-PHRASE-1", "vault-PASSWORD-2", "env-PASSWORD-3",
                   "env-SECRET-4", "deployer"):
        assert secret not in text
    assert raw["keys"][0] == {"name": "deploy key", "type": "ssh", "owner": ""}
    assert "password" not in raw["environments"][0]


async def test_bad_backups_name_the_field_and_leave_no_project(hub, api):
    before = await project_ids(api)

    async def refused(backup, *words):
        status, body = await api.request("POST", "/api/projects/restore", backup)
        assert status == 400, body
        for word in words:
            assert word in body["error"], body["error"]
        assert await project_ids(api) == before

    def changed(edit):
        backup = fixture()
        edit(backup)
        return backup

    await refused([1, 2], "JSON object")
    status, body = await api.request("POST", "/api/projects/restore", None)
    assert status == 400 and "JSON object" in body["error"]
    await refused(changed(lambda b: b.pop("meta")), "`meta`")
    await refused(changed(lambda b: b["meta"].update(name=7)), "`meta.name`")
    await refused(changed(lambda b: b["templates"][1].update(inventory="x")),
                  '`templates[1].inventory`', 'unknown inventory "x"')
    await refused(changed(lambda b: b["repositories"][0].update(ssh_key="gone")),
                  "`repositories[0].ssh_key`", "unknown key")
    await refused(changed(lambda b: b["schedules"][1].update(template="nope")),
                  "`schedules[1].template`")
    await refused(changed(lambda b: b["templates"][0]["vaults"][0].update(vault_key="no")),
                  "`templates[0].vaults[0].vault_key`")
    await refused(changed(lambda b: b["keys"].append({"name": "None", "type": "none"})),
                  "`keys[4].name`", "twice")
    await refused(changed(lambda b: b.update(views={})), "`views`", "list")
    await refused(changed(lambda b: b["inventories"].append(3)), "`inventories[1]`")
    # Checks that run as objects are stored: the project made so far is deleted again.
    await refused(changed(lambda b: b["keys"][0].update(type="certificate")), "`keys[0].type`")
    await refused(changed(lambda b: b["templates"][1].update(playbook="../../etc/passwd")),
                  "`templates[1].playbook`")
    await refused(changed(lambda b: b["templates"][0]["vaults"][0].update(
        vault_key="deploy key")), "`templates[0].vaults[0]`", "login_password")
    await refused(changed(lambda b: b["schedules"][0].update(cron_format="every day")),
                  "`schedules[0]")
    await refused(changed(lambda b: b["environments"][0].update(env="[1]")),
                  "`environments[0].env`")
    await refused(changed(lambda b: b["templates"][1].update(arguments="not json")),
                  "`templates[1].arguments`")
    await refused(changed(lambda b: b["integrations"][0].update(template="x")),
                  '`integrations[0].template`', 'unknown template "x"')
    await refused(changed(lambda b: b["integrations"][0].pop("template")),
                  "`integrations[0].template`")
    await refused(changed(lambda b: b["integrations"][0].update(auth_secret="gone")),
                  "`integrations[0].auth_secret`", 'unknown key "gone"')
    await refused(changed(lambda b: b["integrations"][0].update(matchers={})),
                  "`integrations[0].matchers`", "list")
    await refused(changed(lambda b: b["integrations"][0].update(aliases=[1])),
                  "`integrations[0].aliases[0]`")
    await refused(changed(lambda b: b.update(integration_aliases="a")),
                  "`integration_aliases`", "list")
    # The REST API's checks, run as the integration is stored (the project goes again).
    await refused(changed(lambda b: b["integrations"][0].update(auth_secret="deploy key")),
                  "`integrations[0].auth_secret`", "(deploy key)", "login_password")
    await refused(changed(lambda b: b["integrations"][0].pop("auth_secret")),
                  "`integrations[0].auth_secret")
    await refused(changed(lambda b: b["integrations"][0].update(auth_method="smtp")),
                  "`integrations[0].auth_method`")
    await refused(changed(lambda b: b["integrations"][0]["matchers"][0].update(value="")),
                  "`integrations[0].matchers[0].value`")
    await refused(changed(lambda b: b["integrations"][0]["extract_values"][0].update(
        variable="not a name")), "`integrations[0].extract_values[0].variable`")
    assert await hub.hub.store.list_events(None) == []


async def test_roles_backup_for_managers_restore_for_admins(hub, api):
    project = await api.ok("POST", "/api/projects/restore", fixture())
    base = f"/api/project/{project['id']}"
    for name, role in (("guest", "guest"), ("runner", "task_runner"), ("boss", "manager")):
        user_id = await make_user(api, name)
        await api.ok("POST", f"{base}/users", {"user_id": user_id, "role": role}, 204)
    for name in ("guest", "runner"):
        member = await logged_in(hub, name)
        status, body = await member.request("GET", f"{base}/backup")
        assert status == 403 and "manager" in body["error"]
    boss = await logged_in(hub, "boss")
    backup = await boss.ok("GET", f"{base}/backup")
    assert backup["meta"]["name"] == "Web platform"

    # A restore creates a project: admins only, unless the hub lets anyone (Semaphore's
    # non_admin_can_create_project; tests/hub/test_users_api.py restores on such a hub).
    await make_user(api, "carol")
    carol = await logged_in(hub, "carol")
    assert (await carol.request("GET", f"{base}/backup"))[0] == 404
    status, body = await carol.request("POST", "/api/projects/restore", copy.deepcopy(backup))
    assert status == 401 and "non_admin_can_create_project" in body["error"]
    assert await carol.ok("GET", "/api/projects") == []
    anonymous = await hub.api(login=False)
    assert (await anonymous.request("POST", "/api/projects/restore", backup))[0] == 401


async def test_older_backup_with_template_cron_and_owned_keys(api):
    """Backups from before Semaphore's `schedules` list carry a template's `cron`; keys owned
    by an environment or a user are not project keys."""
    backup = fixture()
    backup.pop("schedules")
    backup["keys"].append({"name": "TOKEN", "type": "string", "owner": "environment"})
    project = await api.ok("POST", "/api/projects/restore", backup)
    base = f"/api/project/{project['id']}"
    [schedule] = await api.ok("GET", f"{base}/schedules")
    assert (schedule["name"], schedule["cron_format"]) == ("Deploy site", "30 2 * * 1")
    # A schedule from before schedules had names takes its template's.
    backup = fixture()
    backup["schedules"] = [{"cron_format": "@daily", "name": "", "active": True,
                            "template": "Rotate logs"}]
    project = await api.ok("POST", "/api/projects/restore", backup)
    [schedule] = await api.ok("GET", f"/api/project/{project['id']}/schedules")
    assert (schedule["name"], schedule["cron_format"]) == ("Rotate logs", "@daily")
    assert "TOKEN" not in {key["name"] for key in await api.ok("GET", f"{base}/keys")}


async def test_duplicate_names_get_unique_names_in_the_backup(api):
    pid = await api.project()
    base = f"/api/project/{pid}"
    first = await api.ok("POST", f"{base}/keys", {"name": "k", "type": "none"}, 201)
    second = await api.ok("POST", f"{base}/keys", {"name": "k", "type": "none"}, 201)
    await api.ok("POST", f"{base}/repositories", {"name": "r", "git_url": "/srv/a",
                                                  "ssh_key_id": second["id"]}, 201)
    backup = await api.ok("GET", f"{base}/backup")
    assert [key["name"] for key in backup["keys"]] == ["k", f"k - {second['id']}"]
    assert backup["repositories"][0]["ssh_key"] == f"k - {second['id']}"
    assert first["id"] != second["id"]
    restored = await api.ok("POST", "/api/projects/restore", backup)
    repo = (await api.ok("GET", f"/api/project/{restored['id']}/repositories"))[0]
    keys = await api.ok("GET", f"/api/project/{restored['id']}/keys")
    assert repo["ssh_key_id"] == keys[1]["id"]


async def test_restored_webhook_starts_a_task_once_its_key_is_filled_in(hub, api):
    """The restored integration checks GitHub's signature with the restored key, which has
    no secret until the user gives it one; the backup's alias is not an address of it."""
    project = await api.ok("POST", "/api/projects/restore", fixture())
    base = f"/api/project/{project['id']}"
    [integration] = await api.ok("GET", f"{base}/integrations")
    [alias] = await api.ok("GET", f"{base}/integrations/{integration['id']}/aliases")
    body = json.dumps(PUSH).encode()
    # The key came back without a secret: no signature is good enough yet.
    status, _, _ = await post(hub, alias["url"], body, signed(body, secret=""))
    assert status == 401
    keys = {key["name"]: key for key in await api.ok("GET", f"{base}/keys")}
    await api.ok("PUT", f"{base}/keys/{keys['github webhook']['id']}", {
        "name": "github webhook", "type": "login_password", "override_secret": True,
        "login_password": {"login": "", "password": SECRET}}, 204)
    status, headers, text = await post(hub, alias["url"], body, signed(body))
    assert status == 204, text
    task = await api.task(project["id"], int(headers["X-Semaphore-Task-ID"]))
    assert task["integration_id"] == integration["id"]
    assert json.loads(task["environment"]) == {"ref": "refs/heads/main"}
    # Whoever saw the backup knows its aliases: they reach nothing.
    [old] = fixture()["integrations"][0]["aliases"]
    old_url = alias["url"].rsplit("/", 1)[0] + "/" + old
    assert (await post(hub, old_url, body, signed(body)))[0] == 404
    [old_project_alias] = fixture()["integration_aliases"]
    assert (await post(hub, old_url.rsplit("/", 1)[0] + "/" + old_project_alias, body,
                       signed(body)))[0] == 404


async def test_integration_as_semaphore_writes_it(api):
    """Semaphore's marshaller writes an integration's and its rows' own ids (of the instance
    the backup came from) and nulls; they are ignored, and an integration without auth needs
    no key."""
    backup = fixture()
    backup["integrations"] = [{
        "id": 12, "project_id": 3, "template_id": 40, "auth_secret_id": None,
        "name": "deploy hook", "auth_method": "", "auth_header": "", "searchable": True,
        "template": "Deploy site", "auth_secret": None, "task_params": {"debug": True},
        "matchers": [{"id": 7, "integration_id": 12, "name": "main", "match_type": "body",
                      "method": "equals", "body_data_type": "json", "key": "ref",
                      "value": "refs/heads/main"}],
        "extract_values": [], "aliases": None}]
    project = await api.ok("POST", "/api/projects/restore", backup)
    base = f"/api/project/{project['id']}"
    [integration] = await api.ok("GET", f"{base}/integrations")
    templates = {t["name"]: t["id"] for t in await api.ok("GET", f"{base}/templates")}
    assert (integration["template_id"], integration["auth_secret_id"],
            integration["searchable"], integration["task_params"]) == (
        templates["Deploy site"], None, True, {"debug": True})
    [matcher] = await api.ok("GET", f"{base}/integrations/{integration['id']}/matchers")
    assert matcher["integration_id"] == integration["id"] and matcher["key"] == "ref"
    assert await api.ok("GET", f"{base}/integrations/{integration['id']}/aliases") == []
    exported = (await api.ok("GET", f"{base}/backup"))["integrations"]
    assert exported == [{
        "name": "deploy hook", "auth_method": "", "auth_header": "", "searchable": True,
        "task_params": {"debug": True}, "template": "Deploy site",
        "matchers": [{"name": "main", "match_type": "body", "method": "equals",
                      "body_data_type": "json", "key": "ref", "value": "refs/heads/main"}],
        "extract_values": [], "aliases": []}]
