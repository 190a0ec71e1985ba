"""A task through the API to a real runner over a real websocket, and its output back."""

from tests.hubkit import write_script


async def test_task_runs_on_remote_runner_with_output(hub, api, tmp_path):
    scripts = tmp_path / "scripts"
    write_script(scripts, "hello.sh", 'echo "hello $WHO"\necho oops >&2\necho "args: $@"\n')
    await hub.start_runner(tmp_path, name="r1")
    project = await api.project()
    template = await api.template(project, scripts, "hello.sh", env={"WHO": "world"},
                                  arguments=["a", "b c"])
    task_id = await api.run(project, template)
    task = await api.wait_status(project, task_id)
    assert task["status"] == "success", task
    assert task["exit_code"] == 0
    output = await api.raw_output(project, task_id)
    assert "hello world\n" in output
    assert "oops\n" in output
    assert "args: a b c\n" in output
