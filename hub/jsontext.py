"""Limits on JSON text from clients, and where in it a problem is.

Request bodies and the JSON that Semaphore keeps inside string fields (a template's
`arguments`, an environment's `json` and `env`) come from whoever can reach the API. Deep
nesting makes the decoders recurse until they raise RecursionError; huge texts cost memory
and end up in every task spec. The checks here run before any decoder, at C speed (regular
expressions, str/bytes methods), and their messages name the field where the problem is.
"""

import json
import re
from itertools import accumulate
from typing import Any

# Finding the field of an error walks the text token by token, in Python: only this far.
MAX_LOCATE_BYTES = 64 * 1024
# Nesting no real request, argument list or environment needs; far below where the decoders
# (json, msgspec) run out of recursion.
MAX_DEPTH = 32
# JSON kept in a string field (arguments, env, extra vars): it travels in every assign frame
# (at most 1 MiB), so a quarter of that is plenty.
MAX_TEXT_CHARS = 256 * 1024

# A JSON string, in the unrolled form that stays linear on megabytes of text.
_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_STRING_STR = re.compile(_STRING)
_STRING_BYTES = re.compile(_STRING.encode())
_NOT_BRACKET_STR = re.compile(r"[^\[\]{}]+")
_NOT_BRACKET_BYTES = re.compile(rb"[^\[\]{}]+")
# For locating: a whole string, the unterminated string an offset falls in, or structure.
_TOKEN = re.compile(rb'(?P<str>' + _STRING.encode() + rb')'
                    rb'|(?P<open>"[^"\\]*(?:\\.[^"\\]*)*\\?\Z)|[\[\]{},:]')
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class JsonTextError(ValueError):
    """JSON text that is not accepted; the message says why, ready to follow "`field`: "."""


def too_deep(text: str | bytes, max_depth: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects nest deeper than max_depth in `text`."""
    if isinstance(text, str):
        opening = text.count("[") + text.count("{")
    else:
        opening = text.count(b"[") + text.count(b"{")
    # Almost all texts have fewer brackets than the limit: no need to look closer.
    return opening > max_depth and nesting_depth(text) > max_depth


def nesting_depth(text: str | bytes) -> int:
    """How deep arrays and objects nest in `text` (brackets inside strings do not count)."""
    if isinstance(text, str):
        brackets = _NOT_BRACKET_STR.sub("", _STRING_STR.sub("", text)).encode()
    else:
        brackets = _NOT_BRACKET_BYTES.sub(b"", _STRING_BYTES.sub(b"", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def load_json_text(text: str, max_chars: int = MAX_TEXT_CHARS,
                   max_depth: int = MAX_DEPTH) -> Any:
    """json.loads within limits: JsonTextError for text too long, too deep or not JSON."""
    if len(text) > max_chars:
        raise JsonTextError(f"is {len(text)} characters long; at most {max_chars} are allowed")
    if too_deep(text, max_depth):
        raise JsonTextError(f"nests deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JsonTextError(f"is not valid JSON ({exc.msg} at character {exc.pos}): "
                            f"{excerpt(text)}") from None


def excerpt(text: str, limit: int = 60) -> str:
    """A client's text, quoted and cut short enough for an error message or a log line."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} chars)"


def path_at(raw: bytes, offset: int) -> list[str | int]:
    """The path (keys and indexes) of the value of JSON `raw` that byte `offset` falls in;
    [] for the top level. It only names the field of an error, so text that is not JSON
    gives a best guess; past MAX_LOCATE_BYTES it does not look ([])."""
    if offset > MAX_LOCATE_BYTES:
        return []
    path: list[str | int | None] = []  # per open container: its key or index (None: no key)
    expect_key = False
    for token in _TOKEN.finditer(raw, 0, offset):
        text = token.group()
        if token.lastgroup == "open":  # the string `offset` falls in
            if expect_key and path:  # a key: the field has no name yet
                path[-1] = None
            break
        if text in (b"{", b"["):
            path.append(None if text == b"{" else 0)
            expect_key = text == b"{"
        elif text in (b"}", b"]"):
            if path:
                path.pop()
        elif text == b",":
            if path and isinstance(path[-1], int):
                path[-1] += 1
            else:
                expect_key = True
        elif text == b":":
            expect_key = False
        elif expect_key and path:
            path[-1] = text[1:-1].decode("utf-8", "replace")
    return [part for part in path if part is not None]


def too_deep_at(raw: bytes, max_depth: int = MAX_DEPTH) -> int | None:
    """The byte offset of the first array or object of `raw` nested deeper than max_depth
    (None when there is none in its first MAX_LOCATE_BYTES)."""
    depth = 0
    for token in _TOKEN.finditer(raw, 0, MAX_LOCATE_BYTES):
        text = token.group()
        if text in (b"{", b"["):
            depth += 1
            if depth > max_depth:
                return token.start()
        elif text in (b"}", b"]"):
            depth -= 1
    return None


def format_path(path: list[str | int]) -> str:
    """["a", 0, "b"] -> "a[0].b", as msgspec names fields in its errors."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out
