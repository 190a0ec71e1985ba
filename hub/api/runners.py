"""Runners: registration by the runner itself, and management by admins and project managers.

Global runners (`/api/runners`) are admin-only; project runners
(`/api/project/{project_id}/runners`) need the project's owner or manager role. A runner
registers with the hub's shared registration token or with a one-time token an admin made,
which may bind it to a project and tags.
"""

import json
import math
import time
from pathlib import Path

import structlog
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
    too_many,
)
from hub.api.models import (
    RegistrationTokenRequest,
    RolloutRequest,
    RunnerActive,
    RunnerRegistration,
    RunnerRequest,
)
from hub.api.serialize import runner_json
from hub.context import Hub
from hub.core import audit
from hub.core.metrics import RESOLUTIONS
from hub.crypto import valid_public_key
from hub.jsontext import excerpt
from hub.ratelimit import SlidingWindow, per_app
from hub.release_key import public_key_text
from hub.runner_binaries import BinaryError, check_version
from hub.security import bearer_token, hash_token, new_token, tokens_equal
from hub.store import NotFound
from hub.store.base import Row, decode_tags

log = structlog.get_logger("hub.api.runners")

# Runner registration (the runner's own calls).

# Failed registrations (POST /api/internal/runners) per client address and window (seconds);
# past that, every attempt from the address is a 429 until the window moves on. Successful
# ones do not count: a fleet behind one NAT may enrol many runners at once.
REGISTRATION_FAILURES = 10
REGISTRATION_WINDOW = 60.0


def registration_failures(app: web.Application) -> SlidingWindow:
    """Recent failed runner registrations per client address, for this hub."""
    return per_app(app, "registrations",
                   lambda: SlidingWindow(REGISTRATION_FAILURES, REGISTRATION_WINDOW))


async def register_runner(request: web.Request) -> web.Response:
    failures, address = registration_failures(request.app), request.remote or ""
    wait = failures.retry_after(address)
    if wait:
        hub_of(request).telemetry.rejected_registrations.inc()
        raise too_many("runner registration attempts", wait)
    # Only failures count: a fleet enrolling at once from behind one address must not be
    # refused, and a 256-bit token is not guessed by trying faster.
    try:
        body = await read_body(request, RunnerRegistration)
        if body.public_key and not valid_public_key(body.public_key):
            raise ApiError(400, "field `public_key`: must be the base64 of a 32-byte "
                                "X25519 public key (as `semaphore runner register` sends)")
        hub = hub_of(request)
        one_time = await _redeem(hub, body.registration_token)
    except web.HTTPException:
        failures.hit(address)
        hub_of(request).telemetry.rejected_registrations.inc()
        raise
    # Scope is never the runner's to pick: a one-time token's project, else global.
    project_id = one_time["project_id"] if one_time else None
    tags = _registered_tags(one_time, body.tags, address)
    token = new_token()
    row = await hub.store.create_runner({
        "project_id": project_id, "name": body.name, "token_hash": hash_token(token),
        "tags": json.dumps(tags), "webhook": body.webhook,
        "max_parallel_tasks": body.max_parallel_tasks, "public_key": body.public_key})
    if one_time:
        await hub.store.bind_registration_token(one_time["id"], row["id"])
    await _record_own(request, row, "registered")
    # The release key's public half: the runner applies only updates it signed.
    return json_response({"token": token, "id": row["id"], "tags": tags,
                          "release_key": public_key_text(hub.release_key)})


def _registered_tags(one_time: Row | None, asked: list[str], address: str) -> list[str]:
    """The tags a new runner gets. A one-time token's are exactly its runner's (the admin who
    made it chose them; none means none); with the shared token the registrant's are recorded.
    Either way they are fixed here: a hello never changes them, only an admin does."""
    asked = list(dict.fromkeys(asked))
    if one_time is None:
        return asked
    bound = decode_tags(one_time["tags"])
    if set(asked) - set(bound):
        log.warning("runner.tags.refused", asked=asked, tags=bound, remote=address,
                    registration_token_id=one_time["id"])
    return bound


async def _redeem(hub: Hub, presented: str) -> Row | None:
    """None for the shared token; the claimed row of a one-time token; else a 401 saying why."""
    shared = hub.config.runner_registration_token
    if shared and tokens_equal(presented, shared):
        return None
    token_hash = hash_token(presented)
    claimed = await hub.store.claim_registration_token(token_hash, time.time())
    if claimed is not None:
        return claimed
    known = await hub.store.find_registration_token(token_hash)
    if known is not None and known["used"]:
        raise ApiError(401, "registration token already used")
    if known is not None:
        raise ApiError(401, "registration token expired")
    if not shared:
        raise ApiError(401, "wrong registration token (registration with a shared token is "
                            "disabled: runner_registration_token is not set on this hub)")
    raise ApiError(401, "wrong registration token")


async def unregister_self(request: web.Request) -> web.Response:
    token = bearer_token(request.headers)
    hub = hub_of(request)
    runner = await hub.store.find_runner_by_token_hash(hash_token(token)) if token else None
    if runner is None:
        raise ApiError(401, "invalid runner token")
    await _delete(hub, runner)
    await _record_own(request, runner, "unregistered itself")
    return no_content()


async def _record_own(request: web.Request, runner: Row, done: str) -> None:
    """An event the runner made itself (no user), in its project if it has one."""
    project = None
    if runner["project_id"] is not None:
        try:
            project = await hub_of(request).store.get_project(runner["project_id"])
        except NotFound:
            pass  # the project went meanwhile: the event is kept without it
    await audit.record_request(request, "runner", f"Runner {runner['name']} {done}",
                               object_id=runner["id"], object_name=runner["name"],
                               project=project)


async def _record(request: web.Request, runner_id: int, name: str, done: str) -> None:
    """An event of a person managing a runner (in the URL's project, if any)."""
    await audit.record_request(request, "runner", f"Runner {name} {done}",
                               object_id=runner_id, object_name=name)


# One-time registration tokens (admin only).


async def create_registration_token(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_body(request, RegistrationTokenRequest)
    hub = hub_of(request)
    if body.project_id is not None:
        try:
            await hub.store.get_project(body.project_id)
        except NotFound:
            raise ApiError(400, f"project {body.project_id} does not exist") from None
    token = new_token()
    row = await hub.store.create_registration_token(
        hash_token(token), body.project_id, json.dumps(list(dict.fromkeys(body.tags))),
        time.time() + body.expires_in_sec)
    await audit.record_request(request, "runner", f"Registration token {row['id']} created",
                               object_id=row["id"])
    # The token is shown this once; only its hash is kept.
    return json_response({**_registration_token_json(row), "token": token}, status=201)


async def list_registration_tokens(request: web.Request) -> web.Response:
    require_admin(request)
    rows = await hub_of(request).store.list_registration_tokens()
    return json_response([_registration_token_json(row) for row in rows])


async def delete_registration_token(request: web.Request) -> web.Response:
    require_admin(request)
    token_id = int_param(request, "token_id")
    await hub_of(request).store.delete_registration_token(token_id)
    await audit.record_request(request, "runner", f"Registration token {token_id} deleted",
                               object_id=token_id)
    return no_content()


def _registration_token_json(row: Row) -> dict:
    return {"id": row["id"], "project_id": row["project_id"], "tags": decode_tags(row["tags"]),
            "expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["expires"])),
            "used": bool(row["used"]), "runner_id": row["runner_id"], "created": row["created"]}


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
    link = hub_of(request).dispatcher.link(row["id"])
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
    await _record(request, row["id"], row["name"], "created")
    # The token is shown this once; only its hash is kept.
    return json_response({**_show(request, row), "token": token}, status=201)


async def get_runner(request: web.Request) -> web.Response:
    runner, _ = await _runner_in_scope(request)
    return json_response(_show(request, runner))


async def runner_metrics(request: web.Request) -> web.Response:
    """The runner's resource history, oldest first: `?resolution=raw` (each heartbeat, the
    last hour; the default), `1m` (minute averages and maxima, a day) or `1h` (30 days),
    from `?since=` (Unix seconds; default 15 minutes ago, what the dashboard charts)."""
    runner, _ = await _runner_in_scope(request)
    resolution = request.query.get("resolution", "raw")
    if resolution not in RESOLUTIONS:
        raise ApiError(400, f"query parameter `resolution` must be one of "
                            f"{', '.join(RESOLUTIONS)}, got {excerpt(resolution, 40)}")
    since = _since(request.query.get("since"))
    return json_response(await hub_of(request).metrics.points(runner["id"], since,
                                                              resolution))


def _since(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        since = float(raw)
    except ValueError:
        since = math.nan
    if not math.isfinite(since) or since < 0:
        raise ApiError(400, f"query parameter `since` must be a time in Unix seconds, got "
                            f"{excerpt(raw, 40)}")
    return since


async def update_runner(request: web.Request) -> web.Response:
    runner, _ = await _runner_in_scope(request)
    body = await read_body(request, RunnerRequest)
    hub = hub_of(request)
    await hub.store.update_runner(runner["id"], {
        "name": body.name, "tags": json.dumps(_tags(body)), "webhook": body.webhook,
        "max_parallel_tasks": body.max_parallel_tasks, "active": int(body.active)})
    hub.dispatcher.relabel(runner["id"], body.name, _tags(body))
    await _apply_active(hub, runner, body.active)
    await _record(request, runner["id"], body.name, "updated")
    return no_content()


async def set_active(request: web.Request) -> web.Response:
    runner, _ = await _runner_in_scope(request)
    body = await read_body(request, RunnerActive)
    hub = hub_of(request)
    await hub.store.update_runner(runner["id"], {"active": int(body.active)})
    await _apply_active(hub, runner, body.active)
    await _record(request, runner["id"], runner["name"],
                  "enabled" if body.active else "disabled")
    return no_content()


async def delete_runner(request: web.Request) -> web.Response:
    runner, _ = await _runner_in_scope(request)
    await _delete(hub_of(request), runner)
    await _record(request, runner["id"], runner["name"], "deleted")
    return no_content()


async def runner_tags(request: web.Request) -> web.Response:
    project_id = await project_access(request)
    store = hub_of(request).store
    counts: dict[str, int] = {}
    for row in await store.list_runners(project_id) + await store.list_runners(None):
        for tag in decode_tags(row["tags"]):
            counts[tag] = counts.get(tag, 0) + 1
    return json_response([{"tag": tag, "number_of_runners": count}
                          for tag, count in sorted(counts.items())])


def _tags(body: RunnerRequest) -> list[str]:
    tags = list(body.tags)
    if body.tag and body.tag not in tags:
        tags.insert(0, body.tag)
    return tags


async def _apply_active(hub: Hub, runner: Row, active: bool) -> None:
    """A disabled runner's live session ends now; it gets no task after this."""
    if not active:
        await hub.tasks.revoke_runner(runner["id"], "disabled")
    if bool(runner["active"]) != active:
        hub.events.publish("runner", runner_id=runner["id"], project_id=runner["project_id"],
                           online=hub.dispatcher.link(runner["id"]) is not None, active=active)


async def _delete(hub: Hub, runner: Row) -> None:
    await hub.tasks.revoke_runner(runner["id"], "deleted")
    await hub.store.delete_runner(runner["id"])
    await hub.metrics.forget(runner["id"])
    hub.events.publish("runner", runner_id=runner["id"], project_id=runner["project_id"],
                       online=False, active=False, deleted=True)


# Staged updates (admin only): hub/core/rollout.py.


def _rollout_json(row: Row | None) -> dict:
    if row is None:
        return {"state": "none"}
    return {key: row[key] for key in ("id", "version", "project_id", "runner_id", "canary",
                                      "healthy_seconds", "state", "error", "created",
                                      "ended")}


async def get_rollout(request: web.Request) -> web.Response:
    require_admin(request)
    return json_response(_rollout_json(await hub_of(request).store.last_rollout()))


async def start_rollout(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_body(request, RolloutRequest)
    hub = hub_of(request)
    try:
        check_version(body.version)
    except BinaryError as exc:
        raise ApiError(400, f"field `version`: {exc}") from None
    if body.project_id is not None and body.runner_id is not None:
        raise ApiError(400, "field `runner_id`: give a project_id or a runner_id, not both")
    if body.healthy_minutes is not None and body.healthy_seconds is not None:
        raise ApiError(400, "field `healthy_seconds`: give healthy_minutes or "
                            "healthy_seconds, not both")
    if body.project_id is not None:
        try:
            await hub.store.get_project(body.project_id)
        except NotFound:
            raise ApiError(400, f"field `project_id`: project {body.project_id} does not "
                                "exist") from None
    if body.runner_id is not None:
        try:
            await hub.store.get_runner(body.runner_id)
        except NotFound:
            raise ApiError(400, f"field `runner_id`: runner {body.runner_id} does not "
                                "exist") from None
    folder = hub.config.runner_binaries_path
    if not folder or not (Path(folder) / body.version).is_dir():
        raise ApiError(400, f"field `version`: this hub has no runner build {body.version} "
                            "(add one with `semaphore runner-binary add`)")
    healthy = (body.healthy_seconds if body.healthy_seconds is not None
               else 60 * (body.healthy_minutes if body.healthy_minutes is not None else 5))
    row = await hub.rollout.begin(body.version, body.project_id, body.runner_id, body.canary,
                                  healthy)
    await audit.record_request(request, "runner", f"Runner update to {body.version} started",
                               object_id=row["runner_id"])
    return json_response(_rollout_json(row), status=201)


async def stop_rollout(request: web.Request) -> web.Response:
    require_admin(request)
    hub = hub_of(request)
    stopped = await hub.rollout.cancel()
    if stopped is None:
        raise ApiError(404, "no rollout is running")
    await audit.record_request(request, "runner", f"Runner update to {stopped['version']} "
                                                  "stopped", object_id=stopped["runner_id"])
    return json_response(_rollout_json(await hub.store.last_rollout()))
