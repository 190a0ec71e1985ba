"""CRUD for what a project owns: keys, repositories, inventory, environments, templates.

One generic set of handlers, driven by a `Resource` per kind: the request model, the table,
how a row is shown, and which other rows a reference must point to in the same project.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from hub.api import serialize
from hub.api.common import (
    ApiError,
    hub_of,
    int_param,
    json_response,
    no_content,
    project_access,
    read_body,
    sort_params,
)
from hub.api.models import (
    AccessKeyRequest,
    EnvironmentRequest,
    InventoryRequest,
    RepositoryRequest,
    TemplateRequest,
    ViewRequest,
)
from hub.api.secrets import (
    access_key_values,
    check_env_secrets,
    env_secrets_json,
    environment_password_values,
    save_env_secrets,
)
from hub.api.vaults import check_vault_keys, vaults_column
from hub.context import Hub
from hub.core import audit
from hub.core.spec import SpecError, check_playbook, parse_arguments, parse_env
from hub.core.survey import check_survey, survey_column
from hub.store import NotFound


@dataclass(frozen=True)
class Resource:
    table: str
    model: type
    show: Callable[[dict], dict]
    id_param: str
    # field -> table it must reference in the same project
    references: tuple[tuple[str, str], ...] = ()
    # (body, hub, creating) -> the columns to store
    to_values: Callable[[Any, Hub, bool], dict] = lambda body, hub, creating: (
        msgspec.structs.asdict(body))
    # Work after the row is stored (environment secrets live in their own table).
    after_save: Callable[[Hub, int, Any], Awaitable[None]] | None = None
    # Fields shown that are not columns of the row.
    extra: Callable[[Hub, dict], Awaitable[dict]] | None = None
    # Checks that read the store (references inside a field), before anything is stored.
    check: Callable[[Hub, int, Any], Awaitable[None]] | None = None
    # The list's order without a `sort` parameter ("" for the row id).
    default_sort: str = ""
    # The audit trail: Semaphore's object_type and how its descriptions name the kind.
    object_type: str = ""
    noun: str = ""
    name_column: str = "name"


def _environment_values(body: EnvironmentRequest, hub: Hub, creating: bool) -> dict:
    try:
        parse_env(body.env, "field `env`")
        parse_env(body.json, "field `json`")
    except SpecError as exc:
        raise ApiError(400, str(exc)) from None
    check_env_secrets(body, hub)
    values = msgspec.structs.asdict(body)
    values.pop("secrets")
    values.pop("password")
    return values | environment_password_values(body, hub)


async def _environment_extra(hub: Hub, row: dict) -> dict:
    return {"secrets": await env_secrets_json(hub, row["id"])}


def _template_values(body: TemplateRequest, hub: Hub, creating: bool) -> dict:
    try:
        parse_arguments(body.arguments, "field `arguments`")
        check_playbook(body.playbook, "field `playbook`")
    except SpecError as exc:
        raise ApiError(400, str(exc)) from None
    values = msgspec.structs.asdict(body)
    values["arguments"] = body.arguments or "[]"
    values["allow_override_args_in_task"] = int(body.allow_override_args_in_task)
    values["allow_override_branch_in_task"] = int(body.allow_override_branch_in_task)
    for key in ("survey_vars", "task_params"):
        values.pop(key)
    values.pop("vaults")
    if body.vaults is not None:
        values["vaults"] = vaults_column(body.vaults)
    elif creating:
        values["vaults"] = "[]"
    return values | _template_extras(body, creating)


def _template_extras(body: TemplateRequest, creating: bool) -> dict:
    """Semaphore's survey, task_params and flags as columns. A survey or task_params left
    out of an update keeps what is stored (as `vaults`)."""
    values: dict = {key: int(getattr(body, key)) for key in (
        "allow_parallel_tasks", "suppress_success_alerts", "autorun")}
    values["survey_vars"] = values["task_params"] = None
    if body.survey_vars is not None:
        try:
            check_survey(body.survey_vars)
        except SpecError as exc:
            raise ApiError(400, str(exc)) from None
        values["survey_vars"] = survey_column(body.survey_vars)
    elif creating:
        values["survey_vars"] = "[]"
    if body.task_params is not None:
        values["task_params"] = msgspec.json.encode(body.task_params).decode()
    elif creating:
        values["task_params"] = "{}"
    return {key: value for key, value in values.items() if value is not None}


RESOURCES = {
    "keys": Resource("access_key", AccessKeyRequest, serialize.access_key_json, "key_id",
                     to_values=access_key_values, object_type="key", noun="Access Key"),
    # Named by its name, not (as Semaphore) its URL, which may carry a password.
    "repositories": Resource("repository", RepositoryRequest, serialize.repository_json,
                             "repository_id", (("ssh_key_id", "access_key"),),
                             object_type="repository", noun="Repository"),
    "inventory": Resource("inventory", InventoryRequest, serialize.inventory_json,
                          "inventory_id", (("ssh_key_id", "access_key"),
                                           ("become_key_id", "access_key"),
                                           ("repository_id", "repository")),
                          object_type="inventory", noun="Inventory"),
    "environment": Resource("environment", EnvironmentRequest, serialize.environment_json,
                            "environment_id", to_values=_environment_values,
                            after_save=save_env_secrets, extra=_environment_extra,
                            object_type="environment", noun="Environment"),
    "templates": Resource("template", TemplateRequest, serialize.template_json, "template_id",
                          (("repository_id", "repository"), ("inventory_id", "inventory"),
                           ("environment_id", "environment"), ("view_id", "project_view"),
                           ("build_template_id", "template")),
                          to_values=_template_values, check=check_vault_keys,
                          object_type="template", noun="Template"),
    "views": Resource("project_view", ViewRequest, serialize.view_json, "view_id",
                      default_sort="position", object_type="view", noun="View",
                      name_column="title"),
}


def _resource(request: web.Request) -> Resource:
    return RESOURCES[request.match_info["resource"]]


async def _values(request: web.Request, resource: Resource, project_id: int,
                  creating: bool) -> tuple[dict, Any]:
    body: Any = await read_body(request, resource.model)
    return await checked_values(hub_of(request), resource, project_id, body, creating), body


async def checked_values(hub: Hub, resource: Resource, project_id: int, body: Any,
                         creating: bool) -> dict:
    """The columns to store for a decoded request body, once every check of the REST API
    passed (its own fields, then what it references in the project): one path for the API
    and for a restored backup (hub/api/backup_format.py)."""
    values = resource.to_values(body, hub, creating)
    if resource.check is not None:
        await resource.check(hub, project_id, body)
    for field, table in resource.references:
        ref = values.get(field)
        if ref is not None:
            try:
                await hub.store.get_row(table, project_id, ref)
            except NotFound:
                raise ApiError(400, f"field `{field}`: {_noun(table)} {ref} "
                                    f"not found in project {project_id}") from None
    return values


async def create_from_body(hub: Hub, resource: Resource, project_id: int, body: Any) -> dict:
    """Check and store a new row as POST would; the stored row."""
    values = await checked_values(hub, resource, project_id, body, creating=True)
    row = await hub.store.create_row(resource.table, project_id, values)
    if resource.after_save is not None:
        await resource.after_save(hub, row["id"], body)
    return row


async def _record(request: web.Request, resource: Resource, row_id: int, name: str,
                  done: str) -> None:
    """Semaphore's "<Kind> <name> created|updated|deleted" event."""
    await audit.record_request(request, resource.object_type,
                               f"{resource.noun} {name} {done}", object_id=row_id,
                               object_name=name)


def _noun(table: str) -> str:
    return "view" if table == "project_view" else table.replace("_", " ")


async def _show(request: web.Request, resource: Resource, row: dict) -> dict:
    shown = resource.show(row)
    if resource.extra is not None:
        shown |= await resource.extra(hub_of(request), row)
    return shown


async def list_rows(request: web.Request) -> web.Response:
    resource = _resource(request)
    project_id = await project_access(request)
    sort, descending = sort_params(request, resource.table)
    rows = await hub_of(request).store.list_rows(resource.table, project_id,
                                                 sort or resource.default_sort, descending)
    return json_response([await _show(request, resource, row) for row in rows])


async def create_row(request: web.Request) -> web.Response:
    resource = _resource(request)
    project_id = await project_access(request, "manager")
    body: Any = await read_body(request, resource.model)
    row = await create_from_body(hub_of(request), resource, project_id, body)
    await _record(request, resource, row["id"], row[resource.name_column], "created")
    return json_response(await _show(request, resource, row), status=201)


async def get_row(request: web.Request) -> web.Response:
    resource = _resource(request)
    project_id = await project_access(request)
    row = await hub_of(request).store.get_row(resource.table, project_id,
                                              int_param(request, "item_id"))
    return json_response(await _show(request, resource, row))


async def update_row(request: web.Request) -> web.Response:
    resource = _resource(request)
    project_id = await project_access(request, "manager")
    values, body = await _values(request, resource, project_id, creating=False)
    hub = hub_of(request)
    row_id = int_param(request, "item_id")
    await hub.store.update_row(resource.table, project_id, row_id, values)
    if resource.after_save is not None:
        await resource.after_save(hub, row_id, body)
    await _record(request, resource, row_id, values[resource.name_column], "updated")
    return no_content()


async def delete_row(request: web.Request) -> web.Response:
    resource = _resource(request)
    project_id = await project_access(request, "manager")
    if resource.table == "template":
        # Its tasks go with it, so none may still be running.
        template_id = int_param(request, "item_id")
        unfinished = hub_of(request).lifecycle.unfinished(project_id, template_id)
        if unfinished:
            raise ApiError(400, f"template {template_id} has unfinished tasks {unfinished}; "
                                "stop them first")
    store = hub_of(request).store
    # Read first: the event names what was deleted (and a missing row is the 404).
    row = await store.get_row(resource.table, project_id, int_param(request, "item_id"))
    await store.delete_row(resource.table, project_id, row["id"])
    await _record(request, resource, row["id"], row[resource.name_column], "deleted")
    return no_content()
