"""Secrets in the REST API: access keys and environment secrets go in, are encrypted at
rest, and never come back out."""

import json
from typing import Any

import msgspec
import structlog

from hub.api.common import ApiError
from hub.api.models import AccessKeyRequest, EnvironmentRequest
from hub.context import Hub
from hub.crypto import SecretCipher, is_encrypted
from hub.store import NotFound, Row, Store

log = structlog.get_logger("hub.secrets")


def access_key_values(body: AccessKeyRequest, hub: Hub, creating: bool) -> dict[str, Any]:
    """Name and type always; the secret when one is given (on update: with override_secret,
    as Semaphore's UI sends it), encrypted."""
    values: dict[str, Any] = {"name": body.name, "type": body.type}
    secret: dict[str, Any] = {}
    if body.type == "login_password" and body.login_password is not None:
        secret = msgspec.structs.asdict(body.login_password)
    elif body.type == "ssh" and body.ssh is not None:
        secret = msgspec.structs.asdict(body.ssh)
    if secret and (creating or body.override_secret):
        values["secret"] = hub.cipher.encrypt(json.dumps(secret))
    elif body.type == "none":
        values["secret"] = ""
    return values


def check_env_secrets(body: EnvironmentRequest, hub: Hub) -> None:
    """Refuse a bad `secrets` list before anything is stored."""
    if body.secrets and not hub.cipher.enabled:
        hub.cipher.encrypt("")  # raises the error that says how to configure it
    for index, item in enumerate(body.secrets):
        where = f"field `secrets[{index}]`"
        if item.operation in ("update", "delete") and item.id is None:
            raise ApiError(400, f"{where}: {item.operation} needs the secret's `id`")
        if item.operation == "create" and not item.name:
            raise ApiError(400, f"{where}: a new secret needs a `name`")


async def save_env_secrets(hub: Hub, environment_id: int, body: EnvironmentRequest) -> None:
    """Apply the create/update/delete operations of an environment's `secrets` list."""
    for item in body.secrets:
        if item.operation == "delete":
            assert item.id is not None  # checked before anything was stored
            await hub.store.delete_env_secret(environment_id, item.id)
            continue
        await hub.store.put_env_secret(environment_id, item.id if item.operation == "update"
                                       else None, item.name, item.type,
                                       hub.cipher.encrypt(item.secret))


async def env_secrets_json(hub: Hub, environment_id: int) -> list[dict[str, Any]]:
    """Names and types only: a secret's value is never returned."""
    return [{"id": row["id"], "name": row["name"], "type": row["type"]}
            for row in await hub.store.list_env_secrets(environment_id)]



def environment_password_values(body: EnvironmentRequest, hub: Hub) -> dict[str, str]:
    """The environment's vault password, encrypted. It is never returned (clients get it
    empty and send it back so), so an empty one means "keep the stored one"."""
    if not body.password:
        return {}
    return {"password": hub.cipher.encrypt(body.password)}


async def seal_environment_passwords(store: Store, cipher: SecretCipher) -> int:
    """Encrypt the vault passwords older hubs stored in clear; how many were.

    Run at every hub start, before the first request (hub/app.py), so a database from before
    this change is sealed the first time a hub with a key opens it; a no-op after that. It
    is not a schema migration because migrations run without the key. Without
    `access_key_encryption` the passwords stay as they are, unreadable through the API, and
    the hub says so at each start.
    """
    clear = [row for row in await store.environment_passwords()
             if not is_encrypted(row["password"])]
    if clear and not cipher.enabled:
        log.warning("hub.environment_passwords_in_clear", environments=len(clear),
                    fix="set access_key_encryption in the hub config to encrypt them")
        return 0
    for row in clear:
        await store.set_environment_password(row["id"], cipher.encrypt(row["password"]))
    if clear:
        log.info("hub.environment_passwords_encrypted", environments=len(clear))
    return len(clear)


async def password_key(store: Store, project_id: int, key_id: int, where: str,
                       purpose: str) -> Row:
    """The project's access key `key_id`, which must be a login_password key (its password
    is the secret `purpose` needs: a vault password, a webhook's HMAC secret); a 400 naming
    `where` otherwise."""
    try:
        key = await store.get_row("access_key", project_id, key_id)
    except NotFound:
        raise ApiError(400, f"{where}: access key {key_id} not found in project "
                            f"{project_id}") from None
    if key["type"] != "login_password":
        raise ApiError(400, f"{where}: access key {key_id} ({key['name']}) is of type "
                            f"{key['type']}; {purpose} is a login_password key's password")
    return key
