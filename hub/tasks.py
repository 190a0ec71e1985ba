"""Task life cycle on the hub: create, stop, restore after a restart, reconcile a runner's hello.

The database is the truth about tasks, the runner the truth about its processes. When a runner
(re)connects, its hello lists what it holds and `reconcile` settles every difference.
"""

import calendar
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from hub.config import HubConfig
from hub.crypto import SecretCipher, SecretsUnavailable
from hub.dispatcher import ActiveTask, Dispatcher
from hub.events import EventBus
from hub.links import LOCAL_RUNNER_ID, RunnerLink
from hub.output_writer import OutputWriter
from hub.spec import SpecError, resolve_task
from hub.store import Store
from hub.store.sqlite import utcnow
from protocol.frames import Cancel, HeldTask, HubFrame, TaskAck

log = structlog.get_logger("hub.tasks")


@dataclass
class Reconciliation:
    acked: list[TaskAck] = field(default_factory=list)
    then_send: list[HubFrame] = field(default_factory=list)


class TaskService:
    def __init__(self, store: Store, dispatcher: Dispatcher, writer: OutputWriter,
                 events: EventBus, config: HubConfig, cipher: SecretCipher):
        self.cipher = cipher
        self.store = store
        self.dispatcher = dispatcher
        self.writer = writer
        self.events = events
        self.config = config

    async def restore(self) -> None:
        """Rebuild the in-memory view of unfinished tasks from the database at start."""
        for row in await self.store.list_unfinished_tasks():
            local = row["runner_id"] is None and row["status"] != "waiting"
            if local:
                # It ran inside this hub's process, which is gone: nobody holds it now.
                await self._end_row(row, "error", "hub restarted while the task ran")
                continue
            try:
                template = await self.store.get_row("template", row["project_id"],
                                                    row["template_id"])
                spec, secrets = await resolve_task(self.store, self.cipher, row, template,
                                                   self.config.max_task_duration_sec)
            except (SpecError, SecretsUnavailable) as exc:
                await self._end_row(row, "error", str(exc))
                continue
            task = ActiveTask(task_id=row["id"], project_id=row["project_id"],
                              runner_tag=template["runner_tag"], spec=spec,
                              status=row["status"], runner_id=row["runner_id"],
                              stored_seq=row["last_seq"], received_seq=row["last_seq"],
                              output_bytes=row["output_bytes"],
                              project_limit=await self._project_limit(row["project_id"]),
                              started_at=_epoch(row["start"]), secrets=secrets)
            self.dispatcher.add(task)
        log.info("tasks.restored", unfinished=len(self.dispatcher.tasks))

    async def _project_limit(self, project_id: int) -> int:
        return (await self.store.get_project(project_id))["max_parallel_tasks"]

    async def _end_row(self, row: dict[str, Any], status: str, message: str) -> None:
        await self.store.update_task(row["id"], {"status": status, "status_message": message})
        log.warning("task.ended_at_start", task_id=row["id"], status=status, reason=message)

    async def create(self, project: dict[str, Any], template: dict[str, Any],
                     values: dict[str, Any], user_id: int | None) -> dict[str, Any]:
        """Store a new task and queue it; raises SpecError if it could never run."""
        project_id = project["id"]
        draft = {**values, "project_id": project_id}
        spec, secrets = await resolve_task(self.store, self.cipher, draft, template,
                                           self.config.max_task_duration_sec)
        row = await self.store.create_task({**values, "project_id": project_id,
                                            "template_id": template["id"],
                                            "user_id": user_id, "status": "waiting"})
        self.dispatcher.add(ActiveTask(task_id=row["id"], project_id=project_id,
                                       runner_tag=template["runner_tag"], spec=spec,
                                       status="waiting",
                                       project_limit=project["max_parallel_tasks"],
                                       secrets=secrets))
        log.info("task.created", task_id=row["id"], project_id=project_id,
                 template_id=template["id"])
        self.events.publish("task", task_id=row["id"], project_id=project_id, status="waiting")
        return row

    async def stop(self, task_id: int, reason: str = "stopped by user") -> None:
        task = self.dispatcher.tasks.get(task_id)
        if task is None:
            return  # already ended: stopping is idempotent
        if task.status == "waiting":
            await self.dispatcher.end(task, "stopped", "stopped before it started")
            return
        if task.status != "stopping":
            task.status = "stopping"
            await self.store.update_task(task_id, {"status": "stopping"})
            self.events.publish("task", task_id=task_id, project_id=task.project_id,
                                status="stopping")
        link = self.dispatcher.link_of(task)
        if link is not None:
            link.cancel(task_id, reason)
        # Without a link the cancel goes out when the runner reconnects (see reconcile).

    async def reconcile(self, link: RunnerLink, held: list[HeldTask]) -> Reconciliation:
        """Settle what the runner holds against what the database says it runs."""
        await self.writer.flush()  # stored_seq must be what is really committed
        result = Reconciliation()
        held_ids = set()
        for item in held:
            held_ids.add(item.task_id)
            task = self.dispatcher.tasks.get(item.task_id)
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
            if task.status == "starting":
                task.status, task.started_at = "running", time.time()
                await self.store.update_task(task.task_id, {"status": "running",
                                                            "start": utcnow()})
            elif task.status == "stopping" and item.state == "running":
                result.then_send.append(Cancel(task_id=task.task_id, reason="stopped by user"))
        for task in [t for t in self.dispatcher.tasks.values()
                     if t.runner_id == link.runner_id and t.task_id not in held_ids]:
            if task.status == "starting":
                await self.store.update_task(task.task_id, {"status": "waiting",
                                                            "runner_id": None})
                self.dispatcher.requeue(task, "its runner restarted before accepting it")
            elif link.runner_id != LOCAL_RUNNER_ID:
                log.warning("task.runner_restarted", task_id=task.task_id,
                            runner_id=link.runner_id)
                await self.dispatcher.end(task, "error", "runner restarted")
        return result


def _epoch(stamp: str | None) -> float:
    """'2026-11-28T13:57:44Z' -> seconds since the epoch (0.0 for none)."""
    if not stamp:
        return 0.0
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))
