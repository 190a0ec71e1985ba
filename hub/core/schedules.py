"""Schedules: start a template's task at each time a cron expression (or `run_at`) says.

Each round asks, per active schedule, for the latest due time not after now and later than
the last one handled (`last_fire`, or the schedule's creation). There is at most one: fires
missed while the hub was down, or skipped by a clock jump forward, run once, not once per
missed minute; a clock set back fires nothing until it passes `last_fire` again. The task
row keeps (schedule_id, schedule_due), unique together, so a fire whose task was made just
before the hub stopped (and before last_fire was written) is not made again.
"""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import structlog
from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from hub.core.spec import SpecError
from hub.core.tasks import TaskService
from hub.crypto import SecretsUnavailable
from hub.store import NotFound, Row, Store, StoreError

log = structlog.get_logger("hub.schedules")

# Told of each task a schedule started: (schedule, project, template, task). The hub writes
# the audit event with it (hub/core/audit.py, which this module cannot import: a cycle).
OnFired = Callable[[Row, Row, Row, Row], Awaitable[None]]

STAMP = "%Y-%m-%dT%H:%M:%SZ"


class BadSchedule(ValueError):
    """A cron expression or run_at time that cannot be used (the message names the field)."""


def check_cron(expression: str) -> None:
    """Raises BadSchedule naming `cron_format` when croniter cannot use the expression."""
    # Five fields or a descriptor (@daily), as Semaphore's standard parser takes them:
    # croniter would read a sixth field as seconds, which a 5 s round cannot keep.
    fields = expression.split()
    if (len(fields) != 5 and not expression.startswith("@")) or not croniter.is_valid(
            expression):
        raise BadSchedule(f"field `cron_format`: {expression[:80]!r} is not a cron expression "
                          "(five fields: minute hour day-of-month month day-of-week, or @hourly, "
                          "@daily, @weekly, @monthly, @yearly)")


def parse_stamp(stamp: str) -> datetime:
    """'2026-11-29T06:00:00Z' (Semaphore also sends offsets and fractions) -> UTC datetime."""
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        raise BadSchedule(f"field `run_at`: {stamp[:80]!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).replace(microsecond=0)


def format_stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime(STAMP)


def latest_due(schedule: Row, now: datetime) -> datetime | None:
    """The latest due time <= now and after the last one handled; None if there is none."""
    last = schedule["last_fire"] or schedule["created"]
    after = parse_stamp(last)
    if schedule["type"] != "run_at":
        try:
            # get_prev from just past now: the latest match <= now (a match at now included).
            due = croniter(schedule["cron_format"], now + timedelta(seconds=1)).get_prev(datetime)
        except (CroniterBadCronError, CroniterBadDateError, ValueError):
            return None  # checked by the API; a row from elsewhere is skipped, not fatal
        return due if due > after else None
    if schedule["run_at"]:  # type run_at: once
        due = parse_stamp(schedule["run_at"])
        return due if (schedule["last_fire"] is None and due <= now) else None
    return None


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Scheduler:
    """Creates the due tasks each round (`tick`); `now` is injectable for tests."""

    def __init__(self, store: Store, tasks: TaskService, interval: float = 5.0,
                 now: Callable[[], datetime] = _utc_now, on_fired: OnFired | None = None):
        self.store = store
        self.tasks = tasks
        self.on_fired = on_fired
        self.interval = interval
        self.now = now
        self._loop: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            try:
                await self._loop
            except asyncio.CancelledError:
                pass
            self._loop = None

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # one bad round must not end scheduling for good
                log.exception("schedules.round_failed")
            await asyncio.sleep(self.interval)

    async def tick(self) -> list[int]:
        """One round: the ids of the tasks it created."""
        async with self._lock:  # the loop and a test's call never interleave
            now = self.now()
            created = []
            for schedule in await self.store.list_active_schedules():
                due = latest_due(schedule, now)
                if due is None:
                    continue
                task_id = await self._fire(schedule, format_stamp(due))
                if task_id is not None:
                    created.append(task_id)
            return created

    async def _fire(self, schedule: Row, due: str) -> int | None:
        task_id = None
        fired: tuple[Row, Row, Row] | None = None
        try:
            project = await self.store.get_project(schedule["project_id"])
            template = await self.store.get_row("template", schedule["project_id"],
                                                schedule["template_id"])
            values = {"message": f"scheduled: {schedule['name']}",
                      "schedule_id": schedule["id"], "schedule_due": due}
            row = await self.tasks.create(project, template, values, None)
            task_id = row["id"]
            fired = (project, template, row)
            log.info("schedule.fired", schedule_id=schedule["id"], due=due, task_id=task_id)
        except (NotFound, SpecError, SecretsUnavailable) as exc:
            # It could never run: recorded as handled, or it would be retried every round.
            log.warning("schedule.fire_failed", schedule_id=schedule["id"], due=due,
                        error=str(exc))
        except StoreError as exc:
            # Most likely the unique (schedule_id, schedule_due): made before a restart.
            log.info("schedule.fire_exists", schedule_id=schedule["id"], due=due,
                     error=str(exc))
        await self.store.set_schedule_fire(schedule["id"], due)
        if schedule["type"] == "run_at":
            await self.store.end_schedule(schedule["id"], bool(schedule["delete_after_run"]))
        if fired is not None and self.on_fired is not None:
            await self.on_fired(schedule, *fired)  # after the fire is marked handled
        return task_id

