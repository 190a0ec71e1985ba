"""Protocol version: bumped only for changes an older peer cannot ignore."""

PROTOCOL_VERSION = 1

# Versions this build can speak. A hub answers a hello outside this set with an error frame
# naming both versions and a close with code 1002.
SUPPORTED_VERSIONS = frozenset({1})
