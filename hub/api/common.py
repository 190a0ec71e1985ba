"""Shared pieces of the REST handlers: JSON in and out, errors, who may touch a project."""

import json
import math
import re
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from hub.api.models import INT64_MAX
from hub.context import HUB, PROJECT, USER, Hub
from hub.jsontext import excerpt, format_path, path_at, too_deep_at
from hub.store.sorting import SORT_KEYS
from protocol.validation import describe

T = TypeVar("T")

# Semaphore's project roles, from most to least powerful.
ROLE_RANK = {"owner": 3, "manager": 2, "task_runner": 1, "guest": 0}
# An error about a client's input quotes what it cannot use, never megabytes of it.
MAX_ERROR_CHARS = 300
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)


class ApiError(web.HTTPException):
    """An HTTP error with a JSON body {"error": message}, as Semaphore answers."""

    def __init__(self, status: int, message: str):
        self.status_code = status
        super().__init__(text=json.dumps({"error": message}), content_type="application/json")


def too_many(what: str, wait: float) -> ApiError:
    """429 {"error": "too many <what>; try again in N s"} with Retry-After: N."""
    seconds = max(math.ceil(wait), 1)
    error = ApiError(429, f"too many {what}; try again in {seconds} s")
    error.headers["Retry-After"] = str(seconds)
    return error


def hub_of(request: web.Request) -> Hub:
    return request.app[HUB]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), status=status,
                        content_type="application/json")


def no_content() -> web.Response:
    return web.Response(status=204)


async def read_body(request: web.Request, model: type[T]) -> T:
    """Decode the JSON body into `model`; a 400 naming the field when it does not fit."""
    raw = await _read_raw(request)
    if not raw.strip():
        raise ApiError(400, "request body must be a JSON object")
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        raise ApiError(400, _clip(describe(exc))) from None
    except msgspec.DecodeError as exc:
        # msgspec 0.23 and later refuse bad UTF-8 as a decode error naming no field: say
        # which one, as for the UnicodeDecodeError of earlier versions (below).
        try:
            raw.decode()
        except UnicodeDecodeError as bad:
            raise _not_utf8(raw, bad) from None
        raise ApiError(400, _clip(f"request body is not valid JSON: {exc}")) from None
    except UnicodeDecodeError as exc:  # msgspec < 0.23 checks UTF-8 only in strings it keeps
        raise _not_utf8(raw, exc) from None
    except RecursionError:  # only nesting in a field the model skips gets this far
        raise ApiError(400, _clip(f"{_subject(raw, too_deep_at(raw), top_level=True)}: "
                                  "nested too deeply")) from None


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> ApiError:
    return ApiError(400, _clip(f"{_subject(raw, _bad_byte_at(raw, exc))}: not valid UTF-8 "
                               f"({exc.reason})"))


async def _read_raw(request: web.Request) -> bytes:
    """The whole body; a 400 when it cannot be read (a broken gzip or chunked encoding)."""
    try:
        return await request.read()
    except web.RequestPayloadError as exc:
        # Its text is "400, message: ..."; say only what is wrong.
        problem = getattr(exc.__cause__, "message", None) or str(exc)
        error = ApiError(400, _clip(f"request body cannot be read: {problem}"))
        error.force_close()  # the rest of the stream is garbage: say the connection ends
        raise error from None


def _bad_byte_at(raw: bytes, exc: UnicodeDecodeError) -> int | None:
    """Where in the body msgspec's UTF-8 error is: it reports the string's bytes (exc.object,
    unescaped so far) and the bad byte's place in them."""
    found = raw.find(exc.object)
    if found >= 0:
        return found + exc.start
    found = raw.find(exc.object[exc.start:exc.end])  # the string had escapes: the bad bytes
    return found if found >= 0 else None


def _subject(raw: bytes, offset: int | None, top_level: bool = False) -> str:
    """"field `a.b`" for the value at byte `offset` of the body, else "request body"."""
    path = path_at(raw, offset) if offset is not None else []
    if top_level:
        path = path[:1]
    return f"field `{format_path(path)}`" if path else "request body"


def _clip(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[:MAX_ERROR_CHARS] + "..."


def int_param(request: web.Request, name: str) -> int:
    """An id from the URL. Not an integer: 400; an integer no row can have (below 1, past
    64 bits): 404 without asking the database, which could not even take it."""
    raw = request.match_info[name]
    if not _INTEGER.fullmatch(raw):
        raise ApiError(400, f"{name} must be an integer, got {excerpt(raw, 40)}")
    digits = raw.lstrip("+-").lstrip("0")
    # Compared as text first: int() of thousands of digits is slow, and refused past 4300.
    if raw.startswith("-") or not digits or len(digits) > 19 or int(digits) > INT64_MAX:
        raise ApiError(404, f"{name} {raw if len(raw) <= 40 else raw[:40] + '...'} not found")
    return int(digits)


def sort_params(request: web.Request, table: str, descending: bool = False) -> tuple[str, bool]:
    """Semaphore's `sort` and `order` query parameters of a list: a key of the table's
    whitelist ("" when absent: the list's own order) and whether it runs descending."""
    sort = request.query.get("sort", "")
    keys = SORT_KEYS[table]
    if sort and sort not in keys:
        raise ApiError(400, f"query parameter `sort` must be one of {', '.join(keys)}, "
                            f"got {excerpt(sort, 40)}")
    order = request.query.get("order", "")
    if order and order.lower() not in ("asc", "desc"):
        raise ApiError(400, f"query parameter `order` must be asc or desc, got "
                            f"{excerpt(order, 40)}")
    return sort, order.lower() == "desc" if order else descending


def current_user(request: web.Request) -> dict[str, Any]:
    return request[USER]


def require_admin(request: web.Request) -> None:
    if not current_user(request)["admin"]:
        raise ApiError(403, "this needs an admin")


def can_create_project(request: web.Request) -> bool:
    """Semaphore's rule: admins, or anyone when non_admin_can_create_project is set."""
    return bool(current_user(request)["admin"]
                or hub_of(request).config.non_admin_can_create_project)


def require_project_creator(request: web.Request) -> None:
    """Creating a project (or restoring one) makes its creator its owner: Semaphore answers
    401 to a user who may not."""
    if not can_create_project(request):
        raise ApiError(401, "only an admin may create projects here "
                            "(the hub's non_admin_can_create_project is off)")


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
