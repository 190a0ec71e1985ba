"""Runs one task as real processes: checkout, then the app's program, streaming its output."""

import asyncio
import errno
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex
from typing import Any

import structlog

from agent.ansible import control_path_dir, prepare_play, remove_control_dir
from agent.apps import UnsupportedApp, build_command, check_app
from agent.galaxy import GalaxyRequirements
from agent.gitread import AskGit, head_commit
from agent.isolation import TaskIdentity, kill_user_processes
from agent.output import OutputCoalescer, pump_pipe
from agent.prompts import PromptTerminal
from agent.repository import CheckoutFailed, RepositoryCache, TaskCheckout, is_local
from agent.sshagent import SshAgent, SshKeyError
from agent.taskenv import PlaybookError, resolve_playbook, task_environment
from agent.terraform import TERRAFORM_APPS, ConfirmationGate, TerraformRun
from protocol.frames import TaskSecrets, TaskSpec, TaskStatus

log = structlog.get_logger("agent.executor")

# After the process ends, how long its pipes may stay open (a daemon it left behind holds
# them) before we stop reading.
PIPE_DRAIN_TIMEOUT = 5.0


async def process_exit(proc: asyncio.subprocess.Process) -> int:
    """Wait for the process itself to exit, not for its pipes to close: `proc.wait()` also
    waits for every pipe, which a background child it left behind may hold open forever."""
    if proc.returncode is not None:
        return proc.returncode
    loop = asyncio.get_running_loop()
    # How often to look for the return code once the process is known (or may be) gone.
    poll = 0.002
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError as exc:
        pidfd = None
        if exc.errno != errno.ESRCH:
            poll = 0.05  # no pidfd here (old kernel): poll the return code while it runs
        # ESRCH: already exited and reaped (a quick `true` often is by now); its return code
        # is a loop iteration away. Polling at 50 ms here added 50 ms to one short task in
        # ten (bench/PROFILE.md).
    except AttributeError:
        pidfd, poll = None, 0.05  # no os.pidfd_open (not Linux)
    if pidfd is not None:
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
    # The child watcher reaps it just after; the return code appears then (no event
    # exists for that, hence the short poll).
    while proc.returncode is None:  # noqa: ASYNC110
        await asyncio.sleep(poll)
    return proc.returncode


@dataclass
class Outcome:
    status: TaskStatus
    exit_code: int | None = None
    message: str = ""
    commit_hash: str = ""
    commit_message: str = ""


class TaskExecution:
    """One task's processes. `run()` returns how it ended; `stop()` ends it early."""

    def __init__(self, task_id: int, spec: TaskSpec, tasks_root: Path, sink: OutputCoalescer,
                 kill_grace: float = 5.0, max_duration_sec: int = 0,
                 secrets: TaskSecrets | None = None,
                 on_process: Callable[[int], None] | None = None,
                 identity: TaskIdentity | None = None,
                 cache: RepositoryCache | None = None):
        self.secrets = secrets or TaskSecrets()
        self.on_process = on_process  # told each process group started, for the spool
        self.task_id = task_id
        self.spec = spec
        self.identity = identity or TaskIdentity.of_runner()
        # The runner's repositories: beside tasks/ in its state folder.
        self.cache = cache or RepositoryCache(tasks_root.parent / "repositories")
        # A name no other task can guess: tasks/ cannot be listed by the task user, and tasks
        # running at once as one task user must not find each other's folders by id.
        self.work_dir = tasks_root / f"task_{task_id}_{token_hex(12)}"
        self.sink = sink
        self.kill_grace = kill_grace
        limits = [t for t in (spec.timeout_sec, max_duration_sec) if t > 0]
        self.timeout = min(limits) if limits else None
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._started = time.monotonic()
        self._agent: SshAgent | None = None  # the inventory's ssh key, for an ansible play
        self._control_dir: Path | None = None  # ansible's ssh ControlPath, when moved
        self.log = log.bind(task_id=task_id)
        # Where a task that asks before it changes anything (terraform) waits for a decision.
        self.confirmation = ConfirmationGate()

    def stop(self, reason: str = "stopped by user") -> None:
        self._stop_reason = reason
        self._stop.set()

    async def run(self) -> Outcome:
        try:
            return await self._run()
        finally:
            if self._agent is not None:
                await self._agent.close()
            if self._control_dir is not None:
                remove_control_dir(self._control_dir)
            await self._end_leftovers()
            await self.sink.close()
            await _remove_tree(self.work_dir, self.log)

    async def _run(self) -> Outcome:
        self._started = time.monotonic()
        # In a thread: three folder creations, each a journal write, would hold up every
        # other task of this runner on a busy disk.
        await asyncio.to_thread(self._make_work_dir)
        try:
            program = check_app(self.spec)  # found once; the steps below reuse it
        except UnsupportedApp as exc:
            await self._say(f"{exc}\n")
            return Outcome("error", message=str(exc))
        outcome = Outcome("success")
        cwd = await self._checkout(outcome)
        if cwd is None:
            return outcome
        if self._stop.is_set():
            return Outcome("stopped", message=self._stop_reason)
        if self.spec.app in TERRAFORM_APPS:  # several commands and a confirmation: its own
            return await TerraformRun(self, cwd, outcome).run()
        answers: dict[str, str] = {}
        try:
            playbook = resolve_playbook(cwd, self.spec.playbook)
            if self.spec.app == "ansible":  # its files and flags: agent/ansible.py
                play = prepare_play(program, self.spec, self.secrets,
                                    self.task_id, playbook, cwd, self.work_dir, self.identity)
                command, answers = play.argv, play.answers
            else:
                command = build_command(self.spec, playbook, self.task_id,
                                        secret_vars=self.secrets.vars)
        except (UnsupportedApp, PlaybookError) as exc:
            await self._say(f"{exc}\n")
            return Outcome("error", message=str(exc))
        env, refused = task_environment(self.spec, self.secrets, self.identity, self.work_dir,
                                        self.task_id)
        for name in refused:
            await self._say(f"environment variable {name!r} ignored: not a valid name\n")
        started = time.monotonic()
        if self.spec.app == "ansible":
            failed = (await self._inventory_agent(env)
                      or await self._galaxy_requirements(program, cwd, playbook, env,
                                                         started))
            if failed is not None:
                return failed
        exit_code, ended_by = await self._run_process(command, cwd, env, self._left(started),
                                                      answers=answers)
        outcome.exit_code = exit_code
        if ended_by == "stop":
            outcome.status, outcome.message = "stopped", self._stop_reason
        elif ended_by == "timeout":
            outcome.status = "error"
            outcome.message = f"timed out after {self.timeout} s"
            await self._say(f"Task {outcome.message}; its processes were killed\n")
        elif exit_code != 0:
            outcome.status, outcome.message = "error", f"exit code {exit_code}"
        self.log.info("task.process.ended", exit_code=exit_code, status=outcome.status,
                      seconds=round(time.monotonic() - started, 3))
        return outcome

    async def _inventory_agent(self, env: dict[str, str]) -> Outcome | None:
        """The inventory's ssh key in a private ssh-agent (agent/sshagent.py) for the play,
        stopped when the task ends (run()); an Outcome when the key could not be loaded.
        And a short ssh ControlPath folder when the task's own is too long for a socket."""
        self._control_dir = control_path_dir(self.work_dir, self.identity)
        if self._control_dir is not None:
            env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(self._control_dir)
        key = self.secrets.inventory_ssh_key
        if key is None or not key.private_key:
            return None
        # Its socket beside the ControlPath when the task's folder is too deep for one: a
        # folder a restarted runner clears.
        self._agent = SshAgent(self._control_dir or self.work_dir, self.identity,
                               self.work_dir.parent.parent, self.on_process)
        try:
            await self._agent.start()
            await self._agent.add(key, "inventory's ssh key")
        except SshKeyError as exc:
            await self._say(f"{exc}\n")
            return Outcome("error", message=str(exc))
        env.update(self._agent.environment)
        return None

    def _left(self, since: float) -> float | None:
        """What is left of the task's time limit since `since` (at least 0.1 s, so that a
        step still starts and is timed out rather than refused)."""
        if self.timeout is None:
            return None
        return max(0.1, self.timeout - (time.monotonic() - since))

    async def _galaxy_requirements(self, program: str, cwd: Path, playbook: Path,
                                   env: dict[str, str], started: float) -> Outcome | None:
        """The repository's galaxy requirements (agent/galaxy.py); an Outcome if that failed."""
        requirements = GalaxyRequirements.of_task(self.spec, program, cwd,
                                                  playbook, self.work_dir)
        failed = await requirements.install(
            lambda argv: self._run_process(argv, cwd, env, self._left(started)), self._say,
            self.identity)
        if failed is None:
            return None
        code, ended_by, message = failed
        if ended_by == "stop":
            return Outcome("stopped", message=self._stop_reason)
        return Outcome("error", exit_code=code, message=message)

    def _make_work_dir(self) -> None:
        """The task's own folder, new (its name has 96 random bits: no earlier run left
        it; mkdir fails if one did) and private to the task's user: 0700, owned by it when
        tasks run as another user."""
        self.work_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.work_dir.mkdir(mode=0o700)
        (self.work_dir / "tmp").mkdir(mode=0o700)  # its TMPDIR: /tmp is shared with others
        if self.identity.separate:
            for folder in (self.work_dir, self.work_dir / "tmp"):
                os.chown(folder, self.identity.uid, self.identity.gid)

    async def _end_leftovers(self) -> None:
        """With a task user of its own, nothing of the task outlives it: every process of
        that user is killed (a daemon it started, a `setsid` escapee), before its folder is
        removed and the user serves another task."""
        if not self.identity.separate:
            return
        killed = await asyncio.to_thread(kill_user_processes, self.identity.uid)
        if killed:
            self.log.info("task.leftovers.killed", count=len(killed))
            await self._say(f"({len(killed)} process(es) the task left running were "
                            "killed)\n")

    async def _checkout(self, outcome: Outcome) -> Path | None:
        """The task's code (agent.repository), or an absolute path used as it is; None if
        that failed (the outcome says why)."""
        repo = self.spec.repository
        if repo is None:
            return self.work_dir
        if repo.url.startswith("/"):
            # As Semaphore does: an absolute path is a folder on the runner, used in place.
            path = Path(repo.url)
            if not path.is_dir():
                outcome.status = "error"
                outcome.message = f"repository folder {path} does not exist on this runner"
                await self._say(outcome.message + "\n")
                return None
            await self._commit_info(path, outcome)
            return path
        checkout = TaskCheckout(self.cache, repo, self.spec.commit_hash, self.secrets,
                                self.identity, self.work_dir, self._run_git, self._say,
                                self._git_environment(), self.on_process)
        try:
            target = await checkout.checkout()
        except CheckoutFailed as exc:
            if exc.status == "stopped":
                outcome.status, outcome.message = "stopped", self._stop_reason
                return None
            outcome.status, outcome.exit_code, outcome.message = "error", exc.exit_code, str(exc)
            await self._say(outcome.message + "\n")
            return None
        await self._commit_info(target, outcome, runner_made=not is_local(repo.url))
        return target

    async def _run_git(self, argv: list[str], cwd: Path, env: dict[str, str],
                       as_runner: bool) -> tuple[int | None, str]:
        # The task's time limit covers its fetch: a server that never answers must not hold
        # the runner's slot (and the repository's lock) for ever.
        return await self._run_process(argv, cwd, env, timeout=self._left(self._started),
                                       as_runner=as_runner)

    async def _commit_info(self, path: Path, outcome: Outcome, runner_made: bool = False) -> None:
        """The commit `path` is at, into the outcome. Read from its git files (agent.gitread:
        no process, nothing of the repository's config run) where the runner may read
        everything the task's user may: tasks run as the runner's own user, or the checkout
        is the runner's own making (from its cache). Else, and whenever the reader cannot
        tell, git as the task's user."""
        if runner_made or not self.identity.separate:
            try:
                found = head_commit(path)
            except (AskGit, OSError, ValueError) as exc:
                self.log.debug("task.commit.ask_git", reason=str(exc)[:200])
            else:
                if found is not None:
                    outcome.commit_hash, outcome.commit_message = found.hash, found.subject
                return
        await self._git_log(path, outcome)

    async def _git_log(self, path: Path, outcome: Outcome) -> None:
        # As the task's user: git reads the repository's own config (core.fsmonitor and the
        # like run commands), which must never run with the runner's rights. The folder may
        # belong to someone else (a path on the runner): safe.directory lets git read it.
        try:
            proc = await asyncio.create_subprocess_exec(
                "git", "-c", "safe.directory=*", "-C", str(path), "log", "-1",
                "--format=%H%n%s", stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL,
                cwd=self.work_dir, env=self._git_environment(), **self._as_task_user())
        except FileNotFoundError:
            # A host without git still runs a folder used in place; it has no commit to show.
            return
        out, _ = await proc.communicate()
        if proc.returncode == 0:
            commit_hash, _, message = out.decode(errors="replace").partition("\n")
            outcome.commit_hash, outcome.commit_message = commit_hash, message.strip()

    async def _run_process(self, argv: list[str], cwd: Path, env: dict[str, str],
                           timeout: float | None,
                           as_runner: bool = False,
                           answers: dict[str, str] | None = None) -> tuple[int | None, str]:
        """Run argv in its own process group, streaming output; returns (exit code, why).
        As the task's user, unless `as_runner` (the fetch into the runner's cache). With
        `answers` (prompt -> password), on a pty whose prompts are answered."""
        terminal = PromptTerminal(answers) if answers else None
        if terminal is not None:
            argv = terminal.argv(argv)
        if not as_runner and self.identity.separate and not cwd.is_relative_to(self.work_dir):
            # A repository path on the runner: entered by the task's user itself. subprocess
            # changes folder before it changes user, so cwd= would start the task inside a
            # folder its user may not reach, its files readable there by relative paths.
            argv, cwd = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', str(cwd), *argv], self.work_dir
        user = {} if as_runner else self._as_task_user()
        try:
            if terminal is not None:
                proc = await asyncio.create_subprocess_exec(
                    *argv, cwd=cwd, env=env, stdin=terminal.slave, stdout=terminal.slave,
                    stderr=terminal.slave, start_new_session=False, **user)
            else:
                proc = await asyncio.create_subprocess_exec(
                    *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    start_new_session=True, **user)
        except (OSError, ValueError) as exc:  # ValueError: a NUL in argv or environment
            if terminal is not None:
                terminal.close()
            await self._say(f"cannot start {argv[0]}: {getattr(exc, 'strerror', None) or exc}\n")
            return 127, "exit"
        self._proc = proc
        if self.on_process is not None:
            self.on_process(proc.pid)
        self.log.info("task.process.started", pid=proc.pid, argv=argv[:2])
        pumps: asyncio.Future[Any]
        if terminal is not None:
            terminal.started()
            pumps = asyncio.gather(pump_pipe(terminal.reader, "stdout", self.sink))
        else:
            assert proc.stdout is not None and proc.stderr is not None  # both are PIPE
            pumps = asyncio.gather(pump_pipe(proc.stdout, "stdout", self.sink),
                                   pump_pipe(proc.stderr, "stderr", self.sink))
        waiter = asyncio.ensure_future(process_exit(proc))
        stopper = asyncio.ensure_future(self._stop.wait())
        done, _ = await asyncio.wait({waiter, stopper}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        ended_by = "exit" if waiter in done else "stop" if stopper in done else "timeout"
        stopper.cancel()
        if ended_by != "exit":
            await self._kill_group(proc, waiter)
        else:
            await self._end_leftovers()  # a background child would hold the pipes open
        try:
            await asyncio.wait_for(asyncio.shield(pumps), PIPE_DRAIN_TIMEOUT)
        except TimeoutError:
            pumps.cancel()
            # Close our ends of the pipes (asyncio has no public call for this); the leftover
            # process is not ours to kill once the task's own process has exited.
            proc._transport.close()  # type: ignore[attr-defined]
            await self._say("(output pipes still held open by a leftover process; "
                            "stopped reading)\n")
        if terminal is not None:
            terminal.close()
        self._proc = None
        return proc.returncode, ended_by

    async def _kill_group(self, proc: asyncio.subprocess.Process,
                          waiter: asyncio.Future) -> None:
        """SIGTERM the whole process group, SIGKILL it after the grace period."""
        for sig, wait in ((signal.SIGTERM, self.kill_grace), (signal.SIGKILL, None)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            if wait is None:
                break
            try:
                await asyncio.wait_for(asyncio.shield(waiter), wait)
                break
            except TimeoutError:
                self.log.warning("task.process.kill", pid=proc.pid,
                                 reason=f"no exit {wait} s after SIGTERM")
        try:
            await asyncio.wait_for(asyncio.shield(waiter), PIPE_DRAIN_TIMEOUT)
        except TimeoutError:  # SIGKILL cannot be ignored; only a zombie state delays this
            self.log.error("task.process.unkillable", pid=proc.pid)
        # Children that outlived the leader but kept the group: make sure they go too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _git_environment(self) -> dict[str, str]:
        """The environment of the task's git commands: the task's, without its variables."""
        return task_environment(None, TaskSecrets(), self.identity, self.work_dir,
                                self.task_id)[0]

    def _as_task_user(self) -> dict[str, Any]:
        """subprocess arguments that start a process as the task's user (none when tasks run
        as the runner's own user): its uid, its group and no supplementary groups."""
        if not self.identity.separate:
            return {}
        return {"user": self.identity.uid, "group": self.identity.gid, "extra_groups": []}

    async def _say(self, text: str) -> None:
        """A line from the runner itself, in the task's output."""
        await self.sink.write("stderr", text)


async def _remove_tree(folder: Path, log: structlog.typing.FilteringBoundLogger) -> None:
    """Remove a task's folder. What the task's last processes do while they die (ansible
    deleting its temporary files on SIGTERM) can make one pass fail, either way: a file gone
    under rmtree, or a new one in a folder it empties. So: passes until the folder is gone,
    a few, then a warning: a folder left behind may hold a key."""
    for attempt in range(5):
        await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
        if not folder.exists():
            return
        await asyncio.sleep(0.05 * (attempt + 1))
    log.warning("task.folder.left", folder=str(folder))
