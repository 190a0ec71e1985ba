"""Readable messages for msgspec validation errors: always name the field that was wrong."""

import msgspec


def describe(exc: msgspec.ValidationError, noun: str = "field") -> str:
    """'Expected `int`, got `str` - at `$.a.b`' -> '{noun} `a.b`: Expected `int`, got `str`'."""
    problem, _, where = str(exc).partition(" - at `$.")
    where = where.rstrip("`")
    if problem.startswith("Object contains unknown field"):
        key = problem.split("`")[1]
        return f"unknown {noun} `{where + '.' if where else ''}{key}`"
    if problem.startswith("Object missing required field"):
        key = problem.split("`")[1]
        return f"missing required {noun} `{where + '.' if where else ''}{key}`"
    return f"{noun} `{where}`: {problem}" if where else problem
