"""A private ssh-agent for one task: its ssh keys are loaded into it and never written to disk.

The agent runs as the task's user (its programs must reach it through SSH_AUTH_SOCK), with its
socket in a folder only that user can enter. Keys are added by `ssh-add -` run by the runner
itself, the key on ssh-add's stdin; a key's passphrase reaches ssh-add through an askpass
helper that reads it from ssh-add's environment. That process is the runner's (root's, when
tasks run as task users): no task user can read its environment, and nothing holds the
passphrase on a command line or in a file. ssh-agent refuses every peer but its own user and
root, and marks itself undumpable, so another task cannot take the keys out of it either.
"""

import asyncio
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from agent.isolation import TaskIdentity
from protocol.frames import SshKeySecret

log = structlog.get_logger("agent.sshagent")

# ssh-add asks again after a wrong passphrase, forever while the answer is the same wrong one:
# the helper answers the first prompt only, and fails the "Bad passphrase, try again" prompt.
ASKPASS_SCRIPT = """#!/bin/sh
case "$1" in
  *[Bb]ad*|*again*) exit 1 ;;
esac
printf '%s\\n' "$SEMAPHORE_SSH_PASSPHRASE"
"""
ASKPASS_NAME = "ssh-askpass"
# A unix socket's path is at most 107 bytes; a deep state folder gets a short one in /tmp.
MAX_SOCKET_PATH = 100
START_TIMEOUT = 10.0
ADD_TIMEOUT = 30.0


class SshKeyError(Exception):
    """The agent could not start, or a key could not be loaded (ssh-add's own message)."""


def install_askpass(runner_dir: Path) -> Path:
    """The askpass helper, in a folder only the runner may write to (its state folder): ssh-add
    runs it with the runner's rights, so a task user must not be able to replace it."""
    path = runner_dir / ASKPASS_NAME
    try:
        if path.read_text() == ASKPASS_SCRIPT and path.stat().st_uid == os.geteuid():
            return path
    except OSError:
        pass
    fd, temporary = tempfile.mkstemp(dir=runner_dir, prefix=".askpass-")
    with os.fdopen(fd, "w") as file:
        file.write(ASKPASS_SCRIPT)
    os.chmod(temporary, 0o700)
    os.replace(temporary, path)
    return path


class SshAgent:
    """One task's ssh-agent. `async with SshAgent(...) as agent: await agent.add(key)`; its
    `environment` (SSH_AUTH_SOCK) goes to the task's processes. Leaving the block stops the
    agent and removes its socket, however the task ended."""

    def __init__(self, task_folder: Path, identity: TaskIdentity, runner_dir: Path,
                 on_process: Callable[[int], None] | None = None):
        self.identity = identity
        self.runner_dir = runner_dir
        self.on_process = on_process  # told the agent's pid: a restarted runner kills it
        self._own_folder: Path | None = None
        self.socket = task_folder / "ssh-agent" / "agent.sock"
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def environment(self) -> dict[str, str]:
        return {"SSH_AUTH_SOCK": str(self.socket)}

    async def __aenter__(self) -> "SshAgent":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        folder = self.socket.parent
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            folder = Path(tempfile.mkdtemp(prefix="semaphore-agent-"))
            self._own_folder = folder
            self.socket = folder / "agent.sock"
        else:
            folder.mkdir(mode=0o700)
        if self.identity.separate:
            os.chown(folder, self.identity.uid, self.identity.gid)
        ssh_agent = shutil.which("ssh-agent")
        if ssh_agent is None:
            raise SshKeyError("ssh-agent is not installed on this runner (OpenSSH's client "
                              "tools are needed for ssh keys)")
        self._proc = await asyncio.create_subprocess_exec(
            ssh_agent, "-D", "-a", str(self.socket),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, **self._as_task_user())
        if self.on_process is not None:
            self.on_process(self._proc.pid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while not _listening(self.socket):
            if self._proc.returncode is not None or loop.time() > deadline:
                error = b""
                if self._proc.stderr is not None and self._proc.returncode is not None:
                    error = await self._proc.stderr.read()
                raise SshKeyError("ssh-agent did not start: "
                                  + (error.decode(errors="replace").strip() or "no socket"))
            await asyncio.sleep(0.01)

    async def add(self, key: SshKeySecret, what: str = "ssh key") -> None:
        """Load a private key (with its passphrase, if any) into the agent."""
        ssh_add = shutil.which("ssh-add")
        if ssh_add is None:
            raise SshKeyError("ssh-add is not installed on this runner")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "SSH_AUTH_SOCK": str(self.socket),
               "SSH_ASKPASS": str(install_askpass(self.runner_dir)),
               "SSH_ASKPASS_REQUIRE": "force",  # OpenSSH 8.4+; DISPLAY for older ones
               "DISPLAY": "none",
               "SEMAPHORE_SSH_PASSPHRASE": key.passphrase}
        # A session of its own: no terminal to prompt on, so only the helper is asked.
        proc = await asyncio.create_subprocess_exec(
            ssh_add, "-", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True, env=env)
        text = key.private_key.replace("\r\n", "\n").rstrip("\n") + "\n"
        try:
            out, _ = await asyncio.wait_for(proc.communicate(text.encode()), ADD_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise SshKeyError(f"the {what} could not be loaded: ssh-add did not answer in "
                              f"{ADD_TIMEOUT:.0f} s") from None
        if proc.returncode != 0:
            message = out.decode(errors="replace").strip().replace("(stdin)", what)
            if key.passphrase:
                message = message.replace(key.passphrase, "********")
            if not message:  # ssh-add says nothing when every passphrase it got was wrong
                message = ("its passphrase is wrong" if key.passphrase else
                           "it is encrypted, and the access key has no passphrase")
            elif "libcrypto" in message or "invalid format" in message:
                message += " (it is not a private key OpenSSH can read)"
            raise SshKeyError(f"the {what} could not be loaded: {message}")

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        shutil.rmtree(self._own_folder or self.socket.parent, ignore_errors=True)

    def _as_task_user(self) -> dict[str, Any]:
        if not self.identity.separate:
            return {}
        return {"user": self.identity.uid, "group": self.identity.gid, "extra_groups": []}


def _listening(path: Path) -> bool:
    """The agent's socket takes connections: it exists between ssh-agent's bind and its
    listen, when a connect is refused (seen under load)."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
