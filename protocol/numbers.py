"""The ranges of the numbers frames carry, checked by msgspec when a frame is decoded.

A number the receiver could not store or show (an id past 64 bits, `time: 1e308`, a negative
seq) makes the frame invalid, with a ProtocolError naming the field: nothing after the codec
has to guard against it. JSON has no NaN or infinity, and msgspec refuses a literal that
overflows a float, so a finite bound is all a float needs.
"""

from typing import Annotated

import msgspec

# SQLite INTEGER, where ids, seqs and sizes end up.
INT64_MAX = 2**63 - 1
# The last second with a four-digit year (9999-12-31T23:59:59Z): the API's dates show no more.
UNIX_TIME_MAX = 253_402_300_799.0

# A database id (task, runner).
Id = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]
# An output sequence number; 0 means "none yet" (in acks, held tasks, finished frames).
Seq = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
# An output frame's own seq: they start at 1.
OutputSeq = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]
# Bytes (memory, disk, limits).
Size = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
# Seconds since the epoch.
UnixTime = Annotated[float, msgspec.Meta(ge=0, le=UNIX_TIME_MAX)]
# A period in seconds the hub sets (the heartbeat interval): up to a day.
Interval = Annotated[float, msgspec.Meta(gt=0, le=86_400)]
# A process's exit code: 0-255, or minus a signal number, within a C int.
ExitCode = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
# A protocol version number.
Version = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
# CPU use in percent (system-wide is at most 100; room for runners that sum their cores).
Percent = Annotated[float, msgspec.Meta(ge=0, le=1_000_000)]
# Load average.
Load = Annotated[float, msgspec.Meta(ge=0, le=1_000_000)]
