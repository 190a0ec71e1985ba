"""/api/project/{project_id}/tasks: run a template, follow a task, read its output, stop it."""

import json

import msgspec
from aiohttp import web

from hub.api.common import (
    ApiError,
    current_user,
    hub_of,
    int_param,
    json_response,
    no_content,
    project_access,
    read_body,
)
from hub.api.models import TaskRequest
from hub.api.serialize import output_lines, task_json
from hub.spec import SpecError, parse_arguments, parse_env
from hub.store import NotFound


def _show(request: web.Request, row: dict) -> dict:
    active = hub_of(request).dispatcher.tasks.get(row["id"])
    return task_json(row, active.reason if active is not None else "")


async def list_tasks(request: web.Request) -> web.Response:
    project_id = await project_access(request)
    limit = 200 if request.path.rstrip("/").endswith("/last") else None
    rows = await hub_of(request).store.list_tasks(project_id, limit)
    return json_response([_show(request, row) for row in rows])


async def create_task(request: web.Request) -> web.Response:
    project_id = await project_access(request, "task_runner")
    body = await read_body(request, TaskRequest)
    hub = hub_of(request)
    try:
        template = await hub.store.get_row("template", project_id, body.template_id)
    except NotFound:
        raise ApiError(400, f"field `template_id`: template {body.template_id} not found in "
                            f"project {project_id}") from None
    if body.arguments and not template["allow_override_args_in_task"]:
        raise ApiError(400, f"field `arguments`: template {template['id']} does not allow "
                            "arguments to be set per task (allow_override_args_in_task)")
    try:
        parse_arguments(body.arguments, "field `arguments`")
        parse_env(body.environment, "field `environment`")
    except SpecError as exc:
        raise ApiError(400, str(exc)) from None
    params = {key: getattr(body, key) for key in ("debug", "dry_run", "diff")}
    values = {key: value for key, value in msgspec.structs.asdict(body).items()
              if key in ("playbook", "environment", "arguments", "git_branch", "message",
                         "inventory_id")}
    values["params"] = json.dumps(params)
    row = await hub.tasks.create(project_id, template, values, current_user(request)["id"])
    return json_response(_show(request, row), status=201)


async def _task(request: web.Request) -> dict:
    project_id = await project_access(request)
    return await hub_of(request).store.get_task(int_param(request, "task_id"), project_id)


async def get_task(request: web.Request) -> web.Response:
    return json_response(_show(request, await _task(request)))


async def delete_task(request: web.Request) -> web.Response:
    project_id = await project_access(request, "manager")
    task_id = int_param(request, "task_id")
    hub = hub_of(request)
    if task_id in hub.dispatcher.tasks:
        raise ApiError(400, f"task {task_id} has not ended; stop it before deleting it")
    await hub.store.delete_task(task_id, project_id)
    return no_content()


async def task_output(request: web.Request) -> web.Response:
    row = await _task(request)
    chunks = await hub_of(request).store.read_output(row["id"])
    return json_response(output_lines(row["id"], chunks))


async def task_raw_output(request: web.Request) -> web.Response:
    row = await _task(request)
    chunks = await hub_of(request).store.read_output(row["id"])
    return web.Response(text="".join(chunk["data"] for chunk in chunks),
                        content_type="text/plain", charset="utf-8")


async def stop_task(request: web.Request) -> web.Response:
    project_id = await project_access(request, "task_runner")
    task_id = int_param(request, "task_id")
    hub = hub_of(request)
    await hub.store.get_task(task_id, project_id)
    await hub.tasks.stop(task_id)
    return no_content()
