"""A template's survey, end to end: a real hub, a real runner connection, a real
ansible-playbook and a real python script. The answers reach the run as extra vars with
their declared types, a secret answer is masked, the template's task_params choose tags."""

import json
import re
import sys
from pathlib import Path

import pytest

from tests.gitkit import git
from tests.hubkit import write_script
from tests.test_ansible import INI, ansible_on_path, run  # noqa: F401 (a fixture)

SECRET = "survey-s3cret-5f1c"
SURVEY = [
    {"name": "replicas", "title": "Replicas", "type": "int", "required": True},
    {"name": "region", "title": "Region", "type": "enum", "required": True,
     "values": [{"name": "Europe", "value": "eu"}, {"name": "US", "value": "us"}]},
    {"name": "token", "title": "Token", "type": "secret"},
]
PLAYBOOK = """\
- hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: types
      tags: [deploy]
      debug:
        msg: >-
          replicas={{ replicas }} rtype={{ replicas | type_debug }}
          region={{ region }} gtype={{ region | type_debug }} token={{ token }}
          double={{ replicas * 2 }}
    - name: never in this run
      tags: [cleanup]
      debug:
        msg: cleanup-ran
"""
SCRIPT = """\
import json, sys
for word in sys.argv[1:]:
    name, _, value = word.partition("=")
    print(f"{name}: {type(json.loads(value) if name == 'replicas' else value).__name__}"
          f" {value}")
"""


@pytest.fixture
async def project(hub, api, tmp_path):
    await hub.start_runner(tmp_path)
    return await api.project()


def repo_with(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    git(folder, "init", "-q", "-b", "main")
    for name, text in files.items():
        (folder / name).write_text(text)
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "files")
    return folder


async def test_ansible_gets_typed_survey_answers_and_a_masked_secret(hub, api, tmp_path,
                                                                     project):
    repo = repo_with(tmp_path / "repo", {"site.yml": PLAYBOOK})
    repository = await api.ok("POST", f"/api/project/{project}/repositories",
                              {"name": "r", "git_url": f"file://{repo}"}, 201)
    inventory = await api.ok("POST", f"/api/project/{project}/inventory",
                             {"name": "i", "type": "static",
                              "inventory": INI.format(python=sys.executable)}, 201)
    template = (await api.ok("POST", f"/api/project/{project}/templates", {
        "name": "survey", "app": "ansible", "playbook": "site.yml",
        "repository_id": repository["id"], "inventory_id": inventory["id"],
        "survey_vars": SURVEY,
        "task_params": {"tags": ["deploy"], "allow_override_limit": True}}, 201))["id"]
    # As Semaphore's run dialog sends them: the int as typed text, the secret apart.
    task, output = await run(api, project, template,
                             environment=json.dumps({"replicas": "3", "region": "us"}),
                             secret=json.dumps({"token": SECRET}),
                             params={"limit": ["alpha"]})
    assert task["status"] == "success", output
    assert "replicas=3 rtype=int region=us gtype=str token=********" in output
    assert "double=6" in output  # arithmetic on a number, not a string
    assert SECRET not in output and SECRET not in json.dumps(task)
    assert "cleanup-ran" not in output  # the template's tags: only `deploy` ran
    assert re.search(r"alpha\s+: ok=1 ", output) and "beta" not in output  # the limit
    assert task["params"]["limit"] == ["alpha"]


async def test_a_python_script_gets_the_answers_as_words_and_the_secret_masked(
        hub, api, tmp_path, project):
    scripts = tmp_path / "scripts"
    write_script(scripts, "show.py", SCRIPT)
    template = await api.template(project, scripts, "show.py", app="python")
    await api.ok("PUT", f"/api/project/{project}/templates/{template}",
                 {"name": "t-show.py", "app": "python", "playbook": "show.py",
                  "repository_id": (await api.ok(
                      "GET", f"/api/project/{project}/templates/{template}"))["repository_id"],
                  "survey_vars": SURVEY}, 204)
    task_id = await api.run(project, template,
                            environment=json.dumps({"replicas": 12, "region": "eu"}),
                            secret=json.dumps({"token": SECRET}))
    task = await api.wait_status(project, task_id, timeout=60)
    output = await api.raw_output(project, task_id)
    assert task["status"] == "success", output
    assert "replicas: int 12" in output and "region: str eu" in output
    assert "token: str ********" in output and SECRET not in output
