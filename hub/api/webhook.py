"""The public webhook of Semaphore's integrations: POST /api/integrations/{alias}.

No session: the call is found by its alias (a long random string the hub makes) and proves
itself by the integration's auth method (hub/core/integrations.py); failures are rate limited
per client address like logins. Integrations themselves are managed in hub/api/integrations.py.
"""

import json
from typing import Any

import structlog
from aiohttp import web

from hub.api.common import ApiError, hub_of, too_many
from hub.api.integrations import list_children
from hub.context import Hub
from hub.core import integrations as rules
from hub.core.audit import new_object_event
from hub.core.spec import SpecError
from hub.crypto import SecretsUnavailable
from hub.ratelimit import Backoff, per_app
from hub.store import NotFound, Row

log = structlog.get_logger("hub.api.webhook")

# A webhook's payload is read whole before its signature is checked; GitHub's push events
# are far below this, and nothing legitimate needs more.
MAX_WEBHOOK_BODY = 1024 * 1024
# Failed webhook calls (unknown alias, bad signature or token) per client address, as the
# login's per-address limit: 20 free, then a wait of 5 s doubling up to 5 min.
WEBHOOK_FAILURES: dict[str, Any] = {"free": 20, "base": 5.0, "cap": 300.0, "forget": 3600.0}

class _Unknown(Exception):
    """No alias of that name (or one of a searchable integration: Semaphore says none)."""


async def _by_alias(hub: Hub, alias: str) -> tuple[list[Row], bool]:
    """The integrations an alias serves, and whether it is a project's (matchers required)."""
    row = await hub.store.find_integration_alias(alias) if len(alias) <= 255 else None
    if row is None:
        raise _Unknown()
    if row["integration_id"] is None:
        rows = await hub.store.list_rows("integration", row["project_id"])
        return [r for r in rows if r["searchable"]], True
    integration = await hub.store.get_row("integration", row["project_id"],
                                          row["integration_id"])
    if integration["searchable"]:
        raise _Unknown()  # Semaphore: a searchable integration is reached by project aliases
    return [integration], False


async def _read_limited(request: web.Request) -> bytes:
    too_big = ApiError(413, f"request body is larger than {MAX_WEBHOOK_BODY} bytes")
    too_big.force_close()  # the rest is not read: the connection cannot go on
    if request.content_length is not None and request.content_length > MAX_WEBHOOK_BODY:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await request.content.read(64 * 1024):
            size += len(chunk)
            if size > MAX_WEBHOOK_BODY:
                raise too_big
            chunks.append(chunk)
    except web.RequestPayloadError:
        raise ApiError(400, "request body cannot be read") from None
    return b"".join(chunks)


async def _secret(hub: Hub, integration: Row) -> str:
    """The password of the integration's login_password key ("" when it has none)."""
    if not integration["auth_secret_id"]:
        return ""
    try:
        key = await hub.store.get_row("access_key", integration["project_id"],
                                      integration["auth_secret_id"])
        stored = json.loads(hub.cipher.decrypt(key["secret"])) if key["secret"] else {}
    except (NotFound, SecretsUnavailable, ValueError) as exc:
        log.warning("integration.secret.unavailable", integration_id=integration["id"],
                    error=str(exc)[:200])
        return ""
    password = stored.get("password") if isinstance(stored, dict) else None
    return password if isinstance(password, str) else ""


class _Payload:
    """The body, decoded as JSON once and only when a rule reads it so."""

    def __init__(self, body: bytes):
        self.body = body
        self._document: Any = None
        self._decoded = False

    def document(self) -> Any:
        if not self._decoded:
            try:
                self._document = json.loads(self.body) if self.body.strip() else None
            except (ValueError, RecursionError):
                raise ApiError(400, "request body is not valid JSON") from None
            self._decoded = True
        return self._document


async def receive(request: web.Request) -> web.Response:
    """Semaphore's POST /api/integrations/{alias}: 204 (with X-Semaphore-Task-ID for each task
    started) when the call is authentic, whether or not its matchers let a task start;
    401 when no integration of the alias accepts its signature or token; 404 for an unknown
    alias, which says nothing about what exists."""
    limits = per_app(request.app, "integrations", lambda: Backoff(**WEBHOOK_FAILURES))
    address = request.remote or ""
    wait = limits.retry_after(address)
    if wait:
        raise too_many("webhook calls", wait)
    hub = hub_of(request)
    try:
        integrations, project_level = await _by_alias(hub, request.match_info["alias"])
    except (_Unknown, NotFound):
        limits.hit(address)
        raise ApiError(404, "not found") from None
    body = await _read_limited(request)
    payload = _Payload(body)
    authentic = not integrations  # a project alias with no searchable integration: 204
    response = web.Response(status=204)
    for integration in integrations:
        if not rules.authenticated(integration["auth_method"], await _secret(hub, integration),
                                   integration["auth_header"], request.headers, body):
            log.warning("integration.auth.failed", integration_id=integration["id"],
                        remote=address)
            continue
        authentic = True
        store = hub.store
        project_id = integration["project_id"]
        matchers = await list_children(store, "integration_matcher", project_id,
                                       integration["id"])
        values = await list_children(store, "integration_extract_value", project_id,
                                     integration["id"])
        document = payload.document() if rules.needs_json([*matchers, *values]) else None
        # A project's alias serves only integrations whose matchers (at least one) all
        # match, as Semaphore; an integration's own alias checks its matchers if it has any.
        if (project_level and not matchers) or not rules.matches(
                matchers, request.headers, body, document):
            log.info("integration.not_matched", integration_id=integration["id"])
            continue
        task = await _start(hub, integration, rules.extract(values, request.headers, body,
                                                            document))
        response.headers.add("X-Semaphore-Task-ID", str(task["id"]))
        response.headers.add("X-Semaphore-Template-ID", str(task["template_id"]))
        response.headers.add("X-Semaphore-Project-ID", str(task["project_id"]))
        response.headers.add("X-Semaphore-Integration-ID", str(integration["id"]))
    if not authentic:
        limits.hit(address)
        raise ApiError(401, "invalid signature or token")
    return response


async def _start(hub: Hub, integration: Row,
                 extracted: tuple[dict[str, str], dict[str, str]]) -> Row:
    """The task, made by the same service as the REST API's, marked as the integration's."""
    extra_vars, task_params = extracted
    project = await hub.store.get_project(integration["project_id"])
    template = await hub.store.get_row("template", project["id"], integration["template_id"])
    params = {**json.loads(integration["task_params"] or "{}"), **task_params}
    values = {"environment": json.dumps(extra_vars) if extra_vars else "",
              "params": json.dumps(params), "integration_id": integration["id"]}
    event = new_object_event(
        "task", lambda task_id: f"Task {task_id} started by integration {integration['name']}",
        project=project, object_name=template["name"], integration_id=integration["id"])
    try:
        row = await hub.tasks.create(project, template, values, None,
                                     source="integration", event=event)
    except (SpecError, SecretsUnavailable) as exc:
        log.warning("integration.task.refused", integration_id=integration["id"],
                    error=str(exc)[:300])
        raise ApiError(400, f"integration {integration['id']}: the task cannot start: "
                            f"{str(exc)[:300]}") from None
    log.info("integration.task.started", integration_id=integration["id"], task_id=row["id"])
    return row
