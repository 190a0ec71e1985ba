"""What the hub does with tasks: create, stop, restore after a restart, reconcile a hello.

Each is a few moves of the life cycle (`hub/core/lifecycle.py`), which alone changes a status. The
database is the truth about tasks, the runner the truth about its processes: when a runner
(re)connects, its hello lists what it holds and `reconcile` settles every difference.
"""

import calendar
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from hub.config import HubConfig
from hub.core.dispatcher import Dispatcher
from hub.core.lifecycle import ActiveTask, TaskLifecycle, TaskState
from hub.core.links import LOCAL_RUNNER_ID, RunnerLink
from hub.core.output_writer import OutputWriter
from hub.core.spec import SpecError, resolve_task
from hub.crypto import SecretCipher, SecretsUnavailable
from hub.store import Row, Store
from protocol.frames import (
    Cancel,
    Decision,
    HeldTask,
    HubFrame,
    TaskAck,
    TaskSecrets,
    TaskSpec,
)

if TYPE_CHECKING:  # audit reaches the request context, which holds this service
    from hub.core.audit import NewObjectEvent

log = structlog.get_logger("hub.tasks")


class NotAwaiting(Exception):
    """A confirm or reject for a task that does not wait for one; `status` is where it
    stands (None: it has ended)."""

    def __init__(self, status: TaskState | None):
        super().__init__(status)
        self.status = status


@dataclass
class Reconciliation:
    acked: list[TaskAck] = field(default_factory=list)
    then_send: list[HubFrame] = field(default_factory=list)


class TaskService:
    """Task operations the API and the gateway ask for, made of life-cycle moves."""

    def __init__(self, store: Store, lifecycle: TaskLifecycle, dispatcher: Dispatcher,
                 writer: OutputWriter, config: HubConfig, cipher: SecretCipher):
        self.cipher = cipher
        self.store = store
        self.lifecycle = lifecycle
        self.dispatcher = dispatcher
        self.writer = writer
        self.config = config

    async def restore(self) -> None:
        """Rebuild the in-memory view of unfinished tasks from the database at start."""
        for row in await self.store.list_unfinished_tasks():
            local = row["runner_id"] is None and row["status"] != TaskState.WAITING
            if local:
                # It ran inside this hub's process, which is gone: nobody holds it now.
                await self.lifecycle.end_unloaded(row, TaskState.ERROR,
                                                  "hub restarted while the task ran")
                continue
            try:
                template = await self.store.get_row("template", row["project_id"],
                                                    row["template_id"])
                spec, secrets = await resolve_task(self.store, self.cipher, row, template,
                                                   self.config.max_task_duration_sec,
                                                   self.config.web_host)
            except (SpecError, SecretsUnavailable) as exc:
                await self.lifecycle.end_unloaded(row, TaskState.ERROR, str(exc))
                continue
            project = await self.store.get_project(row["project_id"])
            self.lifecycle.track(self._active(row, template, project, spec, secrets))
        log.info("tasks.restored", unfinished=len(self.lifecycle.tasks))

    @staticmethod
    def _active(row: Row, template: Row, project: Row, spec: TaskSpec,
                secrets: TaskSecrets | None) -> ActiveTask:
        """The in-memory task of a stored one (new, or unfinished at start)."""
        status = TaskState(row["status"])
        decided = status in (TaskState.CONFIRMED, TaskState.REJECTED)
        return ActiveTask(task_id=row["id"], project_id=row["project_id"],
                          runner_tag=template["runner_tag"], spec=spec,
                          status=status, runner_id=row["runner_id"],
                          decision=(row.get("status_message") or "") if decided else "",
                          stored_seq=row["last_seq"], received_seq=row["last_seq"],
                          output_bytes=row["output_bytes"],
                          project_limit=project["max_parallel_tasks"],
                          started_at=_epoch(row["start"]),
                          created_at=_epoch(row["created"]), secrets=secrets)

    async def create(self, project: dict[str, Any], template: dict[str, Any],
                     values: dict[str, Any], user_id: int | None,
                     source: str = "api", event: "NewObjectEvent | None" = None,
                     ) -> dict[str, Any]:
        """Store a new task and start it on a free runner, or queue it; raises SpecError if
        it could never run. `source`: what created it (api, schedule, integration), for the
        metrics; `event`: its audit event, committed with it.

        With a runner free and nothing queued before it, the runner is chosen first and the
        task stored already `starting` on it, in the same transaction as its audit event;
        the assign goes out right after the commit, so the assignment is durable before the
        runner hears of it (a crash in between leaves a `starting` task that the runner's
        next hello sends back to the queue) and one write serves the 201 and the dispatch."""
        project_id = project["id"]
        draft = {**values, "project_id": project_id, "user_id": user_id}
        spec, secrets = await resolve_task(self.store, self.cipher, draft, template,
                                           self.config.max_task_duration_sec,
                                           self.config.web_host)
        task = ActiveTask(task_id=0, project_id=project_id, runner_tag=template["runner_tag"],
                          spec=spec, status=TaskState.WAITING,
                          project_limit=project["max_parallel_tasks"], secrets=secrets)
        link = self.dispatcher.claim(task)
        runner = None if link is None else (link.runner_id, None if link.runner_id ==
                                            LOCAL_RUNNER_ID else link.runner_id)
        try:
            row = await self.lifecycle.create(
                {**values, "project_id": project_id, "template_id": template["id"],
                 "user_id": user_id}, task, runner, event.row if event else None)
        finally:
            if link is not None:
                link.reserved -= 1
        if event is not None:
            event.logged(row["id"])
        self.lifecycle.telemetry.task_created(source)
        if link is not None:
            await self.dispatcher.assign_claimed(task, link)
        return row

    async def stop(self, task_id: int, reason: str = "stopped by user") -> None:
        task = self.lifecycle.get(task_id)
        if task is None:
            return  # already ended: stopping is idempotent
        if task.status == TaskState.WAITING:
            await self.lifecycle.end(task, TaskState.STOPPED, "stopped before it started")
            return
        await self.lifecycle.stopping(task)
        link = self.dispatcher.link_of(task)
        if link is not None:
            link.cancel(task_id, reason)
        # Without a link the cancel goes out when the runner reconnects (see reconcile).

    async def decide(self, task_id: int, approved: bool, username: str) -> None:
        """A user confirms or rejects the plan a task waits with: its runner is told (now,
        or when it reconnects), and applies the plan or ends the task `stopped`."""
        task = self.lifecycle.get(task_id)
        if task is None or task.status != TaskState.WAITING_CONFIRMATION:
            raise NotAwaiting(task.status if task is not None else None)
        message = f"plan {'confirmed' if approved else 'rejected'} by {username}"
        if not await self.lifecycle.decide(task, approved, message):
            raise NotAwaiting(task.status)
        link = self.dispatcher.link_of(task)
        if link is not None:
            link.send(Decision(task_id=task_id, approved=approved, message=message))
        # Without a link the decision goes out when the runner reconnects (see reconcile).

    async def revoke_runner(self, runner_id: int, what: str) -> None:
        """Cut a runner off now (disabled, deleted): its tasks are cancelled on it and ended
        here (it could no longer report them), tasks it never accepted go to another runner,
        and its session closes."""
        link = self.dispatcher.link(runner_id)
        for task in self.lifecycle.on_runner(runner_id):
            if task.status == TaskState.STARTING:
                await self.lifecycle.requeue(task, f"its runner was {what} before accepting it")
                continue
            if link is not None:
                link.cancel(task.task_id, f"runner {what}")
            await self.lifecycle.end(task, TaskState.ERROR, f"runner {what} while the task ran")
        if link is not None:
            link.close(1008, f"runner {what}")
            await self.dispatcher.detach(link, active=False)

    async def not_accepted(self, link: RunnerLink, task_id: int, timeout: float) -> None:
        """A runner did not answer an assign in time: it is told to drop the task, which goes
        back to waiting for another runner (or, stopped meanwhile, ends: it never ran)."""
        task = self.lifecycle.get(task_id)
        if task is None or task.runner_id != link.runner_id or task.started_at:
            return
        log.warning("task.accept.timeout", task_id=task_id, runner_id=link.runner_id,
                    timeout=timeout)
        link.cancel(task_id, f"not accepted within {timeout:g} s; given to another runner")
        if task.status == TaskState.STOPPING:
            await self.lifecycle.end(task, TaskState.STOPPED, "stopped before it started")
        elif task.status == TaskState.STARTING:
            await self.lifecycle.requeue(task, f"runner `{link.name}` did not accept it "
                                               f"within {timeout:g} s", refused_by=link.runner_id)

    async def reconcile(self, link: RunnerLink, held: list[HeldTask]) -> Reconciliation:
        """Settle what the runner holds against what the database says it runs."""
        await self.writer.flush()  # stored_seq must be what is really committed
        result = Reconciliation()
        held_ids = set()
        for item in held:
            held_ids.add(item.task_id)
            task = self.lifecycle.get(item.task_id)
            if task is None or task.runner_id != link.runner_id:
                # Ended (or moved) meanwhile: the runner must stop it and forget it.
                result.acked.append(TaskAck(task_id=item.task_id, seq=item.last_seq))
                if item.state == "running":
                    result.then_send.append(Cancel(task_id=item.task_id,
                                                   reason="the hub ended this task"))
                continue
            link.assigned.add(task.task_id)
            task.received_seq = task.stored_seq
            result.acked.append(TaskAck(task_id=task.task_id, seq=task.stored_seq))
            if task.status == TaskState.STARTING:
                await self.lifecycle.run(task)
            if task.status == TaskState.STOPPING and item.state == "running":
                result.then_send.append(Cancel(task_id=task.task_id, reason="stopped by user"))
            elif item.state == "running":
                await self._settle_confirmation(task, item, result)
        for task in [t for t in self.lifecycle.on_runner(link.runner_id)
                     if t.task_id not in held_ids]:
            if task.status == TaskState.STARTING:
                await self.lifecycle.requeue(task, "its runner restarted before accepting it")
            elif link.runner_id != LOCAL_RUNNER_ID:
                log.warning("task.runner_restarted", task_id=task.task_id,
                            runner_id=link.runner_id)
                await self.lifecycle.end(task, TaskState.ERROR, "runner restarted")
        return result


    async def _settle_confirmation(self, task: ActiveTask, item: HeldTask,
                                   result: Reconciliation) -> None:
        """A plan's confirmation, where a reconnect may have lost a frame either way: the
        runner's (it waits; it applies) or the hub's decision, sent again while the runner
        still waits for it. Only a decision a user made is ever sent."""
        if item.awaiting:
            if task.status == TaskState.RUNNING:
                await self.lifecycle.await_confirmation(task)
            elif task.status in (TaskState.CONFIRMED, TaskState.REJECTED):
                result.then_send.append(Decision(
                    task_id=task.task_id, approved=task.status == TaskState.CONFIRMED,
                    message=task.decision))
        elif task.status == TaskState.CONFIRMED:
            await self.lifecycle.resume(task)


def _epoch(stamp: str | None) -> float:
    """'2026-11-28T13:57:44Z' -> seconds since the epoch (0.0 for none)."""
    if not stamp:
        return 0.0
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))
