"""Semaphore's project backup and restore: GET /api/project/{id}/backup (managers, as
Semaphore's CanManageProjectResources) and POST /api/projects/restore (those who may create
projects: admins, or anyone with non_admin_can_create_project; the restorer owns it). The
format is in hub/api/backup_format.py."""

import json

from aiohttp import web

from hub.api.backup_format import export_project
from hub.api.backup_restore import restore_project
from hub.api.common import (
    ApiError,
    current_user,
    hub_of,
    json_response,
    project_access,
    require_project_creator,
)
from hub.api.serialize import project_json
from hub.core.audit import record_request


async def get_backup(request: web.Request) -> web.Response:
    project_id = await project_access(request, "manager")
    backup = await export_project(hub_of(request), project_id)
    response = json_response(backup)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="project-{project_id}-backup.json"')
    return response


async def restore(request: web.Request) -> web.Response:
    require_project_creator(request)
    raw = await request.read()  # the app's client_max_size bounds it
    if not raw.strip():
        raise ApiError(400, "request body must be a JSON object (a Semaphore backup)")
    try:
        backup = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {str(exc)[:200]}") from None
    project = await restore_project(hub_of(request), backup, current_user(request))
    await record_request(request, "project", f"Project {project['name']} restored from a "
                         "backup", object_id=project["id"], object_name=project["name"],
                         project=project)
    # Semaphore answers the new project, with 200.
    return json_response(project_json(project))
