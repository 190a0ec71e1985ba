"""A task's `params` (Semaphore's AnsibleTaskParams / TerraformTaskParams) as stored, and
what its template's `task_params` lets it change."""

from typing import Any

import msgspec

from hub.api.common import ApiError
from hub.api.models import TaskRequest

# A task's own value, allowed only with the template's flag (Semaphore's
# AnsibleTemplateParams); without it the template's value is used.
OVERRIDES = (("limit", "allow_override_limit"), ("tags", "allow_override_tags"),
             ("skip_tags", "allow_override_skip_tags"))


def task_params(body: TaskRequest, template: dict[str, Any]) -> dict[str, Any]:
    """The params column: the `params` object as sent, with the older top-level flags
    (debug, dry_run, diff, limit) folded in as Semaphore does (its Task.PreInsert turns a
    `limit` string into params.limit, split at commas)."""
    params: dict[str, Any] = msgspec.to_builtins(body.params) if body.params else {}
    for key in ("debug", "dry_run", "diff"):
        params[key] = bool(getattr(body, key) or params.get(key))
    if body.limit and "limit" not in params:
        params["limit"] = [item.strip() for item in body.limit.split(",") if item.strip()]
    return params


def check_param_overrides(body: TaskRequest, template: dict[str, Any],
                          allowed: dict[str, Any]) -> None:
    """A limit, tags or skip_tags in `params` other than the template's own needs the
    template's allow_override_* flag (Semaphore's run dialog sends the template's values
    back unchanged, which is always accepted): a 400 rather than a silently ignored value.
    The older top-level `limit` string stays accepted as before."""
    if body.params is None:
        return
    for key, flag in OVERRIDES:
        own = getattr(body.params, key)
        if own is None or allowed.get(flag) or own == (allowed.get(key) or []):
            continue
        raise ApiError(400, f"field `params.{key}`: template {template['id']} does not allow "
                            f"its {key} to be chosen per task (task_params.{flag})")
