"""A task's life cycle on the hub: its states, the moves allowed between them, and the one
place that makes each move.

Every status change of a task goes through `TaskLifecycle`: it checks the move against
`TRANSITIONS`, changes the task in memory and in the database together, stamps `start` and
`end`, tells its listener (the dispatcher, which keeps the queue and the runners' slots),
publishes the event and logs `task.<state>`. A move the table does not allow is refused with
a log line and changes nothing. Nothing else in the hub assigns a status.

    waiting -> starting -> running -> success | error | stopped
       ^          |         |  ^
       +----------+         |  +------------------------+
     (rejected, not         +-> waiting_confirmation -> confirmed (apply)
      accepted in time,     |          |
      runner gone first)    |          +-> rejected -> stopped
                            +-> stopping -> stopped | success | error

A terraform task's plan with changes waits for a user (waiting_confirmation); confirmed, its
runner applies that plan (running again); rejected, it ends stopped. Stopping, its timeout
and a lost runner end it from any of these states too.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import structlog

from hub.core.events import EventBus
from hub.core.output_writer import OutputWriter
from hub.store import Row, Store, utcnow
from protocol.frames import TaskSecrets, TaskSpec

log = structlog.get_logger("hub.lifecycle")


class TaskState(StrEnum):
    """Semaphore's task statuses, by their API names."""

    WAITING = "waiting"
    STARTING = "starting"
    WAITING_CONFIRMATION = "waiting_confirmation"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SUCCESS = "success"
    ERROR = "error"


FINAL = frozenset({TaskState.STOPPED, TaskState.SUCCESS, TaskState.ERROR})

# The moves a task may make, written once. A runner's report of how a task ended may arrive
# for a task the hub still thinks is starting (the hub restarted between its accept and its
# end), hence the ends from `starting`.
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.WAITING: frozenset({TaskState.STARTING, TaskState.STOPPED, TaskState.ERROR}),
    TaskState.STARTING: frozenset({TaskState.WAITING, TaskState.RUNNING, TaskState.STOPPING,
                                   *FINAL}),
    TaskState.RUNNING: frozenset({TaskState.STOPPING, TaskState.WAITING_CONFIRMATION,
                                  *FINAL}),
    TaskState.WAITING_CONFIRMATION: frozenset({TaskState.CONFIRMED, TaskState.REJECTED,
                                               TaskState.STOPPING, *FINAL}),
    TaskState.CONFIRMED: frozenset({TaskState.RUNNING, TaskState.STOPPING, *FINAL}),
    TaskState.REJECTED: frozenset({TaskState.STOPPED, TaskState.ERROR}),
    TaskState.STOPPING: FINAL,
    TaskState.STOPPED: frozenset(),
    TaskState.SUCCESS: frozenset(),
    TaskState.ERROR: frozenset(),
}


@dataclass(eq=False)
class ActiveTask:
    """A task that has not ended, as the hub holds it in memory."""

    task_id: int
    project_id: int
    runner_tag: str
    spec: TaskSpec
    status: TaskState
    runner_id: int | None = None
    project_limit: int = 0  # the project's max_parallel_tasks (0: no limit)
    stored_seq: int = 0     # highest output seq committed
    received_seq: int = 0   # highest output seq accepted into the write queue
    output_bytes: int = 0
    output_cut: bool = False
    rejected_by: set[int] = field(default_factory=set)
    reason: str = ""        # why it is still waiting
    started_at: float = 0.0  # wall-clock time the runner accepted it (0: not yet)
    created_at: float = 0.0  # wall-clock time it was created (dispatch latency)
    # Who confirmed or rejected its plan ("plan rejected by alice"): stored as its status
    # message, sent to its runner again after a reconnect.
    decision: str = ""
    # Sealed to the runner at assign time; never stored or sent in the clear.
    secrets: TaskSecrets | None = field(default=None, repr=False)


# Told of every move: (task, its state before, the runner it was on before).
Listener = Callable[[ActiveTask, TaskState, int | None], None]


class TaskLifecycle:
    """The unfinished tasks (in memory) and every change of their status (in memory and in
    the database together). Invariant: a task is in `tasks` exactly while its status is not
    final, and its stored status is the one in memory, except for a runner's report of its
    end, which is stored through the output writer's queue, after the output before it."""

    def __init__(self, store: Store, events: EventBus, writer: OutputWriter):
        self.store = store
        self.events = events
        self.writer = writer
        self.telemetry = writer.telemetry
        self.tasks: dict[int, ActiveTask] = {}
        self.listener: Listener = lambda task, before, runner_id: None

    # Queries, for whoever must not change anything.

    def get(self, task_id: int) -> ActiveTask | None:
        return self.tasks.get(task_id)

    def is_active(self, task_id: int) -> bool:
        return task_id in self.tasks

    def waiting_reason(self, task_id: int) -> str:
        task = self.tasks.get(task_id)
        return task.reason if task is not None and task.status == TaskState.WAITING else ""

    def unfinished(self, project_id: int, template_id: int | None = None) -> list[int]:
        """Ids of the project's (or one template's) tasks that have not ended."""
        return sorted(t.task_id for t in self.tasks.values() if t.project_id == project_id
                      and template_id in (None, t.spec.template_id))

    def on_runner(self, runner_id: int) -> list[ActiveTask]:
        return [t for t in self.tasks.values() if t.runner_id == runner_id]

    # Tasks coming in: created now, or unfinished at the hub's start.

    async def create(self, values: dict[str, Any], task: ActiveTask,
                     runner: tuple[int, int | None] | None = None,
                     event: Callable[[int], dict[str, Any]] | None = None) -> Row:
        """Store a new task and hold it (`task`: made before it has an id). Waiting; or,
        with `runner` (its id, and its stored id: None for the embedded one), stored already
        starting on that runner, whose slot the dispatcher holds for it, so it needs no
        second write before its assign. `event`: its audit row, committed with it."""
        created = time.time()
        status = TaskState.STARTING if runner is not None else TaskState.WAITING
        stored = {**values, "status": status}
        if runner is not None:
            stored["runner_id"] = runner[1]
        row = await self.store.create_task(stored, event)
        task.task_id, task.status = row["id"], status
        task.runner_id = runner[0] if runner is not None else None
        task.created_at = created  # the row's stamp has whole seconds only
        self.track(task)
        log.info("task.created", task_id=task.task_id, project_id=task.project_id,
                 template_id=task.spec.template_id)
        if runner is not None:
            log.info("task.starting", task_id=task.task_id, runner_id=runner[0],
                     was=TaskState.WAITING)
        self._publish(task)
        return row

    def track(self, task: ActiveTask) -> None:
        """Hold a task that has not ended (new, or found unfinished at the hub's start)."""
        self.tasks[task.task_id] = task
        self.listener(task, task.status, task.runner_id)

    # The moves.

    async def start(self, task: ActiveTask, runner_id: int, stored_runner_id: int | None,
                    ) -> bool:
        """waiting -> starting: given to a runner (stored_runner_id: None for the embedded
        one, which has no row)."""
        if not self._move(task, TaskState.STARTING, runner_id=runner_id):
            return False
        task.reason = ""
        await self._store(task, {"status": TaskState.STARTING,
                                                    "runner_id": stored_runner_id})
        self._publish(task, runner_id=runner_id)
        return True

    async def run(self, task: ActiveTask) -> bool:
        """starting -> running: the runner accepted it."""
        if task.status == TaskState.RUNNING or not self._move(task, TaskState.RUNNING):
            return False
        task.started_at = time.time()
        if task.created_at:
            self.telemetry.dispatch_accepted.observe(
                max(task.started_at - task.created_at, 0.0))
        # Through the writer's queue, not awaited: it rides with the next batch of output
        # (one transaction for many tasks' moves under load), stored before the output the
        # runner sends after it. Losing it in a crash loses nothing: the task is still
        # `starting` there, and the runner's hello, holding it, makes it running again.
        event = self._event(task)
        self.writer.submit_update(task.task_id, {"status": TaskState.RUNNING,
                                                 "start": utcnow()},
                                  lambda: self.events.publish("task", **event))
        return True

    async def await_confirmation(self, task: ActiveTask) -> bool:
        """running -> waiting_confirmation: its plan has changes; a user decides."""
        if (task.status == TaskState.WAITING_CONFIRMATION
                or not self._move(task, TaskState.WAITING_CONFIRMATION)):
            return False
        await self._store(task, {"status": TaskState.WAITING_CONFIRMATION})
        self._publish(task)
        return True

    async def decide(self, task: ActiveTask, approved: bool, message: str) -> bool:
        """waiting_confirmation -> confirmed | rejected: a user's decision on the plan."""
        state = TaskState.CONFIRMED if approved else TaskState.REJECTED
        if not self._move(task, state, message=message):
            return False
        task.decision = message
        await self._store(task, {"status": state,
                                                    "status_message": message})
        self._publish(task, message=message)
        return True

    async def resume(self, task: ActiveTask) -> bool:
        """confirmed -> running: the runner got the confirmation and applies the plan (its
        start and its timeout are those of the task, not of the apply)."""
        if task.status != TaskState.CONFIRMED or not self._move(task, TaskState.RUNNING):
            return False
        await self._store(task, {"status": TaskState.RUNNING})
        self._publish(task)
        return True

    async def requeue(self, task: ActiveTask, reason: str,
                      refused_by: int | None = None) -> bool:
        """starting -> waiting: its runner will not run it (rejected it, did not accept it in
        time, went away first); refused_by is never offered it again."""
        if not self._move(task, TaskState.WAITING, runner_id=None, reason=reason):
            return False
        if refused_by is not None:
            task.rejected_by.add(refused_by)
        await self._store(task, {"status": TaskState.WAITING,
                                                    "runner_id": None})
        self._publish(task, reason=reason)
        return True

    async def stopping(self, task: ActiveTask) -> bool:
        """-> stopping: a stop was asked for a task a runner holds."""
        if task.status == TaskState.STOPPING or not self._move(task, TaskState.STOPPING):
            return False
        await self._store(task, {"status": TaskState.STOPPING})
        self._publish(task)
        return True

    async def end(self, task: ActiveTask, status: TaskState, message: str) -> bool:
        """-> stopped | error | success, decided by the hub (the runner cannot report it)."""
        if not self._move(task, status, message=message):
            return False
        # An ended task's survey secrets are of no more use: gone from the database.
        await self._store(task, {"status": status, "status_message": message,
                                                    "end": utcnow(), "secret": ""})
        self._publish(task, message=message)
        return True

    def finished(self, task: ActiveTask, status: TaskState, values: dict[str, Any],
                 on_stored: Callable[[], None]) -> bool:
        """-> how the runner says it ended. Stored through the output writer's queue, so after
        every output line before it; `on_stored` runs once it is committed."""
        message = values.get("status_message", "")
        if not self._move(task, status, message=message, exit_code=values.get("exit_code")):
            return False

        def stored() -> None:
            on_stored()
            self._publish(task, message=message)

        self.writer.submit_update(task.task_id,
                                  {**values, "status": status, "end": utcnow(),
                                   "secret": ""}, stored)
        return True

    async def end_unloaded(self, row: Row, status: TaskState, message: str) -> None:
        """End a task that was never loaded into memory (found unfinished at the hub's start
        and impossible to go on with)."""
        await self.store.update_task(row["id"], {"status": status, "status_message": message,
                                                 "end": utcnow(), "secret": ""})
        log.warning(f"task.{status}", task_id=row["id"], was=row["status"], reason=message,
                    at_start=True)
        self.events.publish("task", task_id=row["id"], project_id=row["project_id"],
                            status=str(status), runner_id=row["runner_id"], waiting_reason="",
                            message=message)

    # Internals.

    async def _store(self, task: ActiveTask, values: dict[str, Any]) -> None:
        """Store a move now, after any of the task's moves still in the writer's queue (a
        stop must not be overwritten by the `running` queued before it)."""
        await self.writer.settle(task.task_id)
        await self.store.update_task(task.task_id, values)

    def _move(self, task: ActiveTask, state: TaskState, *, runner_id: Any = ...,
              reason: str | None = None, **context: Any) -> bool:
        """Change the task in memory, or refuse (and log) a move the table does not allow."""
        before, before_runner = task.status, task.runner_id
        if state not in TRANSITIONS[before] or task.task_id not in self.tasks:
            log.warning("task.transition.refused", task_id=task.task_id, status=before,
                        to=state, tracked=task.task_id in self.tasks)
            return False
        task.status = state
        if runner_id is not ...:
            task.runner_id = runner_id
        if reason is not None:
            task.reason = reason
        if state in FINAL:
            del self.tasks[task.task_id]
            self.telemetry.task_finished(task.spec.app, state, task.started_at)
        self.listener(task, before, before_runner)
        log.info(f"task.{state}", task_id=task.task_id, runner_id=task.runner_id or
                 before_runner, was=before, **{k: v for k, v in context.items() if v})
        return True

    def publish(self, task: ActiveTask) -> None:
        """Say the task's state again (its waiting reason changed)."""
        self._publish(task)

    def _publish(self, task: ActiveTask, **extra: Any) -> None:
        self.events.publish("task", **self._event(task, **extra))

    @staticmethod
    def _event(task: ActiveTask, **extra: Any) -> dict[str, Any]:
        """The task's state as live views get it, taken now (it may be published later)."""
        waiting = task.reason if task.status == TaskState.WAITING else ""
        return {"task_id": task.task_id, "project_id": task.project_id,
                "status": str(task.status), "runner_id": task.runner_id,
                "waiting_reason": waiting, **extra}
