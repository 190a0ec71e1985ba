"""Resolves a task into the spec a runner needs: app, script, arguments, repository, env."""

import json
from typing import Any

from hub.crypto import SecretCipher
from hub.store import NotFound, Store
from protocol.frames import RepositorySpec, TaskSpec


class SpecError(Exception):
    """The task cannot be run as configured (a missing repository, bad arguments JSON...)."""


def parse_arguments(raw: str | None, what: str) -> list[str]:
    """Semaphore keeps arguments as a JSON array in a string: '["-v", "x"]'."""
    if raw in (None, ""):
        return []
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise SpecError(f"{what} must be a JSON array of strings, got {raw!r}") from None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SpecError(f"{what} must be a JSON array of strings, got {raw!r}")
    return value


def parse_env(raw: str | None, what: str) -> dict[str, str]:
    if raw in (None, ""):
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise SpecError(f"{what} must be a JSON object, got {raw!r}") from None
    if not isinstance(value, dict):
        raise SpecError(f"{what} must be a JSON object, got {raw!r}")
    return {str(key): item if isinstance(item, str) else json.dumps(item)
            for key, item in value.items()}


async def resolve_task(store: Store, cipher: SecretCipher, task: dict[str, Any],
                       template: dict[str, Any], max_task_duration_sec: int = 0,
                       ) -> tuple[TaskSpec, dict[str, Any]]:
    """The task's spec, and what the runner must get sealed with it: environment secrets (as
    environment variables) and the repository's ssh key ({} when there are none). Each row
    is read once: this runs for every task created."""
    repo = (await _referenced(store, template, "repository")
            if template.get("repository_id") else None)
    spec = await _spec(store, task, template, repo, max_task_duration_sec)
    secrets: dict[str, Any] = {}
    if template.get("environment_id"):
        rows = await store.list_env_secrets(template["environment_id"])
        if rows:
            secrets["env"] = {row["name"]: cipher.decrypt(row["secret"]) for row in rows}
    if repo is not None and repo["ssh_key_id"]:
        key = await store.get_row("access_key", template["project_id"], repo["ssh_key_id"])
        if key["type"] == "ssh" and key["secret"]:
            secrets["ssh_key"] = json.loads(cipher.decrypt(key["secret"]))
    return spec, secrets


async def _spec(store: Store, task: dict[str, Any], template: dict[str, Any],
                repo: dict[str, Any] | None, max_task_duration_sec: int) -> TaskSpec:
    project_id = task["project_id"]
    repository = None
    if repo is not None:
        branch = task.get("git_branch") or template.get("git_branch") or repo["git_branch"]
        repository = RepositorySpec(url=repo["git_url"], branch=branch)
    environment: dict[str, str] = {}
    if template.get("environment_id"):
        env_row = await _referenced(store, template, "environment")
        environment = parse_env(env_row["env"], f"environment {env_row['id']} `env`")
    # The task's own environment (JSON) adds to and overrides the template's.
    environment |= parse_env(task.get("environment"), "task `environment`")
    arguments = parse_arguments(template.get("arguments"), "template `arguments`")
    if task.get("arguments"):
        arguments += parse_arguments(task["arguments"], "task `arguments`")
    limits = [t for t in (template.get("timeout_sec") or 0, max_task_duration_sec) if t > 0]
    return TaskSpec(project_id=project_id, template_id=template["id"], app=template["app"],
                    playbook=task.get("playbook") or template["playbook"],
                    arguments=arguments, environment=environment, repository=repository,
                    timeout_sec=min(limits) if limits else 0,
                    message=task.get("message") or "")


async def _referenced(store: Store, template: dict[str, Any], table: str) -> dict[str, Any]:
    row_id = template[f"{table}_id"]
    try:
        return await store.get_row(table, template["project_id"], row_id)
    except NotFound:
        raise SpecError(f"template {template['id']}: {table} {row_id} not found") from None
