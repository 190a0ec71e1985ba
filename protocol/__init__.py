"""The runner protocol: typed frames, the codec and the session rules, shared by hub and runner.

Pure data and rules: this package imports only the standard library and msgspec, so that both
sides (and the frozen runner) can carry it without pulling any I/O in.
"""

from protocol.codec import ProtocolError, decode_hub_frame, decode_runner_frame, encode
from protocol.frames import (
    Accepted,
    Ack,
    Assign,
    Cancel,
    Confirmation,
    Decision,
    Error,
    Finished,
    Heartbeat,
    HeldTask,
    Hello,
    HubFrame,
    Metrics,
    Output,
    Rejected,
    RepositorySpec,
    RunnerFrame,
    TaskSpec,
    Welcome,
)
from protocol.version import PROTOCOL_VERSION

__all__ = [
    "PROTOCOL_VERSION",
    "Accepted",
    "Ack",
    "Assign",
    "Cancel",
    "Confirmation",
    "Decision",
    "Error",
    "Finished",
    "Heartbeat",
    "HeldTask",
    "Hello",
    "HubFrame",
    "Metrics",
    "Output",
    "ProtocolError",
    "Rejected",
    "RepositorySpec",
    "RunnerFrame",
    "TaskSpec",
    "Welcome",
    "decode_hub_frame",
    "decode_runner_frame",
    "encode",
]
