"""Versions: the package's (one place for hub and runner alike) and the protocol's."""

# What `semaphore --version` prints, a runner reports in its hello and the hub in /api/info.
# pyproject.toml repeats it (hatchling, the build backend, is not installed everywhere the
# tests run, so it is not read from here); tests/test_import_graph.py keeps the two equal.
PACKAGE_VERSION = "0.1.0"

# Protocol version: bumped only for changes an older peer cannot ignore.
PROTOCOL_VERSION = 1

# Versions this build can speak. A hub answers a hello outside this set with an error frame
# naming both versions and a close with code 1002.
SUPPORTED_VERSIONS = frozenset({1})
