"""Semaphore's integrations through the REST API of a real hub: CRUD, roles and bad input,
then webhooks as GitHub sends them (signed with HMAC-SHA256) starting tasks; and one end to
end, a hub and a runner as processes, the webhook's task printing what it was given."""

import hashlib
import hmac
import json
import urllib.error
import urllib.request

import aiohttp
import pytest

from hub.core import integrations as rules
from tests.hub.test_users_api import logged_in, make_user
from tests.hubkit import ACCESS_KEY_ENCRYPTION, write_script
from tests.lab import wait_final

SECRET = "webhook-s3cret"
PUSH = {"ref": "refs/heads/main", "after": "9f2c1e0b7a",
        "repository": {"full_name": "acme/app", "id": 42},
        "head_commit": {"id": "9f2c1e0b7a", "message": "Fix it"},
        "commits": [{"id": "9f2c1e0b7a"}, {"id": "0b7a9f2c1e"}]}


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body,
                                                        hashlib.sha256).hexdigest(),
            "X-GitHub-Event": "push", "Content-Type": "application/json"}


async def post(hub, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict, str]:
    """A webhook call as a sender makes it: no session, no cookies."""
    async with aiohttp.ClientSession() as session, session.post(
            url, data=body, headers=headers) as response:
        return response.status, dict(response.headers), await response.text()


async def _project(api, tmp_path) -> tuple[int, int, int]:
    """A project with a bash template and a login_password key holding the secret."""
    project = await api.project()
    scripts = tmp_path / "scripts"
    write_script(scripts, "deploy.sh", 'echo "deploy $*"\n')
    template = await api.template(project, scripts, "deploy.sh")
    key = await api.ok("POST", f"/api/project/{project}/keys", {
        "name": "github", "type": "login_password",
        "login_password": {"login": "", "password": SECRET}}, 201)
    return project, template, key["id"]


async def _github_integration(api, project: int, template: int, key: int,
                              **extra) -> tuple[int, str]:
    """An integration checking GitHub's signature, a push matcher, three extract values and
    an alias; its id and webhook URL."""
    base = f"/api/project/{project}/integrations"
    integration = await api.ok("POST", base, {
        "name": "github push", "template_id": template, "auth_method": "github",
        "auth_secret_id": key, **extra}, 201)
    path = f"{base}/{integration['id']}"
    await api.ok("POST", f"{path}/matchers", {
        "name": "push only", "match_type": "header", "method": "equals",
        "key": "X-GitHub-Event", "value": "push"})
    for name, body in {"branch": {"value_source": "body", "body_data_type": "json",
                                  "key": "ref", "variable": "ref"},
                       "repo": {"value_source": "body", "body_data_type": "json",
                                "key": "repository.full_name", "variable": "repo"},
                       "event": {"value_source": "header", "key": "X-GitHub-Event",
                                 "variable": "event"}}.items():
        await api.ok("POST", f"{path}/values", {"name": name, **body}, 201)
    alias = await api.ok("POST", f"{path}/aliases")
    return integration["id"], alias["url"]


async def _tasks(api, project: int) -> list[dict]:
    return await api.ok("GET", f"/api/project/{project}/tasks")


# The pure part.

def test_paths_text_and_signatures():
    document = {"a": {"b": [{"c": 1.0}, {"c": "x"}]}, "t": True, "n": None}
    assert rules.as_text(rules.find(document, "a.b.[0].c")) == "1"
    assert rules.as_text(rules.find(document, "a.b.1.c")) == "x"
    assert rules.as_text(rules.find(document, "t")) == "true"
    assert not rules.found(rules.find(document, "a.z")) and rules.found(rules.find(document, "n"))
    assert rules.as_text(rules.find(document, "a.b.[5]")) == ""
    assert rules.compare("refs/heads/main", "contains", "main")
    assert rules.compare("a", "unequals", "b") and not rules.compare("a", "equals", "b")
    body = b'{"x": 1}'
    digest = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert rules.authenticated("github", "k", "", {"X-Hub-Signature-256": f"sha256={digest}"},
                               body)
    assert not rules.authenticated("github", "k", "", {"X-Hub-Signature-256": digest}, body)
    assert rules.authenticated("hmac", "k", "X-Sig", {"X-Sig": digest}, body)
    assert not rules.authenticated("hmac", "k", "X-Sig", {"X-Sig": digest}, body + b" ")
    assert rules.authenticated("token", "k", "X-Token", {"X-Token": "k"}, body)
    assert not rules.authenticated("token", "", "X-Token", {"X-Token": ""}, body)
    assert rules.authenticated("", "", "", {}, body)


# CRUD, bad input, other projects, roles.

async def test_crud_matchers_values_aliases_and_events(hub, api, tmp_path):
    project, template, key = await _project(api, tmp_path)
    integration_id, url = await _github_integration(api, project, template, key)
    base = f"/api/project/{project}/integrations"
    path = f"{base}/{integration_id}"
    got = await api.ok("GET", path)
    assert got == {"id": integration_id, "name": "github push", "project_id": project,
                   "template_id": template, "auth_method": "github", "auth_secret_id": key,
                   "auth_header": "", "searchable": False, "task_params": {}}
    assert [row["id"] for row in await api.ok("GET", base)] == [integration_id]
    await api.ok("PUT", path, {"name": "renamed", "template_id": template,
                               "auth_method": "github", "auth_secret_id": key,
                               "task_params": {"debug": True}}, 204)
    got = await api.ok("GET", path)
    assert got["name"] == "renamed" and got["task_params"] == {"debug": True}

    matchers = await api.ok("GET", f"{path}/matchers")
    assert [(m["key"], m["method"], m["value"], m["integration_id"]) for m in matchers] == [
        ("X-GitHub-Event", "equals", "push", integration_id)]
    matcher = f"{path}/matchers/{matchers[0]['id']}"
    await api.ok("PUT", matcher, {"name": "main", "match_type": "body", "method": "contains",
                                  "body_data_type": "json", "key": "ref",
                                  "value": "main"}, 204)
    assert (await api.ok("GET", matcher))["match_type"] == "body"
    values = await api.ok("GET", f"{path}/values")
    assert [(v["variable"], v["variable_type"]) for v in values] == [
        ("ref", "environment"), ("repo", "environment"), ("event", "environment")]
    value = f"{path}/values/{values[2]['id']}"
    await api.ok("PUT", value, {"name": "event", "value_source": "header",
                                "key": "X-GitHub-Delivery", "variable": "delivery",
                                "variable_type": "task"}, 204)
    assert (await api.ok("GET", value))["variable_type"] == "task"
    await api.ok("DELETE", value, status=204)
    assert (await api.request("GET", value))[0] == 404

    aliases = await api.ok("GET", f"{path}/aliases")
    assert [alias["url"] for alias in aliases] == [url]
    alias = url.rsplit("/", 1)[1]
    assert url == f"{hub.base_url}/api/integrations/{alias}" and len(alias) >= 32
    project_alias = await api.ok("POST", f"{base}/aliases")
    assert project_alias["integration_id"] is None
    assert [a["id"] for a in await api.ok("GET", f"{base}/aliases")] == [project_alias["id"]]
    # An alias is deleted through its own owner only.
    assert (await api.request("DELETE", f"{path}/aliases/{project_alias['id']}"))[0] == 404
    await api.ok("DELETE", f"{base}/aliases/{project_alias['id']}", status=204)
    await api.ok("DELETE", f"{path}/aliases/{aliases[0]['id']}", status=204)
    assert await api.ok("GET", f"{path}/aliases") == []

    await api.ok("DELETE", path, status=204)
    assert (await api.request("GET", path))[0] == 404
    assert (await api.request("GET", f"{path}/matchers"))[0] == 404
    events = await hub.hub.store.list_events([project])
    described = [event["description"] for event in events]
    assert "Integration github push created" in described
    assert "Integration renamed deleted" in described
    assert sum(d.startswith("Webhook URL") for d in described) == 4
    assert any(e["object_type"] == "integrationmatcher" for e in events)
    assert any(e["object_type"] == "integrationextractvalue"
               and e["description"].endswith("deleted") for e in events)


@pytest.mark.parametrize("body, field", [
    ({"template_id": 1}, "name"),
    ({"name": "x", "template_id": 999}, "template_id"),
    ({"name": "x", "template_id": "one"}, "template_id"),
    ({"name": "x", "auth_method": "github"}, "auth_secret_id"),
    ({"name": "x", "auth_method": "md5"}, "auth_method"),
    ({"name": "x", "auth_method": "hmac", "auth_secret_id": "KEY"}, "auth_header"),
    ({"name": "x", "auth_method": "token", "auth_secret_id": "NONE_KEY",
      "auth_header": "X-T"}, "auth_secret_id"),
    ({"name": "x", "auth_method": "token", "auth_secret_id": 999,
      "auth_header": "X-T"}, "auth_secret_id"),
    ({"name": "x", "task_params": {"playbook": "evil.yml"}}, "task_params.playbook"),
    ({"name": "x", "task_params": {"debug": "yes"}}, "task_params.debug"),
    ({"name": "x", "project_id": 999}, "project_id"),
])
async def test_bad_integration_is_400_naming_the_field(hub, api, tmp_path, body, field):
    project, template, key = await _project(api, tmp_path)
    none_key = await api.ok("POST", f"/api/project/{project}/keys",
                            {"name": "n", "type": "none"}, 201)
    body = {"template_id": template, **body}
    replace = {"KEY": key, "NONE_KEY": none_key["id"]}
    body = {k: replace.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    status, answer = await api.request("POST", f"/api/project/{project}/integrations", body)
    assert status == 400 and f"`{field}`" in answer["error"], answer
    assert await api.ok("GET", f"/api/project/{project}/integrations") == []


@pytest.mark.parametrize("kind, body, field", [
    ("matchers", {"match_type": "header", "key": "X", "value": "y"}, "name"),
    ("matchers", {"name": "m", "match_type": "query", "key": "X", "value": "y"}, "match_type"),
    ("matchers", {"name": "m", "match_type": "header", "method": "like", "key": "X",
                  "value": "y"}, "method"),
    ("matchers", {"name": "m", "match_type": "header", "value": "y"}, "key"),
    ("matchers", {"name": "m", "match_type": "body", "key": "ref"}, "value"),
    ("values", {"name": "v", "value_source": "body", "variable": "1x", "key": "a"},
     "variable"),
    ("values", {"name": "v", "value_source": "body", "variable": "v"}, "key"),
    ("values", {"name": "v", "value_source": "cookie", "variable": "v", "key": "a"},
     "value_source"),
    ("values", {"name": "v", "value_source": "header", "variable": "v", "key": "a",
                "variable_type": "secret"}, "variable_type"),
])
async def test_bad_matcher_or_value_is_400_naming_the_field(hub, api, tmp_path, kind, body,
                                                            field):
    project, template, key = await _project(api, tmp_path)
    integration_id, _ = await _github_integration(api, project, template, key)
    path = f"/api/project/{project}/integrations/{integration_id}/{kind}"
    before = await api.ok("GET", path)
    status, answer = await api.request("POST", path, body)
    assert status == 400 and f"`{field}`" in answer["error"], answer
    assert await api.ok("GET", path) == before
    status, answer = await api.request("POST", path, raw=b"{not json")
    assert status == 400 and "JSON" in answer["error"]
    status, answer = await api.request("GET", f"/api/project/{project}/integrations/x/{kind}")
    assert status == 400 and "integration_id" in answer["error"]


async def test_other_projects_objects_are_404(hub, api, tmp_path):
    project, template, key = await _project(api, tmp_path)
    integration_id, _ = await _github_integration(api, project, template, key)
    other = await api.project("other")
    other_template = await api.template(other, tmp_path / "scripts", "deploy.sh")
    second = await api.ok("POST", f"/api/project/{other}/integrations",
                          {"name": "o", "template_id": other_template}, 201)
    path = f"/api/project/{other}/integrations/{integration_id}"
    for method, suffix in [("GET", ""), ("PUT", ""), ("DELETE", ""), ("GET", "/matchers"),
                           ("GET", "/values"), ("GET", "/aliases"), ("POST", "/aliases")]:
        body = {"name": "x", "template_id": other_template} if method == "PUT" else None
        assert (await api.request(method, path + suffix, body))[0] == 404, (method, suffix)
    # A matcher is reached through its own integration only.
    matcher = (await api.ok("GET", f"/api/project/{project}/integrations/{integration_id}"
                                   "/matchers"))[0]["id"]
    assert (await api.request(
        "GET", f"/api/project/{other}/integrations/{second['id']}/matchers/{matcher}"))[0] == 404
    # A template or key of another project cannot be used.
    status, answer = await api.request("POST", f"/api/project/{other}/integrations", {
        "name": "x", "template_id": template})
    assert status == 400 and "`template_id`" in answer["error"]
    status, answer = await api.request("POST", f"/api/project/{other}/integrations", {
        "name": "x", "template_id": other_template, "auth_method": "github",
        "auth_secret_id": key})
    assert status == 400 and "`auth_secret_id`" in answer["error"]


@pytest.mark.parametrize("role, read, aliases, edit", [
    ("guest", True, False, False), ("task_runner", True, True, False),
    ("manager", True, True, True), ("owner", True, True, True)])
async def test_roles(hub, api, tmp_path, role, read, aliases, edit):
    project, template, key = await _project(api, tmp_path)
    integration_id, _ = await _github_integration(api, project, template, key)
    name = f"u{role.replace('_', '')}"
    user = await make_user(api, name)
    await api.ok("POST", f"/api/project/{project}/users", {"user_id": user, "role": role}, 204)
    member = await logged_in(hub, name)
    base = f"/api/project/{project}/integrations"
    path = f"{base}/{integration_id}"
    body = {"name": "n", "template_id": template}
    assert ((await member.request("GET", base))[0] == 200) is read
    assert ((await member.request("GET", f"{path}/matchers"))[0] == 200) is read
    assert ((await member.request("GET", f"{path}/aliases"))[0] == 200) is aliases
    assert ((await member.request("POST", f"{path}/aliases"))[0] == 200) is edit
    assert ((await member.request("POST", f"{path}/matchers", {
        "name": "m", "match_type": "header", "key": "X", "value": "y"}))[0] == 200) is edit
    assert ((await member.request("PUT", path, body))[0] == 204) is edit
    assert ((await member.request("POST", base, body))[0] == 201) is edit
    assert ((await member.request("DELETE", path))[0] == 204) is edit
    await make_user(api, "stranger")
    stranger = await logged_in(hub, "stranger")
    assert (await stranger.request("GET", base))[0] == 404


# Webhooks.

async def test_signed_github_push_starts_a_task_with_the_extracted_values(hub, api, tmp_path):
    project, template, key = await _project(api, tmp_path)
    integration_id, url = await _github_integration(api, project, template, key)
    await api.ok("POST", f"/api/project/{project}/integrations/{integration_id}/values", {
        "name": "limit", "value_source": "body", "body_data_type": "json",
        "key": "head_commit.id", "variable": "limit", "variable_type": "task"}, 201)
    body = json.dumps(PUSH).encode()
    status, headers, text = await post(hub, url, body, signed(body))
    assert status == 204, text
    task_id = int(headers["X-Semaphore-Task-ID"])
    assert headers["X-Semaphore-Integration-ID"] == str(integration_id)
    assert headers["X-Semaphore-Template-ID"] == str(template)
    task = await api.task(project, task_id)
    assert task["integration_id"] == integration_id and task["user_id"] is None
    assert json.loads(task["environment"]) == {"ref": "refs/heads/main", "repo": "acme/app",
                                               "event": "push"}
    assert task["params"]["limit"] == "9f2c1e0b7a"
    events = [e for e in await hub.hub.store.list_events([project])
              if e["object_type"] == "task"]
    assert [(e["object_id"], e["integration_id"], e["user_id"]) for e in events] == [
        (task_id, integration_id, None)]
    assert "github push" in events[0]["description"]


async def test_unsigned_or_wrongly_signed_is_401_and_starts_nothing(hub, api, tmp_path):
    project, template, key = await _project(api, tmp_path)
    _, url = await _github_integration(api, project, template, key)
    body = json.dumps(PUSH).encode()
    tampered = body.replace(b"main", b"prod")
    for headers in [{"X-GitHub-Event": "push"},  # unsigned
                    signed(body, secret="not-the-secret"),
                    signed(body) | {"X-Hub-Signature-256": signed(body)[
                        "X-Hub-Signature-256"].replace("sha256=", "")},
                    signed(body) | {"X-Hub-Signature-256": "sha256="}]:
        status, _, text = await post(hub, url, body, headers)
        assert status == 401, (headers, text)
    status, _, _ = await post(hub, url, tampered, signed(body))  # the body changed
    assert status == 401
    assert await _tasks(api, project) == []


async def test_deleting_the_key_template_integration_or_project(hub, api, tmp_path):
    project, template, key = await _project(api, tmp_path)
    integration_id, url = await _github_integration(api, project, template, key)
    status, answer = await api.request("DELETE", f"/api/project/{project}/keys/{key}")
    assert status == 400 and "in use" in answer["error"]
    body = json.dumps(PUSH).encode()
    task_id = int((await post(hub, url, body, signed(body)))[1]["X-Semaphore-Task-ID"])
    await api.ok("DELETE", f"/api/project/{project}/integrations/{integration_id}", status=204)
    # The task is history: it stays, no longer naming the integration; the URL is gone.
    assert (await api.task(project, task_id))["integration_id"] is None
    assert (await post(hub, url, body, signed(body)))[0] == 404
    await api.ok("DELETE", f"/api/project/{project}/keys/{key}", status=204)
    await _github_integration(api, project, template, (await api.ok(
        "POST", f"/api/project/{project}/keys", {"name": "k2", "type": "login_password",
                                                 "login_password": {"password": "x"}},
        201))["id"])
    await api.ok("POST", f"/api/project/{project}/tasks/{task_id}/stop", status=204)
    await api.ok("DELETE", f"/api/project/{project}", status=204)
    assert await hub.hub.store.find_integration_alias(url.rsplit("/", 1)[1]) is None


async def test_hmac_and_token_auth_read_the_integrations_header(hub, api, tmp_path):
    project, template, key = await _project(api, tmp_path)
    base = f"/api/project/{project}/integrations"
    urls = {}
    for method, header in [("hmac", "X-Signature"), ("token", "X-Gitlab-Token")]:
        integration = await api.ok("POST", base, {
            "name": method, "template_id": template, "auth_method": method,
            "auth_secret_id": key, "auth_header": header}, 201)
        urls[method] = (await api.ok("POST", f"{base}/{integration['id']}/aliases"))["url"]
    body = b'{"object_kind": "push"}'
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert (await post(hub, urls["hmac"], body, {"X-Signature": "sha256=" + digest}))[0] == 401
    assert (await post(hub, urls["hmac"], body, {"X-Signature": digest}))[0] == 204
    assert (await post(hub, urls["token"], body, {"X-Gitlab-Token": "guess"}))[0] == 401
    assert (await post(hub, urls["token"], body, {"X-Gitlab-Token": SECRET}))[0] == 204
    assert len(await _tasks(api, project)) == 2


async def test_a_payload_failing_a_matcher_is_204_and_starts_nothing(hub, api, tmp_path):
    project, template, key = await _project(api, tmp_path)
    integration_id, url = await _github_integration(api, project, template, key)
    await api.ok("POST", f"/api/project/{project}/integrations/{integration_id}/matchers", {
        "name": "main only", "match_type": "body", "method": "equals",
        "body_data_type": "json", "key": "ref", "value": "refs/heads/main"})
    body = json.dumps(PUSH).encode()
    ping = signed(body) | {"X-GitHub-Event": "ping"}
    assert (await post(hub, url, body, ping))[0] == 204  # Semaphore: 204, nothing started
    other_branch = json.dumps(PUSH | {"ref": "refs/heads/dev"}).encode()
    status, headers, _ = await post(hub, url, other_branch, signed(other_branch))
    assert status == 204 and "X-Semaphore-Task-ID" not in headers
    assert await _tasks(api, project) == []
    status, headers, _ = await post(hub, url, body, signed(body))
    assert status == 204 and "X-Semaphore-Task-ID" in headers
    assert len(await _tasks(api, project)) == 1


async def test_project_alias_serves_searchable_integrations_by_their_matchers(hub, api,
                                                                             tmp_path):
    project, template, _ = await _project(api, tmp_path)
    base = f"/api/project/{project}/integrations"
    ids = []
    for name, value in [("main", "refs/heads/main"), ("dev", "refs/heads/dev"), ("any", None)]:
        integration = await api.ok("POST", base, {"name": name, "template_id": template,
                                                  "searchable": True}, 201)
        ids.append(integration["id"])
        if value is not None:
            await api.ok("POST", f"{base}/{integration['id']}/matchers", {
                "name": name, "match_type": "body", "body_data_type": "json",
                "key": "ref", "value": value})
    url = (await api.ok("POST", f"{base}/aliases"))["url"]
    body = json.dumps(PUSH).encode()
    status, headers, _ = await post(hub, url, body, {"Content-Type": "application/json"})
    assert status == 204
    # Only "main" matched; "any" has no matcher, which a project's alias never runs.
    [task] = await _tasks(api, project)
    assert task["integration_id"] == ids[0] and headers["X-Semaphore-Task-ID"] == str(
        task["id"])
    # A searchable integration is not reached by an alias of its own (Semaphore).
    own = (await api.ok("POST", f"{base}/{ids[0]}/aliases"))["url"]
    assert (await post(hub, own, body, {}))[0] == 404


async def test_unknown_alias_bad_json_big_body_and_rate_limit(hub, api, tmp_path):
    project, template, key = await _project(api, tmp_path)
    _, url = await _github_integration(api, project, template, key)
    status, _, text = await post(hub, f"{hub.base_url}/api/integrations/nope", b"{}", {})
    assert status == 404 and json.loads(text) == {"error": "not found"}
    bad = b'{"ref": '
    status, _, text = await post(hub, url, bad, signed(bad))
    assert status == 400 and "JSON" in json.loads(text)["error"]
    big = b'{"ref": "' + b"x" * (1024 * 1024) + b'"}'
    assert (await post(hub, url, big, signed(big)))[0] == 413

    async def chunked():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b"x" * 65536

    async with aiohttp.ClientSession() as session, session.post(
            url, data=chunked(), headers=signed(b"")) as response:
        assert response.status == 413
    assert await _tasks(api, project) == []
    # Failures from one address are limited as logins are: 20 free, then 429.
    body = json.dumps(PUSH).encode()
    statuses = [(await post(hub, url, body, {}))[0] for _ in range(21)]
    assert statuses[:19] == [401] * 19 and statuses[-1] == 429
    status, headers, _ = await post(hub, url, body, signed(body))
    assert status == 429 and int(headers["Retry-After"]) >= 1


# End to end: a hub and a runner as processes.

def test_webhook_task_runs_on_a_runner_and_prints_the_extracted_value(lab):
    hub = lab.hub(access_key_encryption=ACCESS_KEY_ENCRYPTION)
    _, rest, project = lab.online_runner(hub, "hooked")
    write_script(lab.scripts, "hook.sh", 'for word in "$@"; do echo "got $word"; done\n')
    template = rest.template(project, lab.scripts, "hook.sh")
    key = rest.ok("POST", f"/api/project/{project}/keys", {
        "name": "gh", "type": "login_password",
        "login_password": {"password": SECRET}}, 201)["id"]
    base = f"/api/project/{project}/integrations"
    integration = rest.ok("POST", base, {"name": "push", "template_id": template,
                                         "auth_method": "github", "auth_secret_id": key}, 201)
    rest.ok("POST", f"{base}/{integration['id']}/values", {
        "name": "branch", "value_source": "body", "body_data_type": "json", "key": "ref",
        "variable": "branch"}, 201)
    url = rest.ok("POST", f"{base}/{integration['id']}/aliases")["url"]
    body = json.dumps(PUSH).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers=signed(body))
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 204
        task_id = int(response.headers["X-Semaphore-Task-ID"])
    task = wait_final(rest, lab, project, task_id)
    assert task["status"] == "success", (task, lab.logs())
    assert task["integration_id"] == integration["id"]
    assert "got branch=refs/heads/main\n" in rest.raw_output(project, task_id)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(
            url, data=body, method="POST", headers=signed(body, "wrong")), timeout=30)
    assert refused.value.code == 401
