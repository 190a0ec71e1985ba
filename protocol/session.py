"""Sequence and ack bookkeeping for task output, as plain code both peers drive.

The runner numbers each task's output frames 1, 2, 3 ... and keeps every frame until the hub
acks it (acks are cumulative and mean "durably stored"). After a reconnect it resends what is
still unacked. The hub accepts only the next seq of each task: a seq it already stored is a
harmless resend, a seq beyond the next one is a gap, which a correct runner never produces.
"""

from collections import deque
from collections.abc import Iterator
from enum import Enum

from protocol.frames import Output, Stream


class OutputLedger:
    """Runner side: numbers one task's output frames and keeps them until acked."""

    def __init__(self, task_id: int, last_seq: int = 0, acked_seq: int = 0):
        self.task_id = task_id
        self.last_seq = last_seq
        self.acked_seq = acked_seq
        self._unacked: deque[Output] = deque()
        self.unacked_bytes = 0

    def next_frame(self, stream: Stream, data: str, time: float) -> Output:
        """Number a chunk of output and keep it until the hub acks it."""
        self.last_seq += 1
        frame = Output(task_id=self.task_id, seq=self.last_seq, stream=stream, data=data,
                       time=time)
        self._unacked.append(frame)
        self.unacked_bytes += len(data)
        return frame

    def ack(self, seq: int) -> None:
        """Drop every frame up to `seq` (cumulative ack); stale acks are ignored."""
        if seq <= self.acked_seq:
            return
        self.acked_seq = min(seq, self.last_seq)
        while self._unacked and self._unacked[0].seq <= self.acked_seq:
            self.unacked_bytes -= len(self._unacked.popleft().data)

    def unacked(self) -> Iterator[Output]:
        """Frames to resend after a reconnect, oldest first."""
        return iter(tuple(self._unacked))

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
