"""The runner's table of tasks: starts executions, numbers their output, keeps what is unacked.

Transport-free: frames leave through the `emit` callback, so the same worker serves a remote
runner (emit = send on the websocket) and the hub's embedded local runner (emit = hand the
frame to the hub directly). A task stays held until the hub has acked its finished frame.
"""

import asyncio
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import structlog

from agent.ansible import clear_control_dirs
from agent.apps import UnsupportedApp, available_apps, check_app
from agent.executor import Outcome, TaskExecution
from agent.isolation import TaskIdentity, kill_user_processes, prepare_private_folder
from agent.keys import RunnerKeyError, SecretOpener
from agent.output import OutputCoalescer
from agent.repository import RepositoryCache
from agent.spool import DiskFrames
from protocol.frames import (
    Accepted,
    Ack,
    Assign,
    Cancel,
    Confirmation,
    Decision,
    Finished,
    HeldTask,
    HubFrame,
    Rejected,
    RunnerFrame,
    TaskSecrets,
    TaskSpec,
)
from protocol.ledger import OutputLedger

log = structlog.get_logger("agent.worker")

Emit = Callable[[RunnerFrame], None]


@dataclass
class HeldTaskState:
    task_id: int
    ledger: OutputLedger
    sink: OutputCoalescer | None  # None for a task recovered from an earlier runner process
    execution: TaskExecution | None
    spool: DiskFrames
    runner: asyncio.Task | None = None
    finished: Finished | None = None


class TaskWorker:
    """The tasks this runner holds, each from its assign until the hub acks its finished frame.

    Every frame it produces leaves through `emit`, given once at construction, in the order
    produced; a task's output frames are numbered by its ledger and kept in its spool until
    acked, so whatever `emit` drops (no live session) is resent after a reconnect
    (`unacked_frames`). At most `max_parallel_tasks` tasks run at once (0: no limit).
    """

    def __init__(self, tmp_path: str | Path, max_parallel_tasks: int, emit: Emit,
                 kill_grace: float = 5.0, max_duration_sec: int = 0,
                 opener: SecretOpener | None = None,
                 identities: list[TaskIdentity] | None = None):
        self.opener = opener or SecretOpener(None)
        identities = identities or [TaskIdentity.of_runner()]
        self.separate_users = identities[0].separate
        # With task users, each running task holds one of its own (never shared while it
        # runs); without, every task runs as the runner.
        self._free_users = list(identities)
        # Runner-only folders (0700): the spool holds unacked output and how tasks ended. With
        # task users, tmp_path and tasks/ are 0711: a task user may pass through to its own
        # task folder (0700, its own) but list nothing and read nothing else.
        self.work_root = Path(tmp_path)
        passable = 0o711 if self.separate_users else 0o700
        prepare_private_folder(self.work_root, passable)
        self.tasks_root = self.work_root / "tasks"
        prepare_private_folder(self.tasks_root, passable)
        prepare_private_folder(self.work_root / "spool")
        # Repositories fetched for tasks, kept between them (0700: the runner's alone).
        self.repositories = RepositoryCache(self.work_root / "repositories")
        self.repositories.prepare()
        self.max_parallel_tasks = max_parallel_tasks
        self._emit = emit
        self.kill_grace = kill_grace
        self.max_duration_sec = max_duration_sec
        self.tasks: dict[int, HeldTaskState] = {}
        self.draining = False
        self.max_output_bytes = 0  # set from the hub's welcome; 0: no limit
        # True when tasks run as the runner's own user (no separate task user): a task could
        # then read the runner's token and key, so the hub is told (hello) and shows it.
        self.shared_identity = not self.separate_users
        self.apps = available_apps()  # said in every hello: the hub sends only these
        self._idle = asyncio.Event()
        self._idle.set()
        self._removals: set[asyncio.Future[None]] = set()  # spool folders being removed
        # Tasks this process ran to an end, by status (the runner's /metrics).
        self.finished_counts: dict[str, int] = {}

    # Frames from the hub.

    def handle(self, frame: HubFrame) -> None:
        """Act on a frame from the hub: the one routing of the hub's task frames, for the
        runner's connection and the hub's embedded runner alike. Frames about no task
        (welcome, error) are the connection's, not the worker's: ignored here."""
        if isinstance(frame, Assign):
            self.assign(frame.task_id, frame.spec)
        elif isinstance(frame, Ack):
            self.ack(frame.task_id, frame.seq, frame.finished)
        elif isinstance(frame, Cancel):
            self.cancel(frame.task_id, frame.reason)
        elif isinstance(frame, Decision):
            self.decide(frame.task_id, frame.approved, frame.message)

    def assign(self, task_id: int, spec: TaskSpec) -> None:
        """Start the task unless it is held already (assign is idempotent)."""
        if task_id in self.tasks:
            self._emit(Accepted(task_id=task_id))
            finished = self.tasks[task_id].finished
            if finished is not None:
                # Already over here (the hub lost track): tell it how it ended, again.
                self._emit(finished)
            return
        reason = self._refusal(spec)
        secrets = TaskSecrets()
        if not reason and spec.sealed_secrets:
            try:
                secrets = self.opener.open(spec.sealed_secrets)
            except RunnerKeyError as exc:
                reason = str(exc)
        if reason:
            log.info("task.rejected", task_id=task_id, reason=reason)
            self._emit(Rejected(task_id=task_id, reason=reason))
            return
        spool = DiskFrames(self.work_root / "spool" / f"task_{task_id}")
        ledger = OutputLedger(task_id, store=spool)
        sink = OutputCoalescer(ledger, self._emit, max_output=self.max_output_bytes,
                               masks=secrets.values())
        identity = self._free_users.pop(0) if self.separate_users else self._free_users[0]
        execution = TaskExecution(task_id, spec, self.tasks_root, sink, self.kill_grace,
                                  self.max_duration_sec, secrets,
                                  on_process=lambda pid: _record_process(spool, pid),
                                  identity=identity, cache=self.repositories)
        execution.confirmation.notify = (
            lambda step: self._emit(Confirmation(task_id=task_id, state=step)))
        state = HeldTaskState(task_id, ledger, sink, execution, spool)
        self.tasks[task_id] = state
        self._idle.clear()
        self._emit(Accepted(task_id=task_id))
        log.info("task.accepted", task_id=task_id, app=spec.app)
        state.runner = asyncio.get_running_loop().create_task(self._run(state))

    def cancel(self, task_id: int, reason: str = "") -> None:
        state = self.tasks.get(task_id)
        if state is None:
            return
        if state.finished is None and state.execution is not None:
            log.info("task.cancelled", task_id=task_id, reason=reason)
            state.execution.stop(reason or "stopped by user")
        else:
            # The hub no longer wants it (e.g. it ended the task meanwhile): drop it.
            self._forget(state)

    def decide(self, task_id: int, approved: bool, message: str) -> None:
        """A user's decision on the task's plan; nothing if it does not wait for one (a
        decision the hub sends again after a reconnect, for a task that got it already)."""
        state = self.tasks.get(task_id)
        if state is not None and state.execution is not None and state.finished is None:
            log.info("task.decision", task_id=task_id, approved=approved)
            state.execution.confirmation.decide(approved, message)

    def ack(self, task_id: int, seq: int, finished: bool = False) -> None:
        state = self.tasks.get(task_id)
        if state is None:
            return
        state.ledger.ack(seq)
        if state.sink is not None:
            state.sink.acked()
        if finished and state.finished is not None:
            self._forget(state)

    # What a (re)connect needs.

    def held_tasks(self) -> list[HeldTask]:
        return [HeldTask(task_id=s.task_id, state="finished" if s.finished else "running",
                         last_seq=s.ledger.last_seq,
                         awaiting=(s.finished is None and s.execution is not None
                                   and s.execution.confirmation.awaiting))
                for s in self.tasks.values()]

    def unacked_frames(self, acked: dict[int, int]) -> list[RunnerFrame]:
        """Everything to resend after a reconnect, given the hub's last stored seq per task."""
        frames: list[RunnerFrame] = []
        for state in list(self.tasks.values()):
            if state.task_id in acked:
                self.ack(state.task_id, acked[state.task_id])
            frames.extend(state.ledger.unacked())
            if state.finished is not None:
                frames.append(state.finished)
        return frames

    @property
    def running_ids(self) -> list[int]:
        return [s.task_id for s in self.tasks.values() if s.finished is None]

    @property
    def has_free_slot(self) -> bool:
        return self.max_parallel_tasks <= 0 or len(self.running_ids) < self.max_parallel_tasks

    async def wait_idle(self) -> None:
        """Wait until no task is held (all finished and their finished frames acked), and
        their spool folders are gone."""
        await self._idle.wait()
        while self._removals:
            await asyncio.wait(set(self._removals))

    def stop_all(self, reason: str) -> None:
        for state in self.tasks.values():
            if state.finished is None and state.execution is not None:
                state.execution.stop(reason)

    # After a restart.

    def recover(self) -> list[int]:
        """Take back the tasks an earlier runner process left in the spool (it crashed or was
        killed): their output not yet acked and how they ended are delivered on connect. A task
        that was still running then cannot be resumed: its leftover processes are killed and it
        ends `error`, with all the output it printed."""
        self._clear_leftovers()
        recovered = []
        for folder in sorted((self.work_root / "spool").glob("task_*")):
            try:
                found = DiskFrames.recover(folder)
            except (OSError, ValueError) as exc:
                log.error("task.recover.failed", folder=str(folder), error=str(exc))
                continue
            for process in found.processes:
                _kill_leftover(process, found.task_id)
            finished = found.finished or Finished(
                task_id=found.task_id, status="error", last_seq=found.last_seq,
                message="runner restarted while the task ran")
            ledger = OutputLedger.resume(found.task_id, found.last_seq, found.frames)
            self.tasks[found.task_id] = HeldTaskState(found.task_id, ledger, None, None,
                                                      found.frames, finished=finished)
            recovered.append(found.task_id)
            log.info("task.recovered", task_id=found.task_id, last_seq=found.last_seq,
                     status=finished.status)
        if recovered:
            self._idle.clear()
        return recovered

    def clear_spool(self) -> None:
        """Forget what an earlier process left (the hub's embedded runner: the hub has
        already ended those tasks)."""
        shutil.rmtree(self.work_root / "spool", ignore_errors=True)
        prepare_private_folder(self.work_root / "spool")
        self._clear_leftovers()

    def _clear_leftovers(self) -> None:
        """What an earlier runner process left of its tasks: the task users' processes (task
        users are the runner's alone) and the task folders, which may hold keys."""
        if self.separate_users:
            for identity in self._free_users:
                killed = kill_user_processes(identity.uid)
                if killed:
                    log.warning("task.leftovers.killed", user=identity.name, count=len(killed))
        for folder in self.tasks_root.iterdir():
            shutil.rmtree(folder, ignore_errors=True)
        clear_control_dirs(self.tasks_root)  # ansible's ssh ControlPath folders, if moved

    # Internals.

    def _refusal(self, spec: TaskSpec) -> str:
        if self.draining:
            return "runner is draining"
        if not self.has_free_slot or (self.separate_users and not self._free_users):
            return f"busy: {self.max_parallel_tasks} tasks running"
        try:
            check_app(spec)
        except UnsupportedApp as exc:
            # An app this runner said it runs (its hello) whose program is gone since is this
            # runner's failure: the task runs and ends `error` saying so, instead of waiting
            # for a runner the hub believes can run it.
            if spec.app not in self.apps:
                return str(exc)
        return ""

    async def _run(self, state: HeldTaskState) -> None:
        execution = state.execution
        assert execution is not None  # only tasks this process started are run
        try:
            outcome = await execution.run()
        except Exception as exc:  # the runner must report, never swallow, its own failures
            log.exception("task.crashed", task_id=state.task_id)
            outcome = Outcome("error", message=f"runner error: {exc}")
        if self.separate_users:  # its processes are gone (run() ends them): free for another
            self._free_users.append(execution.identity)
        finished = Finished(
            task_id=state.task_id, status=outcome.status, last_seq=state.ledger.last_seq,
            exit_code=outcome.exit_code, message=outcome.message,
            commit_hash=outcome.commit_hash, commit_message=outcome.commit_message)
        # Recorded before anyone hears of it (so a runner restarted now still reports how
        # the task ended), in a thread: creating the file is a journal write, which on a
        # busy disk would hold up every other task's frames. The task counts as running
        # (its slot taken) until then.
        await asyncio.to_thread(state.spool.record_finished, finished)
        state.finished = finished
        self.finished_counts[outcome.status] = self.finished_counts.get(outcome.status, 0) + 1
        log.info("task.finished", task_id=state.task_id, status=outcome.status,
                 exit_code=outcome.exit_code, last_seq=state.ledger.last_seq)
        self._emit(state.finished)

    def _forget(self, state: HeldTaskState) -> None:
        self.tasks.pop(state.task_id, None)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a caller outside one): at once
            state.spool.remove()
        else:
            # Its spool in a thread: a few unlinks, journal writes on a busy disk, must not
            # hold up the other tasks' frames. A runner that dies before they are done finds
            # the folder at start and reports the task's end again: the hub acks it as one it
            # already has. wait_idle() waits for them.
            removal = loop.run_in_executor(None, state.spool.remove)
            self._removals.add(removal)
            removal.add_done_callback(self._removals.discard)
        if not self.tasks:
            self._idle.set()


def _record_process(spool: DiskFrames, pid: int) -> None:
    try:
        leader = psutil.Process(pid)
        spool.record_process(pid, leader.create_time(), leader.uids().real)
    except (psutil.Error, OSError):
        pass  # it already ended: nothing would be left to kill


def _kill_leftover(process: dict, task_id: int) -> None:
    """Kill the process group a crashed runner left running, if it is still that group: the
    same leader (start time), still a group leader, run by the same user. A pid reused by an
    unrelated process is never signalled."""
    try:
        pid = process["pid"]
        leader = psutil.Process(pid)
        if abs(leader.create_time() - process["started"]) > 1.0:
            return  # the pid was reused by something else
        if leader.uids().real != process["uid"] or os.getpgid(pid) != pid:
            return  # not the task's user, or no longer the leader of its own group
        os.killpg(pid, signal.SIGKILL)
        log.warning("task.leftover.killed", task_id=task_id, pid=process["pid"])
    except (psutil.Error, OSError, KeyError, TypeError):
        pass
