"""Semaphore's `apps` setting in the runner config: another program per app (a host with
python3.12 or /opt/pwsh/pwsh), with its own arguments before the script."""

import json
import os

import pytest

from agent.apps import UnsupportedApp, available_apps, check_app, configure_apps, program_of
from agent.config import load_runner_config
from protocol.frames import RepositorySpec, TaskSpec
from tests.agent.test_executor import Run


@pytest.fixture
def wrapper(tmp_path):
    """A 'python' that says it is the configured one, then runs the real python3."""
    path = tmp_path / "bin" / "my-python"
    path.parent.mkdir()
    path.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo "My Python 9.9"; exit 0; fi\n'
                    'echo "custom interpreter: $*" >&2\nexec python3 "$@"\n')
    os.chmod(path, 0o755)
    yield path
    configure_apps({})  # process-wide: leave the next test the usual programs


def test_the_config_names_another_program_and_its_arguments(tmp_path, wrapper):
    config_file = tmp_path / "config.runner.json"
    config_file.write_text(json.dumps({
        "web_host": "http://127.0.0.1:3000",
        "apps": {"python": {"app_path": str(wrapper), "app_args": ["-u"], "title": "Py",
                            "active": True}},
        "runner": {"token": "t", "tmp_path": str(tmp_path / "work")}}))
    config = load_runner_config(config_file)
    configure_apps(config.apps)
    assert available_apps()["python"] == "My Python 9.9"  # what the hello will say


async def test_a_task_runs_with_the_configured_program(tmp_path, wrapper):
    from agent.config import AppSetting

    configure_apps({"python": AppSetting(app_path=str(wrapper), app_args=["-u"])})
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "hello.py").write_text("import sys\nprint('hello from', sys.version_info[0])\n")
    spec = TaskSpec(project_id=1, template_id=1, app="python", playbook="hello.py",
                    repository=RepositorySpec(url=str(scripts)))
    run = Run(tmp_path, spec)
    outcome = await run.run()
    assert outcome.status == "success", run.text()
    assert f"custom interpreter: -u {scripts / 'hello.py'}" in run.text("stderr")
    assert "hello from 3" in run.text("stdout")


def test_a_configured_program_that_is_not_there_is_named(tmp_path, wrapper):
    from agent.config import AppSetting

    configure_apps({"python": AppSetting(app_path=str(tmp_path / "no-such-python"))})
    assert "python" not in available_apps()
    spec = TaskSpec(project_id=1, template_id=1, app="python", playbook="x.py")
    with pytest.raises(UnsupportedApp, match="no-such-python"):
        check_app(spec)


def test_a_program_found_once_is_looked_for_again_when_gone_or_path_changes(tmp_path,
                                                                            monkeypatch):
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        folder.mkdir()
        (folder / "pwsh").write_text("#!/bin/sh\n")
        os.chmod(folder / "pwsh", 0o755)
    spec = TaskSpec(project_id=1, template_id=1, app="powershell", playbook="x.ps1",
                    repository=RepositorySpec(url=str(tmp_path)))
    monkeypatch.setenv("PATH", f"{folders[0]}:{folders[1]}")
    assert program_of("powershell") == str(folders[0] / "pwsh")
    (folders[0] / "pwsh").unlink()  # gone: found again, further down PATH
    assert program_of("powershell") == str(folders[1] / "pwsh")
    monkeypatch.setenv("PATH", str(folders[0]))  # another PATH: searched anew
    with pytest.raises(UnsupportedApp):
        check_app(spec)
