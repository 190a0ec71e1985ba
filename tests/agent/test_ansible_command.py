"""The ansible-playbook argv, in the order Semaphore's getPlaybookArgs builds it."""

import json
import shutil
from pathlib import Path

import pytest

from agent.apps import build_command
from protocol.frames import TaskSpec


@pytest.fixture(autouse=True)
def ansible_playbook(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda program: f"/usr/bin/{program}")


def test_every_flag_in_semaphores_order():
    spec = TaskSpec(project_id=3, template_id=4, app="ansible", playbook="site.yml",
                    arguments=["--forks", "2"], task_arguments=["--tags", "web"],
                    extra_vars={"region": "eu", "n": 2}, message="deploy", debug=True,
                    diff=True, dry_run=True, limit="web1", username="ann",
                    web_host="https://hub.example")
    argv = build_command(spec, Path("/c/site.yml"), 17, Path("/t/inventory"))
    assert argv[:8] == ["ansible-playbook", "-i", "/t/inventory", "-vvvv", "--diff", "--check",
                        "--extra-vars", argv[7]]
    assert argv[8:] == ["--forks", "2", "--tags", "web", "--limit=web1", "/c/site.yml"]
    assert json.loads(argv[7]) == {"region": "eu", "n": 2, "semaphore_vars": {"task_details": {
        "id": 17, "message": "deploy", "username": "ann",
        "url": "https://hub.example/project/3/history?t=17"}}}


def test_a_task_cannot_forge_semaphore_vars_and_no_flags_by_default():
    spec = TaskSpec(project_id=3, template_id=4, app="ansible", playbook="site.yml",
                    extra_vars={"semaphore_vars": {"task_details": {"id": 1}}})
    argv = build_command(spec, Path("/c/site.yml"), 17)
    assert argv[:2] == ["ansible-playbook", "--extra-vars"] and argv[3:] == ["/c/site.yml"]
    assert json.loads(argv[2])["semaphore_vars"]["task_details"] == {
        "id": 17, "username": "", "url": ""}


def test_with_secret_vars_the_extra_vars_are_a_file():
    spec = TaskSpec(project_id=3, template_id=4, app="ansible", playbook="site.yml")
    argv = build_command(spec, Path("/c/site.yml"), 17, None, Path("/t/extra_vars.json"))
    assert argv == ["ansible-playbook", "--extra-vars", "@/t/extra_vars.json", "/c/site.yml"]


def test_tags_and_skip_tags_follow_the_limit():
    spec = TaskSpec(project_id=3, template_id=4, app="ansible", playbook="site.yml",
                    limit="web", tags="deploy,db", skip_tags="slow")
    argv = build_command(spec, Path("/c/site.yml"), 17)
    assert argv[3:] == ["--limit=web", "--tags=deploy,db", "--skip-tags=slow", "/c/site.yml"]


def test_a_scripts_secret_vars_are_words_after_its_extra_vars():
    spec = TaskSpec(project_id=3, template_id=4, app="bash", playbook="run.sh",
                    arguments=["-x"], task_arguments=["--now"], extra_vars={"n": 2})
    argv = build_command(spec, Path("/c/run.sh"), 17, secret_vars={"token": "t0k"})
    assert argv[1:] == ["/c/run.sh", "-x", "n=2", "token=t0k", "--now"]
