"""Request middleware: who is calling (session cookie or API token), CSRF, errors as JSON
(the unexpected ones too)."""

import time

import structlog
from aiohttp import web
from yarl import URL

from hub.api.common import ApiError
from hub.context import HUB, USER
from hub.core.spec import SpecError
from hub.crypto import SecretsUnavailable
from hub.security import SESSION_COOKIE, bearer_token, hash_token
from hub.serving import describe_exception
from hub.store import NotFound, StoreError

log = structlog.get_logger("hub.http")

# (method, path) reachable without a user: ping, login, logout (as in Semaphore it only ends
# the session the cookie names, if any, and clears the cookie), runner registration and the
# runner endpoints, which check the runner's own token themselves.
PUBLIC = {
    ("GET", "/api/ping"),
    # Liveness and readiness for load balancers and orchestrators (nothing secret in them).
    ("GET", "/api/health"),
    ("GET", "/api/ready"),
    # Metrics: the handler checks an admin, the scrape token or `metrics.anonymous` itself
    # (/metrics, outside /api/, never meets this middleware's check).
    ("GET", "/api/metrics"),
    ("GET", "/api/auth/login"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/logout"),
    ("POST", "/api/internal/runners"),
    ("DELETE", "/api/internal/runners"),
    ("GET", "/api/internal/runners/ws"),
    ("GET", "/api/runner/binary"),
    ("GET", "/api/runner/binary.sha256"),
    ("GET", "/api/runner/binary.sig"),
}

# Integrations' webhooks: each checks its own signature or token (hub/api/integrations.py).
PUBLIC_PREFIXES = (("POST", "/api/integrations/"),)

LOGIN = ("POST", "/api/auth/login")
LOGOUT = ("POST", "/api/auth/logout")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@web.middleware
async def last_resort_middleware(request: web.Request, handler):
    """Outermost: an exception nothing else turned into an answer is a JSON 500 and one log
    line, never a traceback in the body, and not a stack in the log per request."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        raise _json_error(exc) from None
    except ConnectionError:  # the client went away: not an error of ours
        raise
    except Exception as exc:
        log.error("http.internal_error", method=request.method, path=request.path[:200],
                  remote=request.remote, **describe_exception(exc))
        if request.writer.output_size > 0:
            # Part of a streamed answer is out: nothing can be said any more. Cut the
            # connection, so the client sees a broken answer, not a short complete one.
            raise ConnectionResetError("answer cut short by an internal error") from None
        raise ApiError(500, "internal error") from None


def _json_error(exc: web.HTTPException) -> web.HTTPException:
    """aiohttp's own errors (no such route: 404, wrong method: 405, body too big: 413) are
    plain text: give them the API's shape, {"error": ...}, keeping the Allow header."""
    if exc.status < 400 or exc.content_type == "application/json":
        return exc
    text = exc.text or ""
    # aiohttp's default text is "404: Not Found"; its others say more (the size limit).
    error = ApiError(exc.status, exc.reason if text.startswith(f"{exc.status}:") else text)
    if "Allow" in exc.headers:
        error.headers["Allow"] = exc.headers["Allow"]
    return error


@web.middleware
async def errors_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except NotFound as exc:
        raise ApiError(404, str(exc)) from None
    except (StoreError, SpecError, SecretsUnavailable) as exc:
        raise ApiError(400, str(exc)) from None


@web.middleware
async def auth_middleware(request: web.Request, handler):
    path = request.path.rstrip("/") or "/"
    if (request.method, path) in (LOGIN, LOGOUT):
        # Login CSRF: a foreign page must not log the browser in to an account of its choice,
        # nor (logout being public) end the browser's session.
        refuse_cross_site(request)
    if ((request.method, path) in PUBLIC or not path.startswith("/api/")
            or any(request.method == method and path.startswith(prefix)
                   for method, prefix in PUBLIC_PREFIXES)):
        return await handler(request)
    user = await authenticate(request)
    if user is None:
        raise ApiError(401, "authentication required: log in or send "
                            "`Authorization: Bearer <API token>`")
    request[USER] = user
    return await handler(request)


async def authenticate(request: web.Request) -> dict | None:
    """The user an API token (`Authorization: Bearer`) or the session cookie names; None
    for neither, or one that is not valid."""
    store = request.app[HUB].store
    token = bearer_token(request.headers)
    if token is not None:
        return await store.find_api_token_user(hash_token(token))
    if SESSION_COOKIE not in request.cookies:
        return None
    user = await store.find_session_user(hash_token(request.cookies[SESSION_COOKIE]),
                                         time.time())
    # The browser sends the cookie whoever made the page; SameSite=Lax does not cover a
    # page of the same site on another port or subdomain, nor old browsers: check where
    # the request came from. A browser never sends a Bearer token on its own.
    if user is not None and request.method in UNSAFE_METHODS:
        refuse_cross_site(request)
    return user


def refuse_cross_site(request: web.Request) -> None:
    """403 when Origin (or, without it, Referer) names another site than this hub.

    Without either header the request is not from a browser page (curl, scripts) and passes.
    Besides the request's own scheme://host:port, the configured public address (web_host)
    counts as this hub: behind a TLS-terminating proxy the hub itself sees plain http.
    """
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source:
        return
    own = {_origin(str(request.url)), _origin(request.app[HUB].config.web_host)}
    seen = _origin(source)
    if seen is None or seen not in own:
        log.warning("http.cross_site.refused", method=request.method, path=request.path,
                    origin=source[:200], remote=request.remote)
        raise ApiError(403, "cross-site request refused")


def _origin(raw: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an absolute URL, the port defaulted by scheme; else None
    (as for `Origin: null`, sent by sandboxed and privacy-sensitive contexts)."""
    try:
        url = URL(raw)
    except (TypeError, ValueError):
        return None
    if not url.absolute or not url.host:
        return None
    return url.scheme.lower(), url.host.lower(), url.port
