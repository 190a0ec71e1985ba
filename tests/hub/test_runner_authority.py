"""The hub, not the runner, decides a runner's tags and scope; a runner only reports whether its
tasks share its identity. Each attack is performed against a real hub."""

import json

import structlog

from protocol.codec import decode_hub_frame, decode_runner_frame, encode
from protocol.frames import Assign, Heartbeat, Welcome
from tests.hub.test_gateway import hello, raw_session
from tests.hub.test_secrets import secret_template
from tests.hubkit import RUNNER_PUBLIC_KEY, InProcessRunner, write_script

TOKENS = "/api/runners/registration_tokens"


async def register_one_time(hub, api, tags: list[str], asked: list[str]) -> dict:
    """A runner registered for real with a one-time token bound to `tags`, asking `asked`."""
    created = await api.ok("POST", TOKENS, {"tags": tags, "expires_in_sec": 600}, 201)
    client = await hub.api(login=False)
    return await client.ok("POST", "/api/internal/runners", {
        "registration_token": created["token"], "name": "intruder", "tags": asked,
        "public_key": RUNNER_PUBLIC_KEY})


async def test_runner_bound_to_dev_cannot_ask_for_prod_in_its_hello(hub, api, tmp_path):
    registered = await register_one_time(hub, api, ["dev"], ["dev"])
    pid, _, prod_template = await secret_template(api, tmp_path / "s", runner_tag="prod-only")
    prod_task = await api.run(pid, prod_template)  # waiting before the runner comes

    ws = await raw_session(hub, registered["token"])
    with structlog.testing.capture_logs() as logs:
        await ws.send_bytes(hello(tags=["prod-only"]))
        welcome = decode_hub_frame((await ws.receive(timeout=5)).data)
    assert isinstance(welcome, Welcome)
    assert welcome.tags == ["dev"]
    assert "prod-only" in welcome.notice and "['dev']" in welcome.notice
    refused = [e for e in logs if e["event"] == "runner.tags.refused"]
    assert refused and refused[0]["asked"] == ["prod-only"] and refused[0]["tags"] == ["dev"]

    # A dev task queued after the prod one: the first assign the session gets is the dev
    # task, so the dispatcher has looked at the prod task with this runner online.
    dev_task = await api.run(pid, await api.template(pid, None, "x.sh", runner_tag="dev"))
    await ws.send_bytes(encode(Heartbeat(time=0.0)))
    assign = decode_hub_frame((await ws.receive(timeout=10)).data)
    assert isinstance(assign, Assign) and assign.task_id == dev_task
    task = await api.task(pid, prod_task)
    assert task["status"] == "waiting"
    assert task["waiting_reason"].startswith("no online runner with tag `prod-only`")
    runner = await api.ok("GET", f"/api/runners/{registered['id']}")
    assert runner["tags"] == ["dev"] and runner["online"] is True


async def test_one_time_token_tags_win_at_registration_too(hub, api):
    registered = await register_one_time(hub, api, ["dev"], ["prod-only", "dev"])
    assert registered["tags"] == ["dev"]
    runner = await hub.hub.store.get_runner(registered["id"])
    assert json.loads(runner["tags"]) == ["dev"] and runner["project_id"] is None


async def test_shared_token_records_the_asked_tags_then_keeps_them(hub, api):
    token = await hub.register("shared", tags=["web"])
    ws = await raw_session(hub, token)
    await ws.send_bytes(hello(tags=["web", "prod-only"]))
    welcome = decode_hub_frame((await ws.receive(timeout=5)).data)
    assert isinstance(welcome, Welcome) and welcome.tags == ["web"] and welcome.notice
    assert (await api.ok("GET", "/api/runners"))[0]["tags"] == ["web"]
    # A hello asking for nothing, or for exactly its tags, gets no notice.
    await ws.close()
    for asked in ([], ["web"]):
        again = await raw_session(hub, token)
        await again.send_bytes(hello(tags=asked))
        welcome = decode_hub_frame((await again.receive(timeout=5)).data)
        assert isinstance(welcome, Welcome) and welcome.tags == ["web"] and not welcome.notice
        await again.close()


async def edit_tags(api, path: str, tags: list[str]) -> None:
    current = await api.ok("GET", path)
    await api.ok("PUT", path, {"name": current["name"], "tags": tags,
                               "max_parallel_tasks": current["max_parallel_tasks"]}, 204)


async def check_admin_edit_survives_reconnect(hub, api, tmp_path, pid: int, path: str,
                                              token: str) -> None:
    scripts = tmp_path / "s"
    write_script(scripts, "t.sh", "echo ran here\n")
    first = await hub.start_runner(tmp_path, name="edited", tags=["old"], token=token)
    await edit_tags(api, path, ["new"])
    await first.stop()
    with structlog.testing.capture_logs() as logs:
        # Its config still says `old`: the reconnect must not undo the admin's edit.
        await hub.start_runner(tmp_path, name="edited", tags=["old"], token=token)
    assert (await api.ok("GET", path))["tags"] == ["new"]
    notices = [e for e in logs if e["event"] == "runner.hub.notice"]
    assert notices and notices[0]["tags"] == ["new"] and notices[0]["config_tags"] == ["old"]
    new_task = await api.run(pid, await api.template(pid, scripts, "t.sh", runner_tag="new"))
    old_task = await api.run(pid, await api.template(pid, scripts, "t.sh", runner_tag="old"))
    assert (await api.wait_status(pid, new_task))["status"] == "success"
    old = await api.task(pid, old_task)
    assert old["status"] == "waiting" and "`old`" in old["waiting_reason"]


async def test_admin_tag_edit_of_a_global_runner_survives_a_reconnect(hub, api, tmp_path):
    token = await hub.register("edited", tags=["old"])
    runner = (await api.ok("GET", "/api/runners"))[0]
    await check_admin_edit_survives_reconnect(hub, api, tmp_path, await api.project(),
                                              f"/api/runners/{runner['id']}", token)


async def test_admin_tag_edit_of_a_project_runner_survives_a_reconnect(hub, api, tmp_path):
    pid = await api.project()
    created = await api.ok("POST", f"/api/project/{pid}/runners",
                           {"name": "edited", "tags": ["old"]}, 201)
    path = f"/api/project/{pid}/runners/{created['id']}"
    await check_admin_edit_survives_reconnect(hub, api, tmp_path, pid, path, created["token"])


async def test_shared_identity_is_recorded_shown_and_warned(hub, api, tmp_path):
    token = await hub.register("shared-id")
    for shared in (True, False):
        ws = await raw_session(hub, token)
        with structlog.testing.capture_logs() as logs:
            await ws.send_bytes(hello(shared_identity=shared))
            assert isinstance(decode_hub_frame((await ws.receive(timeout=5)).data), Welcome)
        runner = (await api.ok("GET", "/api/runners"))[0]
        assert runner["shared_identity"] is shared
        warned = [e for e in logs if e["event"] == "runner.shared_identity"]
        assert bool(warned) is shared
        if shared:
            assert warned[0]["log_level"] == "warning" and warned[0]["runner_id"] == runner["id"]
        await ws.close()


async def test_runner_sends_its_workers_shared_identity(hub, api, tmp_path):
    runner = InProcessRunner(hub.ws_url, await hub.register("real"), tmp_path / "w", "real",
                             [], 0, 2.0)
    runner.worker.shared_identity = True
    hub.runners.append(runner)
    await runner.start()
    assert (await api.ok("GET", "/api/runners"))[0]["shared_identity"] is True


def test_old_peers_frames_still_decode():
    old_hello = b'{"type":"hello","protocol_version":1,"runner_version":"0.9","tags":["x"]}'
    assert decode_runner_frame(old_hello).shared_identity is True  # no task user back then
    old_welcome = (b'{"type":"welcome","protocol_version":1,"session_id":"s","runner_id":1,'
                   b'"heartbeat_interval":5,"max_frame_bytes":1048576,"max_output_bytes":1}')
    welcome = decode_hub_frame(old_welcome)
    assert (welcome.tags, welcome.notice) == ([], "")
