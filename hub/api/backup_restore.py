"""Restore of a project backup in Semaphore's format (hub/api/backup_format.py describes it)
into a new project: every reference by name checked first (Plan), then each object stored
through the REST API's own request models and checks (Restore), all or nothing.
"""

import json
from collections.abc import Callable
from typing import Any

import msgspec

from hub.api.common import ApiError
from hub.api.integrations import (
    ExtractValueRequest,
    IntegrationRequest,
    MatcherRequest,
    extract_value_values,
    integration_values,
    matcher_values,
    new_alias,
)
from hub.api.models import ProjectRequest
from hub.api.resources import RESOURCES, create_from_body
from hub.api.schedules import ScheduleRequest, schedule_values
from hub.context import Hub
from hub.store import Row, utcnow
from protocol.validation import describe

# Ids of the instance a backup came from, in Semaphore's objects: meaningless here.
FOREIGN_IDS = ("id", "project_id", "template_id", "auth_secret_id", "integration_id",
               "extractor_id")


class BadBackup(ApiError):
    def __init__(self, where: str, problem: str):
        super().__init__(400, f"field `{where}`: {problem}")


def _at(prefix: str, message: str) -> str:
    """An error of the REST checks ("field `x`: ...") as one at its place in the backup."""
    for lead in ("unknown field `", "missing required field `", "field `"):
        if message.startswith(lead):
            return f"{lead}{prefix}.{message[len(lead):]}"
    return f"field `{prefix}`: {message}"


def _error_text(exc: ApiError) -> str:
    return str(json.loads(exc.text or "{}").get("error", exc.reason))


def _convert(data: dict[str, Any], model: type, prefix: str) -> Any:
    try:
        return msgspec.convert(data, model)
    except msgspec.ValidationError as exc:
        raise ApiError(400, _at(prefix, describe(exc))) from None


def _present(item: dict[str, Any]) -> dict[str, Any]:
    """Semaphore reads a null field as a missing one."""
    return {key: value for key, value in item.items() if value is not None}


class Plan:
    """A backup read and checked as far as it can be without storing anything: every list
    of objects, every object, and every reference by name to one of the same backup."""

    def __init__(self, raw: Any):
        if not isinstance(raw, dict):
            raise ApiError(400, "request body must be a JSON object (a Semaphore backup)")
        self.raw = raw
        meta = raw.get("meta")
        if not isinstance(meta, dict):
            raise BadBackup("meta", "a backup needs its project's `meta` object")
        self.meta = _convert(_present(meta), ProjectRequest, "meta")
        self.keys = self._list("keys")
        self.repositories = self._list("repositories")
        self.inventories = self._list("inventories")
        self.environments = self._list("environments")
        self.views = self._list("views")
        self.templates = self._list("templates")
        # Backups older than Semaphore's `schedules` list hold a template's `cron` instead.
        self.legacy_cron = "schedules" not in raw
        self.schedules = self._list("schedules")
        self.integrations = self._list("integrations")
        self.project_aliases = self._strings(raw.get("integration_aliases"),
                                             "integration_aliases")
        # Keys another object owns (an environment's secrets, a user's own key) are not
        # project keys, and their owner is not in the backup.
        self.keys = [(index, key) for index, key in self.keys if not key.get("owner")]
        self.names = {
            "keys": self._names("keys", self.keys, "name"),
            "repositories": self._names("repositories", self.repositories, "name"),
            "inventories": self._names("inventories", self.inventories, "name"),
            "environments": self._names("environments", self.environments, "name"),
            "views": self._names("views", self.views, "title"),
            "templates": self._names("templates", self.templates, "name"),
        }
        self._check_references()

    def _list(self, section: str) -> list[tuple[int, dict[str, Any]]]:
        items = self.raw.get(section)
        if items is None:
            return []
        if not isinstance(items, list):
            raise BadBackup(section, "must be a list")
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise BadBackup(f"{section}[{index}]", "must be an object")
        return [(index, _present(item)) for index, item in enumerate(items)]

    @staticmethod
    def _strings(items: Any, where: str) -> list[str]:
        """A list of alias strings (only their number is used: see Restore._aliases)."""
        if items is None:
            return []
        if not isinstance(items, list):
            raise BadBackup(where, "must be a list")
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise BadBackup(f"{where}[{index}]", "must be a string")
        return items

    @staticmethod
    def _names(section: str, items: list[tuple[int, dict[str, Any]]], field: str) -> set[str]:
        names: set[str] = set()
        for index, item in items:
            name = item.get(field)
            if not isinstance(name, str) or not name:
                raise BadBackup(f"{section}[{index}].{field}", "a non-empty string is needed")
            if name in names:
                raise BadBackup(f"{section}[{index}].{field}",
                                f"{name!r} is given twice; references are by name")
            names.add(name)
        return names

    def _ref(self, where: str, item: dict[str, Any], field: str, section: str,
             noun: str, required: bool = False) -> None:
        name = item.get(field)
        if name is None:
            if required:
                raise BadBackup(f"{where}.{field}", f"a {noun} name is needed")
            return
        if not isinstance(name, str) or name not in self.names[section]:
            raise BadBackup(f"{where}.{field}", f"unknown {noun} {json.dumps(name)}")

    def _check_references(self) -> None:
        for index, item in self.repositories:
            self._ref(f"repositories[{index}]", item, "ssh_key", "keys", "key")
        for index, item in self.inventories:
            where = f"inventories[{index}]"
            self._ref(where, item, "ssh_key", "keys", "key")
            self._ref(where, item, "become_key", "keys", "key")
            self._ref(where, item, "repository", "repositories", "repository")
        for index, item in self.templates:
            where = f"templates[{index}]"
            self._ref(where, item, "repository", "repositories", "repository")
            self._ref(where, item, "inventory", "inventories", "inventory")
            self._ref(where, item, "environment", "environments", "environment")
            self._ref(where, item, "view", "views", "view")
            self._ref(where, item, "build_template", "templates", "template")
            vaults = item.get("vaults", [])
            if not isinstance(vaults, list):
                raise BadBackup(f"{where}.vaults", "must be a list")
            for number, vault in enumerate(vaults):
                if not isinstance(vault, dict):
                    raise BadBackup(f"{where}.vaults[{number}]", "must be an object")
                self._ref(f"{where}.vaults[{number}]", _present(vault), "vault_key", "keys",
                          "key")
        for index, item in self.schedules:
            self._ref(f"schedules[{index}]", item, "template", "templates", "template",
                      required=True)
        for index, item in self.integrations:
            where = f"integrations[{index}]"
            self._ref(where, item, "template", "templates", "template", required=True)
            self._ref(where, item, "auth_secret", "keys", "key")
            for section in ("matchers", "extract_values"):
                children = item.get(section, [])
                if not isinstance(children, list):
                    raise BadBackup(f"{where}.{section}", "must be a list")
                for number, child in enumerate(children):
                    if not isinstance(child, dict):
                        raise BadBackup(f"{where}.{section}[{number}]", "must be an object")
            self._strings(item.get("aliases"), f"{where}.aliases")


class Restore:
    """Stores a checked Plan as a new project of `user`, one object at a time through the
    REST API's checks; objects made so far are found by their backup name."""

    def __init__(self, hub: Hub, plan: Plan, user: Row):
        self.hub, self.plan, self.user = hub, plan, user
        self.ids: dict[str, dict[str, int]] = {section: {} for section in plan.names}
        self.project_id = 0

    async def run(self) -> Row:
        values = msgspec.structs.asdict(self.plan.meta)
        values.pop("demo")
        project = await self.hub.store.create_project(values, self.user["id"])
        self.project_id = project["id"]
        try:
            await self._fill()
        except BaseException:
            # All or nothing: the new project goes with everything stored in it so far.
            await self.hub.store.delete_project(self.project_id)
            raise
        return project

    async def _fill(self) -> None:
        plan = self.plan
        await self._each("views", plan.views, "views", "title", lambda item: item)
        await self._each("keys", plan.keys, "keys", "name",
                         lambda item: {"name": item.get("name"), "type": item.get("type",
                                                                                  "none")})
        await self._each("repositories", plan.repositories, "repositories", "name",
                         lambda item: self._swap(item, {"ssh_key": ("ssh_key_id", "keys")}))
        await self._each("inventories", plan.inventories, "inventory", "name",
                         lambda item: self._swap(item, {
                             "ssh_key": ("ssh_key_id", "keys"),
                             "become_key": ("become_key_id", "keys"),
                             "repository": ("repository_id", "repositories")}))
        await self._each("environments", plan.environments, "environment", "name",
                         lambda item: {k: v for k, v in item.items() if k != "secrets"})
        await self._each("templates", plan.templates, "templates", "name", self._template)
        # A deploy template names the build template it deploys: linked once all exist.
        for _, item in plan.templates:
            if item.get("build_template") is not None:
                await self.hub.store.update_row(
                    "template", self.project_id, self.ids["templates"][item["name"]],
                    {"build_template_id": self.ids["templates"][item["build_template"]]})
        for index, item in plan.schedules:
            await self._schedule(f"schedules[{index}]", item)
        if plan.legacy_cron:
            for index, item in plan.templates:
                if isinstance(item.get("cron"), str) and item["cron"]:
                    await self._schedule(f"templates[{index}].cron", {
                        "name": item["name"], "cron_format": item["cron"],
                        "template": item["name"]})
        for index, item in plan.integrations:
            await self._integration(f"integrations[{index}]", item)
        await self._aliases(None, len(plan.project_aliases))

    def _swap(self, item: dict[str, Any], refs: dict[str, tuple[str, str]]) -> dict[str, Any]:
        """The item with each name reference replaced by the id of the object made for it."""
        body = {key: value for key, value in item.items() if key not in refs}
        for field, (id_field, section) in refs.items():
            if field in item:
                body[id_field] = self.ids[section][item[field]]
        return body

    def _template(self, item: dict[str, Any]) -> dict[str, Any]:
        body = self._swap(item, {"repository": ("repository_id", "repositories"),
                                 "inventory": ("inventory_id", "inventories"),
                                 "environment": ("environment_id", "environments"),
                                 "view": ("view_id", "views")})
        for field in ("cron", "build_template", "build_template_id", "vault_key"):
            body.pop(field, None)
        if body.get("app") == "":
            body["app"] = "ansible"  # Semaphore's templates from before `app` existed
        vaults = []
        for vault in item.get("vaults", []):
            vault = _present(vault)
            out = {key: value for key, value in vault.items() if key != "vault_key"}
            if "vault_key" in vault:
                out["vault_key_id"] = self.ids["keys"][vault["vault_key"]]
            vaults.append(out)
        body["vaults"] = vaults
        return body

    async def _each(self, section: str, items: list[tuple[int, dict[str, Any]]],
                    resource_name: str, name_field: str,
                    to_body: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        resource = RESOURCES[resource_name]
        for index, item in items:
            where = f"{section}[{index}]"
            body = _convert(to_body(item), resource.model, where)
            try:
                row = await create_from_body(self.hub, resource, self.project_id, body)
            except ApiError as exc:
                raise ApiError(400, _at(where, _error_text(exc))) from None
            self.ids[section][item[name_field]] = row["id"]

    async def _schedule(self, where: str, item: dict[str, Any]) -> None:
        body = {key: value for key, value in item.items()
                if key not in ("template", "task_params")}
        body["template_id"] = self.ids["templates"][item["template"]]
        if not body.get("name"):  # Semaphore's schedules from before they had names
            body["name"] = item["template"]
        request: ScheduleRequest = _convert(body, ScheduleRequest, where)
        try:
            values = await schedule_values(self.hub.store, self.project_id, request)
        except ApiError as exc:
            raise ApiError(400, _at(where, _error_text(exc))) from None
        await self.hub.store.create_row("schedule", self.project_id,
                                        {**values, "created": utcnow()})


    async def _integration(self, where: str, item: dict[str, Any]) -> None:
        """An integration through the REST API's checks (a key it checks signatures with
        must be a login_password one), then its matchers and extract values through theirs."""
        body = {key: value for key, value in item.items() if key not in (
            "template", "auth_secret", "matchers", "extract_values", "aliases", *FOREIGN_IDS)}
        body["template_id"] = self.ids["templates"][item["template"]]
        if "auth_secret" in item:
            body["auth_secret_id"] = self.ids["keys"][item["auth_secret"]]
        request: IntegrationRequest = _convert(body, IntegrationRequest, where)
        store = self.hub.store
        try:
            values = await integration_values(store, self.project_id, request)
        except ApiError as exc:
            raise ApiError(400, _at(where, _error_text(exc)).replace(
                ".auth_secret_id`", ".auth_secret`")) from None
        row = await store.create_row("integration", self.project_id, values)
        children: tuple[tuple[str, str, type, Callable[[Any], dict[str, Any]]], ...] = (
            ("matchers", "integration_matcher", MatcherRequest, matcher_values),
            ("extract_values", "integration_extract_value", ExtractValueRequest,
             extract_value_values))
        for section, table, model, values_of in children:
            for number, child in enumerate(item.get(section, [])):
                at = f"{where}.{section}[{number}]"
                child = {k: v for k, v in _present(child).items() if k not in FOREIGN_IDS}
                checked = _convert(child, model, at)
                try:
                    child_values = values_of(checked)
                except ApiError as exc:
                    raise ApiError(400, _at(at, _error_text(exc))) from None
                await store.create_row(table, self.project_id,
                                       {**child_values, "integration_id": row["id"]})
        await self._aliases(row["id"], len(item.get("aliases") or []))

    async def _aliases(self, integration_id: int | None, count: int) -> None:
        """As many aliases as the backup had, each a new random one, never the backup's
        strings: an alias is what a sender must know (all it must know when the integration
        has no auth), and a backup file outlives the project and travels; the restored
        project must not take webhooks at an address anyone who saw the file knows. (Semaphore
        reuses them when it can; here they are unique across the hub, and the source project
        may still be using them.)"""
        for _ in range(count):
            await self.hub.store.create_row("integration_alias", self.project_id, {
                "integration_id": integration_id, "alias": new_alias()})


async def restore_project(hub: Hub, raw: Any, user: Row) -> Row:
    """A new project of `user` holding everything in the backup `raw` (decoded JSON)."""
    return await Restore(hub, Plan(raw), user).run()

