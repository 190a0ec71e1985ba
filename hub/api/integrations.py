"""Semaphore's integrations: /api/project/{project_id}/integrations (with their matchers,
extract values and aliases). The public webhook they serve is hub/api/webhook.py.

Guests read integrations, managers create, change and delete them (aliases, which let
anyone who knows one start a task when an integration has no auth, from task_runner up).
The webhook has no session: it is found by its alias (a long random string the hub makes)
and proves itself by the integration's auth method (hub/core/integrations.py).
"""

import json
import secrets
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from hub.api.common import (
    ApiError,
    hub_of,
    int_param,
    json_response,
    no_content,
    project_access,
    read_body,
)
from hub.api.models import Id, Name
from hub.api.secrets import password_key
from hub.core import integrations as rules
from hub.core.audit import record_request
from hub.store import NotFound, Row

Text = Annotated[str, msgspec.Meta(max_length=1000)]
Header = Annotated[str, msgspec.Meta(max_length=255)]
# Extracted values reach a script as `name=value` words and ansible as extra vars.
Variable = Annotated[str, msgspec.Meta(min_length=1, max_length=255,
                                       pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
BodyDataType = Literal["json", "string", ""]
ALIAS_BYTES = 24  # 32 characters of URL-safe base64: not guessable


class TaskParams(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What of Semaphore's TaskParams an integration's tasks may set (ansible's flags)."""
    debug: bool = False
    dry_run: bool = False
    diff: bool = False
    limit: Text = ""


class IntegrationRequest(msgspec.Struct):
    name: Name
    template_id: Id
    project_id: int | None = None
    auth_method: Literal["", "none", "token", "hmac", "github", "bitbucket"] = ""
    auth_secret_id: Id | None = None
    auth_header: Header = ""
    searchable: bool = False
    task_params: TaskParams | None = None


class MatcherRequest(msgspec.Struct):
    name: Name
    match_type: Literal["body", "header"]
    method: Literal["equals", "unequals", "contains"] = "equals"
    body_data_type: BodyDataType = "json"
    key: Text = ""
    value: Text = ""


class ExtractValueRequest(msgspec.Struct):
    name: Name
    value_source: Literal["body", "header"]
    variable: Variable
    body_data_type: BodyDataType = "json"
    key: Text = ""
    # environment: the task's extra vars; task: its params (Semaphore's two kinds).
    variable_type: Literal["environment", "task", ""] = "environment"


# JSON shapes, as Semaphore's API shows them.

def integration_json(row: Row) -> Row:
    return {"id": row["id"], "name": row["name"], "project_id": row["project_id"],
            "template_id": row["template_id"], "auth_method": row["auth_method"],
            "auth_secret_id": row["auth_secret_id"], "auth_header": row["auth_header"],
            "searchable": bool(row["searchable"]),
            "task_params": json.loads(row["task_params"] or "{}")}


def matcher_json(row: Row) -> Row:
    return {key: row[key] for key in ("id", "integration_id", "name", "match_type", "method",
                                      "body_data_type", "key", "value")}


def value_json(row: Row) -> Row:
    return {key: row[key] for key in ("id", "integration_id", "name", "value_source",
                                      "body_data_type", "key", "variable", "variable_type")}


def alias_json(request: web.Request, row: Row) -> Row:
    """Semaphore's public alias: its id and the full URL to give the sender."""
    base = hub_of(request).config.web_host or str(request.url.origin())
    return {"id": row["id"], "url": f"{base.rstrip('/')}/api/integrations/{row['alias']}",
            "alias": row["alias"], "integration_id": row["integration_id"],
            "project_id": row["project_id"]}


# Integrations.

async def integration_values(store: Any, project_id: int,
                             body: IntegrationRequest) -> dict[str, Any]:
    """The row for a checked request: its template and key must be of the project. Shared by
    the REST handlers and the backup restore (hub/api/backup_restore.py)."""
    if body.project_id is not None and body.project_id != project_id:
        raise ApiError(400, f"field `project_id`: must be the project of the URL "
                            f"({project_id}), got {body.project_id}")
    try:
        await store.get_row("template", project_id, body.template_id)
    except NotFound:
        raise ApiError(400, f"field `template_id`: template {body.template_id} not found in "
                            f"project {project_id}") from None
    if rules.needs_secret(body.auth_method):
        if body.auth_secret_id is None:
            raise ApiError(400, f"field `auth_secret_id`: auth method {body.auth_method} "
                                "needs a login_password access key (its password is the "
                                "secret)")
        await password_key(store, project_id, body.auth_secret_id, "field `auth_secret_id`",
                           "the secret")
    if rules.needs_header(body.auth_method) and not body.auth_header.strip():
        raise ApiError(400, f"field `auth_header`: auth method {body.auth_method} needs the "
                            "name of the header that carries the signature or token")
    # Only what was set is stored (omit_defaults), as Semaphore keeps its map.
    params = msgspec.json.encode(body.task_params).decode() if body.task_params else "{}"
    return {"name": body.name, "template_id": body.template_id,
            "auth_method": body.auth_method,
            "auth_secret_id": body.auth_secret_id if rules.needs_secret(body.auth_method)
            else None,
            "auth_header": body.auth_header.strip(), "searchable": int(body.searchable),
            "task_params": params}


async def _integration_values(request: web.Request, project_id: int) -> dict[str, Any]:
    body = await read_body(request, IntegrationRequest)
    return await integration_values(hub_of(request).store, project_id, body)


async def _integration(request: web.Request, project_id: int) -> Row:
    return await hub_of(request).store.get_row("integration", project_id,
                                               int_param(request, "integration_id"))


async def list_integrations(request: web.Request) -> web.Response:
    project_id = await project_access(request)
    rows = await hub_of(request).store.list_rows("integration", project_id)
    return json_response([integration_json(row) for row in rows])


async def get_integration(request: web.Request) -> web.Response:
    project_id = await project_access(request)
    return json_response(integration_json(await _integration(request, project_id)))


async def create_integration(request: web.Request) -> web.Response:
    project_id = await project_access(request, "manager")
    values = await _integration_values(request, project_id)
    row = await hub_of(request).store.create_row("integration", project_id, values)
    await record_request(request, "integration", f"Integration {row['name']} created",
                         object_id=row["id"], object_name=row["name"])
    return json_response(integration_json(row), status=201)


async def update_integration(request: web.Request) -> web.Response:
    project_id = await project_access(request, "manager")
    row = await _integration(request, project_id)  # 404 before the body's 400s
    values = await _integration_values(request, project_id)
    await hub_of(request).store.update_row("integration", project_id, row["id"], values)
    await record_request(request, "integration", f"Integration {values['name']} updated",
                         object_id=row["id"], object_name=values["name"])
    return no_content()


async def delete_integration(request: web.Request) -> web.Response:
    project_id = await project_access(request, "manager")
    row = await _integration(request, project_id)
    await hub_of(request).store.delete_row("integration", project_id, row["id"])
    await record_request(request, "integration", f"Integration {row['name']} deleted",
                         object_id=row["id"], object_name=row["name"])
    return no_content()


# Matchers and extract values: rows of one integration, the same handlers for both.

def matcher_values(body: MatcherRequest) -> dict[str, Any]:
    # Semaphore: a key and a value are required (a body matched as a string has no key).
    if not body.key and not (body.match_type == "body" and body.body_data_type == "string"):
        raise ApiError(400, "field `key`: required (the header's name, or the JSON path in "
                            "the body)")
    if not body.value:
        raise ApiError(400, "field `value`: required")
    if body.match_type == "body" and not body.body_data_type:
        raise ApiError(400, "field `body_data_type`: required for a body matcher (json or "
                            "string)")
    return {"name": body.name, "match_type": body.match_type, "method": body.method,
            "body_data_type": body.body_data_type if body.match_type == "body" else "",
            "key": body.key, "value": body.value}


def extract_value_values(body: ExtractValueRequest) -> dict[str, Any]:
    if body.value_source == "body" and not body.body_data_type:
        raise ApiError(400, "field `body_data_type`: required for a value from the body "
                            "(json or string)")
    reads_key = body.value_source == "header" or body.body_data_type == "json"
    if reads_key and not body.key:
        raise ApiError(400, "field `key`: required (the header's name, or the JSON path in "
                            "the body)")
    return {"name": body.name, "value_source": body.value_source,
            "body_data_type": body.body_data_type if body.value_source == "body" else "",
            "key": body.key, "variable": body.variable,
            "variable_type": body.variable_type or "environment"}


CHILDREN: dict[str, tuple[str, str, str, Any, Any, Any]] = {
    # kind: table, URL id, audit object type, request model, values, JSON
    "matchers": ("integration_matcher", "row_id", "integrationmatcher", MatcherRequest,
                 matcher_values, matcher_json),
    "values": ("integration_extract_value", "row_id", "integrationextractvalue",
               ExtractValueRequest, extract_value_values, value_json),
}
# Semaphore answers a created matcher with 200, a created extract value with 201.
CREATED_STATUS = {"matchers": 200, "values": 201}


def _kind(request: web.Request) -> str:
    return request.match_info["kind"]


async def list_children(store: Any, table: str, project_id: int,
                        integration_id: int) -> list[Row]:
    return [row for row in await store.list_rows(table, project_id)
            if row["integration_id"] == integration_id]


async def _child(request: web.Request, project_id: int, integration: Row) -> Row:
    table, id_name = CHILDREN[_kind(request)][:2]
    child_id = int_param(request, id_name)
    row = await hub_of(request).store.get_row(table, project_id, child_id)
    if row["integration_id"] != integration["id"]:
        raise NotFound(f"{table.replace('_', ' ')} {child_id} not found")
    return row


async def list_rows(request: web.Request) -> web.Response:
    project_id = await project_access(request)
    integration = await _integration(request, project_id)
    table, _, _, _, _, show = CHILDREN[_kind(request)]
    rows = await list_children(hub_of(request).store, table, project_id, integration["id"])
    return json_response([show(row) for row in rows])


async def get_row(request: web.Request) -> web.Response:
    project_id = await project_access(request)
    integration = await _integration(request, project_id)
    show = CHILDREN[_kind(request)][5]
    return json_response(show(await _child(request, project_id, integration)))


async def create_row(request: web.Request) -> web.Response:
    project_id = await project_access(request, "manager")
    integration = await _integration(request, project_id)
    kind = _kind(request)
    table, _, object_type, model, values_of, show = CHILDREN[kind]
    values = values_of(await read_body(request, model))
    row = await hub_of(request).store.create_row(
        table, project_id, {**values, "integration_id": integration["id"]})
    await record_request(request, object_type, f"{_noun(kind)} {row['name']} of integration "
                         f"{integration['name']} created", object_id=row["id"],
                         object_name=row["name"])
    return json_response(show(row), status=CREATED_STATUS[kind])


async def update_row(request: web.Request) -> web.Response:
    project_id = await project_access(request, "manager")
    integration = await _integration(request, project_id)
    kind = _kind(request)
    table, _, object_type, model, values_of, _ = CHILDREN[kind]
    row = await _child(request, project_id, integration)
    values = values_of(await read_body(request, model))
    await hub_of(request).store.update_row(table, project_id, row["id"], values)
    await record_request(request, object_type, f"{_noun(kind)} {values['name']} of "
                         f"integration {integration['name']} updated", object_id=row["id"],
                         object_name=values["name"])
    return no_content()


async def delete_row(request: web.Request) -> web.Response:
    project_id = await project_access(request, "manager")
    integration = await _integration(request, project_id)
    kind = _kind(request)
    table, _, object_type = CHILDREN[kind][:3]
    row = await _child(request, project_id, integration)
    await hub_of(request).store.delete_row(table, project_id, row["id"])
    await record_request(request, object_type, f"{_noun(kind)} {row['name']} of integration "
                         f"{integration['name']} deleted", object_id=row["id"],
                         object_name=row["name"])
    return no_content()


def _noun(kind: str) -> str:
    return "Matcher" if kind == "matchers" else "Extract value"


# Aliases: of one integration (/integrations/{id}/aliases) or of the project
# (/integrations/aliases), which serves its searchable integrations.

async def _alias_owner(request: web.Request, min_role: str) -> tuple[int, int | None]:
    project_id = await project_access(request, min_role)
    if "integration_id" not in request.match_info:
        return project_id, None
    return project_id, (await _integration(request, project_id))["id"]


async def list_aliases(request: web.Request) -> web.Response:
    project_id, integration_id = await _alias_owner(request, "task_runner")
    rows = await hub_of(request).store.list_rows("integration_alias", project_id)
    return json_response([alias_json(request, row) for row in rows
                          if row["integration_id"] == integration_id])


async def create_alias(request: web.Request) -> web.Response:
    project_id, integration_id = await _alias_owner(request, "manager")
    row = await hub_of(request).store.create_row("integration_alias", project_id, {
        "integration_id": integration_id, "alias": new_alias()})
    await _record_alias(request, row, "created")
    return json_response(alias_json(request, row))  # Semaphore: 200


def new_alias() -> str:
    """A fresh alias: the only thing a sender of an integration without auth must know."""
    return secrets.token_urlsafe(ALIAS_BYTES)


async def delete_alias(request: web.Request) -> web.Response:
    project_id, integration_id = await _alias_owner(request, "manager")
    alias_id = int_param(request, "alias_id")
    store = hub_of(request).store
    row = await store.get_row("integration_alias", project_id, alias_id)
    if row["integration_id"] != integration_id:
        raise NotFound(f"alias {alias_id} not found")
    await store.delete_row("integration_alias", project_id, alias_id)
    await _record_alias(request, row, "deleted")
    return no_content()


async def _record_alias(request: web.Request, row: Row, what: str) -> None:
    """Semaphore has no alias events: one of the integration (or project) it belongs to."""
    owner = "the project" if row["integration_id"] is None else \
        f"integration {row['integration_id']}"
    await record_request(request, "integration", f"Webhook URL {row['id']} of {owner} {what}",
                         object_id=row["integration_id"])
