"""Login, logout, the current user and its API tokens."""

import asyncio
import time

from aiohttp import web

from hub.api.common import ApiError, current_user, hub_of, json_response, no_content, read_body
from hub.api.models import Login
from hub.api.serialize import api_token_json, user_json
from hub.middleware import SESSION_COOKIE
from hub.ratelimit import SlidingWindow, per_app, too_many
from hub.security import hash_password, hash_token, new_token, verify_password

_DUMMY_HASH = hash_password("no such user")

# Failed logins allowed per login name and per client address within LOGIN_WINDOW seconds:
# enough for typos, far too few to guess a password.
LOGIN_FAILURES_PER_NAME = 5
LOGIN_FAILURES_PER_ADDRESS = 20
LOGIN_WINDOW = 60.0


async def login_metadata(request: web.Request) -> web.Response:
    return json_response({"oidc_providers": [], "login_with_password": True})


def _failures(request: web.Request) -> tuple[SlidingWindow, SlidingWindow]:
    """Recent failed logins, per login name and per client address."""
    return (per_app(request.app, "login_names",
                    lambda: SlidingWindow(LOGIN_FAILURES_PER_NAME, LOGIN_WINDOW)),
            per_app(request.app, "login_addresses",
                    lambda: SlidingWindow(LOGIN_FAILURES_PER_ADDRESS, LOGIN_WINDOW)))


async def login(request: web.Request) -> web.Response:
    body = await read_body(request, Login)
    hub = hub_of(request)
    by_name, by_address = _failures(request)
    name, address = body.auth.strip().casefold(), request.remote or ""
    wait = max(by_name.retry_after(name), by_address.retry_after(address))
    if wait:
        raise too_many("login attempts", wait)
    # Counted as failed up front and taken back on success: concurrent guesses all started
    # before the first one fails cannot slip past the limit.
    by_name.hit(name)
    by_address.hit(address)
    user = await hub.store.find_user_by_login(body.auth)
    # scrypt takes tens of ms by design: run it off the event loop so sessions keep flowing.
    # An unknown login costs the same scrypt as a wrong password, so timing tells nothing.
    stored = user["password"] if user is not None else _DUMMY_HASH
    if not await asyncio.to_thread(verify_password, body.password, stored) or user is None:
        raise ApiError(401, "wrong login or password")
    by_name.clear(name)
    by_address.forgive(address)
    token = new_token()
    ttl = hub.config.session_ttl_sec
    await hub.store.create_session(user["id"], hash_token(token), time.time() + ttl)
    response = web.Response(status=204)
    response.set_cookie(SESSION_COOKIE, token, max_age=ttl, httponly=True, samesite="Lax",
                        path="/", secure=request.secure)
    return response


async def logout(request: web.Request) -> web.Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await hub_of(request).store.delete_session(hash_token(token))
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def get_user(request: web.Request) -> web.Response:
    return json_response(user_json(current_user(request)))


async def list_tokens(request: web.Request) -> web.Response:
    rows = await hub_of(request).store.list_api_tokens(current_user(request)["id"])
    return json_response([api_token_json(row) for row in rows])


async def create_token(request: web.Request) -> web.Response:
    token = new_token()
    # The public id is a prefix: enough to list and delete, useless to authenticate.
    row = await hub_of(request).store.create_api_token(current_user(request)["id"],
                                                       token[:8], hash_token(token))
    return json_response(api_token_json(row, token=token), status=201)


async def delete_token(request: web.Request) -> web.Response:
    token_id = request.match_info["api_token_id"][:8]
    await hub_of(request).store.expire_api_token(current_user(request)["id"], token_id)
    return no_content()
