"""Pushes waiting tasks to runners the moment a slot exists; no polling anywhere.

The dispatcher keeps the queue of waiting tasks and every connected runner (`RunnerLink`)
with its slots. Status changes are the life cycle's (`hub/core/lifecycle.py`): the dispatcher
asks for them (a task given to a runner, a runner gone) and follows them, as the life
cycle's listener, in its queue and slots. One loop does all assigning, woken by an event, so
two assigns never race for one slot.
"""

import asyncio
import time

import structlog

from hub.core.events import EventBus
from hub.core.lifecycle import FINAL, ActiveTask, TaskLifecycle, TaskState
from hub.core.links import LOCAL_RUNNER_ID, RunnerLink

log = structlog.get_logger("hub.dispatcher")

# The runner enforces task timeouts (it kills the process group and reports `error`). If it
# has not reported this long after a timeout passed, the hub ends the task itself.
TIMEOUT_BACKSTOP_GRACE = 10.0


class Dispatcher:
    """Matches waiting tasks to runners. Invariant: a task is in `_waiting` exactly while its
    status is `waiting`, and in a link's `assigned` exactly while it is given to that runner
    and not ended; both follow the life cycle's moves (`_follow`)."""

    def __init__(self, lifecycle: TaskLifecycle, events: EventBus, runner_lost_timeout: float):
        self.lifecycle = lifecycle
        self.events = events
        self.runner_lost_timeout = runner_lost_timeout
        self.links: dict[int, RunnerLink] = {}
        # The same links by scope (project id, None: global), so a dispatch looks only at
        # the runners that may take the task.
        self._by_scope: dict[int | None, dict[int, RunnerLink]] = {None: {}}
        self._waiting: dict[int, ActiveTask] = {}  # insertion order = dispatch order
        self._lost_timers: dict[int, asyncio.TimerHandle] = {}
        self._wake = asyncio.Event()
        self._loop_tasks: list[asyncio.Task] = []
        lifecycle.listener = self._follow

    # Life cycle of the dispatcher itself.

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

    # Following the tasks' moves.

    def _follow(self, task: ActiveTask, before: TaskState, before_runner: int | None) -> None:
        if before_runner is not None and (task.runner_id != before_runner
                                          or task.status in FINAL):
            link = self.links.get(before_runner)
            if link is not None:
                link.assigned.discard(task.task_id)
            self._wake.set()  # a slot is free
        if task.status == TaskState.WAITING:
            self._waiting.setdefault(task.task_id, task)
            self._wake.set()
        else:
            self._waiting.pop(task.task_id, None)
        if (task.status not in FINAL and task.runner_id is not None
                and task.runner_id not in self.links):
            # Held by a runner that is not connected (the hub just restarted): give it
            # runner_lost_timeout to come back.
            self._arm_lost_timer(task.runner_id)

    def link_of(self, task: ActiveTask) -> RunnerLink | None:
        return self.links.get(task.runner_id) if task.runner_id is not None else None

    def link(self, runner_id: int) -> RunnerLink | None:
        return self.links.get(runner_id)

    def relabel(self, runner_id: int, name: str, tags: list[str]) -> None:
        """An admin renamed or retagged a runner: its live session serves the new tags now."""
        link = self.links.get(runner_id)
        if link is not None:
            link.name, link.tags = name or link.name, frozenset(tags)
            self._wake.set()

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
        self.events.publish("runner", runner_id=link.runner_id, project_id=link.project_id,
                            online=True, active=True)
        self._wake.set()

    async def detach(self, link: RunnerLink, active: bool = True) -> None:
        """The runner's session ended: unaccepted tasks go back to waiting; running ones
        wait runner_lost_timeout for it to return. `active`: False when it was cut off for
        being disabled or deleted (what live views show)."""
        if self.links.get(link.runner_id) is not link:
            return
        del self.links[link.runner_id]
        self._scope(link.project_id).pop(link.runner_id, None)
        self.events.publish("runner", runner_id=link.runner_id, project_id=link.project_id,
                            online=False, active=active)
        lifecycle = self.lifecycle
        for task_id in list(link.assigned):
            task = lifecycle.get(task_id)
            if task is not None and task.status == TaskState.STARTING:
                await lifecycle.requeue(task, f"runner `{link.name}` went away before "
                                              "accepting it")
            elif task is not None and task.status == TaskState.STOPPING and not task.started_at:
                # Stopped before its runner ever accepted it: it never ran.
                await lifecycle.end(task, TaskState.STOPPED, "stopped before it started")
        if lifecycle.on_runner(link.runner_id):
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
        for task in self.lifecycle.on_runner(runner_id):
            log.warning("task.runner_lost", task_id=task.task_id, runner_id=runner_id)
            await self.lifecycle.end(task, TaskState.ERROR, "runner lost")

    # Timeouts (backstop).

    async def _watch_timeouts(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            for task in list(self.lifecycle.tasks.values()):
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
                    await self.lifecycle.end(task, TaskState.ERROR, f"timed out after {limit} s "
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

    def claim(self, task: ActiveTask) -> RunnerLink | None:
        """A runner for a task being created, its slot held (`reserved`) until the task is
        stored starting on it; None: the task is stored waiting and queued. Only when no
        task waits (a new one never overtakes the queue) and its project sets no limit of
        parallel tasks (tasks being stored would not count against it)."""
        if self._waiting or task.project_limit:
            return None
        link = self._choose(task)
        if link is not None:
            link.reserved += 1
        return link

    async def assign_claimed(self, task: ActiveTask, link: RunnerLink) -> None:
        """Send a task stored starting on `link` (claim) its assign; back to the queue if
        the runner went away while it was stored."""
        if self.links.get(link.runner_id) is not link or task.status != TaskState.STARTING:
            if task.status == TaskState.STARTING:
                await self.lifecycle.requeue(task, f"runner `{link.name}` went away before "
                                                   "accepting it")
            return
        link.assigned.add(task.task_id)
        self._send_assign(task, link)

    def _send_assign(self, task: ActiveTask, link: RunnerLink) -> None:
        link.assign(task.task_id, task.spec, task.secrets)
        if task.created_at:
            self.lifecycle.telemetry.dispatch_assigned.observe(
                max(time.time() - task.created_at, 0.0))
        log.info("task.dispatched", task_id=task.task_id, runner_id=link.runner_id)

    async def _assign_waiting(self) -> None:
        # Kinds of task (scope, tag, app, secrets) no runner took in this pass: the tasks of
        # a kind after the first that found none are not offered again (a long queue would
        # otherwise scan the runners once per task at every freed slot).
        unplaced: dict[tuple, str] = {}
        for task in list(self._waiting.values()):
            if task.task_id not in self._waiting:
                continue
            reason = task.reason
            link = None
            kind = (task.project_id, task.runner_tag, task.spec.app, task.secrets is not None)
            if kind in unplaced and not task.rejected_by:
                task.reason = unplaced[kind]
            elif not (task.project_limit and self._project_busy(task)):
                link = self._choose(task)
                if link is None and not task.rejected_by:
                    unplaced[kind] = task.reason
            if link is None:
                if task.reason != reason:  # live views show why it waits
                    self.lifecycle.publish(task)
                continue
            link.assigned.add(task.task_id)
            stored_runner = None if link.runner_id == LOCAL_RUNNER_ID else link.runner_id
            if not await self.lifecycle.start(task, link.runner_id, stored_runner):
                link.assigned.discard(task.task_id)
                continue
            if task.status == TaskState.STOPPING:
                # Stopped while we wrote: the runner never heard of it, so end it here.
                await self.lifecycle.end(task, TaskState.STOPPED, "stopped before it started")
                continue
            self._send_assign(task, link)

    def _project_busy(self, task: ActiveTask) -> bool:
        running = sum(1 for t in self.lifecycle.tasks.values()
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
        busy = cannot_run = 0
        tag, app = task.runner_tag, task.spec.app
        for scope in (self._by_scope.get(task.project_id, {}), self._by_scope[None]):
            best: RunnerLink | None = None
            best_load = 0.0
            for link in scope.values():
                if tag and not link.any_tag and tag not in link.tags:
                    continue
                if not link.can_run(app):
                    cannot_run += 1
                    continue
                if ((task.secrets is not None and not link.public_key)
                        or link.runner_id in task.rejected_by):
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
        if not busy and cannot_run and not task.rejected_by:
            task.reason = f"no online runner{tag} can run `{app}`"
        elif not busy:
            keys = (" that can receive secrets (registered with a key pair)"
                    if task.secrets is not None else "")
            task.reason = task.reason if task.rejected_by else f"no online runner{tag}{keys}"
        else:
            task.reason = f"all {busy} matching runner(s){tag} busy"
        return None
