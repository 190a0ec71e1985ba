"""/api/projects and /api/project/{project_id}."""

import msgspec
from aiohttp import web

from hub.api.common import (
    ApiError,
    current_user,
    hub_of,
    json_response,
    no_content,
    project_access,
    read_body,
)
from hub.api.models import ProjectRequest
from hub.api.serialize import project_json


async def list_projects(request: web.Request) -> web.Response:
    user = current_user(request)
    rows = await hub_of(request).store.list_projects(None if user["admin"] else user["id"])
    return json_response([project_json(row) for row in rows])


async def create_project(request: web.Request) -> web.Response:
    body = await read_body(request, ProjectRequest)
    values = msgspec.structs.asdict(body)
    values.pop("demo")
    row = await hub_of(request).store.create_project(values, current_user(request)["id"])
    return json_response(project_json(row), status=201)


async def get_project(request: web.Request) -> web.Response:
    project_id = await project_access(request)
    return json_response(project_json(await hub_of(request).store.get_project(project_id)))


async def update_project(request: web.Request) -> web.Response:
    # Semaphore's CanUpdateProject: owners only (managers manage the project's resources,
    # not the project).
    project_id = await project_access(request, "owner")
    body = await read_body(request, ProjectRequest)
    values = msgspec.structs.asdict(body)
    values.pop("demo")
    await hub_of(request).store.update_project(project_id, values)
    return no_content()


async def delete_project(request: web.Request) -> web.Response:
    project_id = await project_access(request, "owner")
    hub = hub_of(request)
    unfinished = hub.lifecycle.unfinished(project_id)
    if unfinished:
        raise ApiError(400, f"project {project_id} has unfinished tasks {unfinished}; "
                            "stop them first")
    await hub.store.delete_project(project_id)
    return no_content()
