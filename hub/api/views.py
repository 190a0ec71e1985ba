"""What Semaphore's views (groups of templates) have beyond their CRUD in resources.py:
their order, set at once, and the templates of one view."""

from aiohttp import web

from hub.api import serialize
from hub.api.common import (
    ApiError,
    hub_of,
    int_param,
    json_response,
    no_content,
    project_access,
    read_body,
    sort_params,
)
from hub.api.models import Count
from hub.core.audit import record_request


async def set_positions(request: web.Request) -> web.Response:
    """Semaphore's POST .../views/positions: {"<view id>": position, ...}. Every id must be a
    view of this project; nothing changes unless all are."""
    project_id = await project_access(request, "manager")
    positions = await read_body(request, dict[str, Count])
    store = hub_of(request).store
    own = {row["id"] for row in await store.list_rows("project_view", project_id)}
    wanted: dict[int, int] = {}
    for key, position in positions.items():
        view_id = int(key) if key.isdigit() and len(key) <= 19 else None
        if view_id is None or view_id not in own:
            raise ApiError(400, f"field `{key[:40]}`: no view with that id in project "
                                f"{project_id}")
        wanted[view_id] = position
    for view_id, position in wanted.items():
        await store.update_row("project_view", project_id, view_id, {"position": position})
    if wanted:
        await record_request(request, "view", "View order changed")
    return no_content()


async def view_templates(request: web.Request) -> web.Response:
    """Semaphore's GET .../views/{id}/templates: the templates shown in one view."""
    project_id = await project_access(request)
    store = hub_of(request).store
    view_id = int_param(request, "view_id")
    await store.get_row("project_view", project_id, view_id)  # 404 for another project's
    sort, descending = sort_params(request, "template")
    rows = await store.list_rows("template", project_id, sort, descending)
    return json_response([serialize.template_json(row) for row in rows
                          if row["view_id"] == view_id])


