"""CRUD for what a project owns: keys, repositories, inventory, environments, templates.

One generic set of handlers, driven by a `Resource` per kind: the request model, the table,
how a row is shown, and which other rows a reference must point to in the same project.
"""

import json
from collections.abc import Callable
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
)
from hub.api.models import (
    AccessKeyRequest,
    EnvironmentRequest,
    InventoryRequest,
    RepositoryRequest,
    TemplateRequest,
)
from hub.spec import SpecError, parse_arguments, parse_env
from hub.store import NotFound


@dataclass(frozen=True)
class Resource:
    table: str
    model: type
    show: Callable[[dict], dict]
    id_param: str
    # field -> table it must reference in the same project
    references: tuple[tuple[str, str], ...] = ()
    to_values: Callable[[Any], dict] = msgspec.structs.asdict


def _access_key_values(body: AccessKeyRequest) -> dict:
    secret: dict[str, Any] = {}
    if body.type == "login_password" and body.login_password is not None:
        secret = msgspec.structs.asdict(body.login_password)
    elif body.type == "ssh" and body.ssh is not None:
        secret = msgspec.structs.asdict(body.ssh)
    return {"name": body.name, "type": body.type, "secret": json.dumps(secret)}


def _environment_values(body: EnvironmentRequest) -> dict:
    try:
        parse_env(body.env, "field `env`")
        parse_env(body.json, "field `json`")
    except SpecError as exc:
        raise ApiError(400, str(exc)) from None
    return msgspec.structs.asdict(body)


def _template_values(body: TemplateRequest) -> dict:
    try:
        parse_arguments(body.arguments, "field `arguments`")
    except SpecError as exc:
        raise ApiError(400, str(exc)) from None
    values = msgspec.structs.asdict(body)
    values["arguments"] = body.arguments or "[]"
    values["allow_override_args_in_task"] = int(body.allow_override_args_in_task)
    return values


RESOURCES = {
    "keys": Resource("access_key", AccessKeyRequest, serialize.access_key_json, "key_id",
                     to_values=_access_key_values),
    "repositories": Resource("repository", RepositoryRequest, serialize.repository_json,
                             "repository_id", (("ssh_key_id", "access_key"),)),
    "inventory": Resource("inventory", InventoryRequest, serialize.inventory_json,
                          "inventory_id", (("ssh_key_id", "access_key"),
                                           ("become_key_id", "access_key"),
                                           ("repository_id", "repository"))),
    "environment": Resource("environment", EnvironmentRequest, serialize.environment_json,
                            "environment_id", to_values=_environment_values),
    "templates": Resource("template", TemplateRequest, serialize.template_json, "template_id",
                          (("repository_id", "repository"), ("inventory_id", "inventory"),
                           ("environment_id", "environment")), to_values=_template_values),
}


def _resource(request: web.Request) -> Resource:
    return RESOURCES[request.match_info["resource"]]


async def _values(request: web.Request, resource: Resource, project_id: int) -> dict:
    body = await read_body(request, resource.model)
    values = resource.to_values(body)
    store = hub_of(request).store
    for field, table in resource.references:
        ref = values.get(field)
        if ref is not None:
            try:
                await store.get_row(table, project_id, ref)
            except NotFound:
                raise ApiError(400, f"field `{field}`: {table.replace('_', ' ')} {ref} "
                                    f"not found in project {project_id}") from None
    return values


async def list_rows(request: web.Request) -> web.Response:
    resource = _resource(request)
    project_id = await project_access(request)
    rows = await hub_of(request).store.list_rows(resource.table, project_id)
    return json_response([resource.show(row) for row in rows])


async def create_row(request: web.Request) -> web.Response:
    resource = _resource(request)
    project_id = await project_access(request, "manager")
    values = await _values(request, resource, project_id)
    row = await hub_of(request).store.create_row(resource.table, project_id, values)
    return json_response(resource.show(row), status=201)


async def get_row(request: web.Request) -> web.Response:
    resource = _resource(request)
    project_id = await project_access(request)
    row = await hub_of(request).store.get_row(resource.table, project_id,
                                              int_param(request, "item_id"))
    return json_response(resource.show(row))


async def update_row(request: web.Request) -> web.Response:
    resource = _resource(request)
    project_id = await project_access(request, "manager")
    values = await _values(request, resource, project_id)
    await hub_of(request).store.update_row(resource.table, project_id,
                                           int_param(request, "item_id"), values)
    return no_content()


async def delete_row(request: web.Request) -> web.Response:
    resource = _resource(request)
    project_id = await project_access(request, "manager")
    if resource.table == "template":
        # Its tasks go with it, so none may still be running.
        template_id = int_param(request, "item_id")
        unfinished = sorted(t.task_id for t in hub_of(request).dispatcher.tasks.values()
                            if t.spec.template_id == template_id
                            and t.project_id == project_id)
        if unfinished:
            raise ApiError(400, f"template {template_id} has unfinished tasks {unfinished}; "
                                "stop them first")
    await hub_of(request).store.delete_row(resource.table, project_id,
                                           int_param(request, "item_id"))
    return no_content()
