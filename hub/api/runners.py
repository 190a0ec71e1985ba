"""Runners: registration by the runner itself, and management by admins and project managers.

Global runners (`/api/runners`) are admin-only; project runners
(`/api/project/{project_id}/runners`) need the project's owner or manager role.
"""

import json

from aiohttp import web

from hub.api.common import (
    ApiError,
    hub_of,
    int_param,
    json_response,
    no_content,
    project_access,
    read_body,
    require_admin,
)
from hub.api.models import RunnerActive, RunnerRegistration, RunnerRequest
from hub.api.serialize import runner_json
from hub.security import hash_token, new_token, tokens_equal
from hub.store import NotFound

# Runner registration (the runner's own calls).


async def register_runner(request: web.Request) -> web.Response:
    body = await read_body(request, RunnerRegistration)
    hub = hub_of(request)
    expected = hub.config.runner_registration_token
    if not expected:
        raise ApiError(401, "runner registration is disabled on this hub "
                            "(runner_registration_token is not set)")
    if not tokens_equal(body.registration_token, expected):
        raise ApiError(401, "wrong registration token")
    token = new_token()
    row = await hub.store.create_runner({
        "project_id": None, "name": body.name, "token_hash": hash_token(token),
        "tags": json.dumps(body.tags), "webhook": body.webhook,
        "max_parallel_tasks": body.max_parallel_tasks, "public_key": body.public_key})
    return json_response({"token": token, "id": row["id"]})


async def unregister_self(request: web.Request) -> web.Response:
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    hub = hub_of(request)
    runner = await hub.store.find_runner_by_token_hash(hash_token(token)) if token else None
    if runner is None:
        raise ApiError(401, "invalid runner token")
    await _delete(hub, runner["id"])
    return no_content()


# Management.


async def _project_scope(request: web.Request) -> int | None:
    """None for global runners (admin only), else the project id (owner/manager)."""
    if "project_id" not in request.match_info:
        require_admin(request)
        return None
    return await project_access(request, "manager")


async def _runner_in_scope(request: web.Request) -> tuple[dict, int | None]:
    project_id = await _project_scope(request)
    runner = await hub_of(request).store.get_runner(int_param(request, "runner_id"))
    if runner["project_id"] != project_id:
        raise NotFound(f"runner {runner['id']} not found")
    return runner, project_id


def _show(request: web.Request, row: dict) -> dict:
    link = hub_of(request).dispatcher.links.get(row["id"])
    return runner_json(row, link is not None, link)


async def list_runners(request: web.Request) -> web.Response:
    project_id = await _project_scope(request)
    rows = await hub_of(request).store.list_runners(project_id)
    return json_response([_show(request, row) for row in rows])


async def create_runner(request: web.Request) -> web.Response:
    project_id = await _project_scope(request)
    body = await read_body(request, RunnerRequest)
    token = new_token()
    row = await hub_of(request).store.create_runner({
        "project_id": project_id, "name": body.name, "token_hash": hash_token(token),
        "tags": json.dumps(_tags(body)), "webhook": body.webhook,
        "max_parallel_tasks": body.max_parallel_tasks, "active": int(body.active)})
    # The token is shown this once; only its hash is kept.
    return json_response({**_show(request, row), "token": token}, status=201)


async def get_runner(request: web.Request) -> web.Response:
    runner, _ = await _runner_in_scope(request)
    return json_response(_show(request, runner))


async def update_runner(request: web.Request) -> web.Response:
    runner, _ = await _runner_in_scope(request)
    body = await read_body(request, RunnerRequest)
    hub = hub_of(request)
    await hub.store.update_runner(runner["id"], {
        "name": body.name, "tags": json.dumps(_tags(body)), "webhook": body.webhook,
        "max_parallel_tasks": body.max_parallel_tasks, "active": int(body.active)})
    link = hub.dispatcher.links.get(runner["id"])
    if link is not None:
        link.name, link.tags = body.name or link.name, frozenset(_tags(body))
    await _apply_active(hub, runner["id"], body.active)
    return no_content()


async def set_active(request: web.Request) -> web.Response:
    runner, _ = await _runner_in_scope(request)
    body = await read_body(request, RunnerActive)
    hub = hub_of(request)
    await hub.store.update_runner(runner["id"], {"active": int(body.active)})
    await _apply_active(hub, runner["id"], body.active)
    return no_content()


async def delete_runner(request: web.Request) -> web.Response:
    runner, _ = await _runner_in_scope(request)
    await _delete(hub_of(request), runner["id"])
    return no_content()


async def runner_tags(request: web.Request) -> web.Response:
    project_id = await project_access(request)
    store = hub_of(request).store
    counts: dict[str, int] = {}
    for row in await store.list_runners(project_id) + await store.list_runners(None):
        for tag in json.loads(row["tags"] or "[]"):
            counts[tag] = counts.get(tag, 0) + 1
    return json_response([{"tag": tag, "number_of_runners": count}
                          for tag, count in sorted(counts.items())])


def _tags(body: RunnerRequest) -> list[str]:
    tags = list(body.tags)
    if body.tag and body.tag not in tags:
        tags.insert(0, body.tag)
    return tags


async def _apply_active(hub, runner_id: int, active: bool) -> None:
    """A disabled runner's live session ends now; it gets no task after this."""
    link = hub.dispatcher.links.get(runner_id)
    if link is not None and not active:
        link.close(1008, "runner disabled")
        await hub.dispatcher.detach(link)


async def _delete(hub, runner_id: int) -> None:
    link = hub.dispatcher.links.get(runner_id)
    if link is not None:
        link.close(1008, "runner deleted")
        await hub.dispatcher.detach(link)
    await hub.store.delete_runner(runner_id)
