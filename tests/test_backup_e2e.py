"""Moving from Semaphore, end to end: a Semaphore backup whose template runs a bash script is
restored into a hub process, its repository pointed at a real git repository, and the
template runs on a runner process to `success`."""

import json

from tests.gitkit import git
from tests.lab import Lab, wait_final


def test_a_restored_backup_runs_its_template_on_a_runner(lab: Lab, tmp_path):
    repo = tmp_path / "ops"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "rotate.sh").write_text('echo "rotating for $DEPLOY_ENV with $1"\n')
    git(repo, "add", "rotate.sh")
    git(repo, "commit", "-q", "-m", "rotate script")

    backup = {
        "meta": {"name": "From Semaphore", "alert": False, "max_parallel_tasks": 0,
                 "type": ""},
        "keys": [{"name": "None", "type": "none", "owner": ""}],
        # As exported by the old server: a URL this machine cannot reach.
        "repositories": [{"name": "ops", "git_url": "git@old.example.com:ops.git",
                          "git_branch": "main", "ssh_key": "None"}],
        "inventories": [], "views": [], "integrations": [], "integration_aliases": [],
        "environments": [{"name": "prod", "json": "{}",
                          "env": json.dumps({"DEPLOY_ENV": "production"})}],
        "templates": [{"name": "Rotate", "playbook": "rotate.sh", "app": "bash",
                       "arguments": json.dumps(["--fast"]), "type": "",
                       "allow_override_args_in_task": False, "autorun": False,
                       "survey_vars": [], "suppress_success_alerts": False,
                       "task_params": {}, "allow_override_branch_in_task": False,
                       "allow_parallel_tasks": False, "repository": "ops",
                       "environment": "prod", "vaults": []}],
        "schedules": [],
    }
    hub = lab.hub()
    lab.runner(hub.base_url, "r1")
    rest = hub.rest()
    rest.wait_runner_online("r1", logs=lab.logs)

    project = rest.ok("POST", "/api/projects/restore", backup)
    base = f"/api/project/{project['id']}"
    [repository] = rest.ok("GET", f"{base}/repositories")
    # What a user does after a restore: point the repository (and keys) at what this side
    # reaches.
    rest.ok("PUT", f"{base}/repositories/{repository['id']}",
            {**repository, "git_url": str(repo)}, 204)
    [template] = rest.ok("GET", f"{base}/templates")
    task = rest.ok("POST", f"{base}/tasks", {"template_id": template["id"]}, 201)
    done = wait_final(rest, lab, project["id"], task["id"])
    assert done["status"] == "success", (done, lab.logs())
    assert "rotating for production with --fast" in rest.raw_output(project["id"], task["id"])
