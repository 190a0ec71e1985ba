"""Schedules: start a template's task at each time a cron expression (or `run_at`) says.

Each round asks, per active schedule, for the latest due time not after now and later than
the last one handled (`last_fire`, or the schedule's creation). There is at most one: fires
missed while the hub was down, or skipped by a clock jump forward, run once, not once per
missed minute; a clock set back fires nothing until it passes `last_fire` again. The task
row keeps (schedule_id, schedule_due), unique together, so a fire whose task was made just
before the hub stopped (and before last_fire was written) is not made again.

Cron fields are read in the hub's `schedule.timezone` (Semaphore's setting; "0 3 * * *" is
03:00 there, across DST changes); every stored or shown time is UTC.

A fire whose task cannot be made (its repository was deleted, a key cannot be decrypted) is
not used up: it is logged once, shown in the schedule's JSON (`last_error`, ours), and tried
again each round until it succeeds or a later due time takes its place. Semaphore only logs
it, and a run-once schedule would otherwise be spent without ever having run.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

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


# Each field's name and how many values it has: a step beyond that picks one value at most,
# and croniter reads a far larger one as something else (`*/500` in minutes fires hourly).
FIELDS = (("minute", 60), ("hour", 24), ("day of month", 31), ("month", 12),
          ("day of week", 7))


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
    if expression.startswith("@"):
        return
    for field, (name, size) in zip(fields, FIELDS, strict=True):
        for part in field.split(","):
            _, _, step = part.partition("/")
            if step and (not step.isdigit() or not 0 < int(step) <= size):
                raise BadSchedule(f"field `cron_format`: the {name} step /{step[:20]} is "
                                  f"outside 1-{size}")


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


def _cron_step(expression: str, start: datetime, zone: tzinfo, forward: bool) -> datetime | None:
    """The next (or previous) match of the expression from `start`, read in `zone`, in UTC."""
    try:
        matches = croniter(expression, start.astimezone(zone))
        for _ in range(3):
            found = matches.get_next(datetime) if forward else matches.get_prev(datetime)
            if not _repeated_hour(found, expression, zone):
                return found.astimezone(UTC)
    except (CroniterBadCronError, CroniterBadDateError, ValueError):
        pass  # checked by the API; a row from elsewhere is skipped, not fatal
    return None


def _repeated_hour(found: datetime, expression: str, zone: tzinfo) -> bool:
    """True for the second pass of a wall time a DST change repeats (02:30 twice in autumn)
    when the expression names its hours: "30 2 * * *" runs once that night, as with cron;
    an hourly or every-minute one runs on through both passes."""
    local = found.astimezone(zone)
    if not local.fold or local.replace(fold=0).utcoffset() == local.utcoffset():
        return False
    if expression.startswith("@"):
        return expression != "@hourly"
    return expression.split()[1] != "*"


def latest_due(schedule: Row, now: datetime, zone: tzinfo = UTC) -> datetime | None:
    """The latest due time <= now and after the last one handled; None if there is none."""
    last = schedule["last_fire"] or schedule["created"]
    after = parse_stamp(last)
    if schedule["type"] != "run_at":
        # get_prev from just past now: the latest match <= now (a match at now included).
        due = _cron_step(schedule["cron_format"], now + timedelta(seconds=1), zone, False)
        return due if due is not None and due > after else None
    if schedule["run_at"]:  # type run_at: once
        due = parse_stamp(schedule["run_at"])
        return due if (schedule["last_fire"] is None and due <= now) else None
    return None


def next_run(schedule: Row, now: datetime, zone: tzinfo = UTC) -> datetime | None:
    """When the schedule fires next (UTC): None when it is off or a run-once that has fired.
    A due time not yet handled (a fire that failed and is retried) is next, at once."""
    if not schedule["active"]:
        return None
    if schedule["type"] == "run_at":
        if schedule["last_fire"] is not None or not schedule["run_at"]:
            return None
        return parse_stamp(schedule["run_at"])
    pending = latest_due(schedule, now, zone)
    if pending is not None:
        return pending
    after = max(now, parse_stamp(schedule["last_fire"] or schedule["created"]))
    return _cron_step(schedule["cron_format"], after, zone, True)


@dataclass(frozen=True)
class FireFailure:
    """A due time whose task could not be made: retried each round, shown in the API."""

    due: str
    error: str
    since: str

    def json(self) -> dict[str, str]:
        return {"due": self.due, "error": self.error, "since": self.since}


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Scheduler:
    """Creates the due tasks each round (`tick`); `now` is injectable for tests."""

    def __init__(self, store: Store, tasks: TaskService, interval: float = 5.0,
                 now: Callable[[], datetime] = _utc_now, zone: tzinfo = UTC,
                 on_fired: OnFired | None = None):
        self.store = store
        self.tasks = tasks
        self.on_fired = on_fired
        self.interval = interval
        self.now = now
        self.zone = zone
        # Schedule id -> its failing fire. In memory: after a restart the first round tries
        # (and, if it still fails, records) it again, as its last_fire was not moved.
        self.failures: dict[int, FireFailure] = {}
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
            active = await self.store.list_active_schedules()
            # A deleted or switched-off schedule's failure is no longer news.
            ids = {schedule["id"] for schedule in active}
            self.failures = {key: value for key, value in self.failures.items() if key in ids}
            for schedule in active:
                due = latest_due(schedule, now, self.zone)
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
            row = await self.tasks.create(project, template, values, None,
                                          source="schedule")
            task_id = row["id"]
            fired = (project, template, row)
            log.info("schedule.fired", schedule_id=schedule["id"], due=due, task_id=task_id)
        except (NotFound, SpecError, SecretsUnavailable) as exc:
            # Not handled: last_fire stays, so the next round tries again (until it works or
            # a later due time replaces this one). Logged when it starts or changes, not
            # every round.
            self._failed(schedule["id"], due, str(exc) or type(exc).__name__)
            return None
        except StoreError as exc:
            # Most likely the unique (schedule_id, schedule_due): made before a restart.
            log.info("schedule.fire_exists", schedule_id=schedule["id"], due=due,
                     error=str(exc))
        if self.failures.pop(schedule["id"], None) is not None:
            log.info("schedule.fire_recovered", schedule_id=schedule["id"], due=due)
        await self.store.set_schedule_fire(schedule["id"], due)
        if schedule["type"] == "run_at":
            await self.store.end_schedule(schedule["id"], bool(schedule["delete_after_run"]))
        if fired is not None and self.on_fired is not None:
            await self.on_fired(schedule, *fired)  # after the fire is marked handled
        return task_id

    def _failed(self, schedule_id: int, due: str, error: str) -> None:
        known = self.failures.get(schedule_id)
        if known is not None and (known.due, known.error) == (due, error):
            return
        log.warning("schedule.fire_failed", schedule_id=schedule_id, due=due, error=error)
        since = known.since if known is not None else format_stamp(self.now())
        self.failures[schedule_id] = FireFailure(due, error, since)
