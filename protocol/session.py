"""Sequence and ack bookkeeping for task output, as plain code both peers drive.

The runner numbers each task's output frames 1, 2, 3 ... and keeps every frame until the hub
acks it (acks are cumulative and mean "durably stored"). After a reconnect it resends what is
still unacked. The hub accepts only the next seq of each task: a seq it already stored is a
harmless resend, a seq beyond the next one is a gap, which a correct runner never produces.
"""

from collections import deque
from collections.abc import Iterator
from enum import Enum
from typing import Protocol

from protocol.frames import Output, Stream


class FrameStore(Protocol):
    """Where a ledger keeps unacked frames: memory here, a disk spool on the runner."""

    def append(self, frame: Output) -> None: ...
    def drop_through(self, seq: int) -> None: ...
    def frames(self) -> list[Output]: ...


class MemoryFrames:
    def __init__(self) -> None:
        self._frames: deque[Output] = deque()

    def append(self, frame: Output) -> None:
        self._frames.append(frame)

    def drop_through(self, seq: int) -> None:
        while self._frames and self._frames[0].seq <= seq:
            self._frames.popleft()

    def frames(self) -> list[Output]:
        return list(self._frames)


class OutputLedger:
    """Runner side: numbers one task's output frames and keeps them until acked."""

    def __init__(self, task_id: int, last_seq: int = 0, acked_seq: int = 0,
                 store: FrameStore | None = None):
        self.task_id = task_id
        self.last_seq = last_seq
        self.acked_seq = acked_seq
        self._store = store if store is not None else MemoryFrames()
        self._sizes: deque[tuple[int, int]] = deque()  # (seq, bytes of data), unacked
        self.unacked_bytes = 0

    @classmethod
    def resume(cls, task_id: int, last_seq: int, store: FrameStore) -> "OutputLedger":
        """A ledger over frames already in `store` (a runner restarted with its spool)."""
        ledger = cls(task_id, last_seq=last_seq, store=store)
        for frame in store.frames():
            ledger._sizes.append((frame.seq, len(frame.data)))
            ledger.unacked_bytes += len(frame.data)
        return ledger

    def next_frame(self, stream: Stream, data: str, time: float) -> Output:
        """Number a chunk of output and keep it until the hub acks it."""
        self.last_seq += 1
        frame = Output(task_id=self.task_id, seq=self.last_seq, stream=stream, data=data,
                       time=time)
        self._store.append(frame)
        self._sizes.append((frame.seq, len(data)))
        self.unacked_bytes += len(data)
        return frame

    def ack(self, seq: int) -> None:
        """Drop every frame up to `seq` (cumulative ack); stale acks are ignored."""
        if seq <= self.acked_seq:
            return
        self.acked_seq = min(seq, self.last_seq)
        while self._sizes and self._sizes[0][0] <= self.acked_seq:
            self.unacked_bytes -= self._sizes.popleft()[1]
        self._store.drop_through(self.acked_seq)

    def unacked(self) -> Iterator[Output]:
        """Frames to resend after a reconnect, oldest first."""
        return iter(self._store.frames())

    @property
    def fully_acked(self) -> bool:
        return self.acked_seq >= self.last_seq


class SeqVerdict(Enum):
    NEXT = "next"            # store it
    DUPLICATE = "duplicate"  # already stored: ack again, store nothing
    GAP = "gap"              # frames missing before it: a protocol violation


def classify_seq(stored_seq: int, seq: int) -> SeqVerdict:
    """Hub side: what to do with output `seq` when `stored_seq` is the last one stored."""
    if seq <= stored_seq:
        return SeqVerdict.DUPLICATE
    if seq == stored_seq + 1:
        return SeqVerdict.NEXT
    return SeqVerdict.GAP
