"""Secrets: encrypted at rest, sealed to the runner, masked in output, never shown or logged."""

import json

import aiohttp
import structlog

from protocol.codec import decode_hub_frame
from protocol.frames import Assign
from tests.hub.test_gateway import handshake
from tests.hubkit import start_hub, write_script

SECRET = "hunter2-very-secret-value"


async def secret_template(api, scripts, runner_tag: str = "") -> tuple[int, int, int]:
    write_script(scripts, "leak.sh", 'echo "token=$TOKEN"\necho "plain=$PLAIN"\n')
    pid = await api.project()
    env = await api.ok("POST", f"/api/project/{pid}/environment", {
        "name": "prod", "env": json.dumps({"PLAIN": "visible"}),
        "secrets": [{"name": "TOKEN", "secret": SECRET, "type": "env",
                     "operation": "create"}]}, 201)
    assert env["secrets"] == [{"id": env["secrets"][0]["id"], "name": "TOKEN", "type": "env"}]
    repo = await api.ok("POST", f"/api/project/{pid}/repositories",
                        {"name": "r", "git_url": str(scripts)}, 201)
    template = await api.ok("POST", f"/api/project/{pid}/templates", {
        "name": "leak", "app": "bash", "playbook": "leak.sh", "repository_id": repo["id"],
        "environment_id": env["id"], "runner_tag": runner_tag}, 201)
    return pid, env["id"], template["id"]


async def test_secret_reaches_the_task_masked_and_is_nowhere_in_clear(hub, api, tmp_path):
    with structlog.testing.capture_logs() as logs:
        await hub.start_runner(tmp_path)
        pid, env_id, template = await secret_template(api, tmp_path / "s")
        task = await api.wait_status(pid, await api.run(pid, template))
    assert task["status"] == "success"
    output = await api.raw_output(pid, task["id"])
    assert output == "token=********\nplain=visible\n"
    responses = [await api.ok("GET", path) for path in (
        f"/api/project/{pid}/environment", f"/api/project/{pid}/environment/{env_id}",
        f"/api/project/{pid}/tasks/{task['id']}", f"/api/project/{pid}/tasks",
        f"/api/project/{pid}/tasks/{task['id']}/output", "/api/runners")]
    assert SECRET not in json.dumps(responses)
    assert SECRET not in repr(logs)
    await hub.hub.store.db.execute("PRAGMA wal_checkpoint(FULL)")
    database = (tmp_path / "hub.sqlite").read_bytes()
    assert SECRET.encode() not in database and b"enc:v1:" in database


async def test_assign_carries_secrets_sealed_not_in_clear(hub, api, tmp_path):
    ws, _ = await handshake(hub, await hub.register("sealed"))
    pid, _, template = await secret_template(api, tmp_path / "s")
    await api.run(pid, template)
    message = await ws.receive(timeout=5)
    assert SECRET not in message.data
    assign = decode_hub_frame(message.data)
    assert isinstance(assign, Assign) and len(assign.spec.sealed_secrets) > 40


async def test_runner_without_a_key_gets_no_task_with_secrets(hub, api, tmp_path):
    client = await hub.api(login=False)
    answer = await client.ok("POST", "/api/internal/runners", {
        "registration_token": "test-registration-token", "name": "keyless"})
    session = aiohttp.ClientSession()
    hub.sessions.append(session)
    from tests.hub.test_gateway import hello
    ws = await session.ws_connect(hub.ws_url,
                                  headers={"Authorization": f"Bearer {answer['token']}"})
    await ws.send_bytes(hello())
    await ws.receive(timeout=5)  # welcome
    pid, _, template = await secret_template(api, tmp_path / "s")
    task_id = await api.run(pid, template)
    task = await api.task(pid, task_id)
    assert task["status"] == "waiting"
    assert "receive secrets" in task["waiting_reason"]


async def test_embedded_runner_gets_secrets_too(tmp_path):
    hub = await start_hub(tmp_path, use_remote_runner=False)
    try:
        api = await hub.api()
        pid, _, template = await secret_template(api, tmp_path / "s")
        task = await api.wait_status(pid, await api.run(pid, template))
        assert task["status"] == "success"
        assert await api.raw_output(pid, task["id"]) == "token=********\nplain=visible\n"
    finally:
        await hub.close()


async def test_secrets_need_access_key_encryption(tmp_path):
    hub = await start_hub(tmp_path, access_key_encryption="")
    try:
        api = await hub.api()
        pid = await api.project()
        status, body = await api.request("POST", f"/api/project/{pid}/keys", {
            "name": "k", "type": "login_password",
            "login_password": {"login": "u", "password": "p"}})
        assert status == 400 and "access_key_encryption" in body["error"]
        status, body = await api.request("POST", f"/api/project/{pid}/environment", {
            "name": "e", "secrets": [{"name": "A", "secret": "b"}]})
        assert status == 400 and "access_key_encryption" in body["error"]
        # A key without a secret needs no encryption.
        await api.ok("POST", f"/api/project/{pid}/keys", {"name": "none", "type": "none"}, 201)
    finally:
        await hub.close()


async def test_secret_update_and_delete(hub, api, tmp_path):
    pid, env_id, _ = await secret_template(api, tmp_path / "s")
    path = f"/api/project/{pid}/environment/{env_id}"
    secret_id = (await api.ok("GET", path))["secrets"][0]["id"]
    await api.ok("PUT", path, {"name": "prod", "secrets": [
        {"id": secret_id, "secret": "new-value-1", "operation": "update"},
        {"name": "OTHER", "secret": "x-value", "operation": "create"}]}, 204)
    names = [s["name"] for s in (await api.ok("GET", path))["secrets"]]
    assert names == ["TOKEN", "OTHER"]
    await api.ok("PUT", path, {"name": "prod", "secrets": [
        {"id": secret_id, "operation": "delete"}]}, 204)
    assert [s["name"] for s in (await api.ok("GET", path))["secrets"]] == ["OTHER"]
    status, body = await api.request("PUT", path, {"name": "prod", "secrets": [
        {"operation": "delete"}]})
    assert status == 400 and "secrets[0]" in body["error"]
