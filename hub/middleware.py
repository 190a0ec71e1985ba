"""Request middleware: who is calling (session cookie or API token), and errors as JSON."""

import time

import structlog
from aiohttp import web

from hub.api.common import ApiError
from hub.context import HUB, USER
from hub.security import hash_token
from hub.spec import SpecError
from hub.store import NotFound, StoreError

log = structlog.get_logger("hub.http")

SESSION_COOKIE = "semaphore"

# (method, path) reachable without a user: ping, login, runner registration and the runner
# endpoints, which check the runner's own token themselves.
PUBLIC = {
    ("GET", "/api/ping"),
    ("GET", "/api/auth/login"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/internal/runners"),
    ("DELETE", "/api/internal/runners"),
    ("GET", "/api/internal/runners/ws"),
}


@web.middleware
async def errors_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except NotFound as exc:
        raise ApiError(404, str(exc)) from None
    except (StoreError, SpecError) as exc:
        raise ApiError(400, str(exc)) from None


@web.middleware
async def auth_middleware(request: web.Request, handler):
    path = request.path.rstrip("/") or "/"
    if (request.method, path) in PUBLIC or not path.startswith("/api/"):
        return await handler(request)
    store = request.app[HUB].store
    user = None
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        user = await store.find_api_token_user(hash_token(header[7:].strip()))
    elif SESSION_COOKIE in request.cookies:
        user = await store.find_session_user(hash_token(request.cookies[SESSION_COOKIE]),
                                             time.time())
    if user is None:
        raise ApiError(401, "authentication required: log in or send "
                            "`Authorization: Bearer <API token>`")
    request[USER] = user
    return await handler(request)
