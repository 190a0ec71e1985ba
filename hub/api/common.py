"""Shared pieces of the REST handlers: JSON in and out, errors, who may touch a project."""

import json
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from hub.context import HUB, PROJECT, USER, Hub
from protocol.validation import describe

T = TypeVar("T")

# Semaphore's project roles, from most to least powerful.
ROLE_RANK = {"owner": 3, "manager": 2, "task_runner": 1, "guest": 0}


class ApiError(web.HTTPException):
    """An HTTP error with a JSON body {"error": message}, as Semaphore answers."""

    def __init__(self, status: int, message: str):
        self.status_code = status
        super().__init__(text=json.dumps({"error": message}), content_type="application/json")


def hub_of(request: web.Request) -> Hub:
    return request.app[HUB]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), status=status,
                        content_type="application/json")


def no_content() -> web.Response:
    return web.Response(status=204)


async def read_body(request: web.Request, model: type[T]) -> T:
    """Decode the JSON body into `model`; a 400 naming the field when it does not fit."""
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "request body must be a JSON object")
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        raise ApiError(400, describe(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None


def int_param(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer, got {raw!r}") from None


def current_user(request: web.Request) -> dict[str, Any]:
    return request[USER]


def require_admin(request: web.Request) -> None:
    if not current_user(request)["admin"]:
        raise ApiError(403, "this needs an admin")


async def project_access(request: web.Request, min_role: str = "guest") -> int:
    """The project id of the URL, once the user is known to hold at least `min_role` in it."""
    project_id = int_param(request, "project_id")
    hub = hub_of(request)
    request[PROJECT] = await hub.store.get_project(project_id)  # 404 if it does not exist
    user = current_user(request)
    if user["admin"]:
        return project_id
    role = await hub.store.project_role(project_id, user["id"])
    if role is None:
        raise ApiError(404, f"project {project_id} not found")
    if ROLE_RANK[role] < ROLE_RANK[min_role]:
        raise ApiError(403, f"your role in project {project_id} is {role}; "
                            f"this needs {min_role} or above")
    return project_id
