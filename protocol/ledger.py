"""The runner's ledger of one task's output: numbers its frames and keeps them until acked.

The runner numbers each task's output frames 1, 2, 3 ... and keeps every frame until the hub
acks it (acks are cumulative and mean "durably stored"). After a reconnect it resends what is
still unacked. The hub's side of the rule (it takes only the next seq of each task) is
`protocol.session.classify_seq`.
"""

from collections import deque
from collections.abc import Iterator
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
