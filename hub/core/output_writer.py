"""Stores task output in batches and acks it only after the batch is committed.

Sessions hand frames in; one writer loop takes everything queued (up to a batch limit), writes
it in one transaction, then sends each runner one cumulative ack per task. Task state changes
(a finished frame) ride in the same queue, so they are committed after all output before them.
When too much is queued the sessions' `submit` waits: their sockets stop being read and the
runners slow down, instead of the hub's memory growing.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from hub.core.events import EventBus
from hub.core.telemetry import HubTelemetry
from hub.store import Store
from hub.store.base import OutputChunk, TaskUpdate

log = structlog.get_logger("hub.output_writer")

MAX_BATCH_ROWS = 2000
MAX_QUEUED_BYTES = 32 * 1024 * 1024

AfterCommit = Callable[[], None]


@dataclass(slots=True)
class _OutputEntry:
    chunk: OutputChunk
    after_commit: AfterCommit | None
    size: int

    @property
    def task_id(self) -> int:
        return self.chunk.task_id


@dataclass(slots=True)
class _UpdateEntry:
    update: TaskUpdate
    after_commit: AfterCommit | None
    size: int = 64

    @property
    def task_id(self) -> int:
        return self.update.task_id


_Entry = _OutputEntry | _UpdateEntry


class OutputWriter:
    """The one way output reaches the database. Invariant: an entry's `after_commit` (the
    ack to its runner) runs only once its transaction is committed, and entries are stored
    in the order they were submitted."""

    def __init__(self, store: Store, events: EventBus | None = None,
                 telemetry: HubTelemetry | None = None):
        self.store = store
        self.events = events
        self.telemetry = telemetry if telemetry is not None else HubTelemetry()
        self._queue: list[_Entry] = []
        self._queued_bytes = 0
        self._has_work = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._task: asyncio.Task | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        # Task moves queued and not yet committed, per task, and an event set (and replaced)
        # as each batch ends (see settle).
        self._queued_updates: dict[int, int] = {}
        self._batch_done = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def flush(self) -> None:
        while self._queue or not self._idle.is_set():
            await self._idle.wait()
            if self._queue:
                await asyncio.sleep(0)

    async def settle(self, task_id: int) -> None:
        """Return once no move of this task waits in the queue: a move stored directly must
        not be overwritten by an older one committed after it."""
        while self._queued_updates.get(task_id):
            await self._batch_done.wait()

    async def submit_output(self, chunk: OutputChunk, after_commit: AfterCommit) -> None:
        await self._has_room.wait()
        self._push(_OutputEntry(chunk, after_commit, len(chunk.data) + 64))

    def submit_update(self, task_id: int, values: dict[str, Any],
                      after_commit: AfterCommit | None = None) -> None:
        """A task change that must be stored after the output queued before it."""
        self._queued_updates[task_id] = self._queued_updates.get(task_id, 0) + 1
        self._push(_UpdateEntry(TaskUpdate(task_id, values), after_commit))

    def _push(self, entry: _Entry) -> None:
        self._queue.append(entry)
        self._queued_bytes += entry.size
        if self._queued_bytes > MAX_QUEUED_BYTES:
            self._has_room.clear()
        self._idle.clear()
        self._has_work.set()

    async def _run(self) -> None:
        while True:
            await self._has_work.wait()
            self._has_work.clear()
            while self._queue:
                batch = self._queue[:MAX_BATCH_ROWS]
                del self._queue[:MAX_BATCH_ROWS]
                try:
                    await self._write(batch)
                except Exception:
                    log.exception("output.write.failed", rows=len(batch))
                    await self._write_one_by_one(batch)
                finally:
                    self._queued_bytes -= sum(entry.size for entry in batch)
                    self._forget_updates(batch)
                    if self._queued_bytes <= MAX_QUEUED_BYTES:
                        self._has_room.set()
            self._idle.set()

    def _forget_updates(self, batch: list[_Entry]) -> None:
        """The batch's moves are committed (or dropped): no longer queued."""
        queued = self._queued_updates
        for entry in batch:
            if isinstance(entry, _UpdateEntry):
                left = queued.get(entry.task_id, 1) - 1
                if left > 0:
                    queued[entry.task_id] = left
                else:
                    queued.pop(entry.task_id, None)
        self._batch_done.set()
        self._batch_done = asyncio.Event()

    async def _write_one_by_one(self, batch: list[_Entry]) -> None:
        """A batch failed: store what can be stored, so one bad entry (a task deleted under
        it, say) never holds back every other task's output. What still fails is not acked;
        its runner keeps it and resends it after a reconnect."""
        for entry in batch:
            try:
                await self._write([entry])
            except Exception as exc:
                log.error("output.entry.dropped", error=str(exc), task_id=entry.task_id)

    async def _write(self, batch: list[_Entry]) -> None:
        chunks = [entry.chunk for entry in batch if isinstance(entry, _OutputEntry)]
        updates = [entry.update for entry in batch if isinstance(entry, _UpdateEntry)]
        telemetry = self.telemetry
        began = time.perf_counter()
        await self.store.write_output(chunks, updates)
        telemetry.db_commit.observe(time.perf_counter() - began)
        telemetry.db_batch_rows.observe(len(chunks))
        size = lines = 0
        # In submission order: a task's output events before the status change stored
        # after it. Published only once committed, so a live view that re-reads the store
        # (after a dropped event) finds every frame it was told about.
        events = self.events
        for entry in batch:
            if isinstance(entry, _OutputEntry):
                chunk = entry.chunk
                data = chunk.data
                # UTF-8 bytes; isascii() is O(1) on CPython, so most output is not encoded.
                size += len(data) if data.isascii() else len(data.encode())
                lines += data.count("\n")
                if events is not None:
                    events.publish("output", task_id=chunk.task_id, seq=chunk.seq,
                                   stream=chunk.stream, time=chunk.time, data=data)
            if entry.after_commit is not None:
                try:
                    entry.after_commit()
                except Exception:
                    log.exception("output.after_commit.failed")
        if chunks:  # once per batch: each inc() takes a lock
            telemetry.output_frames.inc(len(chunks))
            telemetry.output_bytes.inc(size)
            telemetry.output_lines.inc(lines)
