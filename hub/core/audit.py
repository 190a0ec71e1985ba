"""The audit trail (Semaphore's events): one row per change a person, a runner or an
integration made, written after the change succeeded.

Event shape and object types follow Semaphore (db/Event.go): `object_type` is one of
OBJECT_TYPES, `description` a sentence a person reads ("Template deploy created").
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from hub.context import HUB, PROJECT, USER, Hub

log = structlog.get_logger("hub.audit")

# Semaphore's EventObjectType values, plus the runner (Semaphore writes no runner events).
OBJECT_TYPES = frozenset({
    "task", "environment", "inventory", "key", "project", "repository", "schedule",
    "template", "user", "view", "integration", "integrationextractvalue",
    "integrationmatcher", "runner",
})


def event_values(object_type: str, description: str, *,
                 project: dict[str, Any] | None = None, user: dict[str, Any] | None = None,
                 object_id: int | None = None, object_name: str = "",
                 integration_id: int | None = None) -> dict[str, Any]:
    """The event row `Store.add_event` takes. `project` and `user` are rows (their names are
    copied in)."""
    if object_type not in OBJECT_TYPES:
        raise ValueError(f"unknown event object type {object_type!r}")
    values: dict[str, Any] = {
        "object_type": object_type,
        "description": description,
        "object_id": object_id,
        "object_name": object_name,
        "integration_id": integration_id,
    }
    if project is not None:
        values |= {"project_id": project["id"], "project_name": project["name"]}
    if user is not None:
        values |= {"user_id": user["id"], "username": user["username"]}
    return values


@dataclass(frozen=True)
class NewObjectEvent:
    """An event about an object not stored yet, written in the same transaction as the
    object itself once its id is known (a task: the row and its "queued" event commit
    together, in one hand-over to the database)."""

    values: dict[str, Any]  # event_values(...) without object_id and description
    describe: Callable[[int], str]  # the description, given the new object's id

    def row(self, object_id: int) -> dict[str, Any]:
        return {**self.values, "object_id": object_id, "description": self.describe(object_id)}

    def logged(self, object_id: int) -> None:
        """Log it as `record` does, once its transaction committed."""
        _log_event(self.row(object_id))


def new_object_event(object_type: str, describe: Callable[[int], str], *,
                     project: dict[str, Any] | None = None,
                     user: dict[str, Any] | None = None, object_name: str = "",
                     integration_id: int | None = None) -> NewObjectEvent:
    values = event_values(object_type, "", project=project, user=user,
                          object_name=object_name, integration_id=integration_id)
    del values["object_id"], values["description"]
    return NewObjectEvent(values, describe)


def _log_event(values: dict[str, Any]) -> None:
    log.info("audit.event", object_type=values["object_type"], object_id=values["object_id"],
             project_id=values.get("project_id"), user_id=values.get("user_id"),
             integration_id=values.get("integration_id"), description=values["description"])


async def record(hub: Hub, object_type: str, description: str, *,
                 project: dict[str, Any] | None = None, user: dict[str, Any] | None = None,
                 object_id: int | None = None, object_name: str = "",
                 integration_id: int | None = None) -> None:
    """Store one event. `project` and `user` are rows (their names are copied in)."""
    values = event_values(object_type, description, project=project, user=user,
                          object_id=object_id, object_name=object_name,
                          integration_id=integration_id)
    await hub.store.add_event(values)
    _log_event(values)


async def record_request(request: web.Request, object_type: str, description: str, *,
                         object_id: int | None = None, object_name: str = "",
                         project: dict[str, Any] | None = None) -> None:
    """An event made by the request's user, in the request's project (if the URL has one and
    access was checked) unless `project` says otherwise: no extra database reads."""
    await record(request.app[HUB], object_type, description,
                 project=project if project is not None else request.get(PROJECT),
                 user=request.get(USER), object_id=object_id, object_name=object_name)


async def record_scheduled(hub: Hub, schedule: dict[str, Any], project: dict[str, Any],
                           template: dict[str, Any], task: dict[str, Any]) -> None:
    """A task a schedule started: no user; the description names the schedule."""
    await record(hub, "task", f"Task ID {task['id']} queued for running by schedule "
                              f"{schedule['name']}", project=project, object_id=task["id"],
                 object_name=template["name"])


def gone(project: dict[str, Any]) -> dict[str, Any]:
    """A deleted project as `record` takes it: its name without its id, which no longer
    references a row (the event table's foreign key would refuse it)."""
    return {"id": None, "name": project["name"]}


def event_json(row: dict[str, Any]) -> dict[str, Any]:
    """An event as Semaphore's API shows it."""
    return {
        "project_id": row["project_id"],
        "user_id": row["user_id"],
        "integration_id": row["integration_id"],
        "object_id": row["object_id"],
        "object_type": row["object_type"],
        "object_name": row["object_name"],
        "description": row["description"],
        "created": row["created"],
        "project_name": row["project_name"],
        "username": row["username"],
    }
