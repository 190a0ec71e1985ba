"""Limits both peers agree on: frame size, output coalescing, heartbeat timing."""

# Largest frame either side accepts, in bytes of JSON text. Output is coalesced into frames far
# below this; an assign with a large environment is the biggest legitimate frame.
MAX_FRAME_BYTES = 1024 * 1024

# The runner packs output lines into one frame until it holds this many bytes of data...
OUTPUT_FRAME_BYTES = 16 * 1024
# ...or the oldest line in it has waited this long (seconds): small enough to look live.
OUTPUT_FLUSH_INTERVAL = 0.005

# A partial line (no newline yet, e.g. a progress prompt) is sent after this long (seconds).
PARTIAL_LINE_FLUSH = 0.2

# Default heartbeat interval the hub sets in welcome; silence for this many intervals means
# the runner is offline.
HEARTBEAT_INTERVAL = 5.0
MISSED_HEARTBEATS_OFFLINE = 3

# Default per-task output limit the hub announces in welcome (bytes).
MAX_OUTPUT_BYTES_PER_TASK = 100 * 1024 * 1024
