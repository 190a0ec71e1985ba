"""Semaphore's event log (the audit trail): GET /api/events, /api/events/last and the same
under /api/project/{project_id}. Events are written by hub/core/audit.py.

Who sees what: a project's events, any member of it (guests too: the log only names what
changed, never a secret); the global list, the events of every project the user is a member
of. Admins see every event, with those of no project (users, global runners) and those of
deleted projects (their names were copied in when written).
"""

from aiohttp import web

from hub.api.common import current_user, hub_of, json_response, project_access
from hub.core.audit import event_json

# Semaphore's /events/last: the newest 200.
LAST_EVENTS = 200


def _limit(request: web.Request) -> int | None:
    return LAST_EVENTS if request.path.rstrip("/").endswith("/last") else None


async def list_events(request: web.Request) -> web.Response:
    user = current_user(request)
    store = hub_of(request).store
    project_ids = None
    if not user["admin"]:
        project_ids = [row["id"] for row in await store.list_projects(user["id"])]
    rows = await store.list_events(project_ids, _limit(request))
    return json_response([event_json(row) for row in rows])


async def list_project_events(request: web.Request) -> web.Response:
    project_id = await project_access(request)  # 404 for non-members
    rows = await hub_of(request).store.list_events([project_id], _limit(request))
    return json_response([event_json(row) for row in rows])
