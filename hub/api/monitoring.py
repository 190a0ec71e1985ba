"""GET /metrics (and /api/metrics, Semaphore 2.20's path), /api/health and /api/ready.

/metrics answers an admin (session cookie or API token), a Prometheus server sending the
configured scrape token (`metrics.scrape_token`, as `Authorization: Bearer <token>`), or
anyone when `metrics.anonymous` is true. Health and readiness are public and cheap.
"""

import base64
import binascii
import time

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from hub.api.common import ApiError, hub_of, json_response
from hub.api.live import LIVE_SOCKETS
from hub.api.middleware import authenticate
from hub.context import Hub
from hub.core.lifecycle import TaskState
from hub.core.links import LOCAL_RUNNER_ID
from hub.core.telemetry import HubState
from hub.security import bearer_token, tokens_equal

log = structlog.get_logger("hub.monitoring")

# The unfinished statuses the `semaphore_hub_tasks` gauge shows. A confirmed plan is being
# applied (running); a rejected one is on its way to stopped (stopping): both last moments.
TASK_GAUGE_STATUS = {
    TaskState.WAITING: "waiting", TaskState.STARTING: "starting",
    TaskState.RUNNING: "running", TaskState.CONFIRMED: "running",
    TaskState.WAITING_CONFIRMATION: "waiting_confirmation",
    TaskState.STOPPING: "stopping", TaskState.REJECTED: "stopping",
}


async def metrics(request: web.Request) -> web.Response:
    hub = hub_of(request)
    await _allow_scrape(request, hub)
    state = await _live_state(request, hub)
    return web.Response(body=hub.telemetry.scrape(state),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _allow_scrape(request: web.Request, hub: Hub) -> None:
    config = hub.config.metrics
    if not config.enabled:
        raise ApiError(404, "metrics are switched off (metrics.enabled is false)")
    if config.anonymous:
        return
    token = bearer_token(request.headers)
    if token is not None and config.scrape_token and tokens_equal(token, config.scrape_token):
        return
    basic = _basic_credentials(request)
    if basic is not None:
        # Semaphore's way: a fixed user and password that belong to no account.
        username, password = basic
        if (config.username and tokens_equal(username, config.username)
                & tokens_equal(password, config.password)):
            return
        log.warning("metrics.scrape_refused", reason="wrong basic credentials",
                    remote=request.remote)
        error = ApiError(401, "wrong metrics username or password")
        error.headers["WWW-Authenticate"] = 'Basic realm="metrics"'
        raise error
    user = await authenticate(request)
    if user is not None and user["admin"]:
        return
    if user is None:
        reason = "wrong token" if token is not None else "no credentials"
        log.warning("metrics.scrape_refused", reason=reason, remote=request.remote)
        raise ApiError(401, "authentication required: an admin's session or API token, or "
                            "`Authorization: Bearer <metrics.scrape_token>`")
    log.warning("metrics.scrape_refused", reason="not an admin", user_id=user["id"],
                remote=request.remote)
    raise ApiError(403, "only an admin may read the metrics")


def _basic_credentials(request: web.Request) -> tuple[str, str] | None:
    """(user, password) of an `Authorization: Basic` header; None for none or a broken one."""
    header = request.headers.get("Authorization", "")
    if header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None


async def _live_state(request: web.Request, hub: Hub) -> HubState:
    """The gauges' figures: runners from the database (offline and disabled ones are not
    in memory), everything else from the hub's live state."""
    await hub.readiness.reasons()  # the ready gauge says what /api/ready would (cached)
    links = hub.dispatcher.links
    runners = {(state, scope): 0 for state in ("online", "offline", "disabled")
               for scope in ("global", "project")}
    for runner_id, project_id, active in await hub.store.runner_states():
        state = ("online" if runner_id in links else "offline") if active else "disabled"
        runners[(state, "global" if project_id is None else "project")] += 1
    tasks = dict.fromkeys(("waiting", "starting", "running", "waiting_confirmation",
                           "stopping"), 0)
    now = time.time()
    oldest = now
    for task in hub.lifecycle.tasks.values():
        status = TASK_GAUGE_STATUS.get(task.status)
        if status is not None:
            tasks[status] += 1
        if task.status == TaskState.WAITING and task.created_at:
            oldest = min(oldest, task.created_at)
    return HubState(runners=runners,
                    runner_sessions=sum(1 for runner_id in links if runner_id != LOCAL_RUNNER_ID),
                    browser_sessions=len(request.app[LIVE_SOCKETS].open),
                    tasks=tasks, waiting=tasks["waiting"], oldest_waiting=now - oldest,
                    ready=hub.readiness.last_ready)


async def health(request: web.Request) -> web.Response:
    """Liveness: the event loop answers."""
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    reasons = await hub_of(request).readiness.reasons()
    if reasons:
        return json_response({"status": "not ready", "reasons": reasons}, status=503)
    return json_response({"status": "ok"})
