"""Semaphore's integrations, the pure part: is a webhook signed, does its payload match, and
which values it carries into the task. No I/O here; hub/api/integrations.py does the rest.

Semantics follow Semaphore (api/integration.go): a JSON key is a dot path (`a.b`, with
`[0]` or `0` for a list item); values compare as text, a whole-number float as an integer;
every matcher must match.
"""

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any

# Semaphore's auth methods ("" is its `none`; "none" is taken as the same).
AUTH_NONE = frozenset({"", "none"})
AUTH_METHODS = ("", "none", "token", "hmac", "github", "bitbucket")
# Where the signature is, for the methods that name their own header.
SIGNATURE_HEADERS = {"github": "X-Hub-Signature-256", "bitbucket": "X-Hub-Signature"}
_MISSING = object()


def needs_secret(auth_method: str) -> bool:
    return auth_method not in AUTH_NONE


def needs_header(auth_method: str) -> bool:
    """hmac and token read a header the integration names (github and bitbucket: fixed)."""
    return auth_method in ("hmac", "token")


def hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def authenticated(auth_method: str, secret: str, auth_header: str,
                  headers: Mapping[str, str], body: bytes) -> bool:
    """Whether the request proves it knows the integration's secret. Compared in constant
    time: a timing difference would let a caller find a valid signature byte by byte."""
    if auth_method in AUTH_NONE:
        return True
    if not secret:
        return False  # a key without a password never lets anyone in
    if auth_method in SIGNATURE_HEADERS:
        given = headers.get(SIGNATURE_HEADERS[auth_method], "")
        return _same(given, "sha256=" + hmac_hex(secret, body))
    if auth_method == "hmac":
        return bool(auth_header) and _same(headers.get(auth_header, ""),
                                           hmac_hex(secret, body))
    if auth_method == "token":
        return bool(auth_header) and _same(headers.get(auth_header, ""), secret)
    return False  # an unknown method lets nobody in


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape"))


def find(document: Any, path: str) -> Any:
    """The value at a dot path in decoded JSON; _MISSING (see `found`) when there is none."""
    value = document
    for part in path.split("."):
        if part.startswith("[") and part.endswith("]"):
            part = part[1:-1]
        if isinstance(value, dict):
            if part not in value:
                return _MISSING
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(value) <= index < len(value):
                return _MISSING
            value = value[index]
        else:
            return _MISSING
    return value


def found(value: Any) -> bool:
    return value is not _MISSING


def as_text(value: Any) -> str:
    """A JSON value as the text it is compared and passed as: strings as they are, numbers
    without a needless `.0`, true/false, objects and lists as compact JSON, null and a
    missing key as ""."""
    if value is _MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def compare(value: str, method: str, expected: str) -> bool:
    if method == "equals":
        return value == expected
    if method == "unequals":
        return value != expected
    if method == "contains":
        return expected in value
    return False


def _source(row: Mapping[str, Any], kind_field: str, headers: Mapping[str, str],
            body: bytes, document: Any) -> Any:
    """What a matcher or extract value reads: a header, the body's text, or a JSON value."""
    if row[kind_field] == "header":
        return headers.get(row["key"], "")
    if row["body_data_type"] == "string":
        return body.decode("utf-8", "replace")
    return find(document, row["key"])


def matches(matchers: Iterable[Mapping[str, Any]], headers: Mapping[str, str], body: bytes,
            document: Any) -> bool:
    """Every matcher matches (an empty list is decided by the caller: see the API)."""
    return all(compare(as_text(_source(m, "match_type", headers, body, document)),
                       m["method"], m["value"]) for m in matchers)


def extract(values: Iterable[Mapping[str, Any]], headers: Mapping[str, str], body: bytes,
            document: Any) -> tuple[dict[str, str], dict[str, str]]:
    """(extra vars, task params) from the payload, by each value's variable_type. A JSON
    key the payload lacks sets nothing (Semaphore's newer behaviour)."""
    extra_vars: dict[str, str] = {}
    params: dict[str, str] = {}
    for row in values:
        value = _source(row, "value_source", headers, body, document)
        if not found(value):
            continue
        into = params if row["variable_type"] == "task" else extra_vars
        into[row["variable"]] = as_text(value)
    return extra_vars, params


def needs_json(rows: Iterable[Mapping[str, Any]]) -> bool:
    """Whether any matcher or extract value reads the body as JSON."""
    return any(row.get("match_type", row.get("value_source")) == "body"
               and row["body_data_type"] in ("json", "") for row in rows)
