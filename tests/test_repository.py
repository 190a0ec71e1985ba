"""A repository's code reaches its tasks through the runner's cache: a real hub, a real runner
connection and a real git server (git http-backend over HTTP on a loopback port)."""

import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.gitkit import git, repo_with_branch
from tests.httpgit import GitHttpServer
from tests.sshkit import Sshd, make_key

PASSWORD = "pa55-w0rd-4e7c19"
# What every task prints: its script's line, the commit it runs, where its checkout is.
SCRIPT = 'echo "content: $(cat data.txt)"; echo "checkout: $PWD"; git log -1 --format="head: %H"\n'


@pytest.fixture
def server(tmp_path):
    served = GitHttpServer(_folder(tmp_path / "served"))
    yield served
    served.close()


def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def work_repo(folder: Path) -> Path:
    """A repository with run.sh and data.txt ("one") on main, "branch" on feature."""
    repo_with_branch(folder, "data.txt", "one\n", "feature", "branch\n", "feature data")
    (folder / "run.sh").write_text(SCRIPT)
    git(folder, "add", "run.sh")
    git(folder, "commit", "-q", "-m", "script")
    git(folder, "checkout", "-q", "feature")
    git(folder, "merge", "-q", "main", "-m", "merge script")
    git(folder, "checkout", "-q", "main")
    return folder


def commit(folder: Path, text: str, message: str) -> str:
    (folder / "data.txt").write_text(text + "\n")
    git(folder, "commit", "-q", "-am", message)
    git(folder, "push", "-q", "served", "--all")
    return git(folder, "rev-parse", "HEAD")


async def template(api, project: int, url: str, branch: str = "", allow: bool = False,
                   key_id: int | None = None, playbook: str = "run.sh") -> int:
    repo = await api.ok("POST", f"/api/project/{project}/repositories",
                        {"name": "r", "git_url": url, "git_branch": branch,
                         "ssh_key_id": key_id}, 201)
    return (await api.ok("POST", f"/api/project/{project}/templates", {
        "name": "t", "app": "bash", "playbook": playbook, "repository_id": repo["id"],
        "allow_override_branch_in_task": allow}, 201))["id"]


async def run(api, project: int, template_id: int, **task) -> tuple[dict, str]:
    task_id = await api.run(project, template_id, **task)
    done = await api.wait_status(project, task_id, timeout=60)
    return done, await api.raw_output(project, task_id)


async def test_the_second_task_fetches_into_the_cache_and_sees_a_new_commit(
        hub, api, tmp_path, server):
    work = work_repo(tmp_path / "work")
    server.publish(work, "app")
    await hub.start_runner(tmp_path)
    project = await api.project()
    tid = await template(api, project, server.url("app"))
    started = time.monotonic()
    first, output = await run(api, project, tid)
    first_seconds = time.monotonic() - started
    assert first["status"] == "success", output
    assert "into this runner's cache (the first task" in output
    assert "content: one" in output
    head = git(work, "rev-parse", "HEAD")
    assert f"head: {head}" in output
    # The commit and its message are stored with the task and shown by the API.
    shown = await api.task(project, first["id"])
    assert (shown["commit_hash"], shown["commit_message"]) == (head, "script")
    cache = list((tmp_path / "runner-r" / "repositories").glob("*.git"))
    assert len(cache) == 1 and (cache[0] / "HEAD").is_file()

    pushed = commit(work, "two", "second commit")
    started = time.monotonic()
    second, output = await run(api, project, tid)
    second_seconds = time.monotonic() - started
    assert second["status"] == "success", output
    assert "Fetching " in output and "into this runner's cache (the first" not in output
    assert "content: two" in output and f"head: {pushed}" in output
    shown = await api.task(project, second["id"])
    assert (shown["commit_hash"], shown["commit_message"]) == (pushed, "second commit")
    # Each task's checkout went with it; the cache stays.
    checkout = Path(next(line for line in output.splitlines()
                         if line.startswith("checkout: "))[10:])
    assert checkout.parent.parent == tmp_path / "runner-r" / "tasks"
    assert not checkout.exists()
    assert not list((tmp_path / "runner-r" / "tasks").iterdir())
    assert cache[0].is_dir()
    print(f"first task {first_seconds:.2f} s, second {second_seconds:.2f} s")


async def test_two_tasks_on_two_branches_at_once_each_see_their_own_commit(
        hub, api, tmp_path, server):
    work = work_repo(tmp_path / "work")
    (work / "run.sh").write_text("sleep 1\n" + SCRIPT)
    git(work, "commit", "-q", "-am", "slower")
    git(work, "checkout", "-q", "feature")
    (work / "run.sh").write_text("sleep 1\n" + SCRIPT)
    git(work, "commit", "-q", "-am", "slower on feature")
    git(work, "checkout", "-q", "main")
    server.publish(work, "app")
    await hub.start_runner(tmp_path, max_parallel_tasks=2)
    project = await api.project()
    on_main = await template(api, project, server.url("app"), "main")
    on_feature = await template(api, project, server.url("app"), "feature")
    (main_task, main_out), (feature_task, feature_out) = await asyncio.gather(
        run(api, project, on_main), run(api, project, on_feature))
    assert main_task["status"] == feature_task["status"] == "success", (main_out, feature_out)
    assert "content: one" in main_out and "content: branch" in feature_out
    assert f"head: {git(work, 'rev-parse', 'main')}" in main_out
    assert f"head: {git(work, 'rev-parse', 'feature')}" in feature_out
    assert main_task["commit_hash"] == git(work, "rev-parse", "main")
    assert feature_task["commit_hash"] == git(work, "rev-parse", "feature")
    # They ran at the same time, from one cache.
    assert main_task["start"] < feature_task["end"] and feature_task["start"] < main_task["end"]
    assert len(list((tmp_path / "runner-r" / "repositories").glob("*.git"))) == 1


async def test_a_task_runs_the_commit_it_names_when_its_template_allows(
        hub, api, tmp_path, server):
    work = work_repo(tmp_path / "work")
    old = git(work, "rev-parse", "HEAD")
    server.publish(work, "app")
    commit(work, "newer", "newer")
    await hub.start_runner(tmp_path)
    project = await api.project()
    allowed = await template(api, project, server.url("app"), allow=True)
    task, output = await run(api, project, allowed, commit_hash=old)
    assert task["status"] == "success", output
    assert "content: one" in output and f"head: {old}" in output
    assert task["commit_hash"] == old
    # One that is in no branch of the repository: git's own message.
    missing = "0123456789abcdef0123456789abcdef01234567"
    task, output = await run(api, project, allowed, commit_hash=missing)
    assert task["status"] == "error"
    assert "Needed a single revision" in output and f"commit {missing} is not in" in output
    # Not allowed by the template, or not a hash: 400 naming the field.
    locked = await template(api, project, server.url("app"))
    status, body = await api.request("POST", f"/api/project/{project}/tasks",
                                     {"template_id": locked, "commit_hash": old})
    assert status == 400 and "`commit_hash`" in body["error"]
    assert "allow_override_branch_in_task" in body["error"]
    status, body = await api.request("POST", f"/api/project/{project}/tasks",
                                     {"template_id": allowed, "commit_hash": "--upload-pack=x"})
    assert status == 400 and "`commit_hash`" in body["error"]


async def test_an_ext_url_runs_no_command(hub, api, tmp_path):
    marker = tmp_path / "pwned"
    await hub.start_runner(tmp_path)
    project = await api.project()
    tid = await template(api, project, f"ext::sh -c touch% {marker}")
    task, output = await run(api, project, tid)
    assert task["status"] == "error"
    assert "transport 'ext' not allowed" in output
    assert not marker.exists()
    # Nothing of the failed first fetch is left in the cache.
    assert [p.name for p in (tmp_path / "runner-r" / "repositories").iterdir()] == ["home"]


async def test_a_task_stopped_while_it_fetches_leaves_no_half_made_cache(
        hub, api, tmp_path, server):
    server.publish(work_repo(tmp_path / "work"), "app")
    server.delay = 30.0
    await hub.start_runner(tmp_path)
    project = await api.project()
    task_id = await api.run(project, await template(api, project, server.url("app")))
    output = ""
    deadline = time.monotonic() + 20
    while "into this runner's cache" not in output:
        assert time.monotonic() < deadline, output
        await asyncio.sleep(0.05)
        output = await api.raw_output(project, task_id)
    await api.ok("POST", f"/api/project/{project}/tasks/{task_id}/stop", None, 204)
    task = await api.wait_status(project, task_id, timeout=20)
    assert task["status"] == "stopped"
    cache_root = tmp_path / "runner-r" / "repositories"
    assert sorted(p.name for p in cache_root.iterdir()) == ["home"]
    assert not list((tmp_path / "runner-r" / "tasks").iterdir())


async def test_a_missing_branch_is_an_error_naming_it(hub, api, tmp_path, server):
    server.publish(work_repo(tmp_path / "work"), "app")
    await hub.start_runner(tmp_path)
    project = await api.project()
    task, output = await run(api, project, await template(api, project, server.url("app"),
                                                          "no-such-branch"))
    assert task["status"] == "error"
    assert "branch 'no-such-branch' not found in" in output


async def test_https_login_and_password_reach_git_and_nowhere_else(
        hub, api, tmp_path, capfd):
    served = GitHttpServer(_folder(tmp_path / "private"), "deploy", PASSWORD)
    try:
        work = work_repo(tmp_path / "work")
        (work / "run.sh").write_text(SCRIPT + "cat .git/config; git config --list --show-origin\n")
        git(work, "commit", "-q", "-am", "show config")
        served.publish(work, "app")
        await hub.start_runner(tmp_path)
        project = await api.project()
        key = await api.ok("POST", f"/api/project/{project}/keys", {
            "name": "login", "type": "login_password",
            "login_password": {"login": "deploy", "password": PASSWORD}}, 201)
        tid = await template(api, project, served.url("app"), key_id=key["id"])
        for _ in range(2):  # the first task clones into the cache, the second fetches
            task, output = await run(api, project, tid)
            assert task["status"] == "success", output
            assert "content: one" in output
            assert "[core]" in output  # the checkout's .git/config, shown by the task
            assert PASSWORD not in output and "deploy:" not in output
        assert served.authorizations  # git did log in
        # Not in the cache (its config, FETCH_HEAD, anything), nor anywhere the runner wrote.
        for path in (tmp_path / "runner-r").rglob("*"):
            if path.is_file():
                assert PASSWORD.encode() not in path.read_bytes(), path
        logged = capfd.readouterr()
        assert PASSWORD not in logged.out + logged.err
        # A wrong password: git's own message, and the password still nowhere.
        wrong = await api.ok("POST", f"/api/project/{project}/keys", {
            "name": "wrong", "type": "login_password",
            "login_password": {"login": "deploy", "password": "not-" + PASSWORD}}, 201)
        task, output = await run(api, project, await template(
            api, project, served.url("app"), key_id=wrong["id"]))
        assert task["status"] == "error"
        assert "Authentication failed" in output and PASSWORD not in output
        # A password written into the URL itself: used, and shown by no message either.
        in_url = served.url("app").replace("http://", f"http://deploy:{PASSWORD}@")
        task, output = await run(api, project, await template(api, project, in_url))
        assert task["status"] == "success", output
        assert "content: one" in output and PASSWORD not in output
        assert "deploy:********@" in output
        for path in (tmp_path / "runner-r").rglob("*"):
            if path.is_file():
                assert PASSWORD.encode() not in path.read_bytes(), path
        logged = capfd.readouterr()
        assert PASSWORD not in logged.out + logged.err
    finally:
        served.close()


async def test_without_a_key_a_private_repository_is_refused_without_a_prompt(
        hub, api, tmp_path):
    served = GitHttpServer(_folder(tmp_path / "private"), "deploy", PASSWORD)
    try:
        served.publish(work_repo(tmp_path / "work"), "app")
        await hub.start_runner(tmp_path)
        project = await api.project()
        task, output = await run(api, project, await template(api, project,
                                                              served.url("app")))
        assert task["status"] == "error"
        assert "could not read Username" in output or "Authentication failed" in output
    finally:
        served.close()


def test_the_cache_is_out_of_a_task_users_reach(lab, tmp_path, task_users):
    """As a separate task user, a task cannot read or change the cache the next task's code
    comes from; its checkout is its own."""
    shared = Path(tempfile.mkdtemp(prefix="repository-"))
    os.chmod(shared, 0o711)
    served = GitHttpServer(_folder(tmp_path / "served"))
    try:
        work = work_repo(tmp_path / "work")
        (work / "run.sh").write_text(SCRIPT + ATTACK)
        git(work, "commit", "-q", "-am", "attack")
        served.publish(work, "app")
        hub = lab.hub()
        state = shared / "state"
        _, rest, project = lab.online_runner(hub, "isolated", task_user=task_users[0],
                                             allow_root_tasks=False, tmp_path=str(state))
        repo = rest.ok("POST", f"/api/project/{project}/repositories",
                       {"name": "r", "git_url": served.url("app")}, 201)["id"]
        tid = rest.ok("POST", f"/api/project/{project}/templates", {
            "name": "t", "app": "bash", "playbook": "run.sh", "repository_id": repo,
            "arguments": json.dumps([str(state / "repositories")])}, 201)["id"]
        outputs = []
        for _ in range(2):
            task = rest.run(project, tid)
            assert rest.wait_status(project, task, logs=lab.logs)["status"] == "success"
            outputs.append(rest.raw_output(project, task))
        for output in outputs:
            assert "content: one" in output, output
            assert f"OWNER {task_users[0]}" in output  # its checkout is its own
            assert "WROTE own-checkout" in output
            for attempt in ("list-cache", "write-cache", "objects"):
                assert f"DENIED {attempt}" in output, (attempt, output)
            assert "Permission denied" in output
        # The second task ran the repository's code, not what the first tried to plant.
        assert "content: planted" not in outputs[1]
    finally:
        served.close()
        shutil.rmtree(shared, ignore_errors=True)


ATTACK = r"""
try() { label=$1; shift; if out=$("$@" 2>&1); then echo "GOT $label: ${out:0:80}";
        else echo "DENIED $label: $out"; fi; }
echo "OWNER $(stat -c %U run.sh)"
echo planted > data.txt && git -c user.name=x -c user.email=x@y commit -qam planted &&
  echo "WROTE own-checkout"
try list-cache ls "$1"
try write-cache touch "$1/planted"
try objects sh -c "ls -d $1/*.git/objects"
"""


@pytest.fixture
def ssh_keys(tmp_path):
    return {"plain": make_key(tmp_path / "keys", "plain"),
            "locked": make_key(tmp_path / "keys", "locked", passphrase="horse battery 7!")}


@pytest.fixture
def sshd(tmp_path, ssh_keys):
    server = Sshd(tmp_path / "sshd", [key.public for key in ssh_keys.values()])
    yield server
    server.stop()


async def ssh_key(api, project: int, name: str, private: str, passphrase: str = "",
                  login: str = "") -> int:
    return (await api.ok("POST", f"/api/project/{project}/keys", {
        "name": name, "type": "ssh",
        "ssh": {"private_key": private, "passphrase": passphrase, "login": login}}, 201))["id"]


def assert_nothing_left(cache_root: Path) -> None:
    """No key folder, half-made cache or agent of a fetch is left on the runner."""
    left = [p.name for p in cache_root.iterdir() if p.name.startswith((".key-", ".new-"))]
    assert not left, left
    agents = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
              if p.info["cmdline"] and "ssh-agent" in p.info["cmdline"][0]
              and str(cache_root) in " ".join(p.info["cmdline"])]
    assert not agents, agents


async def test_ssh_keys_with_and_without_a_passphrase_clone_then_fetch(
        hub, api, tmp_path, ssh_keys, sshd):
    work = work_repo(tmp_path / "work")
    bare = tmp_path / "bare" / "app.git"
    bare.parent.mkdir()
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    await hub.start_runner(tmp_path)
    project = await api.project()
    cache_root = tmp_path / "runner-r" / "repositories"
    locked = ssh_keys["locked"]
    with_passphrase = await template(
        api, project, f"ssh://127.0.0.1:{sshd.port}{bare}",
        key_id=await ssh_key(api, project, "locked", locked.private, locked.passphrase,
                             login="root"))
    without = await template(
        api, project, f"ssh://root@127.0.0.1:{sshd.port}/{bare}",
        key_id=await ssh_key(api, project, "plain", ssh_keys["plain"].private))
    outputs = []
    for tid in (with_passphrase, with_passphrase, without):
        task, output = await run(api, project, tid)
        assert task["status"] == "success", output
        assert "content: one" in output and task["commit_hash"] == git(work, "rev-parse",
                                                                        "HEAD")
        outputs.append(output)
        assert_nothing_left(cache_root)
    assert "into this runner's cache (the first" in outputs[0]
    assert "Fetching " in outputs[1]
    for output in outputs:
        assert locked.passphrase not in output and "PRIVATE KEY" not in output
    for path in (tmp_path / "runner-r").rglob("*"):
        if path.is_file() and not path.is_socket():
            data = path.read_bytes()
            assert locked.passphrase.encode() not in data and b"PRIVATE KEY" not in data, path
    assert (cache_root / "known_hosts").read_text().startswith(f"[127.0.0.1]:{sshd.port} ")


async def test_an_ssh_key_that_is_not_a_key_or_a_wrong_passphrase_is_an_error(
        hub, api, tmp_path, ssh_keys, sshd):
    await hub.start_runner(tmp_path)
    project = await api.project()
    url = f"ssh://root@127.0.0.1:{sshd.port}/nowhere.git"
    cache_root = tmp_path / "runner-r" / "repositories"
    garbage = "this is not a key-3f9a\nat all\n"
    task, output = await run(api, project, await template(
        api, project, url, key_id=await ssh_key(api, project, "bad", garbage, "pass-8c2d1e")))
    assert task["status"] == "error"
    assert "repository's ssh key could not be loaded" in output, output
    assert "not a private key" in output or "invalid format" in output, output
    assert "not a key-3f9a" not in output and "pass-8c2d1e" not in output
    assert_nothing_left(cache_root)
    assert not list(cache_root.glob("*.git"))
    locked = ssh_keys["locked"]
    task, output = await run(api, project, await template(
        api, project, url, key_id=await ssh_key(api, project, "wrong", locked.private,
                                                "wrong-passphrase-5b")))
    assert task["status"] == "error"
    assert "could not be loaded" in output and "wrong-passphrase-5b" not in output, output
    assert_nothing_left(cache_root)
    assert not list(cache_root.glob("*.git"))
