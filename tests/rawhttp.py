"""HTTP spoken byte by byte, for what no well-behaved client sends: bytes that are not UTF-8
in headers, broken encodings, requests sent half or slowly."""

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def address(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


async def connect(base_url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*address(base_url))


async def exchange(base_url: str, request: bytes, timeout: float = 10.0) -> RawResponse:
    """Send one whole request (it should say `Connection: close`) and read the answer."""
    reader, writer = await connect(base_url)
    try:
        writer.write(request)
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    return parse(data)


def parse(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = unchunk(body)
    return RawResponse(int(status_line.split()[1]), headers, body)


def unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2:]
    return out


def request(method: str, path: str, body: bytes = b"", headers: dict[str, Any] | None = None,
            close: bool = True) -> bytes:
    """Request bytes; header values may be bytes (sent as they are)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    for name, value in (headers or {}).items():
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes)
                                               else str(value).encode()))
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}".encode())
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (or resets it). Fails if
    it is still open after `timeout`: a liveness bound, far above the deadlines tested."""
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"still open after {timeout} s; got {data[:200]!r}"
            chunk = await asyncio.wait_for(reader.read(65536), remaining)
            if not chunk:
                return data
            data += chunk
    except ConnectionError:
        return data
    except TimeoutError:
        raise AssertionError(f"still open after {timeout} s; got {data[:200]!r}") from None
