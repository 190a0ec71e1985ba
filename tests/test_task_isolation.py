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
from tests.hubkit import ACCESS_KEY_ENCRYPTION

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


def readable_scripts(folder: Path, **scripts: str) -> Path:
    """Scripts a task user can read (a repository used in place)."""
    for name, body in scripts.items():
        write_script(folder, name, body)
    os.chmod(folder, 0o755)
    for script in folder.iterdir():
        os.chmod(script, 0o644)
    return folder


def test_a_task_cannot_steal_its_runners_identity(lab, shared_folder, task_users):
    hub = lab.hub()
    state = shared_folder / "state"
    runner, rest, project = lab.online_runner(
        hub, "isolated", task_user=task_users[0], allow_root_tasks=False, tmp_path=str(state))
    scripts = readable_scripts(shared_folder / "scripts", **{"first.sh": "echo first\n",
                                                             "attack.sh": ATTACK})
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
    assert f"RUNNING AS {task_users[0]}" in output
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


@pytest.mark.parametrize("prepare", ["other_owner", "world_writable", "symlink",
                                     "parent_of_other_owner"])
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
        elif prepare == "parent_of_other_owner":
            # Theirs is the folder above: they could swap ours for one full of symlinks.
            os.chmod(planted, 0o755)
            os.chown(planted, 65534, 65534)
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


def test_a_leftover_group_is_killed_only_if_it_is_still_the_tasks(tmp_path, task_users):
    """After a crash the runner kills the task groups its spool recorded: never a pid that
    now belongs to another user's or another start's process."""
    from agent.worker import TaskWorker

    work = tmp_path / "work"
    ours = subprocess.Popen(["sleep", "300"], start_new_session=True)
    other_user = subprocess.Popen(["sleep", "300"], start_new_session=True, user=task_users[1])
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
        assert other_user.poll() is None  # recorded as uid 0, run by another user: spared
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


SPY = r"""
# Left behind: would watch every later task of this user (its environment, its folder).
setsid bash -c 'while true; do cat /proc/[0-9]*/environ 2>/dev/null | tr "\0" "\n" \
  | grep ^DB_SECRET= >> "$0"; sleep 0.05; done' "$1" < /dev/null > /dev/null 2>&1 &
echo "spy started"
"""


def test_nothing_a_task_leaves_running_outlives_it(lab, shared_folder, task_users):
    """A task starts a `setsid` spy meant to read the next task's secrets: when the task
    ends, every process of its task user is killed, so the next task runs unwatched."""
    hub = lab.hub(access_key_encryption=ACCESS_KEY_ENCRYPTION)
    _runner, rest, project = lab.online_runner(
        hub, "spied", task_user=task_users[0], tmp_path=str(shared_folder / "state"))
    scripts = readable_scripts(shared_folder / "scripts", **{
        "spy.sh": SPY, "victim.sh": 'echo "victim ran"; sleep 1\n'})
    loot = shared_folder / "loot"
    loot.touch()
    os.chmod(loot, 0o666)
    repo = rest.ok("POST", f"/api/project/{project}/repositories",
                   {"name": "s", "git_url": str(scripts)}, 201)["id"]
    spy = rest.ok("POST", f"/api/project/{project}/templates", {
        "name": "spy", "app": "bash", "playbook": "spy.sh", "repository_id": repo,
        "arguments": json.dumps([str(loot)])}, 201)["id"]
    task = rest.run(project, spy)
    assert rest.wait_status(project, task, logs=lab.logs)["status"] == "success"
    output = rest.raw_output(project, task)
    assert "spy started" in output and "the task left running were killed" in output
    assert not [p for p in psutil.process_iter(["username", "status"])  # zombies ran out
                if p.info["username"] == task_users[0]
                and p.info["status"] != psutil.STATUS_ZOMBIE]
    environment = rest.ok("POST", f"/api/project/{project}/environment", {
        "name": "db", "env": "{}", "secrets": [
            {"name": "DB_SECRET", "secret": "db-password-0123456789", "type": "env"}]}, 201)
    victim = rest.ok("POST", f"/api/project/{project}/templates", {
        "name": "victim", "app": "bash", "playbook": "victim.sh", "repository_id": repo,
        "environment_id": environment["id"]}, 201)["id"]
    task = rest.run(project, victim)
    assert rest.wait_status(project, task, logs=lab.logs)["status"] == "success"
    assert loot.read_text() == ""


CONCURRENT = r"""
echo "AS $(id -un)"
touch "$HOME/mine"; echo "secret of $1" > "$HOME/mine"
sleep 1.5
for pid in $(pgrep -f "concurrent.sh" || true); do
  [ "$pid" = "$$" ] && continue
  if cat /proc/$pid/environ > /dev/null 2>&1; then echo "READ environ of $pid"; fi
  if ls /proc/$pid/cwd/ > /dev/null 2>&1; then echo "READ cwd of $pid"; fi
done
echo "done $1"
"""


def test_tasks_running_at_once_run_as_different_users(lab, shared_folder, task_users):
    hub = lab.hub()
    _runner, rest, project = lab.online_runner(
        hub, "pair", max_parallel_tasks=2, task_user=task_users,
        tmp_path=str(shared_folder / "state"))
    scripts = readable_scripts(shared_folder / "scripts", **{"concurrent.sh": CONCURRENT})
    repo = rest.ok("POST", f"/api/project/{project}/repositories",
                   {"name": "c", "git_url": str(scripts)}, 201)["id"]
    ids = []
    for name in ("one", "two"):
        template = rest.ok("POST", f"/api/project/{project}/templates", {
            "name": name, "app": "bash", "playbook": "concurrent.sh", "repository_id": repo,
            "arguments": json.dumps([name])}, 201)["id"]
        ids.append(rest.run(project, template))
    outputs = []
    for task in ids:
        assert rest.wait_status(project, task, logs=lab.logs)["status"] == "success"
        outputs.append(rest.raw_output(project, task))
    users = {line[3:] for out in outputs for line in out.splitlines() if line.startswith("AS ")}
    assert users == set(task_users), outputs  # one user each, at the same time
    assert not any("READ" in out for out in outputs), outputs


@pytest.mark.parametrize(("options", "says"), [
    ({"task_user": "nobody"}, "shared with other services"),
    ({"task_user": "no-such-user-here"}, "no such user"),
    ({"task_user": "root"}, "is root"),
    ("two_tasks_one_user", "each running task needs a user of its own"),
])
def test_unsafe_task_users_are_refused_at_start(lab, task_users, options, says):
    hub = lab.hub()
    if options == "two_tasks_one_user":
        runner = lab.runner(hub.base_url, "refused", start=False, max_parallel_tasks=2,
                            task_user=task_users[0])
    else:
        runner = lab.runner(hub.base_url, "refused", start=False, allow_root_tasks=False,
                            **options)
    runner.start()
    assert runner.wait(30) == 1
    assert says in runner.log()


def test_register_never_writes_through_a_file_another_user_planted(tmp_path, task_users):
    """In a folder others can write (sticky, like /tmp), another user creates the name the
    token would be written through first: register writes a new file of its own."""
    from agent.config import RunnerConfig, RunnerSection, save_runner_config, write_private_file

    folder = Path(tempfile.mkdtemp(prefix="sticky-"))
    try:
        os.chmod(folder, 0o1777)
        planted = folder / ".token.tmp"
        planted.touch()
        os.chown(planted, 65534, 65534)
        os.chmod(planted, 0o666)
        write_private_file(folder / "token", "the-token\n")
        info = (folder / "token").stat()
        assert (info.st_uid, info.st_mode & 0o777) == (0, 0o600)
        assert planted.read_text() == ""  # nothing was written through their file
        save_runner_config(folder / "c.json", RunnerConfig(
            web_host="http://127.0.0.1:1", runner=RunnerSection(token="t")))
        assert (folder / "c.json").stat().st_mode & 0o777 == 0o600
    finally:
        shutil.rmtree(folder, ignore_errors=True)
