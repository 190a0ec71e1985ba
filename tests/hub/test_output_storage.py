"""Output storage through real sessions: large output, streaming reads, one bad task."""

import asyncio
import hashlib

from tests.hubkit import write_script


async def test_large_output_is_stored_exactly_and_streamed_back(hub, api, tmp_path):
    scripts = tmp_path / "s"
    # 200,000 numbered lines (~2.5 MB) plus one 100 KB line without breaks.
    write_script(scripts, "big.sh",
                 "seq 1 200000 | sed 's/^/line /'\nhead -c 100000 /dev/zero | tr '\\0' x\n"
                 "echo\n")
    await hub.start_runner(tmp_path)
    pid = await api.project()
    task = await api.wait_status(pid, await api.run(pid, await api.template(
        pid, scripts, "big.sh")), timeout=60)
    assert task["status"] == "success"
    expected = "".join(f"line {i}\n" for i in range(1, 200001)) + "x" * 100000 + "\n"
    raw = await api.raw_output(pid, task["id"])
    assert hashlib.sha256(raw.encode()).hexdigest() == \
        hashlib.sha256(expected.encode()).hexdigest()
    lines = await api.ok("GET", f"/api/project/{pid}/tasks/{task['id']}/output")
    text = [line["output"] for line in lines]
    assert text[:200000] == [f"line {i}" for i in range(1, 200001)]
    assert text[200000:] == ["x" * 100000]  # one line, though it spanned several frames


async def test_empty_output_lists_as_empty_json(hub, api, tmp_path):
    scripts = tmp_path / "s"
    write_script(scripts, "quiet.sh", "true\n")
    await hub.start_runner(tmp_path)
    pid = await api.project()
    task = await api.wait_status(pid, await api.run(pid, await api.template(
        pid, scripts, "quiet.sh")))
    assert await api.ok("GET", f"/api/project/{pid}/tasks/{task['id']}/output") == []
    assert await api.raw_output(pid, task["id"]) == ""


async def test_template_with_running_task_cannot_be_deleted(hub, api, tmp_path):
    scripts = tmp_path / "s"
    gate = tmp_path / "gate"
    write_script(scripts, "wait.sh", f"while [ ! -e {gate} ]; do sleep 0.02; done\n")
    await hub.start_runner(tmp_path)
    pid = await api.project()
    template = await api.template(pid, scripts, "wait.sh")
    task_id = await api.run(pid, template)
    await api.wait_status(pid, task_id, {"running"})
    status, body = await api.request("DELETE", f"/api/project/{pid}/templates/{template}")
    assert status == 400 and str(task_id) in body["error"]
    gate.touch()
    await api.wait_status(pid, task_id)
    await api.ok("DELETE", f"/api/project/{pid}/templates/{template}", status=204)


async def test_a_task_that_cannot_be_stored_does_not_stall_the_others(hub, api, tmp_path):
    scripts = tmp_path / "s"
    write_script(scripts, "tick.sh", "for i in $(seq 1 40); do echo tick $i; sleep 0.02; done\n")
    await hub.start_runner(tmp_path, max_parallel_tasks=2)
    pid = await api.project()
    template = await api.template(pid, scripts, "tick.sh")
    doomed, healthy = await api.run(pid, template), await api.run(pid, template)
    await api.wait_status(pid, doomed, {"running"})
    # Pull the row out from under the hub, as a broken migration or a manual edit could.
    await hub.hub.store.delete_task(doomed, pid)
    task = await api.wait_status(pid, healthy)
    assert task["status"] == "success"
    assert await api.raw_output(pid, healthy) == "".join(f"tick {i}\n" for i in range(1, 41))
    await asyncio.sleep(0.1)
    assert (await api.request("GET", f"/api/project/{pid}/tasks/{doomed}"))[0] == 404
