"""/api/project/{project_id}/tasks: run a template, follow a task, read its output, stop it."""

import json
import re
from collections.abc import AsyncIterator

import msgspec
import structlog
from aiohttp import web

from hub.api.common import (
    ROLE_RANK,
    ApiError,
    current_user,
    hub_of,
    int_param,
    json_response,
    no_content,
    project_access,
    read_body,
    require_admin,
    sort_params,
)
from hub.api.models import TaskRequest
from hub.api.serialize import OutputLines, stored_text, task_json
from hub.api.task_params import check_param_overrides, task_params
from hub.context import PROJECT
from hub.core import audit
from hub.core.spec import SpecError, check_playbook, parse_arguments
from hub.core.survey import stored_object, stored_survey, survey_values
from hub.core.tasks import NotAwaiting
from hub.store import NotFound

log = structlog.get_logger("hub.api.tasks")

OUTPUT_PAGE_ROWS = 256  # frames of up to 16 KiB each: a few MB per page at most
COMMIT_HASH = re.compile(r"[0-9a-f]{4,64}\Z")


def _show(request: web.Request, row: dict) -> dict:
    return task_json(row, hub_of(request).lifecycle.waiting_reason(row["id"]))


async def list_tasks(request: web.Request) -> web.Response:
    project_id = await project_access(request)
    limit = 200 if request.path.rstrip("/").endswith("/last") else None
    sort, descending = sort_params(request, "task", descending=True)
    rows = await hub_of(request).store.list_tasks(project_id, limit, sort, descending)
    return json_response([_show(request, row) for row in rows])


async def create_task(request: web.Request) -> web.Response:
    project_id = await project_access(request, "task_runner")
    body = await read_body(request, TaskRequest)
    hub = hub_of(request)
    try:
        template = await hub.store.get_row("template", project_id, body.template_id)
    except NotFound:
        raise ApiError(400, f"field `template_id`: template {body.template_id} not found in "
                            f"project {project_id}") from None
    try:
        parse_arguments(body.arguments, "field `arguments`")
        check_playbook(body.playbook, "field `playbook`")
        # The survey's answers, typed (an int as a number); its secrets kept apart.
        typed, secret = survey_values(stored_survey(template.get("survey_vars")),
                                      body.environment, body.secret)
    except SpecError as exc:
        raise ApiError(400, str(exc)) from None
    await _check_overrides(request, project_id, body, template)
    values = {key: value for key, value in msgspec.structs.asdict(body).items()
              if key in ("playbook", "environment", "arguments", "git_branch", "message",
                         "inventory_id", "commit_hash")}
    if typed is not None:
        values["environment"] = json.dumps(typed) if typed or body.environment else ""
    values["params"] = json.dumps(task_params(body, template))
    if secret:
        # Never stored in the clear nor shown back (Semaphore's task `secret`); dropped from
        # the database when the task ends.
        values["secret"] = hub.cipher.encrypt(json.dumps(secret))
    # Semaphore's wording; written with the task, in its transaction.
    event = audit.new_object_event("task", lambda task_id: f"Task ID {task_id} queued for "
                                   "running", project=request[PROJECT],
                                   user=current_user(request), object_name=template["name"])
    row = await hub.tasks.create(request[PROJECT], template, values,
                                 current_user(request)["id"], event=event)
    return json_response(_show(request, row), status=201)


async def _check_overrides(request: web.Request, project_id: int, body: TaskRequest,
                           template: dict) -> None:
    """What a task may change of its template, as Semaphore's allow_override_* flags say;
    the playbook (which code runs) only for those who may edit the template anyway."""
    if body.arguments and not template["allow_override_args_in_task"]:
        raise ApiError(400, f"field `arguments`: template {template['id']} does not allow "
                            "arguments to be set per task (allow_override_args_in_task)")
    if (body.git_branch and body.git_branch != template["git_branch"]
            and not template["allow_override_branch_in_task"]):
        raise ApiError(400, f"field `git_branch`: template {template['id']} does not allow "
                            "the branch to be chosen per task (allow_override_branch_in_task)")
    if body.commit_hash and not template["allow_override_branch_in_task"]:
        raise ApiError(400, f"field `commit_hash`: template {template['id']} does not allow "
                            "the commit to be chosen per task (allow_override_branch_in_task)")
    if body.commit_hash and not COMMIT_HASH.match(body.commit_hash):
        raise ApiError(400, "field `commit_hash` must be a commit hash (4 to 64 hexadecimal "
                            f"digits, lower case), got {body.commit_hash[:80]!r}")
    allowed = stored_object(template.get("task_params"))
    if body.inventory_id is not None and body.inventory_id != template["inventory_id"]:
        # Semaphore allows it only with the template's task_params.allow_override_inventory:
        # refused otherwise rather than silently run with another one.
        if not allowed.get("allow_override_inventory"):
            raise ApiError(400, f"field `inventory_id`: template {template['id']} does not "
                                "allow the inventory to be chosen per task "
                                "(task_params.allow_override_inventory)")
        try:
            await hub_of(request).store.get_row("inventory", project_id, body.inventory_id)
        except NotFound:
            raise ApiError(400, f"field `inventory_id`: inventory {body.inventory_id} not "
                                f"found in project {project_id}") from None
    check_param_overrides(body, template, allowed)
    if body.playbook and body.playbook != template["playbook"]:
        user = current_user(request)
        role = None if user["admin"] else await hub_of(request).store.project_role(
            project_id, user["id"])
        if role is not None and ROLE_RANK[role] < ROLE_RANK["manager"]:
            raise ApiError(403, "field `playbook`: only a manager or owner of the project may "
                                "run a template with another playbook")


async def _task(request: web.Request) -> dict:
    project_id = await project_access(request)
    return await hub_of(request).store.get_task(int_param(request, "task_id"), project_id)


async def get_task(request: web.Request) -> web.Response:
    return json_response(_show(request, await _task(request)))


async def delete_task(request: web.Request) -> web.Response:
    project_id = await project_access(request, "manager")
    # Semaphore: a task and its output are the project's history; only admins delete them.
    require_admin(request)
    task_id = int_param(request, "task_id")
    hub = hub_of(request)
    if hub.lifecycle.is_active(task_id):
        raise ApiError(400, f"task {task_id} has not ended; stop it before deleting it")
    await hub.store.delete_task(task_id, project_id)
    await _record(request, task_id, "deleted")
    return no_content()


async def _record(request: web.Request, task_id: int, done: str) -> None:
    await audit.record_request(request, "task", f"Task ID {task_id} {done}",
                               object_id=task_id)


async def _pages(request: web.Request, task_id: int) -> AsyncIterator[list[dict]]:
    """Stored output a page at a time, so a 100 MB log never sits whole in the hub's memory."""
    store = hub_of(request).store
    after = 0
    while True:
        chunks = await store.read_output(task_id, after, OUTPUT_PAGE_ROWS)
        if not chunks:
            return
        yield chunks
        after = chunks[-1]["seq"]


async def task_output(request: web.Request) -> web.StreamResponse:
    row = await _task(request)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    separator = b"["
    lines = OutputLines(row["id"])

    async def send(entries: list[dict]) -> None:
        nonlocal separator
        for entry in entries:
            await response.write(separator + msgspec.json.encode(entry))
            separator = b","

    async for chunks in _pages(request, row["id"]):
        await send(lines.feed(chunks))
    await send(lines.finish())
    await response.write(b"[]" if separator == b"[" else b"]")
    await response.write_eof()
    if lines.repaired:  # once per read, however many rows
        log.warning("task.output.repaired", task_id=row["id"], rows=lines.repaired)
    return response


async def task_raw_output(request: web.Request) -> web.StreamResponse:
    row = await _task(request)
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    async for chunks in _pages(request, row["id"]):
        await response.write("".join(stored_text(chunk["data"]) for chunk in chunks).encode())
    await response.write_eof()
    return response


async def confirm_task(request: web.Request) -> web.Response:
    """Semaphore's POST .../tasks/{id}/confirm: apply the plan the task waits with."""
    return await _decide(request, approved=True)


async def reject_task(request: web.Request) -> web.Response:
    """Semaphore's POST .../tasks/{id}/reject: the plan is not applied; the task ends
    `stopped`, its message saying who rejected it."""
    return await _decide(request, approved=False)


async def _decide(request: web.Request, approved: bool) -> web.Response:
    # Whoever may stop a task may decide on its plan (Semaphore: the same role).
    project_id = await project_access(request, "task_runner")
    task_id = int_param(request, "task_id")
    hub = hub_of(request)
    row = await hub.store.get_task(task_id, project_id)  # 404 for another project's task
    try:
        await hub.tasks.decide(task_id, approved, current_user(request)["username"])
    except NotAwaiting as exc:
        status = exc.status or row["status"]
        raise ApiError(400, f"task {task_id} is {status}, not waiting_confirmation: only a "
                            "task whose plan waits for a decision can be confirmed or "
                            "rejected") from None
    await _record(request, task_id, "confirmed" if approved else "rejected")
    return no_content()


async def stop_task(request: web.Request) -> web.Response:
    project_id = await project_access(request, "task_runner")
    task_id = int_param(request, "task_id")
    hub = hub_of(request)
    await hub.store.get_task(task_id, project_id)
    await _stop(request, task_id)
    return no_content()


async def _stop(request: web.Request, task_id: int) -> None:
    """Stop a task; an event when it had not ended (stopping an ended task changes nothing)."""
    hub = hub_of(request)
    active = hub.lifecycle.is_active(task_id)
    await hub.tasks.stop(task_id)
    if active:
        await _record(request, task_id, "stopped")


async def stop_all_tasks(request: web.Request) -> web.Response:
    """Semaphore's POST .../templates/{id}/stop_all_tasks: every unfinished task of the
    template is stopped, one by one, as if each had been stopped on its own."""
    project_id = await project_access(request, "task_runner")
    template_id = int_param(request, "template_id")
    hub = hub_of(request)
    await hub.store.get_row("template", project_id, template_id)  # 404 for another project's
    for row in await hub.store.list_unfinished_tasks():
        if row["project_id"] == project_id and row["template_id"] == template_id:
            await _stop(request, row["id"])
    return no_content()
