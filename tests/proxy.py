"""A TCP proxy that can cut every connection it carries, for fault-injection tests."""

import asyncio
import contextlib
import threading


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 to `target_port`, run by its own thread and event loop.

    `cut()` aborts every live connection on both sides (transport.abort(): no FIN handshake,
    buffered data dropped) and keeps accepting new ones. `pause()` cuts them and refuses new
    ones until `resume()`: the hub is out of reach, as in a network outage. While
    `swallow_replies` is set, what the target sends is read and dropped (the connection stays
    up; the client hears nothing): a frame lost on its way, as when the sender dies with it
    still in its buffers.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.accepted = 0  # connections accepted so far
        self.cuts = 0
        self.paused = False
        self.swallow_replies = False
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="cutting-proxy",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def live(self) -> int:
        return len(self._pairs)

    def start(self) -> "CuttingProxy":
        self._thread.start()
        self._call(self._start())
        return self

    def _call(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.paused:
            client_writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.target_host, self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        pair = (client_writer, upstream_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(client_reader, upstream_writer),
                                 self._pipe(upstream_reader, client_writer, replies=True))
        finally:
            self._pairs.discard(pair)
            client_writer.transport.abort()
            upstream_writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    replies: bool = False) -> None:
        try:
            while data := await reader.read(65536):
                if replies and self.swallow_replies:
                    continue
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            writer.transport.abort()

    def cut(self) -> int:
        """Abort every live connection now; returns how many were cut."""

        async def abort_all() -> int:
            pairs = list(self._pairs)
            for client, upstream in pairs:
                client.transport.abort()
                upstream.transport.abort()
            self._pairs.clear()
            return len(pairs)

        count = self._call(abort_all())
        self.cuts += 1
        return count

    def pause(self) -> None:
        self.paused = True
        self.cut()

    def resume(self) -> None:
        self.paused = False

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for client, upstream in list(self._pairs):
                client.transport.abort()
                upstream.transport.abort()
            await asyncio.sleep(0)

        with contextlib.suppress(Exception):
            self._call(shutdown(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> "CuttingProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
