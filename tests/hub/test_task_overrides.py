"""Attacks through a task's own fields, by a project member with the task_runner role,
against a real hub and a real runner connection.

A task_runner may run templates; it must not choose what code runs, with what process
environment, or see secrets through the output.
"""

import json

import pytest

from tests.gitkit import repo_with_branch
from tests.hub.test_users_api import logged_in, make_user
from tests.hubkit import write_script


async def task_runner_in(hub, api, project_id: int, name: str = "runner-role"):
    user_id = await make_user(api, name)
    await api.ok("POST", f"/api/project/{project_id}/users",
                 {"user_id": user_id, "role": "task_runner"}, 204)
    return await logged_in(hub, name)


@pytest.fixture
async def project(hub, api, tmp_path):
    await hub.start_runner(tmp_path)
    return await api.project()


async def test_task_environment_is_extra_vars_never_process_environment(hub, api, tmp_path,
                                                                        project):
    marker = tmp_path / "pwned"
    scripts = tmp_path / "scripts"
    write_script(scripts, "show.sh", 'echo "argv: $*"\necho "BASH_ENV=${BASH_ENV-unset}"\n'
                                     'type greet 2>&1 | head -1\necho done\n')
    template = await api.template(project, scripts, "show.sh")
    member = await task_runner_in(hub, api, project)
    injected = {"BASH_ENV": f"$(touch {marker})", "BASH_FUNC_greet%%": "() { id; }",
                "LD_PRELOAD": "/tmp/evil.so", "PATH": "/nonexistent", "region": "eu-1",
                "count": 3}
    task_id = await member.run(project, template, environment=json.dumps(injected))
    assert (await api.wait_status(project, task_id))["status"] == "success"
    output = await api.raw_output(project, task_id)
    assert not marker.exists()
    assert "BASH_ENV=unset" in output and "greet: not found" in output
    # As in Semaphore, each extra var reaches the script as a `name=value` word: data.
    assert f"BASH_ENV=$(touch {marker})" in output and "region=eu-1" in output
    assert "count=3" in output and "done" in output


async def test_only_the_environment_object_sets_process_variables(hub, api, tmp_path, project):
    scripts = tmp_path / "scripts"
    write_script(scripts, "env.sh", 'echo "STAGE=$STAGE"\necho "HOME=$HOME"\n'
                                    'env | grep -c "^HUB_SECRET_OF_RUNNER=" || true\n')
    template = await api.template(project, scripts, "env.sh", env={"STAGE": "prod",
                                                                   "bad name": "x"})
    task_id = await api.run(project, template)
    assert (await api.wait_status(project, task_id))["status"] == "success"
    output = await api.raw_output(project, task_id)
    assert "STAGE=prod" in output
    assert "environment variable 'bad name' ignored: not a valid name" in output


@pytest.mark.parametrize(("playbook", "status"), [
    ("/etc/passwd", 400), ("../../../etc/passwd", 400), ("x/../../etc/passwd", 400),
    ("other.sh", 403)])
async def test_a_task_runner_cannot_choose_the_playbook(hub, api, tmp_path, project,
                                                      playbook, status):
    scripts = tmp_path / "scripts"
    write_script(scripts, "run.sh", "echo reviewed\n")
    write_script(scripts, "other.sh", "echo unreviewed\n")
    template = await api.template(project, scripts, "run.sh")
    member = await task_runner_in(hub, api, project)
    got, body = await member.request("POST", f"/api/project/{project}/tasks",
                                     {"template_id": template, "playbook": playbook})
    assert got == status, body
    assert "`playbook`" in body["error"]
    assert "root:" not in json.dumps(body)


async def test_templates_refuse_playbooks_outside_the_repository(api, tmp_path, project):
    got, body = await api.request("POST", f"/api/project/{project}/templates", {
        "name": "t", "app": "bash", "playbook": "/etc/passwd"})
    assert got == 400 and "`playbook`" in body["error"]


async def test_a_symlink_out_of_the_repository_is_refused_by_the_runner(api, tmp_path,
                                                                        project):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "run.sh").symlink_to("/etc/passwd")
    template = await api.template(project, scripts, "run.sh")
    task_id = await api.run(project, template)
    task = await api.wait_status(project, task_id)
    assert task["status"] == "error"
    output = await api.raw_output(project, task_id)
    assert "leads out of the repository" in output and "root:" not in output


async def test_branch_override_follows_allow_override_branch_in_task(hub, api, tmp_path,
                                                                     project):
    origin = repo_with_branch(tmp_path / "origin", "run.sh", "echo reviewed\n", "unreviewed",
                              "echo unreviewed code\n")
    repo = await api.ok("POST", f"/api/project/{project}/repositories",
                        {"name": "git", "git_url": f"file://{origin}", "git_branch": "main"},
                        201)
    locked = await api.ok("POST", f"/api/project/{project}/templates", {
        "name": "locked", "app": "bash", "playbook": "run.sh", "repository_id": repo["id"]},
        201)
    member = await task_runner_in(hub, api, project)
    got, body = await member.request("POST", f"/api/project/{project}/tasks",
                                     {"template_id": locked["id"], "git_branch": "unreviewed"})
    assert got == 400 and "`git_branch`" in body["error"]
    assert "allow_override_branch_in_task" in body["error"]
    open_ = await api.ok("POST", f"/api/project/{project}/templates", {
        "name": "open", "app": "bash", "playbook": "run.sh", "repository_id": repo["id"],
        "allow_override_branch_in_task": True}, 201)
    assert open_["allow_override_branch_in_task"] is True
    task_id = await member.run(project, open_["id"], git_branch="unreviewed")
    assert (await api.wait_status(project, task_id))["status"] == "success"
    assert "unreviewed code" in await api.raw_output(project, task_id)


SECRET = "s3cr3t-Value-42"
KEY = "-----BEGIN KEY-----\nAAAAline-one-of-key\nBBBBline-two-of-key\n-----END KEY-----"


@pytest.mark.parametrize("script", [
    # one character at a time, with pauses longer than the partial-line flush
    f'for c in $(echo "{SECRET}" | fold -w1); do printf %s "$c"; sleep 0.06; done; echo\n',
    # in two halves, on two writes
    f'printf %s "{SECRET[:6]}"; sleep 0.3; printf "%s\\n" "{SECRET[6:]}"\n',
    # one line of a multi-line secret at a time
    'printf "%s\\n" "$KEY" | while IFS= read -r line; do echo "$line"; sleep 0.1; done\n',
    # on stderr, cut by the runner's partial-line flush
    f'printf %s "{SECRET[:3]}" >&2; sleep 0.4; printf "%s\\n" "{SECRET[3:]}" >&2\n',
    # begun on stdout, ended on stderr (the hub shows the streams joined)
    f'printf %s "{SECRET[:8]}"; printf %s "{SECRET[8]}"; sleep 0.4; '
    f'printf "%s\\n" "{SECRET[9:]}" >&2; sleep 0.3; echo x\n',
    # stdout closed between the halves
    f'printf %s "{SECRET[:8]}"; exec 1>&-; sleep 0.4; printf "%s\\n" "{SECRET[8:]}" >&2\n',
    # a key echoed unquoted: its lines lose their indentation
    'echo $KEY\n',
])
async def test_secrets_are_masked_however_they_are_printed(api, tmp_path, project, script):
    environment = await api.ok("POST", f"/api/project/{project}/environment", {
        "name": "with-secrets", "env": "{}", "secrets": [
            {"name": "TOKEN", "secret": SECRET, "type": "env"},
            {"name": "KEY", "secret": KEY, "type": "env"}]}, 201)
    scripts = tmp_path / "scripts"
    write_script(scripts, "leak.sh", script)
    repo = await api.ok("POST", f"/api/project/{project}/repositories",
                        {"name": "r", "git_url": str(scripts)}, 201)
    template = await api.ok("POST", f"/api/project/{project}/templates", {
        "name": "leak", "app": "bash", "playbook": "leak.sh", "repository_id": repo["id"],
        "environment_id": environment["id"]}, 201)
    task_id = await api.run(project, template["id"])
    assert (await api.wait_status(project, task_id))["status"] == "success"
    output = await api.raw_output(project, task_id)
    assert "********" in output
    for piece in (SECRET, SECRET[:6], SECRET[6:], SECRET[:8] + SECRET[8], "line-one-of-key",
                  "line-two-of-key"):
        assert piece not in output, output


async def test_a_deeply_nested_task_environment_is_a_400(hub, api, tmp_path, project):
    scripts = tmp_path / "scripts"
    write_script(scripts, "run.sh", "echo hi\n")
    template = await api.template(project, scripts, "run.sh")
    member = await task_runner_in(hub, api, project)
    deep = '{"a": ' + "[" * 5000 + "]" * 5000 + "}"
    got, body = await member.request("POST", f"/api/project/{project}/tasks",
                                     {"template_id": template, "environment": deep})
    assert got == 400 and "`environment`" in body["error"] and "nests deeper" in body["error"]


async def test_a_task_too_big_for_one_frame_is_refused_not_sent(hub, api, tmp_path, project):
    """A message of a megabyte would make an assign no runner can take (it would drop the
    connection it arrives on, again and again): a 400 when the task is created."""
    scripts = tmp_path / "scripts"
    write_script(scripts, "run.sh", "echo hi\n")
    template = await api.template(project, scripts, "run.sh")
    member = await task_runner_in(hub, api, project)
    got, body = await member.request("POST", f"/api/project/{project}/tasks",
                                     {"template_id": template, "message": "m" * 1_100_000})
    assert got == 400 and "frame" in body["error"], body
    task_id = await member.run(project, template, message="fits")
    assert (await api.wait_status(project, task_id))["status"] == "success"


async def test_nul_characters_in_task_fields_are_a_400(hub, api, tmp_path, project):
    scripts = tmp_path / "scripts"
    write_script(scripts, "run.sh", "echo hi\n")
    template = await api.template(project, scripts, "run.sh", allow_override=True)
    for field, value in (("environment", '{"a\\u0000b": 1}'), ("arguments", '["x\\u0000"]')):
        got, body = await api.request("POST", f"/api/project/{project}/tasks",
                                      {"template_id": template, field: value})
        assert got == 400 and f"`{field}`" in body["error"] and "NUL" in body["error"], body


async def test_the_readme_example_of_extra_vars_for_a_shell_script(hub, api, tmp_path, project):
    """README, Tasks: extra vars reach a bash script as `name=value` words after the
    template's arguments and before the task's, one argv entry each, JSON text for non-strings;
    the README's loop reads them."""
    scripts = tmp_path / "scripts"
    write_script(scripts, "deploy.sh", 'for arg in "$@"; do echo "arg: $arg"; done\n'
                 'for arg in "$@"; do\n  case "$arg" in\n'
                 '    region=*) region="${arg#region=}" ;;\n'
                 '    replicas=*) replicas="${arg#replicas=}" ;;\n  esac\ndone\n'
                 'echo "region=$region replicas=$replicas"\n')
    repo = await api.ok("POST", f"/api/project/{project}/repositories",
                        {"name": "r", "git_url": str(scripts)}, 201)
    environment = await api.ok("POST", f"/api/project/{project}/environment", {
        "name": "e", "json": json.dumps({"region": "eu", "replicas": 3, "dry": False,
                                         "zones": ["a", "b"]})}, 201)
    template = (await api.ok("POST", f"/api/project/{project}/templates", {
        "name": "deploy", "app": "bash", "playbook": "deploy.sh",
        "arguments": json.dumps(["--verbose"]), "allow_override_args_in_task": True,
        "repository_id": repo["id"], "environment_id": environment["id"]}, 201))["id"]
    task_id = await api.run(project, template, environment=json.dumps({"replicas": 5}),
                            arguments=json.dumps(["--now"]))
    assert (await api.wait_status(project, task_id))["status"] == "success"
    output = await api.raw_output(project, task_id)
    args = [line.removeprefix("arg: ") for line in output.splitlines()
            if line.startswith("arg: ")]
    assert args == ["--verbose", "region=eu", "replicas=5", "dry=false", 'zones=["a", "b"]',
                    "--now"]
    assert "region=eu replicas=5" in output
