"""`app: ansible` runs a real ansible-playbook (from the ansible-core test dependency) on a
real runner connection, against localhost with `connection: local`, with the command line
Semaphore builds: -i inventory, task flags, one --extra-vars JSON, arguments, --limit."""

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from agent import apps
from tests.gitkit import git

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SECRET = "s3cr3t-value-91f2"
VAR_SECRET = "var-s3cr3t-77ab"

PLAYBOOK = """\
- hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: show
      debug:
        msg: >-
          greeting={{ greeting | default('none') }}
          id={{ semaphore_vars.task_details.id }}
          user={{ semaphore_vars.task_details.username }}
          check={{ ansible_check_mode }} host={{ inventory_hostname }}
          token={{ lookup('env', 'TOKEN') }} pw={{ db_password | default('none') }}
    - name: fail when asked
      fail:
        msg: "failing as asked"
      when: fail_now | default(false) | bool
"""

INI = """\
[web]
alpha ansible_connection=local ansible_python_interpreter={python}
beta ansible_connection=local ansible_python_interpreter={python}
"""

YAML = """\
all:
  hosts:
    gamma:
      ansible_connection: local
      ansible_python_interpreter: {python}
"""


@pytest.fixture(autouse=True)
def ansible_on_path(monkeypatch):
    """The runner finds ansible-playbook on its PATH: the venv's, as CI installs it."""
    bin_dir = str(Path(sys.executable).parent)
    if shutil.which("ansible-playbook") is None:
        monkeypatch.setenv("PATH", f"{bin_dir}:{Path('/usr/bin')}:{Path('/bin')}")
    assert shutil.which("ansible-playbook") is not None
    # What the runner found on its PATH may be remembered from an earlier test's PATH.
    cache_clear = getattr(getattr(apps, "available_apps", None), "cache_clear", None)
    if cache_clear is not None:
        cache_clear()
    yield
    if cache_clear is not None:
        cache_clear()


@pytest.fixture
async def project(hub, api, tmp_path):
    await hub.start_runner(tmp_path)
    return await api.project()


def playbook_repo(folder: Path) -> Path:
    folder.mkdir(parents=True)
    git(folder, "init", "-q", "-b", "main")
    (folder / "site.yml").write_text(PLAYBOOK)
    (folder / "hosts.ini").write_text(INI.format(python=sys.executable))
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "playbook")
    return folder


async def ansible_template(api, project_id: int, repo: Path, inventory: dict | None = None,
                           environment: dict | None = None, **extra) -> int:
    body = {"name": "play", "app": "ansible", "playbook": "site.yml", **extra}
    body["repository_id"] = (await api.ok("POST", f"/api/project/{project_id}/repositories",
                                          {"name": "r", "git_url": f"file://{repo}"},
                                          201))["id"]
    inventory = inventory or {"type": "static",
                              "inventory": INI.format(python=sys.executable)}
    body["inventory_id"] = (await api.ok("POST", f"/api/project/{project_id}/inventory",
                                         {"name": "i", **inventory}, 201))["id"]
    if environment is not None:
        body["environment_id"] = (await api.ok(
            "POST", f"/api/project/{project_id}/environment", {"name": "e", **environment},
            201))["id"]
    return (await api.ok("POST", f"/api/project/{project_id}/templates", body, 201))["id"]


async def run(api, project_id: int, template_id: int, **task) -> tuple[dict, str]:
    task_id = await api.run(project_id, template_id, **task)
    done = await api.wait_status(project_id, task_id, timeout=60)
    return done, ANSI.sub("", await api.raw_output(project_id, task_id))


async def test_playbook_runs_with_extra_vars_semaphore_vars_and_a_masked_secret(
        hub, api, tmp_path, project):
    repo = playbook_repo(tmp_path / "repo")
    template = await ansible_template(api, project, repo, environment={
        "json": json.dumps({"greeting": "hello-from-env"}),
        "secrets": [{"name": "TOKEN", "secret": SECRET, "type": "env"},
                    {"name": "db_password", "secret": VAR_SECRET, "type": "var"}]})
    task, output = await run(api, project, template, message="deploy it")
    assert task["status"] == "success", output
    assert "PLAY RECAP" in output
    assert re.search(r"alpha\s+: ok=1 ", output) and re.search(r"beta\s+: ok=1 ", output)
    assert f"greeting=hello-from-env id={task['id']} user=admin check=False" in output
    assert SECRET not in output and "token=********" in output
    # A `var` secret is an extra var (given in a private file, not on the command line).
    assert VAR_SECRET not in output and "pw=********" in output
    # The task's folder, with the inventory file in it, is gone with the task.
    assert (tmp_path / "runner-r").is_dir()
    runner_files = [p.name for p in (tmp_path / "runner-r").rglob("*")]
    assert not [name for name in runner_files
                if name.startswith(("task_", "inventory"))], runner_files


async def test_a_failing_play_ends_error(hub, api, tmp_path, project):
    repo = playbook_repo(tmp_path / "repo")
    template = await ansible_template(api, project, repo,
                                      environment={"json": json.dumps({"fail_now": True})})
    task, output = await run(api, project, template)
    assert task["status"] == "error"
    assert "failing as asked" in output and "failed=1" in output


async def test_check_and_limit_and_a_yaml_inventory(hub, api, tmp_path, project):
    repo = playbook_repo(tmp_path / "repo")
    template = await ansible_template(api, project, repo)
    task, output = await run(api, project, template, dry_run=True, limit="beta", debug=True,
                             diff=True)
    assert task["status"] == "success", output
    assert "check=True host=beta" in output and "host=alpha" not in output
    assert "ansible-playbook [core " in output  # -vvvv starts with the version
    yaml_template = await ansible_template(
        api, project, repo, {"type": "static-yaml", "inventory": YAML.format(
            python=sys.executable)})
    task, output = await run(api, project, yaml_template)
    assert task["status"] == "success", output
    assert "check=False host=gamma" in output


async def test_a_file_inventory_is_read_inside_the_checkout_only(hub, api, tmp_path, project):
    repo = playbook_repo(tmp_path / "repo")
    template = await ansible_template(api, project, repo,
                                      {"type": "file", "inventory": "hosts.ini"})
    task, output = await run(api, project, template)
    assert task["status"] == "success", output
    assert "host=alpha" in output and "host=beta" in output
    (repo / "out.ini").symlink_to("/etc/hosts")
    git(repo, "add", "out.ini")
    git(repo, "commit", "-q", "-m", "escape")
    template = await ansible_template(api, project, repo,
                                      {"type": "file", "inventory": "out.ini"})
    task, output = await run(api, project, template)
    assert task["status"] == "error"
    assert "leads out of the repository" in output


async def test_an_inventory_ansible_cannot_parse_ends_error(hub, api, tmp_path, project):
    repo = playbook_repo(tmp_path / "repo")
    broken = {"type": "static-yaml", "inventory": "all:\n  hosts: [1, 2\n"}
    template = await ansible_template(api, project, repo, broken)
    task, output = await run(api, project, template)
    assert task["status"] == "error"
    assert "Unable to parse" in output and "No inventory was parsed" in output


async def test_a_task_cannot_choose_another_inventory(hub, api, tmp_path, project):
    repo = playbook_repo(tmp_path / "repo")
    template = await ansible_template(api, project, repo)
    other = (await api.ok("POST", f"/api/project/{project}/inventory",
                          {"name": "other", "inventory": "evil ansible_host=10.0.0.1"},
                          201))["id"]
    status, body = await api.request("POST", f"/api/project/{project}/tasks",
                                     {"template_id": template, "inventory_id": other})
    assert status == 400 and "`inventory_id`" in body["error"]
