"""Output seq/ack bookkeeping: the runner's ledger, and the ledger against the hub's seq rule."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.frames import Output
from protocol.ledger import OutputLedger
from protocol.session import SeqVerdict, classify_seq


def _ledger_with(*chunks: str, task_id: int = 9) -> OutputLedger:
    ledger = OutputLedger(task_id)
    for index, data in enumerate(chunks):
        ledger.next_frame("stdout", data, float(index))
    return ledger


def _seqs(ledger: OutputLedger) -> list[int]:
    return [frame.seq for frame in ledger.unacked()]


def test_frames_are_numbered_from_one_and_kept():
    ledger = OutputLedger(9)
    frames = [ledger.next_frame("stdout", "a\n", 1.0), ledger.next_frame("stderr", "b\n", 2.0),
              ledger.next_frame("stdout", "c", 3.0)]
    assert frames == [Output(task_id=9, seq=1, stream="stdout", data="a\n", time=1.0),
                      Output(task_id=9, seq=2, stream="stderr", data="b\n", time=2.0),
                      Output(task_id=9, seq=3, stream="stdout", data="c", time=3.0)]
    assert ledger.last_seq == 3
    assert ledger.acked_seq == 0
    assert list(ledger.unacked()) == frames
    assert not ledger.fully_acked


def test_numbering_continues_after_a_resumed_ledger():
    ledger = OutputLedger(9, last_seq=5, acked_seq=5)
    assert ledger.fully_acked
    assert ledger.next_frame("stdout", "x", 0.0).seq == 6
    assert _seqs(ledger) == [6]


def test_new_ledger_with_nothing_sent_is_fully_acked():
    ledger = OutputLedger(1)
    assert ledger.fully_acked
    assert list(ledger.unacked()) == []
    assert ledger.unacked_bytes == 0


@pytest.mark.parametrize(("ack", "left"), [
    (0, [1, 2, 3, 4]), (1, [2, 3, 4]), (2, [3, 4]), (3, [4]), (4, []),
])
def test_cumulative_ack_drops_every_frame_up_to_it(ack, left):
    ledger = _ledger_with("a", "b", "c", "d")
    ledger.ack(ack)
    assert _seqs(ledger) == left
    assert ledger.acked_seq == ack
    assert ledger.fully_acked == (not left)


@pytest.mark.parametrize("stale", [0, 1, 2, -5])
def test_stale_ack_is_ignored(stale):
    ledger = _ledger_with("a", "b", "c", "d")
    ledger.ack(2)
    ledger.ack(stale)
    assert ledger.acked_seq == 2
    assert _seqs(ledger) == [3, 4]
    assert ledger.unacked_bytes == 2


@pytest.mark.parametrize("beyond", [4, 5, 1000])
def test_ack_beyond_last_seq_is_clamped(beyond):
    ledger = _ledger_with("a", "b", "c")
    ledger.ack(beyond)
    assert ledger.acked_seq == 3
    assert ledger.fully_acked
    assert list(ledger.unacked()) == []
    # The next frame is not covered by the earlier, too large ack.
    frame = ledger.next_frame("stdout", "d", 4.0)
    assert frame.seq == 4
    assert not ledger.fully_acked
    assert _seqs(ledger) == [4]
    ledger.ack(4)
    assert ledger.fully_acked


def test_unacked_is_oldest_first_and_a_stable_snapshot():
    ledger = _ledger_with("a", "b", "c", "d")
    ledger.ack(1)
    snapshot = ledger.unacked()
    ledger.ack(3)  # an ack arriving while the runner resends
    ledger.next_frame("stdout", "e", 5.0)
    assert [frame.seq for frame in snapshot] == [2, 3, 4]
    assert [frame.data for frame in ledger.unacked()] == ["d", "e"]


def test_unacked_bytes_follow_sends_and_acks():
    ledger = OutputLedger(1)
    sizes = [5, 0, 17, 3]
    for size in sizes:
        ledger.next_frame("stdout", "x" * size, 0.0)
    assert ledger.unacked_bytes == 25
    ledger.ack(1)
    assert ledger.unacked_bytes == 20
    ledger.ack(1)
    assert ledger.unacked_bytes == 20
    ledger.ack(3)
    assert ledger.unacked_bytes == 3
    ledger.ack(99)
    assert ledger.unacked_bytes == 0


# A runner ledger wired to a simulated hub over a lossy link that reconnects.

OPS = st.sampled_from(["produce", "produce", "deliver", "deliver", "drop", "deliver_ack",
                       "drop_ack", "reconnect", "reconnect_with_welcome"])


class SimulatedHub:
    """Stores output only when classify_seq says NEXT; acks cumulatively what it stored."""

    def __init__(self):
        self.stored: list[Output] = []

    @property
    def stored_seq(self) -> int:
        return self.stored[-1].seq if self.stored else 0

    def receive(self, frame: Output) -> int | None:
        verdict = classify_seq(self.stored_seq, frame.seq)
        if verdict is SeqVerdict.NEXT:
            self.stored.append(frame)
            return self.stored_seq
        if verdict is SeqVerdict.DUPLICATE:
            return self.stored_seq
        return None  # a gap: refused, nothing stored


@settings(max_examples=500, deadline=None)
@given(st.lists(OPS, max_size=120), st.lists(st.text(max_size=8), min_size=1, max_size=40))
def test_every_seq_is_stored_exactly_once_in_order(ops, chunks):
    ledger = OutputLedger(3)
    hub = SimulatedHub()
    to_hub: list[Output] = []
    to_runner: list[int] = []
    produced: list[Output] = []
    pending = iter(chunks)

    def reconnect(welcome: bool) -> None:
        to_hub.clear()
        to_runner.clear()
        if welcome:  # the welcome frame names what the hub already stored
            ledger.ack(hub.stored_seq)
        to_hub.extend(ledger.unacked())

    def check_ledger() -> None:
        unacked = list(ledger.unacked())
        assert ledger.unacked_bytes == sum(len(frame.data) for frame in unacked)
        assert [frame.seq for frame in unacked] == list(
            range(ledger.acked_seq + 1, ledger.last_seq + 1))
        assert ledger.acked_seq <= hub.stored_seq <= ledger.last_seq

    for op in ops:
        if op == "produce":
            data = next(pending, None)
            if data is not None:
                frame = ledger.next_frame("stdout", data, float(len(produced)))
                produced.append(frame)
                to_hub.append(frame)
        elif op == "deliver" and to_hub:
            ack = hub.receive(to_hub.pop(0))
            if ack is not None:
                to_runner.append(ack)
        elif op == "drop" and to_hub:
            to_hub.pop(0)
        elif op == "deliver_ack" and to_runner:
            ledger.ack(to_runner.pop(0))
        elif op == "drop_ack" and to_runner:
            to_runner.pop(0)
        elif op.startswith("reconnect"):
            reconnect(welcome=op.endswith("welcome"))
        check_ledger()

    for data in pending:
        produced.append(ledger.next_frame("stdout", data, float(len(produced))))
    # The link settles: reconnect and deliver everything until the runner holds nothing.
    for _ in range(len(produced) + 2):
        if ledger.fully_acked:
            break
        reconnect(welcome=False)
        while to_hub:
            ack = hub.receive(to_hub.pop(0))
            if ack is not None:
                ledger.ack(ack)
        check_ledger()

    assert ledger.fully_acked
    assert list(ledger.unacked()) == []
    assert ledger.unacked_bytes == 0
    assert [frame.seq for frame in hub.stored] == list(range(1, len(chunks) + 1))
    assert hub.stored == produced
    assert [frame.data for frame in hub.stored] == chunks
