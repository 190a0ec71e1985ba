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
from hub.api.session import session_token_hash
from hub.core import audit
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
    await audit.record_request(request, "user", f"User {row['username']} created",
                               object_id=row["id"], object_name=row["username"])
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
    await audit.record_request(request, "user", f"User {body.username} updated",
                               object_id=user_id, object_name=body.username)
    return no_content()


async def set_password(request: web.Request) -> web.Response:
    """A new password ends every other session of the user: whoever knew the old one may
    hold one. The session making the change stays when it is the user's own; an admin
    resetting someone's password ends all of theirs. API tokens stay unless the body says
    `revoke_tokens` (scripts and CI hold them; each can also be revoked on its own)."""
    user_id = _admin_or_self(request)
    body = await read_body(request, PasswordRequest)
    store = hub_of(request).store
    password = await asyncio.to_thread(hash_password, body.password)
    await store.update_user(user_id, {"password": password})
    own = user_id == current_user(request)["id"]
    await store.delete_user_sessions(user_id, session_token_hash(request) if own else "")
    if body.revoke_tokens:
        await store.expire_user_api_tokens(user_id)
    await _record_user(request, user_id, "Password of user {} changed")
    return no_content()


async def delete_user(request: web.Request) -> web.Response:
    require_admin(request)
    user_id = int_param(request, "user_id")
    if user_id == current_user(request)["id"]:
        raise ApiError(400, "you cannot delete yourself")
    store = hub_of(request).store
    user = await store.get_user(user_id)  # its name, for the event (and the 404)
    await store.delete_user(user_id)
    await audit.record_request(request, "user", f"User {user['username']} deleted",
                               object_id=user_id, object_name=user["username"])
    return no_content()


async def _record_user(request: web.Request, user_id: int, description: str) -> None:
    """An event about a user (not the one acting), named in `description`'s {}; in the
    request's project when the URL has one."""
    user = await hub_of(request).store.get_user(user_id)
    await audit.record_request(request, "user", description.format(user["username"]),
                               object_id=user_id, object_name=user["username"])


# A project's members: every member sees them, owners manage them (Semaphore's
# CanManageProjectUsers), and an owner who is not an admin cannot demote or remove
# themselves (so a project is not left without an owner by accident).


async def list_members(request: web.Request) -> web.Response:
    project_id = await project_access(request)
    rows = await hub_of(request).store.list_project_users(project_id)
    return json_response([{"id": r["id"], "name": r["name"], "username": r["username"],
                           "role": r["role"]} for r in rows])


async def add_member(request: web.Request) -> web.Response:
    project_id = await project_access(request, "owner")
    body = await read_body(request, ProjectUserRequest)
    store = hub_of(request).store
    if await store.project_role(project_id, body.user_id) is not None:
        # As Semaphore: adding is not a way to change a role (that is PUT, with its checks).
        raise ApiError(409, f"field `user_id`: user {body.user_id} is already a member of "
                            f"project {project_id}; PUT .../users/{body.user_id} changes "
                            "the role")
    await store.set_project_role(project_id, body.user_id, body.role)
    await _record_user(request, body.user_id, f"User {{}} added to team as {body.role}")
    return no_content()


def _not_own_ownership(request: web.Request, user_id: int, what: str) -> None:
    """Semaphore: an owner (not an admin) cannot change their own role or leave."""
    user = current_user(request)
    if user_id == user["id"] and not user["admin"]:
        raise ApiError(400, f"an owner cannot {what}; another owner or an admin can")


async def set_member_role(request: web.Request) -> web.Response:
    project_id = await project_access(request, "owner")
    user_id = int_param(request, "user_id")
    body = await read_body(request, ProjectRoleRequest)
    store = hub_of(request).store
    if await store.project_role(project_id, user_id) is None:
        raise ApiError(404, f"user {user_id} is not a member of project {project_id}")
    _not_own_ownership(request, user_id, "change their own role")
    await store.set_project_role(project_id, user_id, body.role)
    await _record_user(request, user_id, f"Changed role for user {{}} to {body.role}")
    return no_content()


async def remove_member(request: web.Request) -> web.Response:
    project_id = await project_access(request, "owner")
    user_id = int_param(request, "user_id")
    _not_own_ownership(request, user_id, "remove themselves from the project")
    await hub_of(request).store.remove_project_user(project_id, user_id)
    await _record_user(request, user_id, "User {} removed from team")
    return no_content()
