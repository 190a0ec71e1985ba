"""Resolves a task into the spec a runner needs: app, script, arguments, repository, env."""

import json
import re
from pathlib import PurePosixPath
from typing import Any

import msgspec

from hub.crypto import SecretCipher
from hub.jsontext import JsonTextError, excerpt, load_json_text
from hub.store import NotFound, Store
from protocol.codec import encode
from protocol.frames import (
    Assign,
    InventorySpec,
    LoginPasswordSecret,
    RepositorySpec,
    SshKeySecret,
    TaskSecrets,
    TaskSpec,
)
from protocol.limits import MAX_FRAME_BYTES
from protocol.numbers import INT64_MAX

# Apps whose `var` secrets are variables of the run (extra vars, terraform variables).
VAR_APPS = frozenset({"ansible", "terraform", "tofu"})
TERRAFORM_APPS = frozenset({"terraform", "tofu"})
# A terraform workspace's name as terraform takes it; never an option (`-x`).
WORKSPACE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


class SpecError(Exception):
    """The task cannot be run as configured (a missing repository, bad arguments JSON...)."""


def parse_arguments(raw: str | None, what: str) -> list[str]:
    """Semaphore keeps arguments as a JSON array in a string: '["-v", "x"]'."""
    if raw in (None, ""):
        return []
    try:
        value = load_json_text(raw)  # size and nesting capped: this is a client's text
    except JsonTextError as exc:
        raise SpecError(f"{what} must be a JSON array of strings; it {exc}") from None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SpecError(f"{what} must be a JSON array of strings, got {excerpt(raw)}")
    _refuse_nul(value, what)
    return value


def _refuse_nul(value: Any, what: str) -> None:
    """Arguments, extra vars and environment reach a process's argv or environment, where a
    NUL character cannot be (the exec would fail on the runner): a 400 instead."""
    if _has_nul(value):
        raise SpecError(f"{what} must not contain NUL characters (\\u0000)")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def parse_env(raw: str | None, what: str) -> dict[str, str]:
    """Environment variables: a JSON object, values other than strings as their JSON text."""
    return {str(key): item if isinstance(item, str) else json.dumps(item)
            for key, item in parse_vars(raw, what).items()}


async def resolve_task(store: Store, cipher: SecretCipher, task: dict[str, Any],
                       template: dict[str, Any], max_task_duration_sec: int = 0,
                       web_host: str = "") -> tuple[TaskSpec, TaskSecrets | None]:
    """The task's spec, and what the runner must get sealed with it: environment secrets (as
    environment variables) and the repository's ssh key ({} when there are none). Each row
    is read once: this runs for every task created."""
    template = _with_task_inventory(task, template)
    repo = (await _referenced(store, template, "repository")
            if template.get("repository_id") else None)
    spec = await _spec(store, task, template, repo, max_task_duration_sec, web_host)
    env: dict[str, str] = {}
    extra_vars: dict[str, str] = {}
    ssh_key = None
    login_password = None
    if template.get("environment_id"):
        rows = await store.list_env_secrets(template["environment_id"])
        for row in rows:
            # As Semaphore: an ansible, terraform or tofu task gets `var` secrets as its
            # variables (the runner hands them over in a private file, never in argv).
            # Other apps get every secret as process environment, as before.
            into = extra_vars if row["type"] == "var" and spec.app in VAR_APPS else env
            into[row["name"]] = cipher.decrypt(row["secret"])
    # The survey's secret answers, over the environment's: variables of the run for every
    # app (an ansible play reads them from a private file; a script gets `name=value`
    # words), masked in its output like every secret.
    extra_vars |= _survey_secrets(cipher, task)
    if repo is not None and repo["ssh_key_id"]:
        key = await store.get_row("access_key", template["project_id"], repo["ssh_key_id"])
        if key["type"] == "ssh" and key["secret"]:
            ssh_key = msgspec.json.decode(cipher.decrypt(key["secret"]), type=SshKeySecret)
        elif key["type"] == "login_password" and key["secret"]:
            login_password = msgspec.json.decode(cipher.decrypt(key["secret"]),
                                                 type=LoginPasswordSecret)
    ansible = (await _ansible_secrets(store, cipher, template) if spec.app == "ansible"
               else TaskSecrets())
    found = TaskSecrets(env=env, ssh_key=ssh_key, vars=extra_vars,
                        login_password=login_password,
                        inventory_ssh_key=ansible.inventory_ssh_key,
                        inventory_login=ansible.inventory_login, become=ansible.become,
                        vault_passwords=ansible.vault_passwords)
    secrets = None if found == TaskSecrets() else found
    _check_fits_a_frame(spec, secrets)
    return spec, secrets


def _with_task_inventory(task: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    """The template as the task runs it: with the task's own inventory where the template's
    task_params allow it (Semaphore's allow_override_inventory; the API checked it is the
    project's)."""
    inventory_id = task.get("inventory_id")
    if not inventory_id or inventory_id == template.get("inventory_id"):
        return template
    if not _json_object(template.get("task_params")).get("allow_override_inventory"):
        return template
    return {**template, "inventory_id": inventory_id}


def _survey_secrets(cipher: SecretCipher, task: dict[str, Any]) -> dict[str, str]:
    if not task.get("secret"):
        return {}
    value = _json_object(cipher.decrypt(task["secret"]))
    return {str(name): item for name, item in value.items() if isinstance(item, str)}


async def _access_key(store: Store, cipher: SecretCipher, template: dict[str, Any],
                      key_id: int, what: str) -> tuple[str, dict[str, Any]]:
    """An access key's type and its decrypted secret ({} for none)."""
    try:
        row = await store.get_row("access_key", template["project_id"], key_id)
    except NotFound:
        raise SpecError(f"template {template['id']}: {what} access key {key_id} not "
                        "found") from None
    secret = json.loads(cipher.decrypt(row["secret"])) if row["secret"] else {}
    return row["type"], secret if isinstance(secret, dict) else {}


async def _ansible_secrets(store: Store, cipher: SecretCipher,
                           template: dict[str, Any]) -> TaskSecrets:
    """As Semaphore's getPlaybookArgs: the inventory's ssh key (`ssh`: through an agent;
    `login_password`: the ssh password) and become key (`login_password`), and the
    template's `password` vaults. Only an ansible task gets them."""
    ssh_key = login = become = None
    if template.get("inventory_id"):
        inventory = await _referenced(store, template, "inventory")
        if inventory["ssh_key_id"]:
            kind, secret = await _access_key(store, cipher, template,
                                             inventory["ssh_key_id"], "inventory ssh")
            if kind == "ssh":
                ssh_key = msgspec.convert(secret, SshKeySecret)
            elif kind == "login_password":
                login = msgspec.convert(secret, LoginPasswordSecret)
            elif kind != "none":
                raise SpecError(f"inventory {inventory['id']}: its ssh key has type "
                                f"{kind!r}, which cannot log in to hosts")
        if inventory["become_key_id"]:
            kind, secret = await _access_key(store, cipher, template,
                                             inventory["become_key_id"], "inventory become")
            if kind == "login_password":
                become = msgspec.convert(secret, LoginPasswordSecret)
            elif kind != "none":
                raise SpecError(f"inventory {inventory['id']}: its become key has type "
                                f"{kind!r}; a become key is a `login_password` key")
    passwords: dict[str, str] = {}
    for vault in stored_vaults(template.get("vaults")):
        if vault.get("type") != "password" or not vault.get("vault_key_id"):
            continue
        _, secret = await _access_key(store, cipher, template, vault["vault_key_id"],
                                      f"vault {vault['name']!r}")
        passwords[vault["name"]] = str(secret.get("password") or "")
    return TaskSecrets(inventory_ssh_key=ssh_key, inventory_login=login, become=become,
                       vault_passwords=passwords)


def stored_vaults(raw: str | None) -> list[dict[str, Any]]:
    """A template's vaults as the API stored them (an older row: none)."""
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [vault for vault in value if isinstance(vault, dict)] if isinstance(
        value, list) else []


def _check_fits_a_frame(spec: TaskSpec, secrets: TaskSecrets | None) -> None:
    """A task whose assign would not fit in one frame could never reach a runner (it would
    drop every connection it is sent on): refused when it is created."""
    size = len(encode(Assign(task_id=INT64_MAX, spec=spec)))
    if secrets is not None:  # sealed: base64 of the JSON plus the box's 48 bytes
        size += 4 * (len(msgspec.json.encode(secrets)) + 48) // 3 + 4
    if size > MAX_FRAME_BYTES:
        raise SpecError(f"the task would reach its runner as a {size}-byte frame, more than "
                        f"the {MAX_FRAME_BYTES} bytes a frame may hold; shorten its message, "
                        "environment or arguments")


async def _spec(store: Store, task: dict[str, Any], template: dict[str, Any],
                repo: dict[str, Any] | None, max_task_duration_sec: int,
                web_host: str = "") -> TaskSpec:
    project_id = task["project_id"]
    repository = None
    if repo is not None:
        # The API admits a task's branch only where the template allows it
        # (allow_override_branch_in_task); a stored one is honoured under the same rule.
        task_branch = task.get("git_branch") if template.get(
            "allow_override_branch_in_task") else ""
        branch = task_branch or template.get("git_branch") or repo["git_branch"]
        repository = RepositorySpec(url=repo["git_url"], branch=branch)
    # A task's own commit, under the same rule as its branch (Semaphore's task commit_hash).
    commit_hash = (task.get("commit_hash") or "") if repository is not None and template.get(
        "allow_override_branch_in_task") else ""
    environment: dict[str, str] = {}
    extra_vars: dict[str, Any] = {}
    if template.get("environment_id"):
        env_row = await _referenced(store, template, "environment")
        environment = parse_env(env_row["env"], f"environment {env_row['id']} `env`")
        extra_vars = parse_vars(env_row["json"], f"environment {env_row['id']} `json`")
    # The task's own `environment` is extra vars over the environment's, as in Semaphore:
    # data for the play or script, never process environment (a task_runner sets it).
    extra_vars |= parse_vars(task.get("environment"), "task `environment`")
    task_arguments = (parse_arguments(task.get("arguments"), "task `arguments`")
                      if template.get("allow_override_args_in_task") else [])
    limits = [t for t in (template.get("timeout_sec") or 0, max_task_duration_sec) if t > 0]
    params = _json_object(task.get("params"))
    defaults = _json_object(template.get("task_params"))
    # The task's own limit, tags and skip_tags (the API admitted them), else the template's
    # (Semaphore's AnsibleTemplateParams): comma-joined, as ansible takes them.
    limit, tags, skip_tags = (_joined(params.get(key), defaults.get(key))
                              for key in ("limit", "tags", "skip_tags"))
    _refuse_nul([limit, tags, skip_tags], "task `params`")
    username = ""
    if task.get("user_id"):
        try:
            username = (await store.get_user(task["user_id"]))["username"]
        except NotFound:
            pass  # the user was deleted since: task_details.username stays empty
    return TaskSpec(project_id=project_id, template_id=template["id"], app=template["app"],
                    playbook=task.get("playbook") or template["playbook"],
                    arguments=parse_arguments(template.get("arguments"),
                                              "template `arguments`"),
                    task_arguments=task_arguments, environment=environment,
                    extra_vars=extra_vars, repository=repository, commit_hash=commit_hash,
                    timeout_sec=min(limits) if limits else 0,
                    message=task.get("message") or "",
                    inventory=await _inventory(store, template),
                    debug=params.get("debug") is True, diff=params.get("diff") is True,
                    dry_run=params.get("dry_run") is True,
                    limit=limit, tags=tags, skip_tags=skip_tags,
                    username=username, web_host=web_host.rstrip("/"),
                    vault_scripts=_vault_scripts(template))


def _vault_scripts(template: dict[str, Any]) -> dict[str, str]:
    if template.get("app", "ansible") != "ansible":
        return {}
    return {vault["name"]: vault["script"] for vault in stored_vaults(template.get("vaults"))
            if vault.get("type") == "script" and vault.get("script")}


def _json_object(raw: str | None) -> dict[str, Any]:
    """A stored JSON object (a task's params, a template's task_params); else {}."""
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _joined(own: Any, default: Any) -> str:
    """A limit or tag list (or an older task's limit string) as one comma-joined word."""
    value = own if own is not None else default
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join(str(item) for item in value if isinstance(item, str) and item)
    return ""


async def _inventory(store: Store, template: dict[str, Any]) -> InventorySpec | None:
    """The template's inventory (for terraform and tofu: its workspace); the task's own
    where the template allows it (see _with_task_inventory)."""
    app = template.get("app", "ansible")
    if not template.get("inventory_id") or app not in ("ansible", *TERRAFORM_APPS):
        return None
    row = await _referenced(store, template, "inventory")
    kind = row["type"]
    if app in TERRAFORM_APPS:
        return _workspace(row, app)
    if kind in ("static", "static-yaml"):
        _refuse_nul(row["inventory"], f"inventory {row['id']}")
        return InventorySpec(type=kind, content=row["inventory"])
    if kind == "file":
        check_playbook(row["inventory"], f"inventory {row['id']} (type file) path")
        return InventorySpec(type=kind, path=row["inventory"])
    raise SpecError(f"inventory {row['id']} has type {kind!r}, which an ansible template "
                    "cannot use (static, static-yaml or file)")


def _workspace(row: dict[str, Any], app: str) -> InventorySpec:
    """A terraform or tofu template's inventory: Semaphore's `terraform-workspace`, whose
    text is the workspace's name (empty: default)."""
    if row["type"] != "terraform-workspace":
        raise SpecError(f"inventory {row['id']} has type {row['type']!r}, which a {app} "
                        "template cannot use (terraform-workspace)")
    name = (row["inventory"] or "").strip() or "default"
    if not WORKSPACE_NAME.match(name):
        raise SpecError(f"inventory {row['id']}: terraform workspace {name!r} is not a valid "
                        "name (letters, digits, `_`, `-` and `.`, not starting with `-` or "
                        "`.`)")
    return InventorySpec(type="terraform-workspace", content=name)


def parse_vars(raw: str | None, what: str) -> dict[str, Any]:
    """Extra vars: a JSON object whose values keep their JSON types."""
    if raw in (None, ""):
        return {}
    try:
        value = load_json_text(raw)  # size and nesting capped: a task_runner writes it
    except JsonTextError as exc:
        raise SpecError(f"{what} must be a JSON object; it {exc}") from None
    if not isinstance(value, dict):
        raise SpecError(f"{what} must be a JSON object, got {excerpt(raw)}")
    _refuse_nul(value, what)
    return value


def check_playbook(playbook: str, what: str) -> None:
    """A playbook names a file inside the repository: no absolute path, no `..` (the runner
    checks again after checkout, symbolic links included)."""
    parts = PurePosixPath(playbook).parts
    if playbook.startswith(("/", "\\")) or ".." in parts or "\0" in playbook:
        raise SpecError(f"{what} must be a path inside the repository (no absolute path, "
                        f"no `..`), got {playbook!r}")


async def _referenced(store: Store, template: dict[str, Any], table: str) -> dict[str, Any]:
    row_id = template[f"{table}_id"]
    try:
        return await store.get_row(table, template["project_id"], row_id)
    except NotFound:
        raise SpecError(f"template {template['id']}: {table} {row_id} not found") from None
