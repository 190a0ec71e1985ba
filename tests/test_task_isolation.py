"""Attacks by a task on its own runner, against a real hub and `semaphore runner start`.

A task is code the runner did not write. Run as root with `task_user`, the runner must keep
its token, key, spool, memory and other tasks' folders out of the task's reach; and a runner
must not take a state folder someone else prepared for it.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.faults import write_script

TASK_USER = "nobody"

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="switching to a task user needs root (CI runs as root)")


@pytest.fixture
def shared_folder():
    """A folder outside pytest's 0700 tmp root, which the task user may pass through."""
    folder = Path(tempfile.mkdtemp(prefix="isolation-"))
    os.chmod(folder, 0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


ATTACK = r"""
try() { label=$1; shift; if out=$("$@" 2>&1); then echo "GOT $label: ${out:0:60}";
        else echo "DENIED $label"; fi; }
echo "RUNNING AS $(id -un)"
cmdline=$(tr '\0' ' ' < /proc/$PPID/cmdline)
config=${cmdline##*--config }; config=${config%% *}
echo "RUNNER CONFIG $config"
try config cat "$config"
try token cat "$1"
try key cat "$2"
try spool ls "$3/spool"
try state-list ls "$3"
try tasks-list ls "$3/tasks"
try earlier-task ls -d "$3"/tasks/task_1_*
try environ cat /proc/$PPID/environ
try memory dd if=/proc/$PPID/mem bs=1 count=1 skip=4194304
try fds ls /proc/$PPID/fd
try maps cat /proc/$PPID/maps
try root-home ls /root
echo "HOME $HOME"
"""


def test_a_task_cannot_steal_its_runners_identity(lab, shared_folder):
    hub = lab.hub()
    state = shared_folder / "state"
    runner, rest, project = lab.online_runner(
        hub, "isolated", task_user=TASK_USER, allow_root_tasks=False, tmp_path=str(state))
    scripts = shared_folder / "scripts"
    write_script(scripts, "first.sh", "echo first\n")
    write_script(scripts, "attack.sh", ATTACK)
    os.chmod(scripts, 0o755)
    for script in scripts.iterdir():
        os.chmod(script, 0o644)
    first = rest.run(project, rest.template(project, scripts, "first.sh"))
    assert rest.wait_status(project, first, logs=lab.logs)["status"] == "success"
    # The attacker knows the layout: where the token, key and state folder are.
    config = json.loads(runner.config_file.read_text())["runner"]
    repo = rest.ok("POST", f"/api/project/{project}/repositories",
                   {"name": "attack", "git_url": str(scripts)}, 201)["id"]
    template = rest.ok("POST", f"/api/project/{project}/templates", {
        "name": "attack", "app": "bash", "playbook": "attack.sh", "repository_id": repo,
        "arguments": json.dumps([config["token_file"], config["private_key_file"],
                                 str(state)])}, 201)["id"]
    task = rest.run(project, template)
    assert rest.wait_status(project, task, logs=lab.logs)["status"] == "success"
    output = rest.raw_output(project, task)
    assert f"RUNNING AS {TASK_USER}" in output
    assert f"RUNNER CONFIG {runner.config_file}" in output  # it knows where to look...
    for attempt in ("config", "token", "key", "spool", "state-list", "tasks-list",
                    "earlier-task", "environ", "memory", "fds", "maps", "root-home"):
        assert f"DENIED {attempt}\n" in output, (attempt, output)  # ...and reads nothing
    assert "GOT" not in output, output
    # Its HOME was a folder of its own, gone with it.
    home = Path(next(line for line in output.splitlines() if line.startswith("HOME "))[5:])
    assert home.parent == state / "tasks" and not home.exists()
    # The hub knows this runner isolates its tasks.
    assert rest.runner("isolated").get("shared_identity") is False


def test_a_root_runner_without_task_user_refuses_to_start(lab, tmp_path):
    hub = lab.hub()
    runner = lab.runner(hub.base_url, "rooted", start=False, allow_root_tasks=False)
    runner.start()
    assert runner.wait(30) == 1
    log = runner.log()
    assert "runs as root and has no runner.task_user" in log
    assert '"task_user"' in log and "allow_root_tasks" in log  # says how


@pytest.mark.parametrize("prepare", ["other_owner", "world_writable", "symlink"])
def test_a_planted_state_folder_is_refused_and_nothing_is_killed(lab, tmp_path, prepare):
    """Another local user creates the runner's state folder first, with a spool whose
    process.json points at an unrelated process group: the runner refuses the folder and
    signals nothing."""
    hub = lab.hub()
    planted = Path(tempfile.mkdtemp(prefix="planted-"))
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        target = planted / "state"
        if prepare == "symlink":
            (planted / "real").mkdir()
            target.symlink_to(planted / "real")
            spool = planted / "real" / "spool" / "task_9"
        else:
            target.mkdir()
            spool = target / "spool" / "task_9"
        spool.mkdir(parents=True)
        started = psutil.Process(victim.pid).create_time()
        (spool / "process.json").write_text(json.dumps(
            {"pid": victim.pid, "started": started, "uid": 0}))
        if prepare == "other_owner":
            os.chown(target, 65534, 65534)
        elif prepare == "world_writable":
            os.chmod(target, 0o777)
        runner = lab.runner(hub.base_url, f"planted-{prepare}", start=False,
                            tmp_path=str(target))
        runner.start()
        assert runner.wait(30) == 1
        assert str(target) in runner.log()
        assert victim.poll() is None  # the unrelated process group was not touched
    finally:
        victim.kill()
        victim.wait()
        shutil.rmtree(planted, ignore_errors=True)


def test_a_leftover_group_is_killed_only_if_it_is_still_the_tasks(tmp_path):
    """After a crash the runner kills the task groups its spool recorded: never a pid that
    now belongs to another user's or another start's process."""
    from agent.worker import TaskWorker

    work = tmp_path / "work"
    ours = subprocess.Popen(["sleep", "300"], start_new_session=True)
    other_user = subprocess.Popen(["sleep", "300"], start_new_session=True, user=TASK_USER)
    try:
        for task_id, proc, uid in ((1, ours, 0), (2, other_user, 0)):
            spool = work / "spool" / f"task_{task_id}"
            spool.mkdir(parents=True)
            (spool / "process.json").write_text(json.dumps({
                "pid": proc.pid, "started": psutil.Process(proc.pid).create_time(),
                "uid": uid}))
        worker = TaskWorker(work, 1, emit=lambda frame: None)
        assert sorted(worker.recover()) == [1, 2]
        assert ours.wait(10) == -signal.SIGKILL  # recorded, same start, same user: killed
        time.sleep(0.2)
        assert other_user.poll() is None  # recorded as uid 0, run by nobody: spared
    finally:
        for proc in (ours, other_user):
            proc.kill()
            proc.wait()


def test_the_default_state_folder_is_not_in_tmp(monkeypatch, tmp_path):
    from agent.isolation import default_state_folder

    assert default_state_folder() == "/var/lib/semaphore-runner"  # root
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as an ordinary user
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_state_folder() == str(tmp_path / ".local" / "state" / "semaphore-runner")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_state_folder() == str(tmp_path / "state" / "semaphore-runner")
