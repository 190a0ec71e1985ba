"""/api/project/{project_id}/schedules: Semaphore's schedules (cron or run-once) of templates.

Guests read, managers create and edit, owners delete (Semaphore's roles). The hub's scheduler
(hub/core/schedules.py) starts the tasks; times are UTC.
"""

from typing import Annotated, Literal

import msgspec
from aiohttp import web

from hub.api.common import (
    ApiError,
    hub_of,
    int_param,
    json_response,
    no_content,
    project_access,
    read_body,
)
from hub.api.models import Id, Name
from hub.core import audit
from hub.core.schedules import BadSchedule, check_cron, format_stamp, parse_stamp
from hub.store import NotFound, Row, utcnow

Cron = Annotated[str, msgspec.Meta(max_length=255)]


class ScheduleRequest(msgspec.Struct):
    template_id: Id
    name: Name
    cron_format: Cron = ""
    active: bool = True
    # Semaphore's types: "" (cron) or "run_at" (once, at `run_at`, ISO 8601).
    type: Literal["", "run_at"] = ""
    run_at: str | None = None
    # A run_at schedule that has fired is switched off, or deleted with this.
    delete_after_run: bool = False


class CronRequest(msgspec.Struct):
    cron_format: Cron


class ActiveRequest(msgspec.Struct):
    active: bool


async def _record(request: web.Request, schedule_id: int, name: str, done: str) -> None:
    await audit.record_request(request, "schedule", f"Schedule {name} {done}",
                               object_id=schedule_id, object_name=name)


def schedule_json(row: Row) -> Row:
    return {"id": row["id"], "project_id": row["project_id"],
            "template_id": row["template_id"], "name": row["name"],
            "cron_format": row["cron_format"], "type": row["type"], "run_at": row["run_at"],
            "delete_after_run": bool(row["delete_after_run"]), "active": bool(row["active"]),
            "last_fire": row["last_fire"], "created": row["created"]}


async def _values(request: web.Request, project_id: int) -> dict:
    body = await read_body(request, ScheduleRequest)
    try:
        await hub_of(request).store.get_row("template", project_id, body.template_id)
    except NotFound:
        raise ApiError(400, f"field `template_id`: template {body.template_id} not found in "
                            f"project {project_id}") from None
    run_at = None
    # Without a type, a run_at and no cron expression means once (older clients).
    once = body.type == "run_at" or (not body.cron_format and body.run_at is not None)
    try:
        if once:
            if not body.run_at:
                raise BadSchedule("field `run_at`: required for a schedule of type run_at")
            run_at = format_stamp(parse_stamp(body.run_at))
        elif not body.cron_format:
            raise BadSchedule("field `cron_format`: required (or `run_at` with type run_at "
                              "for a run-once schedule)")
        else:
            check_cron(body.cron_format)
    except BadSchedule as exc:
        raise ApiError(400, str(exc)) from None
    # last_fire starts now: times that passed before this (or before it was changed or
    # switched on again) are not run.
    return {"template_id": body.template_id, "name": body.name,
            "cron_format": "" if once else body.cron_format, "type": "run_at" if once else "",
            "run_at": run_at, "delete_after_run": int(body.delete_after_run),
            "active": int(body.active), "last_fire": None if once else utcnow()}


async def list_schedules(request: web.Request) -> web.Response:
    project_id = await project_access(request)
    rows = await hub_of(request).store.list_rows("schedule", project_id)
    return json_response([schedule_json(row) for row in rows])


async def template_schedules(request: web.Request) -> web.Response:
    """Semaphore's GET .../templates/{template_id}/schedules."""
    project_id = await project_access(request)
    store = hub_of(request).store
    template = await store.get_row("template", project_id, int_param(request, "template_id"))
    rows = await store.list_rows("schedule", project_id)
    return json_response([schedule_json(row) for row in rows
                          if row["template_id"] == template["id"]])


async def get_schedule(request: web.Request) -> web.Response:
    project_id = await project_access(request)
    row = await hub_of(request).store.get_row("schedule", project_id,
                                              int_param(request, "schedule_id"))
    return json_response(schedule_json(row))


async def create_schedule(request: web.Request) -> web.Response:
    project_id = await project_access(request, "manager")
    values = await _values(request, project_id)
    row = await hub_of(request).store.create_row("schedule", project_id,
                                                 {**values, "created": utcnow()})
    await _record(request, row["id"], row["name"], "created")
    return json_response(schedule_json(row), status=201)


async def update_schedule(request: web.Request) -> web.Response:
    project_id = await project_access(request, "manager")
    schedule_id = int_param(request, "schedule_id")
    store = hub_of(request).store
    await store.get_row("schedule", project_id, schedule_id)  # 404 before the body's 400s
    values = await _values(request, project_id)
    await store.update_row("schedule", project_id, schedule_id, values)
    await _record(request, schedule_id, values["name"], "updated")
    return no_content()


async def delete_schedule(request: web.Request) -> web.Response:
    project_id = await project_access(request, "owner")
    store = hub_of(request).store
    row = await store.get_row("schedule", project_id, int_param(request, "schedule_id"))
    await store.delete_row("schedule", project_id, row["id"])
    await _record(request, row["id"], row["name"], "deleted")
    return no_content()


async def set_active(request: web.Request) -> web.Response:
    """Semaphore's PUT .../schedules/{id}/active {"active": bool}."""
    project_id = await project_access(request, "manager")
    schedule_id = int_param(request, "schedule_id")
    store = hub_of(request).store
    row = await store.get_row("schedule", project_id, schedule_id)
    body = await read_body(request, ActiveRequest)
    values: dict = {"active": int(body.active)}
    if body.active and not row["active"] and row["type"] != "run_at":
        values["last_fire"] = utcnow()  # the times it was off are not run
    await store.update_row("schedule", project_id, schedule_id, values)
    await _record(request, schedule_id, row["name"],
                  "activated" if body.active else "deactivated")
    return no_content()


async def validate_cron(request: web.Request) -> web.Response:
    """Semaphore's POST .../schedules/validate {"cron_format"}: 200, or 400 naming it."""
    await project_access(request)
    body = await read_body(request, CronRequest)
    try:
        check_cron(body.cron_format)
    except BadSchedule as exc:
        raise ApiError(400, str(exc)) from None
    return json_response({})
