"""Semaphore's project backup format (services/project in Semaphore 2.16), and the export of
a project to it; hub/api/backup_restore.py restores one into a new project.

The format names what an object points to by name, not id (a template's `repository` is the
repository's name), and carries no secret: keys go out as name and type only and come back
without a secret, for the user to fill in. Integrations' webhook aliases are written, as
Semaphore writes them, but never restored as written (hub/api/backup_restore.py,
Restore._aliases, says why). Objects are written with the fields of the hub's own JSON
(hub/api/serialize.py) and read back through the REST API's request models and checks
(hub/api/resources.py, hub/api/integrations.py), so a field the API gains flows through
backups unchanged.

Semaphore's own restore also has no transaction; here a restore checks every reference by
name before it stores anything, and deletes the new project again if a later check fails,
so no half project is left behind.
"""

import json
from collections import Counter
from typing import Any

from hub.api import serialize
from hub.context import Hub
from hub.store import Row

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
