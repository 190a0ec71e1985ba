"""Attacks on the runner's repository cache (agent/repository.py), each performed for real: a
real hub, a real runner, real git over HTTP or ssh, and, where the attack needs one, a real
separate task user. Each test asserts that the defence holds."""

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from tests.gitkit import git
from tests.httpgit import GitHttpServer
from tests.hubkit import ACCESS_KEY_ENCRYPTION
from tests.sshkit import Sshd, make_key
from tests.test_repository import SCRIPT, _folder, run, template, work_repo

PASSWORD = "url-t0ken-9d3f71c2"


def bare_copy(work: Path, bare: Path) -> Path:
    bare.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare


def command_lines() -> list[str]:
    """Every process's command line, as any local user can read it (/proc/*/cmdline)."""
    lines = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"]:
            lines.append(" ".join(proc.info["cmdline"]))
    return lines


async def test_a_password_in_the_url_is_on_no_command_line(hub, api, tmp_path):
    """A token written into an https URL: every local user (another project's task user)
    can read every process's command line; the runner's git must not carry it there."""
    served = GitHttpServer(_folder(tmp_path / "private"), "deploy", PASSWORD)
    served.delay = 0.5  # a slow server: the fetch lasts long enough to be watched
    try:
        served.publish(work_repo(tmp_path / "work"), "app")
        await hub.start_runner(tmp_path)
        project = await api.project()
        url = served.url("app").replace("http://", f"http://deploy:{PASSWORD}@")
        tid = await template(api, project, url)
        for _ in range(2):  # the first task clones into the cache, the second fetches
            task_id = await api.run(project, tid)
            seen = 0
            while (await api.task(project, task_id))["status"] not in (
                    "success", "error", "stopped"):
                lines = command_lines()
                seen += any("git" in line and "fetch" in line for line in lines)
                leaked = [line for line in lines if PASSWORD in line]
                assert not leaked, leaked
                await asyncio.sleep(0.02)
            output = await api.raw_output(project, task_id)
            assert (await api.task(project, task_id))["status"] == "success", output
            assert "content: one" in output and PASSWORD not in output
            assert seen, "the fetch was never seen running"
        assert served.authorizations  # the password did reach the server
    finally:
        served.close()


async def test_a_commit_only_another_login_may_fetch_is_not_run_from_the_cache(
        hub, api, tmp_path):
    """One URL, two logins that see different repositories there (per-user access rules, or
    a path in each user's home on a real server). The victim's project fills the cache; the
    attacker's project, with its own valid login, fetches the same URL and asks for the
    victim's commit by hash (or a short prefix of it), or for the victim's branch: refused,
    and the victim's content is in no output of the attacker's."""
    victim_work = work_repo(tmp_path / "victim")
    (victim_work / "data.txt").write_text("victim-secret-7c1e\n")
    git(victim_work, "commit", "-q", "-am", "secret")
    git(victim_work, "branch", "private")
    secret_commit = git(victim_work, "rev-parse", "HEAD")
    attacker_work = work_repo(tmp_path / "attacker")
    bare_copy(victim_work, tmp_path / "alice" / "app.git")
    bare_copy(attacker_work, tmp_path / "bob" / "app.git")
    served = GitHttpServer(_folder(tmp_path / "none"), accounts={
        "alice": ("alice-pass-1", tmp_path / "alice"), "bob": ("bob-pass-2", tmp_path / "bob")})
    try:
        await hub.start_runner(tmp_path)
        victim = await api.project("victim")
        attacker = await api.project("attacker")
        keys = {}
        for project, login in ((victim, "alice"), (attacker, "bob")):
            keys[login] = (await api.ok("POST", f"/api/project/{project}/keys", {
                "name": login, "type": "login_password",
                "login_password": {"login": login, "password": f"{login}-pass-"
                                   + ("1" if login == "alice" else "2")}}, 201))["id"]
        url = served.url("app")
        task, output = await run(api, victim, await template(api, victim, url,
                                                             key_id=keys["alice"]))
        assert task["status"] == "success", output
        assert "content: victim-secret-7c1e" in output

        by_commit = await template(api, attacker, url, allow=True, key_id=keys["bob"])
        task, output = await run(api, attacker, by_commit)  # its own repository: fine
        assert task["status"] == "success", output
        assert "content: one" in output
        for asked in (secret_commit, secret_commit[:7]):
            task, output = await run(api, attacker, by_commit, commit_hash=asked)
            assert task["status"] == "error", output
            assert "victim-secret" not in output
            assert f"commit {asked} is not in" in output, output
        task, output = await run(api, attacker, await template(
            api, attacker, url, "private", key_id=keys["bob"]))
        assert task["status"] == "error" and "victim-secret" not in output, output
        assert "branch 'private' not found" in output
        # The attacker's fetches left its refs in the cache: the victim's next task fetches
        # again, and runs its own code.
        task, output = await run(api, victim, await template(api, victim, url,
                                                             key_id=keys["alice"]))
        assert task["status"] == "success" and "content: victim-secret-7c1e" in output, output
        # The victim's own tasks still run its commit, by hash too.
        task, output = await run(api, victim, await template(
            api, victim, url, allow=True, key_id=keys["alice"]), commit_hash=secret_commit)
        assert task["status"] == "success", output
        assert "content: victim-secret-7c1e" in output
    finally:
        served.close()


def test_a_path_repository_into_the_cache_reads_nothing_of_it(lab, tmp_path, task_users):
    """A project names another project's cache folder (its path is the state folder and a
    hash of the URL) as a repository path on the runner, and an environment whose BASH_ENV
    runs its code first: the task user must not start inside that folder, where relative
    paths would read the cached objects past the cache's 0700 parent."""
    shared = Path(tempfile.mkdtemp(prefix="repository-"))
    os.chmod(shared, 0o711)
    served = GitHttpServer(_folder(tmp_path / "served"))
    try:
        work = work_repo(tmp_path / "work")
        (work / "data.txt").write_text("private-content-e41b\n")
        git(work, "commit", "-q", "-am", "private")
        served.publish(work, "app")
        hub = lab.hub()
        state = shared / "state"
        _, rest, victim = lab.online_runner(hub, "isolated", task_user=task_users[0],
                                            allow_root_tasks=False, tmp_path=str(state))
        url = served.url("app")
        repo = rest.ok("POST", f"/api/project/{victim}/repositories",
                       {"name": "r", "git_url": url}, 201)["id"]
        tid = rest.ok("POST", f"/api/project/{victim}/templates", {
            "name": "t", "app": "bash", "playbook": "run.sh", "repository_id": repo}, 201)["id"]
        task = rest.run(victim, tid)
        assert rest.wait_status(victim, task, logs=lab.logs)["status"] == "success"
        assert "private-content-e41b" in rest.raw_output(victim, task)

        cache = state / "repositories" / (hashlib.sha256(url.encode()).hexdigest()[:40]
                                          + ".git")
        assert cache.is_dir()
        # And a folder of the operator's: readable files, under a parent only root may enter.
        operator = _folder(shared / "operator" / "project")
        os.chmod(operator.parent, 0o700)
        os.chmod(operator, 0o755)
        (operator / "notes.txt").write_text("operator-notes-5a0d\n")
        os.chmod(operator / "notes.txt", 0o644)
        attacker = rest.project("attacker")
        steal = ("$(echo STARTED-IN $PWD >&2; cat notes.txt >&2; python3 -c \"import glob, zlib\n"
                 "for f in glob.glob('objects/??/*'): print(zlib.decompress("
                 "open(f, 'rb').read()))\" >&2)")
        environment = rest.ok("POST", f"/api/project/{attacker}/environment", {
            "name": "e", "env": json.dumps({"BASH_ENV": steal})}, 201)["id"]
        for path, playbook in ((operator, "notes.txt"), (cache, "HEAD")):
            repo = rest.ok("POST", f"/api/project/{attacker}/repositories",
                           {"name": "path", "git_url": str(path)}, 201)["id"]
            tid = rest.ok("POST", f"/api/project/{attacker}/templates", {
                "name": "t", "app": "bash", "playbook": playbook, "repository_id": repo,
                "environment_id": environment}, 201)["id"]
            task = rest.run(attacker, tid)
            done = rest.wait_status(attacker, task, logs=lab.logs)
            output = rest.raw_output(attacker, task)
            assert "private-content-e41b" not in output, output
            assert "operator-notes-5a0d" not in output, output
            assert "STARTED-IN" not in output, output
            assert done["status"] == "error", output
            assert "can't cd" in output or "Permission denied" in output, output
        # Cloned by the task's user (a local repository is never fetched by the runner):
        # a file:// URL, and a path relative to the task's folder, into the cache.
        relative = f"../../repositories/{cache.name}"
        for url in (f"file://{cache}", relative):
            repo = rest.ok("POST", f"/api/project/{attacker}/repositories",
                           {"name": "local", "git_url": url}, 201)["id"]
            tid = rest.ok("POST", f"/api/project/{attacker}/templates", {
                "name": "t", "app": "bash", "playbook": "run.sh", "repository_id": repo},
                201)["id"]
            task = rest.run(attacker, tid)
            done = rest.wait_status(attacker, task, logs=lab.logs)
            output = rest.raw_output(attacker, task)
            assert done["status"] == "error", (url, output)
            assert "private-content-e41b" not in output, output
            assert "git clone failed" in output, (url, output)
    finally:
        served.close()
        shutil.rmtree(shared, ignore_errors=True)



async def test_urls_and_logins_with_ssh_options_run_no_command(hub, api, tmp_path):
    """ssh options smuggled in as a host, a user, an scp-like host, git's own options as a
    URL, or ssh options as a key's login: git or the runner refuses each, and nothing runs.
    Each would create `<cache>/home.pwned` ($HOME of the runner's git is `<cache>/home`)."""
    await hub.start_runner(tmp_path)
    project = await api.project()
    touch = "touch${IFS}$HOME.pwned"
    attempts = {
        f"ssh://-oProxyCommand={touch}/x.git": "strange hostname",
        f"ssh://-oProxyCommand={touch}@127.0.0.1:1/x.git": "strange hostname",
        f"-oProxyCommand={touch}:x.git": "strange hostname",
        f"--upload-pack={touch}": "does not exist",
    }
    for url, refused in attempts.items():
        task, output = await run(api, project, await template(api, project, url))
        assert task["status"] == "error", (url, output)
        assert refused in output, (url, output)
    key = make_key(tmp_path / "keys", "k")
    for login in (f"-oProxyCommand={touch}", f"x' $({touch}) '", f"$({touch})"):
        key_id = (await api.ok("POST", f"/api/project/{project}/keys", {
            "name": "k", "type": "ssh", "ssh": {"private_key": key.private, "passphrase": "",
                                                "login": login}}, 201))["id"]
        task, output = await run(api, project, await template(
            api, project, "ssh://127.0.0.1:1/x.git", key_id=key_id))
        assert task["status"] == "error", output
        assert "remote username contains invalid characters" in output, (login, output)
    left = [str(p) for p in (tmp_path / "runner-r").rglob("*pwned*")]
    assert not left, left


def test_symbolic_links_in_the_repository_hand_nothing_outside_to_the_task(
        lab, tmp_path, task_users):
    """The checkout is written as the runner and then handed to the task user: links in the
    repository to a file and a folder of root's must stay links, their targets root's."""
    shared = Path(tempfile.mkdtemp(prefix="repository-"))
    os.chmod(shared, 0o711)
    served = GitHttpServer(_folder(tmp_path / "served"))
    try:
        target_file = shared / "root-file"
        target_file.write_text("root's\n")
        os.chmod(target_file, 0o644)
        target_dir = _folder(shared / "root-dir")
        os.chmod(target_dir, 0o755)
        work = work_repo(tmp_path / "work")
        os.symlink(target_file, work / "link-file")
        os.symlink(target_dir, work / "link-dir")
        os.symlink("..", work / "up")
        (work / "run.sh").write_text(SCRIPT + LINKS)
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "links")
        served.publish(work, "app")
        hub = lab.hub()
        _, rest, project = lab.online_runner(hub, "links", task_user=task_users[0],
                                             allow_root_tasks=False,
                                             tmp_path=str(shared / "state"))
        repo = rest.ok("POST", f"/api/project/{project}/repositories",
                       {"name": "r", "git_url": served.url("app")}, 201)["id"]
        tid = rest.ok("POST", f"/api/project/{project}/templates", {
            "name": "t", "app": "bash", "playbook": "run.sh", "repository_id": repo}, 201)["id"]
        task = rest.run(project, tid)
        assert rest.wait_status(project, task, logs=lab.logs)["status"] == "success"
        output = rest.raw_output(project, task)
        assert "content: one" in output and f"OWNER {task_users[0]}" in output, output
        assert "LINK link-file" in output and "LINK link-dir" in output, output
        for attempt in ("write-file", "write-dir"):
            assert f"DENIED {attempt}" in output, (attempt, output)
        for path in (target_file, target_dir):
            assert path.stat().st_uid == 0 and path.stat().st_gid == 0, path
        assert target_file.read_text() == "root's\n"
        assert list(target_dir.iterdir()) == []
        assert shared.stat().st_uid == 0  # `up` (..) led nowhere either
    finally:
        served.close()
        shutil.rmtree(shared, ignore_errors=True)


LINKS = r"""
try() { label=$1; shift; if out=$("$@" 2>&1); then echo "GOT $label: ${out:0:80}";
        else echo "DENIED $label: $out"; fi; }
echo "OWNER $(stat -c %U run.sh)"
for link in link-file link-dir up; do [ -L "$link" ] && echo "LINK $link"; done
try write-file sh -c 'echo planted >> link-file'
try write-dir touch link-dir/planted
"""


async def test_a_server_that_never_answers_is_ended_by_the_tasks_timeout(hub, api, tmp_path):
    """A repository server of the attacker's that answers nothing (or a byte a minute) would
    hold a runner slot, and the URL's lock, for ever: the task's timeout covers the fetch,
    ended by the runner itself, and nothing of the fetch is left."""
    served = GitHttpServer(_folder(tmp_path / "served"))
    served.publish(work_repo(tmp_path / "work"), "app")
    served.delay = 60.0
    try:
        await hub.start_runner(tmp_path)
        project = await api.project()
        repo = await api.ok("POST", f"/api/project/{project}/repositories",
                            {"name": "r", "git_url": served.url("app")}, 201)
        tid = (await api.ok("POST", f"/api/project/{project}/templates", {
            "name": "t", "app": "bash", "playbook": "run.sh", "repository_id": repo["id"],
            "timeout_sec": 2}, 201))["id"]
        started = asyncio.get_running_loop().time()
        task_id = await api.run(project, tid)
        task = await api.wait_status(project, task_id, timeout=30)
        seconds = asyncio.get_running_loop().time() - started
        output = await api.raw_output(project, task_id)
        assert task["status"] == "error", output
        assert "timed out" in output and "ended by the hub" not in task.get("message", ""), (
            task, output)
        assert seconds < 9, seconds  # the runner's own limit, before the hub's backstop
        cache_root = tmp_path / "runner-r" / "repositories"
        assert sorted(p.name for p in cache_root.iterdir()) == ["home"]
        fetching = [line for line in command_lines() if served.url("app") in line]
        assert not fetching, fetching
    finally:
        served.close()


def _agents() -> dict[int, str]:
    """ssh-agent processes: pid -> their socket (a long state folder's is in /tmp)."""
    return {p.pid: p.info["cmdline"][-1] for p in psutil.process_iter(["cmdline"])
            if p.info["cmdline"] and p.info["cmdline"][0].endswith("ssh-agent")}


def test_a_runner_killed_mid_fetch_leaves_no_agent_holding_the_key(lab, tmp_path):
    """kill -9 of the runner while git fetches with an ssh key (a server that never answers
    past the login): the ssh-agent holding the key outlives it; the restarted runner kills
    that agent and removes its folder and the half-made cache before anything else."""
    key = make_key(tmp_path / "keys", "plain")
    sshd = Sshd(tmp_path / "sshd", [f'command="sleep 120" {key.public}'])
    try:
        work = work_repo(tmp_path / "work")
        bare = bare_copy(work, tmp_path / "bare" / "app.git")
        hub = lab.hub(access_key_encryption=ACCESS_KEY_ENCRYPTION)
        runner, rest, project = lab.online_runner(hub, "killed")
        key_id = rest.ok("POST", f"/api/project/{project}/keys", {
            "name": "k", "type": "ssh", "ssh": {"private_key": key.private, "passphrase": "",
                                                "login": "root"}}, 201)["id"]
        repo = rest.ok("POST", f"/api/project/{project}/repositories", {
            "name": "r", "git_url": f"ssh://127.0.0.1:{sshd.port}{bare}",
            "ssh_key_id": key_id}, 201)["id"]
        tid = rest.ok("POST", f"/api/project/{project}/templates", {
            "name": "t", "app": "bash", "playbook": "run.sh", "repository_id": repo}, 201)["id"]
        before = _agents()
        task = rest.run(project, tid)
        cache_root = runner.folder / "work" / "repositories"
        deadline = time.monotonic() + 30
        while not ((agents := {pid: socket for pid, socket in _agents().items()
                               if pid not in before})
                   and "sleep 120" in " ".join(command_lines())):
            assert time.monotonic() < deadline, rest.raw_output(project, task) + lab.logs()
            time.sleep(0.05)
        assert list(cache_root.glob(".key-*")) and list(cache_root.glob(".new-*"))
        runner.kill9()
        assert all(psutil.pid_exists(pid) for pid in agents)  # orphaned, the key in memory
        runner.start()
        rest.wait_runner_online("killed", logs=lab.logs)
        done = rest.wait_status(project, task, logs=lab.logs)
        assert done["status"] == "error"
        deadline = time.monotonic() + 10
        while [pid for pid in agents if psutil.pid_exists(pid)
               and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]:
            assert time.monotonic() < deadline, "the ssh-agent outlived the restart"
            time.sleep(0.05)
        left = [p.name for p in cache_root.iterdir() if p.name.startswith((".key-", ".new-"))]
        left += [socket for socket in agents.values() if Path(socket).parent.exists()]
        assert not left, left
    finally:
        sshd.stop()


async def test_a_filter_the_host_configures_never_runs_on_the_repositorys_attributes(
        hub, api, tmp_path):
    """The host's /etc/gitconfig defines a filter (as git-lfs's install does); a repository
    asks for it in its .gitattributes. The runner's checkout (as root) must not run it: the
    attacker chooses what the filter is fed, and with git-lfs, where it fetches from."""
    marker = tmp_path / "filter-ran"
    name = f"semaphoretest{os.getpid()}"
    system = Path("/etc/gitconfig")
    before = system.read_bytes() if system.exists() else None
    served = GitHttpServer(_folder(tmp_path / "served"))
    try:
        with open(system, "a") as config:
            # Quoted: in git's config a bare `;` starts a comment.
            config.write(f'\n[filter "{name}"]\n\tsmudge = "sh -c \'touch {marker}; cat\'"\n')
        work = work_repo(tmp_path / "work")
        (work / ".gitattributes").write_text(f"data.txt filter={name}\n")
        git(work, "add", ".gitattributes")
        git(work, "commit", "-q", "-m", "attributes")
        served.publish(work, "app")
        await hub.start_runner(tmp_path)
        project = await api.project()
        task, output = await run(api, project, await template(api, project, served.url("app")))
        assert task["status"] == "success", output
        assert "content: one" in output
        assert not marker.exists()
    finally:
        served.close()
        if before is None:
            system.unlink(missing_ok=True)
        else:
            system.write_bytes(before)
