"""/api/project/{project_id}/schedules: Semaphore's schedules (cron or run-once) of templates.

Guests read, managers create and edit, owners delete (Semaphore's roles). The hub's scheduler
(hub/core/schedules.py) starts the tasks; times are UTC.
"""

from typing import Annotated

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
from hub.core.schedules import BadSchedule, check_cron, format_stamp, parse_stamp
from hub.store import NotFound, Row, utcnow

Cron = Annotated[str, msgspec.Meta(max_length=255)]


class ScheduleRequest(msgspec.Struct):
    template_id: Id
    name: Name
    cron_format: Cron = ""
    active: bool = True
    # Run once at this time (ISO 8601) instead of a cron expression.
    run_at: str | None = None


def schedule_json(row: Row) -> Row:
    return {"id": row["id"], "project_id": row["project_id"],
            "template_id": row["template_id"], "name": row["name"],
            "cron_format": row["cron_format"], "run_at": row["run_at"],
            "active": bool(row["active"]), "last_fire": row["last_fire"],
            "created": row["created"]}


async def _values(request: web.Request, project_id: int) -> dict:
    body = await read_body(request, ScheduleRequest)
    try:
        await hub_of(request).store.get_row("template", project_id, body.template_id)
    except NotFound:
        raise ApiError(400, f"field `template_id`: template {body.template_id} not found in "
                            f"project {project_id}") from None
    run_at = None
    try:
        if body.cron_format:
            if body.run_at:
                raise BadSchedule("field `run_at`: give either `cron_format` or `run_at`, "
                                  "not both")
            check_cron(body.cron_format)
        elif body.run_at:
            run_at = format_stamp(parse_stamp(body.run_at))
        else:
            raise BadSchedule("field `cron_format`: required (or `run_at` for a run-once "
                              "schedule)")
    except BadSchedule as exc:
        raise ApiError(400, str(exc)) from None
    # last_fire starts now: times that passed before this (or before it was changed or
    # switched on again) are not run.
    return {"template_id": body.template_id, "name": body.name,
            "cron_format": body.cron_format, "run_at": run_at, "active": int(body.active),
            "last_fire": None if run_at else utcnow()}


async def list_schedules(request: web.Request) -> web.Response:
    project_id = await project_access(request)
    rows = await hub_of(request).store.list_rows("schedule", project_id)
    return json_response([schedule_json(row) for row in rows])


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
    return json_response(schedule_json(row), status=201)


async def update_schedule(request: web.Request) -> web.Response:
    project_id = await project_access(request, "manager")
    schedule_id = int_param(request, "schedule_id")
    store = hub_of(request).store
    await store.get_row("schedule", project_id, schedule_id)  # 404 before the body's 400s
    await store.update_row("schedule", project_id, schedule_id,
                           await _values(request, project_id))
    return no_content()


async def delete_schedule(request: web.Request) -> web.Response:
    project_id = await project_access(request, "owner")
    await hub_of(request).store.delete_row("schedule", project_id,
                                           int_param(request, "schedule_id"))
    return no_content()
