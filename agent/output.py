"""Output from a task's pipes to numbered frames: line splitting, coalescing, backpressure.

Lines are packed into one frame until it holds OUTPUT_FRAME_BYTES or the oldest line in it has
waited OUTPUT_FLUSH_INTERVAL, so a chatty task sends a few large frames instead of one per line
while a quiet one still looks live. Frames stay in the task's ledger until the hub acks them;
when too many bytes are unacked the writer waits, which slows the task (its pipe fills) instead
of growing memory.
"""

import asyncio
import codecs
import time
from collections.abc import Callable

from agent.masking import SecretMasker, mask_values
from protocol.frames import Output, Stream
from protocol.ledger import OutputLedger
from protocol.limits import OUTPUT_FLUSH_INTERVAL, OUTPUT_FRAME_BYTES, PARTIAL_LINE_FLUSH

# Unacked output a task may have before its writer waits for acks (bytes).
MAX_UNACKED_BYTES = 32 * 1024 * 1024
READ_CHUNK = 64 * 1024


class OutputCoalescer:
    """Packs text into Output frames numbered by the task's ledger and hands them to `emit`."""

    def __init__(self, ledger: OutputLedger, emit: Callable[[Output], None],
                 max_unacked_bytes: int = MAX_UNACKED_BYTES, max_output: int = 0,
                 masks: list[str] | None = None):
        self._ledger = ledger
        # One masker over both streams, in the order the text is sent: the hub shows them
        # joined, so a secret begun on stdout and ended on stderr must be masked too.
        self._masker = SecretMasker(mask_values(list(masks or ())))
        self._max_output = max_output  # characters a task may send in all; 0: no limit
        self._written = 0
        self._cut = False
        self._emit = emit
        self._max_unacked = max_unacked_bytes
        self._parts: list[str] = []
        self._size = 0
        self._stream: Stream = "stdout"
        self._first_time = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._room = asyncio.Event()
        self._room.set()

    async def write(self, stream: Stream, text: str) -> None:
        # Text the masker held back from the other stream goes out with this one.
        await self._write(stream, self._masker.feed(text))

    async def close(self) -> None:
        """The task is over: release what is held back (it was no secret) and send it all.
        Not earlier, at the end of one stream: the other could still finish a secret."""
        await self._write(self._stream, self._masker.finish())
        self.flush()

    async def _write(self, stream: Stream, text: str) -> None:
        if self._max_output:
            text = self._within_limit(text)
        # A frame never holds more than OUTPUT_FRAME_BYTES characters (JSON escaping keeps it
        # far below the frame limit), so a huge line is cut across several frames.
        while text:
            await self._room.wait()
            if self._parts and stream != self._stream:
                self.flush()
            if not self._parts:
                self._stream = stream
                self._first_time = time.time()
                self._timer = asyncio.get_running_loop().call_later(OUTPUT_FLUSH_INTERVAL,
                                                                    self.flush)
            room = OUTPUT_FRAME_BYTES - self._size
            cut = room
            if len(text) > room:
                # Cut after a newline where there is one, so lines stay whole in frames.
                cut = text.rfind("\n", 0, room) + 1 or room
            piece, text = text[:cut], text[cut:]
            self._parts.append(piece)
            self._size += len(piece)
            if self._size >= OUTPUT_FRAME_BYTES:
                self.flush()

    def _within_limit(self, text: str) -> str:
        """Past the task's output limit, output is dropped (the task still runs to its end,
        its pipes still drained) and one line says so."""
        if self._cut:
            return ""
        left = self._max_output - self._written
        encoded = text.encode("utf-8", "surrogatepass")
        self._written += len(encoded)
        if len(encoded) <= left:
            return text
        self._cut = True
        # Cut at a byte count (the limit is in bytes), never inside a character.
        kept = encoded[:left].decode("utf-8", "ignore")
        return (kept + f"\n[output cut: the task printed more than {self._max_output} bytes;"
                " the rest is not kept]\n")

    def flush(self) -> None:
        """Send what is pending as one frame now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._parts:
            return
        data = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        self._emit(self._ledger.next_frame(self._stream, data, self._first_time))
        if self._ledger.unacked_bytes > self._max_unacked:
            self._room.clear()

    def acked(self) -> None:
        """The ledger shrank: let a waiting writer go on if there is room again."""
        if self._ledger.unacked_bytes <= self._max_unacked:
            self._room.set()


async def pump_pipe(reader: asyncio.StreamReader, stream: Stream,
                    sink: OutputCoalescer) -> None:
    """Copy a pipe to the sink: whole lines as they come, a partial line after a pause."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    partial = ""
    while True:
        try:
            if partial:
                chunk = await asyncio.wait_for(reader.read(READ_CHUNK), PARTIAL_LINE_FLUSH)
            else:
                chunk = await reader.read(READ_CHUNK)
        except TimeoutError:
            # A prompt or progress bar without a newline: show it rather than hold it.
            await sink.write(stream, partial)
            partial = ""
            continue
        if not chunk:
            partial += decoder.decode(b"", final=True)
            if partial:
                await sink.write(stream, partial)
            return
        text = partial + decoder.decode(chunk)
        cut = text.rfind("\n") + 1
        partial = text[cut:]
        if len(partial) >= OUTPUT_FRAME_BYTES:
            cut, partial = len(text), ""  # a line this long goes out in pieces, not held
        if cut:
            await sink.write(stream, text[:cut])
