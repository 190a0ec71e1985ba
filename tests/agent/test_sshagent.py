"""A task's private ssh-agent, with real keys, a real ssh-agent and a real sshd: keys (also
encrypted ones) load without touching the disk, the task's user reaches the agent, a bad key
or a wrong passphrase is a clear error, and nothing is left when the agent stops."""

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psutil
import pytest

from agent.isolation import TaskIdentity
from agent.sshagent import SshAgent, SshKeyError, install_askpass
from protocol.frames import SshKeySecret
from tests.sshkit import Sshd, make_key


def ssh_run(sshd: Sshd, agent: SshAgent, folder: Path, user: int | None = None) -> str:
    """`ssh root@127.0.0.1 -p <port> echo` with only the agent's keys."""
    known = folder / "known_hosts"
    known.write_text(sshd.known_hosts_line() + "\n")
    os.chmod(known, 0o644)
    done = subprocess.run(
        ["ssh", "-p", str(sshd.port), "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}",
         "-o", f"IdentityAgent={agent.socket}", "-o", "IdentityFile=none",
         "-o", "StrictHostKeyChecking=yes", "root@127.0.0.1", "echo", "logged-in"],
        capture_output=True, text=True, timeout=30, user=user,
        env={"PATH": os.environ["PATH"], "HOME": str(folder)})
    return done.stdout + done.stderr


@pytest.fixture
def keys(tmp_path):
    return {"plain": make_key(tmp_path / "keys", "plain"),
            "locked": make_key(tmp_path / "keys", "locked", passphrase="correct horse 1!")}


@pytest.fixture
def sshd(tmp_path, keys):
    server = Sshd(tmp_path / "sshd", [keys["locked"].public])
    yield server
    server.stop()


async def test_an_encrypted_key_logs_in_through_the_agent(tmp_path, keys, sshd):
    folder = tmp_path / "task"
    folder.mkdir(mode=0o700)
    async with SshAgent(folder, TaskIdentity.of_runner(), tmp_path) as agent:
        # Without the key, the server refuses: the agent is what logs in.
        assert "logged-in" not in await asyncio.to_thread(ssh_run, sshd, agent, folder)
        locked = keys["locked"]
        await agent.add(SshKeySecret(private_key=locked.private, passphrase=locked.passphrase))
        assert "logged-in" in await asyncio.to_thread(ssh_run, sshd, agent, folder)
        pid = agent._proc.pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not (folder / "ssh-agent").exists()  # the socket's folder is gone
    # The key was never written: only the askpass helper is in the runner's folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "ssh-askpass", "sshd", "task"]


@pytest.mark.parametrize(("case", "expected"), [
    ("wrong passphrase", "its passphrase is wrong"),
    ("no passphrase", "it is encrypted, and the access key has no passphrase"),
    ("not a key", "not a private key OpenSSH can read"),
])
async def test_a_bad_key_is_a_clear_error(tmp_path, keys, case, expected):
    locked = keys["locked"]
    key = {"wrong passphrase": SshKeySecret(private_key=locked.private, passphrase="nope"),
           "no passphrase": SshKeySecret(private_key=locked.private),
           "not a key": SshKeySecret(private_key="-----BEGIN NOTHING-----\nabc\n")}[case]
    folder = tmp_path / "task"
    folder.mkdir()
    async with SshAgent(folder, TaskIdentity.of_runner(), tmp_path) as agent:
        with pytest.raises(SshKeyError) as error:
            await agent.add(key, "inventory's ssh key")
    assert "inventory's ssh key" in str(error.value) and expected in str(error.value)
    assert "nope" not in str(error.value) and locked.passphrase not in str(error.value)


async def test_the_agent_runs_as_the_task_user_who_alone_reaches_it(keys, sshd, task_users,
                                                                  request):
    """The agent is the task user's: the task's ssh reaches it; another task user does not
    even reach its socket."""
    owner, other = (pwd.getpwnam(name) for name in task_users)
    identity = TaskIdentity(owner.pw_uid, owner.pw_gid, owner.pw_name, "/")
    # As the runner's state folder: passable (0711) down from /, for the task user to reach
    # its own folder; pytest's tmp_path is not.
    base = Path(tempfile.mkdtemp(prefix="agent-test-"))
    os.chmod(base, 0o711)
    folder = base / "task"
    folder.mkdir(mode=0o700)
    os.chown(folder, owner.pw_uid, owner.pw_gid)
    home = base / "home"
    home.mkdir(mode=0o777)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    async with SshAgent(folder, identity, base) as agent:
        locked = keys["locked"]
        await agent.add(SshKeySecret(private_key=locked.private, passphrase=locked.passphrase))
        assert psutil.Process(agent._proc.pid).uids().real == owner.pw_uid
        assert "logged-in" in await asyncio.to_thread(ssh_run, sshd, agent, home,
                                                      user=owner.pw_uid)
        refused = await asyncio.to_thread(
            subprocess.run, ["ssh-add", "-l"], env={"SSH_AUTH_SOCK": str(agent.socket)},
            capture_output=True, text=True, user=other.pw_uid)
        assert refused.returncode != 0 and "ED25519" not in refused.stdout


def test_the_askpass_helper_is_replaced_when_it_is_not_ours(tmp_path):
    helper = install_askpass(tmp_path)
    helper.write_text("#!/bin/sh\necho planted\n")
    assert "planted" not in install_askpass(tmp_path).read_text()
    assert helper.stat().st_mode & 0o777 == 0o700
