"""Ansible's keys and vaults on a real runner connection with a real ansible-playbook: vault
passwords from access keys (a private file) and from a repository script, a become password
typed at ansible's `--ask-become-pass` prompt on a pty (checked by a fake sudo-like become
plugin of the repository's `become_plugins/`, which runs the command only when the password's
hash matches), galaxy requirements installed from a local git repository and skipped when
unchanged, and nothing of the task left in the runner's folder."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gitkit import git
from tests.hubkit import ACCESS_KEY_ENCRYPTION
from tests.test_ansible import INI, ansible_on_path, run  # noqa: F401 (a fixture)

VAULT_PASSWORD = "vault-pw-5c1e9a"
SCRIPT_VAULT_PASSWORD = "script-vault-pw-7d3b"
BECOME_PASSWORD = "become-pw-0b8f2e"
ENV_SECRET = "env-s3cr3t-4417"

PLAYBOOK = """\
- hosts: all
  connection: local
  gather_facts: false
  vars_files:
    - vaulted.yml
  tasks:
    - name: show
      debug:
        msg: "first={{ first_secret }} second={{ second_secret }} env={{ lookup('env', 'TOKEN') }}"
"""

BECOME_PLAYBOOK = """\
- hosts: all
  connection: local
  gather_facts: false
  become: true
  become_method: checkpw
  tasks:
    - name: as the become user
      command: echo became-fine
      register: out
    - debug:
        msg: "{{ out.stdout }}"
"""

# A sudo-like become method: asks for a password, runs the command only when its hash is the
# expected one (the password itself is not in the repository).
BECOME_PLUGIN = '''\
from __future__ import annotations

import shlex

from ansible.plugins.become import BecomeBase

DOCUMENTATION = """
name: checkpw
short_description: test become method that checks its password
description:
  - Prompts like sudo; runs the command only when the password's sha256 matches.
author: tests
options:
  become_user:
    description: the user
    default: root
    vars:
      - name: ansible_become_user
    keyword:
      - name: become_user
  become_pass:
    description: the password
    required: false
    vars:
      - name: ansible_become_password
      - name: ansible_become_pass
"""

EXPECTED = "{sha}"


class BecomeModule(BecomeBase):
    name = "checkpw"
    fail = ("wrong become password",)

    def build_become_command(self, cmd, shell):
        super().build_become_command(cmd, shell)
        if not cmd:
            return cmd
        self.prompt = "[checkpw via ansible, key=%s] password:" % self._id
        inner = self._build_success_command(cmd, shell)
        script = ("printf '%s\\\\n' " + shlex.quote(self.prompt) + "; IFS= read -r pw; "
                  'if [ "$(printf %s "$pw" | sha256sum | cut -d" " -f1)" = ' + EXPECTED
                  + " ]; then exec " + inner + "; else echo 'wrong become password'; "
                  "exit 1; fi")
        return "/bin/sh -c " + shlex.quote(script)
'''


@pytest.fixture
async def project(hub, api, tmp_path):
    await hub.start_runner(tmp_path)
    return await api.project()


def encrypt(vault_id: str, password: str, value: str, name: str, folder: Path) -> str:
    """`ansible-vault encrypt_string`, as a user makes a vaulted variable."""
    secret_file = folder / f".pw-{vault_id}"
    secret_file.write_text(password)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-vault"), "encrypt_string",
         "--vault-id", f"{vault_id}@{secret_file}", "--encrypt-vault-id", vault_id, value,
         "--name", name], capture_output=True, text=True, check=True)
    secret_file.unlink()
    return done.stdout


def vault_repo(folder: Path) -> Path:
    folder.mkdir(parents=True)
    git(folder, "init", "-q", "-b", "main")
    (folder / "site.yml").write_text(PLAYBOOK)
    (folder / "vaulted.yml").write_text(
        encrypt("first", VAULT_PASSWORD, "decrypted-one", "first_secret", folder.parent)
        + encrypt("second", SCRIPT_VAULT_PASSWORD, "decrypted-two", "second_secret",
                  folder.parent))
    script = folder / "vault-pass.sh"
    script.write_text(f"#!/bin/sh\necho {SCRIPT_VAULT_PASSWORD}\n")
    script.chmod(0o755)
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "vaulted")
    return folder


async def key(api, project_id: int, password: str, login: str = "") -> int:
    return (await api.ok("POST", f"/api/project/{project_id}/keys", {
        "name": f"k-{password[:6]}", "type": "login_password",
        "login_password": {"login": login, "password": password}}, 201))["id"]


async def template(api, project_id: int, repo: Path, playbook: str = "site.yml",
                   inventory: dict | None = None, environment: dict | None = None,
                   **extra) -> int:
    body = {"name": "play", "app": "ansible", "playbook": playbook, **extra}
    body["repository_id"] = (await api.ok("POST", f"/api/project/{project_id}/repositories",
                                          {"name": "r", "git_url": f"file://{repo}"},
                                          201))["id"]
    body["inventory_id"] = (await api.ok(
        "POST", f"/api/project/{project_id}/inventory",
        {"name": "i", "type": "static", "inventory": INI.format(python=sys.executable),
         **(inventory or {})}, 201))["id"]
    if environment is not None:
        body["environment_id"] = (await api.ok(
            "POST", f"/api/project/{project_id}/environment", {"name": "e", **environment},
            201))["id"]
    return (await api.ok("POST", f"/api/project/{project_id}/templates", body, 201))["id"]


def runner_leftovers(tmp_path: Path) -> list[str]:
    """What the runner's folder holds of tasks: nothing once they ended (the galaxy cache
    and the spool of acknowledged output are the runner's own)."""
    root = tmp_path / "runner-r"
    assert root.is_dir()
    return [str(path.relative_to(root)) for path in root.rglob("*")
            if path.name.startswith(("task_", "vault_", "inventory", "extra_vars"))
            or (path.relative_to(root).parts[0] == "tasks" and path.parent != root)]


async def test_two_vaults_decrypt_and_an_env_secret_is_masked(hub, api, tmp_path, project,
                                                               capsys):
    repo = vault_repo(tmp_path / "repo")
    vaults = [{"name": "first", "type": "password",
               "vault_key_id": await key(api, project, VAULT_PASSWORD)},
              {"name": "second", "type": "script", "script": "vault-pass.sh"}]
    tpl = await template(api, project, repo, vaults=vaults, environment={
        "secrets": [{"name": "TOKEN", "secret": ENV_SECRET, "type": "env"}]})
    shown = await api.ok("GET", f"/api/project/{project}/templates/{tpl}")
    assert [(v["name"], v["type"], v["script"]) for v in shown["vaults"]] == [
        ("first", "password", ""), ("second", "script", "vault-pass.sh")]
    task, output = await run(api, project, tpl)
    assert task["status"] == "success", output
    assert "first=decrypted-one second=decrypted-two env=********" in output
    logs = capsys.readouterr()
    for secret in (VAULT_PASSWORD, SCRIPT_VAULT_PASSWORD, ENV_SECRET):
        assert secret not in output and secret not in logs.out + logs.err
    assert runner_leftovers(tmp_path) == []


async def test_a_wrong_vault_password_ends_error_with_ansibles_message(hub, api, tmp_path,
                                                                       project, capsys):
    repo = vault_repo(tmp_path / "repo")
    wrong = "wrong-vault-pw-99"
    vaults = [{"name": "first", "type": "password", "vault_key_id": await key(api, project,
                                                                              wrong)},
              {"name": "second", "type": "script", "script": "vault-pass.sh"}]
    task, output = await run(api, project, await template(api, project, repo, vaults=vaults))
    assert task["status"] == "error"
    assert "Decryption failed" in output or "no vault secrets were found" in output, output
    logs = capsys.readouterr()
    assert wrong not in output and wrong not in logs.out + logs.err
    assert runner_leftovers(tmp_path) == []


async def test_a_vault_script_must_be_inside_the_repository(hub, api, tmp_path, project):
    repo = vault_repo(tmp_path / "repo")
    (repo / "out.sh").symlink_to("/bin/true")
    git(repo, "add", "out.sh")
    git(repo, "commit", "-q", "-m", "escape")
    vaults = [{"name": "second", "type": "script", "script": "out.sh"}]
    task, output = await run(api, project, await template(api, project, repo, vaults=vaults))
    assert task["status"] == "error"
    assert "vault 'second' script 'out.sh' leads out of the repository" in output


async def test_template_vaults_are_checked(api, project):
    other = await api.project("Other")
    foreign = await key(api, other, "x-password")
    ssh = (await api.ok("POST", f"/api/project/{project}/keys", {
        "name": "s", "type": "ssh", "ssh": {"private_key": "k"}}, 201))["id"]
    base = {"name": "t", "app": "ansible", "playbook": "site.yml"}
    cases = [([{"type": "password", "vault_key_id": foreign}], "`vaults[0]`.vault_key_id"),
             ([{"type": "password", "vault_key_id": 999}], "`vaults[0]`.vault_key_id"),
             ([{"type": "password", "vault_key_id": ssh}], "`vaults[0]`.vault_key_id"),
             ([{"type": "password"}], "`vaults[0]`.vault_key_id"),
             ([{"type": "script", "script": "/etc/x"}], "`vaults[0]`.script"),
             ([{"type": "script", "script": "a.sh"}, {"type": "script", "script": "b.sh"}],
              "`vaults[1]`.name"),
             ([{"type": "script", "name": "a@b", "script": "a.sh"}], "`vaults[0]`.name")]
    for vaults, field in cases:
        status, body = await api.request("POST", f"/api/project/{project}/templates",
                                         {**base, "vaults": vaults})
        assert status == 400 and field in body["error"], (vaults, body)
    # Stored, shown back (no secret in it), kept by a PUT without `vaults`, replaced by one
    # with them.
    mine = await key(api, project, "mine-password")
    created = await api.ok("POST", f"/api/project/{project}/templates", {**base, "vaults": [
        {"type": "password", "vault_key_id": mine},
        {"name": "s", "type": "script", "script": "v.sh"}]}, 201)
    path = f"/api/project/{project}/templates/{created['id']}"
    assert [(v["id"], v["name"], v["vault_key_id"]) for v in created["vaults"]] == [
        (1, "default", mine), (2, "s", None)]
    await api.ok("PUT", path, base, 204)
    assert len((await api.ok("GET", path))["vaults"]) == 2
    await api.ok("PUT", path, {**base, "vaults": []}, 204)
    assert (await api.ok("GET", path))["vaults"] == []
    assert "mine-password" not in json.dumps(created)


def become_repo(folder: Path, password: str) -> Path:
    folder.mkdir(parents=True)
    git(folder, "init", "-q", "-b", "main")
    (folder / "site.yml").write_text(BECOME_PLAYBOOK)
    # The tests run as root and become root: ansible skips becoming the same user unless told.
    (folder / "ansible.cfg").write_text("[privilege_escalation]\nbecome_allow_same_user = True\n")
    (folder / "become_plugins").mkdir()
    (folder / "become_plugins" / "checkpw.py").write_text(
        BECOME_PLUGIN.replace("{sha}", hashlib.sha256(password.encode()).hexdigest()))
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "become")
    return folder


async def test_the_become_password_is_typed_at_ansibles_prompt(hub, api, tmp_path, project,
                                                                capsys):
    repo = become_repo(tmp_path / "repo", BECOME_PASSWORD)
    become = await key(api, project, BECOME_PASSWORD, login="root")
    tpl = await template(api, project, repo, inventory={"become_key_id": become})
    task, output = await run(api, project, tpl)
    assert task["status"] == "success", output
    assert "BECOME password" in output and "became-fine" in output
    logs = capsys.readouterr()
    assert BECOME_PASSWORD not in output and BECOME_PASSWORD not in logs.out + logs.err
    assert runner_leftovers(tmp_path) == []
    # A wrong one reaches the plugin too, and is refused there.
    wrong = await key(api, project, "not-the-become-pw", login="root")
    tpl = await template(api, project, repo, inventory={"become_key_id": wrong})
    task, output = await run(api, project, tpl)
    assert task["status"] == "error", output
    assert "wrong become password" in output or "Incorrect become password" in output, output
    assert "not-the-become-pw" not in output


ROLE_PLAYBOOK = """\
- hosts: all
  connection: local
  gather_facts: false
  roles:
    - localrole
"""


def role_source(folder: Path, word: str) -> Path:
    """A role in a git repository of its own, installed by galaxy with `git+file://`."""
    folder.mkdir(parents=True, exist_ok=True)
    git(folder, "init", "-q", "-b", "main")
    (folder / "tasks").mkdir(exist_ok=True)
    (folder / "tasks" / "main.yml").write_text(
        f"- debug:\n    msg: role-says-{word}\n")
    (folder / "meta").mkdir(exist_ok=True)
    (folder / "meta" / "main.yml").write_text(
        "galaxy_info:\n  author: t\n  description: t\n  license: MIT\n"
        "  min_ansible_version: '2.9'\n  platforms: []\n")
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", word)
    return folder


def requirements_repo(folder: Path, requirements: str) -> Path:
    folder.mkdir(parents=True)
    git(folder, "init", "-q", "-b", "main")
    (folder / "site.yml").write_text(ROLE_PLAYBOOK)
    (folder / "roles").mkdir()
    (folder / "roles" / "requirements.yml").write_text(requirements)
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "requirements")
    return folder


async def test_galaxy_requirements_installed_then_skipped_when_unchanged(hub, api, tmp_path,
                                                                         project):
    role = role_source(tmp_path / "role-src", "one")
    repo = requirements_repo(tmp_path / "repo", f"- src: git+file://{role}\n"
                                                "  name: localrole\n")
    tpl = await template(api, project, repo)
    task, output = await run(api, project, tpl)
    assert task["status"] == "success", output
    assert "Installing role requirements from roles/requirements.yml" in output
    assert "role-says-one" in output
    # Unchanged: galaxy does not run, the role installed the first time is used (the role's
    # own repository moved on, and is not fetched again).
    role_source(role, "two")
    task, output = await run(api, project, tpl)
    assert task["status"] == "success", output
    assert "galaxy skipped" in output and "Installing" not in output
    assert "role-says-one" in output
    # Changed: installed again.
    (repo / "roles" / "requirements.yml").write_text(
        f"- src: git+file://{role}\n  name: localrole\n  version: main\n")
    git(repo, "commit", "-q", "-am", "pin")
    task, output = await run(api, project, tpl)
    assert task["status"] == "success", output
    assert "Installing role requirements" in output and "role-says-two" in output
    assert runner_leftovers(tmp_path) == []
    cache = tmp_path / "runner-r" / "galaxy"
    assert oct(cache.stat().st_mode & 0o777) == "0o700"


async def test_failing_requirements_end_error_with_galaxys_message(hub, api, tmp_path,
                                                                   project):
    repo = requirements_repo(tmp_path / "repo", f"- src: git+file://{tmp_path}/nowhere\n"
                                                "  name: missing\n")
    task, output = await run(api, project, await template(api, project, repo))
    assert task["status"] == "error"
    assert "ansible-galaxy role install failed" in output
    assert "nowhere" in output and "PLAY" not in output, output
    assert runner_leftovers(tmp_path) == []


def test_secrets_values_hold_every_key_and_vault_password():
    from protocol.frames import LoginPasswordSecret, SshKeySecret, TaskSecrets

    secrets = TaskSecrets(inventory_ssh_key=SshKeySecret("KEY", "u", "PHRASE"),
                          inventory_login=LoginPasswordSecret("u", "SSHPW"),
                          become=LoginPasswordSecret("r", "BECOMEPW"),
                          vault_passwords={"a": "VAULTPW"})
    assert sorted(secrets.values()) == sorted(["KEY", "PHRASE", "SSHPW", "BECOMEPW",
                                               "VAULTPW"])
    assert json.dumps(secrets.values())  # plain strings


SSH_PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - command: whoami
      register: who
    - debug:
        msg: "remote-user={{ who.stdout }}"
"""


@pytest.fixture
def sshd(tmp_path):
    from tests.sshkit import Sshd, make_key

    pair = make_key(tmp_path / "keys", "inventory", passphrase="key-phrase-3a9d")
    server = Sshd(tmp_path / "sshd", [pair.public])
    yield server, pair
    server.stop()


async def test_an_ssh_key_reaches_the_hosts_through_the_tasks_agent(hub, api, tmp_path,
                                                                    project, sshd, capsys):
    server, pair = sshd
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "site.yml").write_text(SSH_PLAYBOOK)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "ssh")
    ssh_key = (await api.ok("POST", f"/api/project/{project}/keys", {
        "name": "inv", "type": "ssh", "ssh": {"login": "root", "private_key": pair.private,
                                              "passphrase": pair.passphrase}}, 201))["id"]
    hosts = (f"target ansible_host=127.0.0.1 ansible_port={server.port} "
             f"ansible_python_interpreter={sys.executable}\n")
    tpl = await template(api, project, repo, inventory={"inventory": hosts,
                                                        "ssh_key_id": ssh_key})
    task, output = await run(api, project, tpl)
    assert task["status"] == "success", output + (tmp_path / "sshd" / "sshd.log").read_text()
    assert "remote-user=root" in output
    assert "Accepted publickey for root" in (tmp_path / "sshd" / "sshd.log").read_text()
    logs = capsys.readouterr()
    for secret in (pair.passphrase, *pair.private.strip().splitlines()[1:-1]):
        assert secret not in output and secret not in logs.out + logs.err
    assert runner_leftovers(tmp_path) == []
    assert not list((tmp_path / "runner-r").rglob("agent.sock"))
    # Not a key: the task ends error with ssh-add's message, and nothing of it is shown.
    junk = "this-is-not-a-private-key-8e1f"
    bad = (await api.ok("POST", f"/api/project/{project}/keys", {
        "name": "bad", "type": "ssh", "ssh": {"private_key": junk}}, 201))["id"]
    tpl = await template(api, project, repo, inventory={"inventory": hosts,
                                                        "ssh_key_id": bad})
    task, output = await run(api, project, tpl)
    assert task["status"] == "error"
    assert "inventory's ssh key could not be loaded" in output, output
    assert junk not in output and "PLAY" not in output
    assert runner_leftovers(tmp_path) == []


SLOW_PLAYBOOK = """\
- hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: sleep
      command: sleep 120
"""


def test_a_killed_runner_leaves_no_key_vault_or_agent_after_its_restart(lab, tmp_path):
    """kill -9 of the runner mid-play, then start it again: the task's folder (inventory,
    vault file) is gone and its ssh-agent killed."""
    import psutil

    from tests.faults import wait_until
    from tests.lab import wait_final
    from tests.sshkit import make_key

    hub = lab.hub(heartbeat_interval=0.5, runner_lost_timeout=120,
                  access_key_encryption=ACCESS_KEY_ENCRYPTION)
    runner, rest, project = lab.online_runner(hub, "rk")
    repo = tmp_path / "slow"
    repo.mkdir()
    (repo / "site.yml").write_text(SLOW_PLAYBOOK)
    pair = make_key(tmp_path / "keys", "slow")
    ssh_key = rest.ok("POST", f"/api/project/{project}/keys", {
        "name": "s", "type": "ssh", "ssh": {"login": "root", "private_key": pair.private}},
        201)["id"]
    vault_key = rest.ok("POST", f"/api/project/{project}/keys", {
        "name": "v", "type": "login_password",
        "login_password": {"password": VAULT_PASSWORD}}, 201)["id"]
    repository = rest.ok("POST", f"/api/project/{project}/repositories",
                         {"name": "r", "git_url": str(repo)}, 201)["id"]
    inventory = rest.ok("POST", f"/api/project/{project}/inventory", {
        "name": "i", "type": "static", "inventory": INI.format(python=sys.executable),
        "ssh_key_id": ssh_key}, 201)["id"]
    template = rest.ok("POST", f"/api/project/{project}/templates", {
        "name": "t", "app": "ansible", "playbook": "site.yml", "repository_id": repository,
        "inventory_id": inventory,
        "vaults": [{"name": "v", "type": "password", "vault_key_id": vault_key}]},
        201)["id"]
    task = rest.run(project, template)
    tasks = runner.folder / "work" / "tasks"

    def task_files() -> list[str]:
        return sorted(p.name for p in tasks.glob("task_*/*"))

    wait_until(lambda: "TASK [sleep]" in rest.ok(
        "GET", f"/api/project/{project}/tasks/{task}/raw_output"), 60, message=lab.logs)
    assert "vault_0" in task_files() and "inventory" in task_files()
    agents = [p for p in psutil.Process(runner.pid).children()
              if p.name() == "ssh-agent"]
    assert len(agents) == 1

    runner.kill9()
    runner.start()
    done = wait_final(rest, lab, project, task)
    assert done["status"] == "error", done
    assert list(tasks.iterdir()) == []
    wait_until(lambda: not agents[0].is_running() or agents[0].status() == "zombie", 10,
               message=lab.logs)
    # The short ssh ControlPath folder of the task (its folder's path is long here) too.
    from agent.ansible import _short_root
    assert not _short_root(tasks).exists()
    log = runner.log()
    assert VAULT_PASSWORD not in log and pair.private.splitlines()[1] not in log


@pytest.mark.parametrize("end", ["stop", "timeout"])
async def test_a_stopped_or_timed_out_play_leaves_no_private_file_or_agent(
        hub, api, tmp_path, project, end):
    import asyncio

    import psutil

    from tests.sshkit import make_key

    repo = tmp_path / "slow"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "site.yml").write_text(SLOW_PLAYBOOK)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "slow")
    pair = make_key(tmp_path / "keys", "slow")
    ssh_key = (await api.ok("POST", f"/api/project/{project}/keys", {
        "name": "s", "type": "ssh", "ssh": {"private_key": pair.private}}, 201))["id"]
    vaults = [{"name": "v", "type": "password",
               "vault_key_id": await key(api, project, VAULT_PASSWORD)}]
    tpl = await template(api, project, repo, inventory={"ssh_key_id": ssh_key},
                         vaults=vaults, timeout_sec=8 if end == "timeout" else 0)
    task_id = await api.run(project, tpl)
    tasks = tmp_path / "runner-r" / "tasks"
    for _ in range(600):
        output = await api.raw_output(project, task_id)
        if "TASK [sleep]" in output:
            break
        await asyncio.sleep(0.05)
    files = sorted(p.name for p in tasks.glob("task_*/*"))
    assert "vault_0" in files and "inventory" in files, (files, output)
    agents = [p for p in psutil.Process().children() if p.name() == "ssh-agent"]
    assert len(agents) == 1
    if end == "stop":
        await api.ok("POST", f"/api/project/{project}/tasks/{task_id}/stop", {}, 204)
    done = await api.wait_status(project, task_id, timeout=60)
    assert done["status"] == ("stopped" if end == "stop" else "error"), done
    assert list(tasks.iterdir()) == []
    assert not agents[0].is_running() or agents[0].status() == "zombie"


RAW_PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - raw: whoami
      register: who
    - debug:
        msg: "remote-user={{ who.stdout | trim }}"
"""


@pytest.fixture
def password_sshd(tmp_path):
    """sshd on loopback that logs in one new user with a password only (Debian's sshd, no
    PAM: it checks /etc/shadow), for `--ask-pass` through sshpass."""
    import os
    import shutil
    import time

    from tests.sshkit import SSHD, _free_port

    if os.geteuid() != 0:
        pytest.skip("a password login to a user of its own needs root (CI runs as root)")
    assert Path(SSHD).exists() and shutil.which("sshpass"), \
        "sshd and sshpass are needed: .ci/run installs openssh-server and sshpass"
    user, password = f"smpw{os.getpid() % 100000}", "ssh-login-pw-6e2a"
    subprocess.run(["/usr/sbin/useradd", "--system", "--no-create-home", "--home-dir", "/",
                    "--shell", "/bin/sh", user], check=True, capture_output=True)
    subprocess.run(["/usr/sbin/chpasswd"], input=f"{user}:{password}\n", text=True, check=True)
    folder = tmp_path / "sshd-pw"
    folder.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(folder / "host_key")], check=True)
    port = _free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"PidFile {folder / 'sshd.pid'}\nPasswordAuthentication yes\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication no\nUsePAM no\n"
        f"PermitRootLogin no\nStrictModes no\nAllowUsers {user}\nLogLevel VERBOSE\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = folder / "sshd.log"
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
                              stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    try:
        for _ in range(300):
            if log.exists() and "Server listening" in log.read_text():
                break
            time.sleep(0.05)
        yield port, user, password, log
    finally:
        server.terminate()
        server.wait(10)
        subprocess.run(["pkill", "-KILL", "-u", user], capture_output=True)
        subprocess.run(["/usr/sbin/userdel", user], capture_output=True)


async def test_a_login_password_key_is_typed_at_the_ssh_password_prompt(
        hub, api, tmp_path, project, password_sshd, capsys):
    port, user, password, log = password_sshd
    repo = tmp_path / "raw"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "site.yml").write_text(RAW_PLAYBOOK)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "raw")
    login = await key(api, project, password, login=user)
    hosts = f"target ansible_host=127.0.0.1 ansible_port={port}\n"
    tpl = await template(api, project, repo, inventory={"inventory": hosts,
                                                        "ssh_key_id": login})
    task, output = await run(api, project, tpl)
    assert task["status"] == "success", output + log.read_text()
    assert "SSH password:" in output and f"remote-user={user}" in output
    assert f"Accepted password for {user}" in log.read_text()
    logs = capsys.readouterr()
    assert password not in output and password not in logs.out + logs.err
    assert runner_leftovers(tmp_path) == []


TASK_USER_PLAYBOOK = """\
- hosts: all
  connection: local
  gather_facts: false
  become: true
  become_method: checkpw
  vars_files:
    - vaulted.yml
  roles:
    - localrole
  tasks:
    - command: id -un
      register: who
    - debug:
        msg: "as={{ who.stdout }} first={{ first_secret }}"
"""


def task_user_ansible(user: str) -> Path:
    """A bin folder whose ansible-playbook a task user can run: the tests' own venv when its
    python is reachable (not under root's 0700 home, as a pyenv one is), else a venv of the
    system's python3 with the same ansible-core, made once in /var/tmp and kept between runs
    (a task user can reach it; pip takes ansible-core from PyPI, as .ci/run does)."""
    import importlib.metadata
    import shutil
    import tempfile

    version = importlib.metadata.version("ansible-core")
    made = Path(f"/var/tmp/semaphore-tests-ansible-{version}")
    home = Path(tempfile.mkdtemp(prefix="ansible-check-"))
    shutil.chown(home, user)

    def works(folder: Path) -> bool:
        program = folder / "ansible-playbook"
        try:
            return program.exists() and subprocess.run(
                [str(program), "--version"], user=user, capture_output=True, cwd="/",
                env={"HOME": str(home), "PATH": "/usr/bin:/bin",
                     "LANG": "C.UTF-8"}).returncode == 0
        except OSError:  # its interpreter is out of the task user's reach
            return False

    try:
        if works(Path(sys.executable).parent):
            return Path(sys.executable).parent
        if not works(made / "bin"):  # not there yet, or half-made by an interrupted run
            system_python = shutil.which("python3", path="/usr/bin:/bin")
            assert system_python, "a system python3 is needed for a task user's ansible"
            shutil.rmtree(made, ignore_errors=True)
            subprocess.run([system_python, "-m", "venv", str(made)], check=True)
            subprocess.run([str(made / "bin" / "pip"), "install", "-q",
                            f"ansible-core=={version}"], check=True)
            for folder in (made, *made.rglob("*")):  # the task user reads it all
                if folder.is_dir() and not folder.is_symlink():
                    os.chmod(folder, 0o755)
        assert works(made / "bin"), f"ansible-playbook in {made} does not run as {user}"
        return made / "bin"
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_as_a_task_user_become_vault_and_cached_galaxy_roles(lab, task_users, monkeypatch):
    import os
    import shutil
    import tempfile

    bin_folder = task_user_ansible(task_users[0])
    monkeypatch.setenv("PATH", f"{bin_folder}:/usr/sbin:/usr/bin:/sbin:/bin")
    shared = Path(tempfile.mkdtemp(prefix="ansible-user-"))
    os.chmod(shared, 0o755)
    try:
        role = role_source(shared / "role", "cached")
        subprocess.run(["chown", "-R", task_users[0], str(role)], check=True)
        repo = shared / "repo"
        repo.mkdir()
        (repo / "site.yml").write_text(TASK_USER_PLAYBOOK)
        (repo / "become_plugins").mkdir()
        (repo / "become_plugins" / "checkpw.py").write_text(BECOME_PLUGIN.replace(
            "{sha}", hashlib.sha256(BECOME_PASSWORD.encode()).hexdigest()))
        (repo / "ansible.cfg").write_text(
            "[privilege_escalation]\nbecome_allow_same_user = True\n")
        (repo / "vaulted.yml").write_text(
            encrypt("first", VAULT_PASSWORD, "decrypted-one", "first_secret", shared))
        (repo / "roles").mkdir()
        (repo / "roles" / "requirements.yml").write_text(
            f"- src: git+file://{role}\n  name: localrole\n")
        for path in [repo, *repo.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        (shared / "remote-tmp").mkdir()
        subprocess.run(["chown", task_users[0], str(shared / "remote-tmp")], check=True)
        hub = lab.hub(access_key_encryption=ACCESS_KEY_ENCRYPTION)
        state = shared / "state"
        runner, rest, project = lab.online_runner(
            hub, "tu", task_user=task_users[0], allow_root_tasks=False, tmp_path=str(state))
        python = bin_folder / "python3"
        become = rest.ok("POST", f"/api/project/{project}/keys", {
            "name": "b", "type": "login_password",
            "login_password": {"login": task_users[0], "password": BECOME_PASSWORD}},
            201)["id"]
        vault = rest.ok("POST", f"/api/project/{project}/keys", {
            "name": "v", "type": "login_password",
            "login_password": {"password": VAULT_PASSWORD}}, 201)["id"]
        repository = rest.ok("POST", f"/api/project/{project}/repositories",
                             {"name": "r", "git_url": str(repo)}, 201)["id"]
        inventory = rest.ok("POST", f"/api/project/{project}/inventory", {
            "name": "i", "type": "static", "become_key_id": become,
            # The task user has no home: become's remote tmp (~user/.ansible/tmp) elsewhere.
            "inventory": f"alpha ansible_python_interpreter={python} "
                         f"ansible_remote_tmp={shared}/remote-tmp\n"}, 201)["id"]
        template = rest.ok("POST", f"/api/project/{project}/templates", {
            "name": "t", "app": "ansible", "playbook": "site.yml",
            "repository_id": repository, "inventory_id": inventory,
            "vaults": [{"name": "first", "type": "password", "vault_key_id": vault}]},
            201)["id"]
        for attempt in ("install", "cached"):
            task = rest.run(project, template)
            done = rest.wait_status(project, task, logs=lab.logs, timeout=120)
            output = rest.raw_output(project, task)
            assert done["status"] == "success", output
            assert f"as={task_users[0]} first=decrypted-one" in output
            assert "role-says-cached" in output
            assert ("galaxy skipped" in output) == (attempt == "cached"), output
            for secret in (BECOME_PASSWORD, VAULT_PASSWORD):
                assert secret not in output and secret not in runner.log()
            assert list((state / "tasks").iterdir()) == []
        # The cache is the runner's: no task user may read or change it.
        cache = state / "galaxy"
        assert cache.stat().st_uid == 0 and cache.stat().st_mode & 0o077 == 0
    finally:
        shutil.rmtree(shared, ignore_errors=True)
