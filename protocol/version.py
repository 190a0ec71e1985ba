"""Versions: the package's (one place for hub and runner alike) and the protocol's."""

import os
import sys

# What `semaphore --version` prints, a runner reports in its hello and the hub in /api/info.
# pyproject.toml repeats it (hatchling, the build backend, is not installed everywhere the
# tests run, so it is not read from here); tests/test_import_graph.py keeps the two equal.
SOURCE_VERSION = "0.1.0"


def _build_version() -> str:
    """The version a frozen runner was built as (semaphore.spec's SEMAPHORE_BUILD_VERSION,
    bundled as `semaphore-build-version`), or "" for the source's own."""
    bundle = getattr(sys, "_MEIPASS", None)
    if not isinstance(bundle, str):
        return ""
    try:
        with open(os.path.join(bundle, "semaphore-build-version"), encoding="ascii") as file:
            return file.read().strip()[:64]
    except (OSError, ValueError):
        return ""


PACKAGE_VERSION = _build_version() or SOURCE_VERSION

# Protocol version: bumped only for changes an older peer cannot ignore.
PROTOCOL_VERSION = 1

# Versions this build can speak. A hub answers a hello outside this set with an error frame
# naming both versions and a close with code 1002.
SUPPORTED_VERSIONS = frozenset({1})
