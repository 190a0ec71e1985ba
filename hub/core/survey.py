"""Semaphore's template survey: the variables a run asks for, checked and typed.

Semaphore's run dialog sends the survey's values inside the task's `environment` JSON (each
as the text the user typed) and the values of `secret` variables in the task's `secret`
JSON, which is never stored with the task nor shown back. Here the values are checked
against the template's survey when the task is created (a required one missing, an `int`
that is not an integer, an `enum` value that is not one of its choices: a 400), and an `int`
becomes a JSON number, so a playbook gets `5`, not `"5"`.
"""

import json
import re
from typing import Any

import msgspec

from hub.core.spec import SpecError, parse_vars
from hub.jsontext import excerpt

INTEGER = re.compile(r"\s*[-+]?\d{1,18}\s*\Z")  # fits an int64 with room to spare


def stored_survey(raw: str | None) -> list[dict[str, Any]]:
    """A template's survey as the API stored it (an older row: none)."""
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def stored_object(raw: str | None) -> dict[str, Any]:
    """A JSON object column (task_params); anything else reads as {}."""
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def survey_column(survey: list[Any]) -> str:
    """The survey_vars column: each variable with every field, so it reads back whole."""
    out = []
    for var in msgspec.to_builtins(survey):
        var["values"] = var.get("values") or []
        out.append(var)
    return json.dumps(out)


def check_survey(survey: list[Any]) -> None:
    """What msgspec cannot say about a survey: names unique and usable, an enum with
    choices, a default its type admits. Raises SpecError naming the field."""
    seen: set[str] = set()
    for index, var in enumerate(survey):
        at = f"field `survey_vars[{index}]"
        if "\0" in var.name or var.name != var.name.strip():
            raise SpecError(f"{at}.name` must be a variable name without NUL characters or "
                            f"surrounding spaces, got {var.name[:80]!r}")
        if var.name == "semaphore_vars":
            raise SpecError(f"{at}.name`: `semaphore_vars` is set by the runner itself")
        if var.name in seen:
            raise SpecError(f"{at}.name`: survey variable {var.name!r} is declared twice")
        seen.add(var.name)
        choices = [choice.value for choice in var.values or []]
        if var.type == "enum" and not choices:
            raise SpecError(f"{at}.values`: an `enum` survey variable needs at least one value")
        if var.default_value and var.type == "int" and not INTEGER.match(var.default_value):
            raise SpecError(f"{at}.default_value` must be an integer for an `int` survey "
                            f"variable, got {var.default_value[:80]!r}")
        if var.default_value and var.type == "enum" and var.default_value not in choices:
            raise SpecError(f"{at}.default_value` must be one of the values {choices}, got "
                            f"{var.default_value[:80]!r}")


def survey_values(survey: list[dict[str, Any]], environment: str | None,
                  secret: str | None) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """A new task's survey answers, checked against its template's survey: the task's
    extra vars with each survey variable typed (None: no survey, keep `environment` as it
    came), and the secret variables' values. Raises SpecError naming the field."""
    plain = parse_vars(environment, "field `environment`")
    secrets = _secret_values(secret)
    if not survey:
        return None, secrets
    for var in survey:
        name, kind = str(var.get("name", "")), var.get("type") or ""
        if kind == "secret":
            # A client that put it among the plain values: moved, so it is never stored
            # or shown in the task's `environment`.
            if name in plain:
                value = plain.pop(name)
                secrets.setdefault(name, value if isinstance(value, str) else json.dumps(value))
            if var.get("required") and not secrets.get(name):
                raise SpecError(f"field `secret`: survey variable {name!r} is required")
            continue
        where = f"field `environment`: survey variable {name!r}"
        value = plain.get(name)
        if (value is None or value == "") and var.get("default_value"):
            value = var["default_value"]
        if value is None or value == "":
            if var.get("required"):
                raise SpecError(f"{where} is required")
            plain.pop(name, None)
            continue
        plain[name] = _typed(var, value, where)
    return plain, secrets


def _typed(var: dict[str, Any], value: Any, where: str) -> Any:
    kind = var.get("type") or ""
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18:
            return value
        if isinstance(value, str) and INTEGER.match(value):
            return int(value)
        raise SpecError(f"{where} must be an integer, got {excerpt(json.dumps(value))}")
    if kind == "enum":
        choices = [str(choice.get("value", "")) for choice in var.get("values") or []
                   if isinstance(choice, dict)]
        if value not in choices:
            raise SpecError(f"{where} must be one of {choices}, got "
                            f"{excerpt(json.dumps(value))}")
    return value


def _secret_values(raw: str | None) -> dict[str, str]:
    """Semaphore's task `secret`: a JSON object of strings."""
    values = parse_vars(raw, "field `secret`")
    for name, value in values.items():
        if not isinstance(value, str):
            raise SpecError(f"field `secret`: the value of {name!r} must be a string")
    return {name: value for name, value in values.items() if value != ""}
