"""Pushes waiting tasks to runners the moment a slot exists; no polling anywhere.

The dispatcher keeps, in memory, every task that has not ended (`ActiveTask`) and every
connected runner (`RunnerLink`). The database stays the truth: each state change is written
before the runner hears of it, and the in-memory view is rebuilt from it at start. One loop
does all assigning, woken by an event, so two assigns never race for one slot.
"""

import asyncio
import time
from dataclasses import dataclass, field

import structlog

from hub.events import EventBus
from hub.links import LOCAL_RUNNER_ID, RunnerLink
from hub.store import Store
from hub.store.sqlite import utcnow
from protocol.frames import TaskSpec

log = structlog.get_logger("hub.dispatcher")

# The runner enforces task timeouts (it kills the process group and reports `error`). If it
# has not reported this long after a timeout passed, the hub ends the task itself.
TIMEOUT_BACKSTOP_GRACE = 10.0


@dataclass(eq=False)
class ActiveTask:
    task_id: int
    project_id: int
    runner_tag: str
    spec: TaskSpec
    status: str  # waiting | starting | running | stopping
    runner_id: int | None = None
    project_limit: int = 0  # the project's max_parallel_tasks (0: no limit)
    stored_seq: int = 0     # highest output seq committed
    received_seq: int = 0   # highest output seq accepted into the write queue
    output_bytes: int = 0
    output_cut: bool = False
    rejected_by: set[int] = field(default_factory=set)
    reason: str = ""        # why it is still waiting
    started_at: float = 0.0  # wall-clock time the runner accepted it (0: not yet)
    # Sealed to the runner at assign time; never stored or sent in the clear.
    secrets: dict = field(default_factory=dict, repr=False)
    created: float = field(default_factory=time.monotonic)


class Dispatcher:
    def __init__(self, store: Store, events: EventBus, runner_lost_timeout: float):
        self.store = store
        self.events = events
        self.runner_lost_timeout = runner_lost_timeout
        self.tasks: dict[int, ActiveTask] = {}
        self.links: dict[int, RunnerLink] = {}
        # The same links by scope (project id, None: global), so a dispatch looks only at
        # the runners that may take the task.
        self._by_scope: dict[int | None, dict[int, RunnerLink]] = {None: {}}
        self._waiting: dict[int, ActiveTask] = {}  # insertion order = dispatch order
        self._lost_timers: dict[int, asyncio.TimerHandle] = {}
        self._wake = asyncio.Event()
        self._loop_tasks: list[asyncio.Task] = []

    # Life cycle.

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop_tasks = [loop.create_task(self._run()),
                            loop.create_task(self._watch_timeouts())]

    async def stop(self) -> None:
        for task in self._loop_tasks:
            task.cancel()
        await asyncio.gather(*self._loop_tasks, return_exceptions=True)
        for timer in self._lost_timers.values():
            timer.cancel()

    # Tasks.

    def add(self, task: ActiveTask) -> None:
        """Track a task that has not ended; waiting ones join the queue."""
        self.tasks[task.task_id] = task
        if task.status == "waiting":
            self._waiting[task.task_id] = task
            self._wake.set()
        elif task.runner_id is not None and task.runner_id not in self.links:
            # Running on a runner that is not connected (the hub just restarted): give it
            # runner_lost_timeout to come back.
            self._arm_lost_timer(task.runner_id)

    def requeue(self, task: ActiveTask, reason: str = "") -> None:
        self._release_slot(task)
        task.status, task.runner_id, task.reason = "waiting", None, reason
        self._waiting[task.task_id] = task
        self._wake.set()

    def forget(self, task: ActiveTask) -> None:
        """The task has ended: free its slot and let the next one go."""
        self._release_slot(task)
        self._waiting.pop(task.task_id, None)
        self.tasks.pop(task.task_id, None)
        self._wake.set()

    def link_of(self, task: ActiveTask) -> RunnerLink | None:
        return self.links.get(task.runner_id) if task.runner_id is not None else None

    def _release_slot(self, task: ActiveTask) -> None:
        link = self.link_of(task)
        if link is not None:
            link.assigned.discard(task.task_id)

    # Runners.

    def attach(self, link: RunnerLink) -> None:
        old = self.links.get(link.runner_id)
        if old is not None and old is not link:
            old.close(1008, "replaced by a newer session of the same runner")
        self.links[link.runner_id] = link
        self._scope(link.project_id)[link.runner_id] = link
        timer = self._lost_timers.pop(link.runner_id, None)
        if timer is not None:
            timer.cancel()
        self.events.publish("runner", runner_id=link.runner_id, online=True)
        self._wake.set()

    async def detach(self, link: RunnerLink) -> None:
        """The runner's session ended: unaccepted tasks go back to waiting; running ones
        wait runner_lost_timeout for it to return."""
        if self.links.get(link.runner_id) is not link:
            return
        del self.links[link.runner_id]
        self._scope(link.project_id).pop(link.runner_id, None)
        self.events.publish("runner", runner_id=link.runner_id, online=False)
        for task_id in list(link.assigned):
            task = self.tasks.get(task_id)
            if task is not None and task.status == "starting":
                await self.store.update_task(task_id, {"status": "waiting", "runner_id": None})
                self.requeue(task, f"runner `{link.name}` went away before accepting it")
            elif task is not None and task.status == "stopping" and not task.started_at:
                # Stopped before its runner ever accepted it: it never ran.
                await self.end(task, "stopped", "stopped before it started")
        if any(t.runner_id == link.runner_id for t in self.tasks.values()):
            self._arm_lost_timer(link.runner_id)

    def _arm_lost_timer(self, runner_id: int) -> None:
        if runner_id in self._lost_timers:
            return
        loop = asyncio.get_running_loop()
        self._lost_timers[runner_id] = loop.call_later(
            self.runner_lost_timeout,
            lambda: loop.create_task(self._runner_lost(runner_id)))

    async def _runner_lost(self, runner_id: int) -> None:
        self._lost_timers.pop(runner_id, None)
        if runner_id in self.links:
            return
        for task in [t for t in self.tasks.values() if t.runner_id == runner_id]:
            log.warning("task.runner_lost", task_id=task.task_id, runner_id=runner_id)
            await self.end(task, "error", "runner lost")

    async def end(self, task: ActiveTask, status: str, message: str) -> None:
        """End a task from the hub's side (the runner cannot report it)."""
        await self.store.update_task(task.task_id, {"status": status, "status_message": message,
                                                    "end": utcnow()})
        self.forget(task)
        self.events.publish("task", task_id=task.task_id, project_id=task.project_id,
                            status=status, message=message)

    # Timeouts (backstop).

    async def _watch_timeouts(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            for task in list(self.tasks.values()):
                limit = task.spec.timeout_sec
                if not (limit and task.started_at
                        and now > task.started_at + limit + TIMEOUT_BACKSTOP_GRACE):
                    continue
                log.warning("task.timeout.backstop", task_id=task.task_id,
                            runner_id=task.runner_id, timeout_sec=limit)
                link = self.link_of(task)
                if link is not None:
                    link.cancel(task.task_id, f"timed out after {limit} s")
                try:
                    await self.end(task, "error", f"timed out after {limit} s "
                                   "(ended by the hub: the runner did not report it)")
                except Exception:
                    log.exception("task.timeout.backstop.failed", task_id=task.task_id)

    # Assigning.

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._assign_waiting()
            except Exception:
                log.exception("dispatcher.failed")

    async def _assign_waiting(self) -> None:
        for task in list(self._waiting.values()):
            if task.task_id not in self._waiting:
                continue
            if task.project_limit and self._project_busy(task):
                continue
            link = self._choose(task)
            if link is None:
                continue
            del self._waiting[task.task_id]
            link.assigned.add(task.task_id)
            task.status, task.runner_id, task.reason = "starting", link.runner_id, ""
            await self.store.update_task(task.task_id, {
                "status": "starting",
                "runner_id": None if link.runner_id == LOCAL_RUNNER_ID else link.runner_id})
            if task.status == "stopping":
                # Stopped while we wrote: the runner never heard of it, so end it here.
                await self.end(task, "stopped", "stopped before it started")
                continue
            link.assign(task.task_id, task.spec, task.secrets)
            log.info("task.dispatched", task_id=task.task_id, runner_id=link.runner_id)
            self.events.publish("task", task_id=task.task_id, project_id=task.project_id,
                                status="starting", runner_id=link.runner_id)

    def _project_busy(self, task: ActiveTask) -> bool:
        running = sum(1 for t in self.tasks.values()
                      if t.project_id == task.project_id and t.runner_id is not None)
        if running < task.project_limit:
            return False
        task.reason = f"project limit of {task.project_limit} parallel task(s) reached"
        return True

    def _scope(self, project_id: int | None) -> dict[int, RunnerLink]:
        return self._by_scope.setdefault(project_id, {})

    def _choose(self, task: ActiveTask) -> RunnerLink | None:
        """The project's runners before global ones, then the least loaded; records why if
        none. This runs for every dispatch and a hub serves thousands of runners, so it looks
        only at the task's scopes and stops at the first idle runner (none is less loaded)."""
        busy = 0
        tag = task.runner_tag
        for scope in (self._by_scope.get(task.project_id, {}), self._by_scope[None]):
            best: RunnerLink | None = None
            best_load = 0.0
            for link in scope.values():
                if tag and not link.any_tag and tag not in link.tags:
                    continue
                if (task.secrets and not link.public_key) or link.runner_id in task.rejected_by:
                    continue
                if not link.has_free_slot:
                    busy += 1
                    continue
                load = link.load
                if best is None or load < best_load:
                    best, best_load = link, load
                    if load == 0:
                        break
            if best is not None:
                return best
        tag = f" with tag `{task.runner_tag}`" if task.runner_tag else ""
        if not busy:
            keys = " that can receive secrets (registered with a key pair)" if task.secrets else ""
            task.reason = task.reason if task.rejected_by else f"no online runner{tag}{keys}"
        else:
            task.reason = f"all {busy} matching runner(s){tag} busy"
        return None
