"""/api/users (admins manage users; everyone manages themselves) and a project's members."""

import asyncio

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
    require_admin,
)
from hub.api.models import (
    PasswordRequest,
    ProjectRoleRequest,
    ProjectUserRequest,
    UserPutRequest,
    UserRequest,
)
from hub.api.serialize import user_json
from hub.security import hash_password


def _admin_or_self(request: web.Request) -> int:
    user_id = int_param(request, "user_id")
    if user_id != current_user(request)["id"]:
        require_admin(request)
    return user_id


async def list_users(request: web.Request) -> web.Response:
    rows = await hub_of(request).store.list_users()
    return json_response([user_json(row) for row in rows])


async def create_user(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_body(request, UserRequest)
    password = await asyncio.to_thread(hash_password, body.password)
    row = await hub_of(request).store.create_user(body.username, body.name, body.email,
                                                  password, admin=body.admin)
    return json_response(user_json(row), status=201)


async def get_user(request: web.Request) -> web.Response:
    user_id = _admin_or_self(request)
    return json_response(user_json(await hub_of(request).store.get_user(user_id)))


async def update_user(request: web.Request) -> web.Response:
    user_id = _admin_or_self(request)
    body = await read_body(request, UserPutRequest)
    store = hub_of(request).store
    current = await store.get_user(user_id)
    if body.admin != bool(current["admin"]):
        require_admin(request)  # nobody makes themselves an admin
        if user_id == current_user(request)["id"]:
            raise ApiError(400, "admins cannot take away their own admin rights")
    await store.update_user(user_id, {"name": body.name, "username": body.username,
                                      "email": body.email, "admin": int(body.admin),
                                      "alert": int(body.alert)})
    return no_content()


async def set_password(request: web.Request) -> web.Response:
    user_id = _admin_or_self(request)
    body = await read_body(request, PasswordRequest)
    password = await asyncio.to_thread(hash_password, body.password)
    await hub_of(request).store.update_user(user_id, {"password": password})
    return no_content()


async def delete_user(request: web.Request) -> web.Response:
    require_admin(request)
    user_id = int_param(request, "user_id")
    if user_id == current_user(request)["id"]:
        raise ApiError(400, "you cannot delete yourself")
    await hub_of(request).store.delete_user(user_id)
    return no_content()


# A project's members (Semaphore: owners manage them).


async def list_members(request: web.Request) -> web.Response:
    project_id = await project_access(request)
    rows = await hub_of(request).store.list_project_users(project_id)
    return json_response([{"id": r["id"], "name": r["name"], "username": r["username"],
                           "role": r["role"]} for r in rows])


async def add_member(request: web.Request) -> web.Response:
    project_id = await project_access(request, "owner")
    body = await read_body(request, ProjectUserRequest)
    await hub_of(request).store.set_project_role(project_id, body.user_id, body.role)
    return no_content()


async def set_member_role(request: web.Request) -> web.Response:
    project_id = await project_access(request, "owner")
    user_id = int_param(request, "user_id")
    body = await read_body(request, ProjectRoleRequest)
    store = hub_of(request).store
    if await store.project_role(project_id, user_id) is None:
        raise ApiError(404, f"user {user_id} is not a member of project {project_id}")
    await store.set_project_role(project_id, user_id, body.role)
    return no_content()


async def remove_member(request: web.Request) -> web.Response:
    project_id = await project_access(request, "owner")
    await hub_of(request).store.remove_project_user(project_id, int_param(request, "user_id"))
    return no_content()
