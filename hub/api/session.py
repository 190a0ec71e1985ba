"""Login, logout, the current user and its API tokens."""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from hub.api.common import (
    ApiError,
    can_create_project,
    current_user,
    hub_of,
    json_response,
    no_content,
    read_body,
    too_many,
)
from hub.api.models import Login
from hub.api.serialize import api_token_json, user_json
from hub.ratelimit import Backoff, Remembered, SlidingWindow, per_app
from hub.security import (
    SESSION_COOKIE,
    bearer_token,
    hash_password,
    hash_token,
    new_token,
    verify_password,
)

_DUMMY_HASH = hash_password("no such user")

# Failed logins, counted three ways, each against its own attacker, so that no one address
# can lock a user out of logging in from anywhere else (docs/security.md has the reasoning).
# A "login name" is the account it names (username and email count together):
# - one login name from one client address (guessing one account): 5 failures free, then a
#   wait of 15 s doubling with each further failure up to 15 min; forgotten after an hour
#   without failures; cleared by a success. One address gets ~13 guesses at an account in
#   its first hour, ~4 an hour after that: ~105 a day.
LOGIN_PAIR: dict[str, Any] = {"free": 5, "base": 15.0, "cap": 900.0, "forget": 3600.0}
# - one client address, whatever the names (spraying one password over many accounts): 20
#   free, then 5 s doubling up to 5 min. Behind a proxy every client shares its address, so
#   this stays short.
LOGIN_ADDRESS: dict[str, Any] = {"free": 20, "base": 5.0, "cap": 300.0, "forget": 3600.0}
# - one login name from every address together (distributed guessing): at most 100 failures
#   in any hour and 300 in any day; past either only addresses the user has logged in from
#   (within the last 30 days, since the hub started) may try the name. One address cannot
#   reach a ceiling alone (~13 an hour, ~105 a day, above), and many addresses that do shut
#   out only new places, not the user where they have logged in before.
LOGIN_NAME_CEILINGS = ((100, 3600.0), (300, 24 * 3600.0))
KNOWN_ADDRESS_TTL = 30 * 24 * 3600.0


@dataclass(frozen=True)
class LoginLimits:
    pairs: Backoff
    addresses: Backoff
    names: tuple[SlidingWindow, ...]
    known: Remembered  # "name\0address" pairs that logged in

    def retry_after(self, name: str, pair: str, address: str) -> float:
        wait = max(self.pairs.retry_after(pair), self.addresses.retry_after(address))
        if pair not in self.known:
            wait = max(wait, *(ceiling.retry_after(name) for ceiling in self.names))
        return wait

    def failed(self, name: str, pair: str, address: str) -> None:
        self.pairs.hit(pair)
        self.addresses.hit(address)
        for ceiling in self.names:
            ceiling.hit(name)

    def succeeded(self, name: str, pair: str, address: str) -> None:
        """The pair starts over; the others only take back this attempt: a distributed
        guesser's failures stay counted when the user gets in."""
        self.pairs.clear(pair)
        self.addresses.forgive(address)
        for ceiling in self.names:
            ceiling.forgive(name)
        self.known.add(pair)


def _login_limits(request: web.Request) -> LoginLimits:
    return per_app(request.app, "login", lambda: LoginLimits(
        Backoff(**LOGIN_PAIR), Backoff(**LOGIN_ADDRESS),
        tuple(SlidingWindow(limit, window) for limit, window in LOGIN_NAME_CEILINGS),
        Remembered(KNOWN_ADDRESS_TTL)))


async def login_metadata(request: web.Request) -> web.Response:
    return json_response({"oidc_providers": [], "login_with_password": True})


async def login(request: web.Request) -> web.Response:
    body = await read_body(request, Login)
    hub = hub_of(request)
    limits = _login_limits(request)
    user = await hub.store.find_user_by_login(body.auth)
    # Counted by the account's username, so that its username and its email share one
    # count; a login that is nobody's by what was typed. Case does not make a new count.
    name = (user["username"] if user is not None else body.auth.strip()).casefold()
    address = request.remote or ""
    pair = f"{name}\0{address}"
    wait = limits.retry_after(name, pair, address)
    if wait:
        hub.telemetry.rejected_logins.inc()
        raise too_many("login attempts", wait)
    # Counted as failed up front and taken back on success: concurrent guesses all started
    # before the first one fails cannot slip past the limits.
    limits.failed(name, pair, address)
    # scrypt takes tens of ms by design: run it off the event loop so sessions keep flowing.
    # An unknown login costs the same scrypt as a wrong password, so timing tells nothing.
    stored = user["password"] if user is not None else _DUMMY_HASH
    if not await asyncio.to_thread(verify_password, body.password, stored) or user is None:
        hub.telemetry.rejected_logins.inc()
        raise ApiError(401, "wrong login or password")
    limits.succeeded(name, pair, address)
    token = new_token()
    ttl = hub.config.session_ttl_sec
    await hub.store.create_session(user["id"], hash_token(token), time.time() + ttl)
    response = web.Response(status=204)
    response.set_cookie(SESSION_COOKIE, token, max_age=ttl, httponly=True, samesite="Lax",
                        path="/", secure=request.secure)
    return response


def session_token_hash(request: web.Request) -> str:
    """The hash of the session this request was authenticated by; "" when it came with an
    API token (the auth middleware prefers the Bearer header over the cookie)."""
    if bearer_token(request.headers) is not None:
        return ""
    token = request.cookies.get(SESSION_COOKIE)
    return hash_token(token) if token else ""


async def logout(request: web.Request) -> web.Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await hub_of(request).store.delete_session(hash_token(token))
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def get_user(request: web.Request) -> web.Response:
    # Semaphore's /api/user adds can_create_project (its UI shows "New project" by it).
    return json_response(user_json(current_user(request))
                         | {"can_create_project": can_create_project(request)})


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
