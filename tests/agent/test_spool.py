"""The runner's on-disk spool of unacked output frames."""

from agent import spool as spool_module
from agent.spool import DiskFrames
from protocol.frames import Finished, Output
from protocol.ledger import OutputLedger


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


def test_a_spool_left_by_a_crashed_runner_is_recovered(tmp_path):
    from protocol.frames import Finished

    folder = tmp_path / "task_4"
    frames = DiskFrames(folder)
    for seq in range(1, 6):
        frames.append(frame(seq, f"line {seq}\n"))
    frames.drop_through(2)  # acked before the crash: deleted only with their segment
    frames.record_process(12345, 1.5, 0)
    frames.record_process(12399, 2.5, 0)  # a second group of the task (its ssh-agent)
    with open(folder / "000000.frames", "ab") as torn:  # a crash mid-write
        torn.write(b'{"type":"output","task_id":4,"se')
    found = DiskFrames.recover(folder)
    assert found.task_id == 4 and found.last_seq == 5
    assert found.processes == [{"pid": 12345, "started": 1.5, "uid": 0},
                               {"pid": 12399, "started": 2.5, "uid": 0}]
    assert found.finished is None
    assert [f.seq for f in found.frames.frames()] == [1, 2, 3, 4, 5]
    found.frames.append(frame(6, "after\n"))  # it goes on in a new segment
    assert [f.seq for f in found.frames.frames()][-1] == 6
    found.frames.record_finished(Finished(task_id=4, status="success", last_seq=6))
    again = DiskFrames.recover(folder)
    assert again.finished == Finished(task_id=4, status="success", last_seq=6)
    assert [f.data for f in again.frames.frames()][-2:] == ["line 5\n", "after\n"]


def test_a_task_that_prints_nothing_creates_no_segment_and_removal_is_complete(tmp_path):
    spool = DiskFrames(tmp_path / "task_3")
    spool.record_process(1234, 1.0, 0)
    spool.record_finished(Finished(task_id=3, status="success", last_seq=0))
    assert not list((tmp_path / "task_3").glob("*.frames"))
    recovered = DiskFrames.recover(tmp_path / "task_3")
    assert recovered.finished is not None and recovered.finished.status == "success"
    assert recovered.processes == [{"pid": 1234, "started": 1.0, "uid": 0}]
    spool.remove()
    assert not (tmp_path / "task_3").exists()


def test_removal_of_a_folder_holding_more_than_its_files(tmp_path):
    spool = DiskFrames(tmp_path / "task_4")
    spool.append(Output(task_id=4, seq=1, stream="stdout", time=0.0, data="x\n"))
    (tmp_path / "task_4" / "unexpected" / "deeper").mkdir(parents=True)
    spool.remove()
    assert not (tmp_path / "task_4").exists()
