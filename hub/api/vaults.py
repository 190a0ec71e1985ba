"""A template's ansible vaults (Semaphore's TemplateVault): checked, stored as a JSON list in
the template's `vaults` column, shown back without any secret (a vault names its key by id)."""

import json
import re
from typing import Any

from hub.api.common import ApiError
from hub.api.models import TemplateRequest, TemplateVault
from hub.api.secrets import password_key
from hub.context import Hub
from hub.core.spec import SpecError, check_playbook

# ansible reads `--vault-id label@source`: a label with `@` or spaces would be misread.
VAULT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")


def _checked(index: int, vault: TemplateVault) -> dict[str, Any]:
    where = f"field `vaults[{index}]`"
    name = vault.name or "default"
    if not VAULT_NAME.match(name):
        raise ApiError(400, f"{where}.name: a vault id of letters, digits, `_`, `.` or `-` "
                            f"(at most 64), got {vault.name!r}")
    if vault.type == "password":
        if vault.vault_key_id is None:
            raise ApiError(400, f"{where}.vault_key_id: a `password` vault needs the access "
                                "key that holds its password")
        return {"name": name, "type": "password", "vault_key_id": vault.vault_key_id,
                "script": ""}
    try:
        check_playbook(vault.script, f"{where}.script")
    except SpecError as exc:
        raise ApiError(400, str(exc)) from None
    if not vault.script:
        raise ApiError(400, f"{where}.script: a `script` vault needs the path of its script "
                            "in the repository")
    return {"name": name, "type": "script", "vault_key_id": None, "script": vault.script}


def vaults_column(vaults: list[TemplateVault]) -> str:
    """The stored list: checked, names unique, ids numbered from 1."""
    rows = [_checked(index, vault) for index, vault in enumerate(vaults)]
    names = [row["name"] for row in rows]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ApiError(400, f"field `vaults[{index}]`.name: vault id {name!r} is given "
                                "twice")
    return json.dumps([{"id": index + 1, **row} for index, row in enumerate(rows)])


async def check_vault_keys(hub: Hub, project_id: int, body: TemplateRequest) -> None:
    """Each `password` vault's key is a key of this project holding a password."""
    for index, vault in enumerate(body.vaults or []):
        if vault.type != "password" or vault.vault_key_id is None:
            continue
        await password_key(hub.store, project_id, vault.vault_key_id,
                           f"field `vaults[{index}]`.vault_key_id", "a vault password")
