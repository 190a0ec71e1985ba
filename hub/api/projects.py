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
    require_project_creator,
)
from hub.api.models import ProjectRequest
from hub.api.serialize import project_json
from hub.context import PROJECT
from hub.core import audit


async def list_projects(request: web.Request) -> web.Response:
    user = current_user(request)
    rows = await hub_of(request).store.list_projects(None if user["admin"] else user["id"])
    return json_response([project_json(row) for row in rows])


async def create_project(request: web.Request) -> web.Response:
    require_project_creator(request)
    body = await read_body(request, ProjectRequest)
    values = msgspec.structs.asdict(body)
    values.pop("demo")
    row = await hub_of(request).store.create_project(values, current_user(request)["id"])
    await audit.record_request(request, "project", "Project created", object_id=row["id"],
                               object_name=row["name"], project=row)
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
    # The event carries the project's new name (the row was read before the change).
    project = request[PROJECT] | {"name": body.name}
    await audit.record_request(request, "project", f"Project {body.name} updated",
                               object_id=project_id, object_name=body.name, project=project)
    return no_content()


async def delete_project(request: web.Request) -> web.Response:
    project_id = await project_access(request, "owner")
    hub = hub_of(request)
    unfinished = hub.lifecycle.unfinished(project_id)
    if unfinished:
        raise ApiError(400, f"project {project_id} has unfinished tasks {unfinished}; "
                            "stop them first")
    project = request[PROJECT]  # read by project_access, before the delete
    await hub.store.delete_project(project_id)
    # Its events stay (project_id becomes NULL, the name stays): admins still see them.
    await audit.record_request(request, "project", f"Project {project['name']} deleted",
                               object_id=project_id, object_name=project["name"],
                               project=audit.gone(project))
    return no_content()
