"""A runner says which apps it can run; the hub sends it only those, and a task no connected
runner can run waits with a reason that names the app (never given to a runner to refuse)."""

import asyncio

from protocol.codec import decode_hub_frame, encode
from protocol.frames import Assign, Hello
from protocol.version import PROTOCOL_VERSION
from tests.hub.test_gateway import raw_session
from tests.hubkit import write_script


async def test_the_runner_lists_its_apps_and_gets_only_those(hub, api, tmp_path):
    runner = await hub.start_runner(tmp_path)
    shown = (await api.ok("GET", "/api/runners"))[0]
    assert "bash" in shown["apps"] and "bash" in shown["apps"]["bash"].lower()
    assert "pulumi" not in shown["apps"]  # not on this machine
    assert runner.worker.apps == shown["apps"]
    pid = await api.project()
    scripts = tmp_path / "s"
    write_script(scripts, "x.sh", "echo hi\n")
    pulumi = await api.template(pid, scripts, "x.sh", app="pulumi")
    task_id = await api.run(pid, pulumi)
    bash_task = await api.run(pid, await api.template(pid, scripts, "x.sh"))
    assert (await api.wait_status(pid, bash_task))["status"] == "success"
    task = await api.task(pid, task_id)
    assert task["status"] == "waiting"
    assert task["waiting_reason"] == "no online runner can run `pulumi`"
    assert task_id not in runner.worker.tasks  # never offered, so never refused


async def test_an_older_runner_that_lists_no_apps_gets_shell_apps_only(hub, api, tmp_path):
    token = await hub.register("old", tags=["old"])
    ws = await raw_session(hub, token)
    await ws.send_bytes(encode(Hello(protocol_version=PROTOCOL_VERSION, runner_version="0.9",
                                     tags=["old"], max_parallel_tasks=4)))
    decode_hub_frame((await ws.receive(timeout=5)).data)  # the welcome
    pid = await api.project()
    ansible = await api.run(pid, await api.template(pid, None, "site.yml", app="ansible",
                                                    runner_tag="old"))
    bash = await api.run(pid, await api.template(pid, None, "x.sh", runner_tag="old"))
    frame = decode_hub_frame((await ws.receive(timeout=5)).data)
    assert isinstance(frame, Assign) and frame.task_id == bash
    await asyncio.sleep(0.1)
    task = await api.task(pid, ansible)
    assert task["status"] == "waiting"
    assert task["waiting_reason"] == "no online runner with tag `old` can run `ansible`"
