"""Semaphore's project backup format (services/project in Semaphore 2.16): export a project
to it, and restore one into a new project.

The format names what an object points to by name, not id (a template's `repository` is the
repository's name), and carries no secret: keys go out as name and type only and come back
without a secret, for the user to fill in. Integrations' webhook aliases are written, as
Semaphore writes them, but never restored as written (Restore._aliases says why). Objects
are written with the fields of the hub's own JSON (hub/api/serialize.py) and read back
through the REST API's request models and checks (hub/api/resources.py,
hub/api/integrations.py), so a field the API gains flows through backups unchanged.

Semaphore's own restore also has no transaction; here a restore checks every reference by
name before it stores anything, and deletes the new project again if a later check fails,
so no half project is left behind.
"""

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec

from hub.api import serialize
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

# What a template refers to by name in the backup, in place of the hub's ids.
TEMPLATE_IDS = ("id", "project_id", "repository_id", "inventory_id", "environment_id",
                "view_id", "vaults", "build_template_id")
# Semaphore keeps these as nullable strings, and refuses an empty runner tag: an empty one
# is left out rather than written as "".
OMIT_EMPTY = ("runner_tag", "git_branch")
# An integration's own fields in the backup (the rest are references by name and its
# matchers, extract values and aliases, nested as Semaphore nests them).
INTEGRATION_FIELDS = ("name", "auth_method", "auth_header", "searchable", "task_params")
MATCHER_FIELDS = ("name", "match_type", "method", "body_data_type", "key", "value")
VALUE_FIELDS = ("name", "value_source", "body_data_type", "key", "variable", "variable_type")
# Ids of the instance a backup came from, in Semaphore's objects: meaningless here.
FOREIGN_IDS = ("id", "project_id", "template_id", "auth_secret_id", "integration_id",
               "extractor_id")


# Export.

def _unique_names(rows: list[Row], field: str = "name") -> dict[int, str]:
    """id -> the name the backup uses. References are by name, so a name two objects share
    gets the later one's id added (Semaphore adds a random suffix)."""
    seen: Counter[str] = Counter()
    names: dict[int, str] = {}
    for row in rows:
        name = row[field]
        seen[name] += 1
        names[row["id"]] = name if seen[name] == 1 else f"{name} - {row['id']}"
    return names


async def export_project(hub: Hub, project_id: int) -> dict[str, Any]:
    store = hub.store
    project = await store.get_project(project_id)
    rows = {table: await store.list_rows(table, project_id) for table in (
        "access_key", "repository", "inventory", "environment", "project_view", "template",
        "schedule", "integration", "integration_matcher", "integration_extract_value",
        "integration_alias")}
    keys = _unique_names(rows["access_key"])
    repositories = _unique_names(rows["repository"])
    inventories = _unique_names(rows["inventory"])
    environments = _unique_names(rows["environment"])
    views = _unique_names(rows["project_view"], "title")
    templates = _unique_names(rows["template"])

    def ref(out: dict, field: str, names: dict[int, str], ref_id: int | None) -> None:
        if ref_id is not None and ref_id in names:
            out[field] = names[ref_id]

    out_keys = [{"name": keys[row["id"]], "type": row["type"], "owner": ""}
                for row in rows["access_key"]]
    out_repositories = []
    for row in rows["repository"]:
        shown = serialize.repository_json(row)
        item = {"name": repositories[row["id"]], "git_url": shown["git_url"],
                "git_branch": shown["git_branch"]}
        ref(item, "ssh_key", keys, shown["ssh_key_id"])
        out_repositories.append(item)
    out_inventories = []
    for row in rows["inventory"]:
        shown = serialize.inventory_json(row)
        item = {"name": inventories[row["id"]], "inventory": shown["inventory"],
                "type": shown["type"]}
        ref(item, "ssh_key", keys, shown["ssh_key_id"])
        ref(item, "become_key", keys, shown["become_key_id"])
        # Beyond Semaphore (it drops a file inventory's repository): kept by name.
        ref(item, "repository", repositories, shown["repository_id"])
        out_inventories.append(item)
    # The vault password is a secret: left out, as key secrets are.
    out_environments = [{"name": environments[row["id"]], "json": row["json"],
                         "env": row["env"]} for row in rows["environment"]]
    out_views = [{"title": views[row["id"]], "position": row["position"]}
                 for row in rows["project_view"]]
    first_cron: dict[int, str] = {}
    out_schedules = []
    for row in rows["schedule"]:
        if row["template_id"] not in templates:
            continue
        if row["type"] == "" and row["template_id"] not in first_cron:
            first_cron[row["template_id"]] = row["cron_format"]
        item = {"name": row["name"], "cron_format": row["cron_format"],
                "active": bool(row["active"]), "type": row["type"],
                "delete_after_run": bool(row["delete_after_run"]),
                "template": templates[row["template_id"]]}
        if row["run_at"]:
            item["run_at"] = row["run_at"]
        out_schedules.append(item)
    out_templates = []
    for row in rows["template"]:
        shown = serialize.template_json(row)
        item = {key: value for key, value in shown.items() if key not in TEMPLATE_IDS
                and not (key in OMIT_EMPTY and value == "")}
        item["name"] = templates[row["id"]]
        ref(item, "repository", repositories, shown["repository_id"])
        ref(item, "inventory", inventories, shown["inventory_id"])
        ref(item, "environment", environments, shown["environment_id"])
        ref(item, "view", views, shown["view_id"])
        ref(item, "build_template", templates, shown["build_template_id"])
        item["vaults"] = [_vault_out(vault, keys) for vault in shown["vaults"]]
        if row["id"] in first_cron:  # Semaphore's older single `cron`, still written
            item["cron"] = first_cron[row["id"]]
        out_templates.append(item)
    return {
        "meta": {"name": project["name"], "alert": bool(project["alert"]),
                 "alert_chat": project["alert_chat"],
                 "max_parallel_tasks": project["max_parallel_tasks"],
                 "type": project["type"]},
        "templates": out_templates, "repositories": out_repositories, "keys": out_keys,
        "views": out_views, "inventories": out_inventories, "environments": out_environments,
        "integrations": _integrations_out(rows, templates, keys),
        "integration_aliases": [row["alias"] for row in rows["integration_alias"]
                                if row["integration_id"] is None],
        "schedules": out_schedules,
    }


def _integrations_out(rows: dict[str, list[Row]], templates: dict[int, str],
                      keys: dict[int, str]) -> list[dict[str, Any]]:
    """Semaphore's BackupIntegration: the template and the key by name, matchers, extract
    values and alias strings nested. The key's secret stays out, as every key's does."""
    def of(table: str, integration_id: int) -> list[Row]:
        return [row for row in rows[table] if row["integration_id"] == integration_id]

    out = []
    for row in rows["integration"]:
        if row["template_id"] not in templates:
            continue
        item: dict[str, Any] = {
            "name": row["name"], "auth_method": row["auth_method"],
            "auth_header": row["auth_header"], "searchable": bool(row["searchable"]),
            "task_params": json.loads(row["task_params"] or "{}"),
            "template": templates[row["template_id"]]}
        if row["auth_secret_id"] in keys:
            item["auth_secret"] = keys[row["auth_secret_id"]]
        item["matchers"] = [{field: m[field] for field in MATCHER_FIELDS}
                            for m in of("integration_matcher", row["id"])]
        item["extract_values"] = [{field: v[field] for field in VALUE_FIELDS}
                                  for v in of("integration_extract_value", row["id"])]
        item["aliases"] = [a["alias"] for a in of("integration_alias", row["id"])]
        out.append(item)
    return out


def _vault_out(vault: dict[str, Any], keys: dict[int, str]) -> dict[str, Any]:
    item = {"name": vault["name"], "type": vault["type"]}
    if vault["type"] == "script":
        item["script"] = vault["script"]
    elif vault.get("vault_key_id") in keys:
        item["vault_key"] = keys[vault["vault_key_id"]]
    return item


# Restore.

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

