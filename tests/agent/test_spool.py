"""The runner's on-disk spool of unacked output frames."""

from agent import spool as spool_module
from agent.spool import DiskFrames
from protocol.frames import Output
from protocol.session import OutputLedger


def frame(seq: int, data: str) -> Output:
    return Output(task_id=4, seq=seq, stream="stdout", data=data, time=float(seq))


def test_frames_round_trip_through_disk_and_acked_ones_go(tmp_path):
    frames = DiskFrames(tmp_path / "t")
    sent = [frame(seq, f"line {seq}\n") for seq in range(1, 6)]
    for item in sent:
        frames.append(item)
    assert frames.frames() == sent
    frames.drop_through(3)
    assert frames.frames() == sent[3:]
    frames.drop_through(5)
    assert frames.frames() == []


def test_fully_acked_segments_are_deleted_and_the_folder_at_the_end(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 300)
    folder = tmp_path / "t"
    frames = DiskFrames(folder)
    for seq in range(1, 41):
        frames.append(frame(seq, "x" * 50 + "\n"))
    segments = sorted(folder.iterdir())
    assert len(segments) > 5
    frames.drop_through(30)
    left = sorted(folder.iterdir())
    assert 0 < len(left) < 5
    assert [f.seq for f in frames.frames()] == list(range(31, 41))
    frames.remove()
    assert not folder.exists()


def test_ledger_on_disk_resends_exactly_what_is_unacked(tmp_path):
    ledger = OutputLedger(4, store=DiskFrames(tmp_path / "t"))
    for text in ("a\n", "bb\n", "ccc\n"):
        ledger.next_frame("stdout", text, 1.0)
    ledger.ack(1)
    assert [(f.seq, f.data) for f in ledger.unacked()] == [(2, "bb\n"), (3, "ccc\n")]
    assert ledger.unacked_bytes == len("bb\nccc\n")
    ledger.ack(3)
    assert list(ledger.unacked()) == [] and ledger.unacked_bytes == 0
