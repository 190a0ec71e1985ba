"""Encoding and decoding of frames; every malformed input becomes one `ProtocolError`.

The error carries the websocket close code the receiving side should use, so the transport
layer never has to guess why a frame was refused.
"""

from enum import IntEnum
from typing import TypeVar

import msgspec

from protocol.frames import HubFrame, RunnerFrame
from protocol.limits import MAX_FRAME_BYTES
from protocol.validation import describe


class CloseCode(IntEnum):
    """Websocket close codes (RFC 6455) the protocol uses."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011


class ProtocolError(Exception):
    """A frame that cannot be accepted. `code` names the problem, `close_code` the remedy."""

    def __init__(self, code: str, message: str, close_code: int = CloseCode.INVALID_DATA):
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = int(close_code)

    def __repr__(self) -> str:
        return f"ProtocolError({self.code!r}, {self.message!r}, close_code={self.close_code})"


_F = TypeVar("_F")

_encoder = msgspec.json.Encoder()
_runner_decoder: msgspec.json.Decoder[RunnerFrame] = msgspec.json.Decoder(RunnerFrame)
_hub_decoder: msgspec.json.Decoder[HubFrame] = msgspec.json.Decoder(HubFrame)


def encode(frame: msgspec.Struct) -> bytes:
    """Frame -> JSON bytes (UTF-8)."""
    return _encoder.encode(frame)


def decode_runner_frame(data: bytes | str, max_bytes: int = MAX_FRAME_BYTES) -> RunnerFrame:
    """Decode a frame sent by a runner (what the hub receives)."""
    return _decode(_runner_decoder, data, max_bytes)


def decode_hub_frame(data: bytes | str, max_bytes: int = MAX_FRAME_BYTES) -> HubFrame:
    """Decode a frame sent by the hub (what a runner receives)."""
    return _decode(_hub_decoder, data, max_bytes)


def _decode(decoder: "msgspec.json.Decoder[_F]", data: bytes | str, max_bytes: int) -> _F:
    if not isinstance(data, bytes | bytearray | memoryview | str):
        raise ProtocolError("invalid_frame",
                            f"frame must be text or bytes, not {type(data).__name__}")
    size = len(data) if not isinstance(data, str) else len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ProtocolError(
            "frame_too_big", f"frame of {size} bytes exceeds the limit of {max_bytes} bytes",
            CloseCode.TOO_BIG,
        )
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        text = str(exc)
        # An unknown tag means the peer speaks frames we do not know: a protocol error,
        # not just bad data.
        if text.endswith("`$.type`") and text.startswith("Invalid value"):
            raise ProtocolError("unknown_type", _clip(f"unknown frame type: {text}"),
                                CloseCode.PROTOCOL_ERROR) from None
        # Named the field (numbers are range-checked there too: protocol.numbers), and cut
        # short: the message goes back to the peer and into the log.
        raise ProtocolError("invalid_frame", _clip(f"invalid frame: {describe(exc)}")) \
            from None
    except msgspec.DecodeError as exc:
        raise ProtocolError("malformed_frame", f"frame is not valid JSON: {exc}") from None
    except UnicodeError as exc:
        raise ProtocolError("malformed_frame", f"frame is not valid UTF-8: {exc}") from None
    except RecursionError:  # nesting in a field the frame type skips (fields are flat)
        raise ProtocolError("malformed_frame", "frame nests too deeply") from None


def _clip(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[:limit] + "..."
