"""Stored output frames -> Semaphore's per-line TaskOutput entries."""

from hub.api.serialize import OutputLines


def chunk(seq: int, data: str, time: float = 0.0) -> dict:
    return {"seq": seq, "time": time, "stream": "stdout", "data": data}


def texts(entries: list[dict]) -> list[str]:
    return [entry["output"] for entry in entries]


def test_lines_split_across_frames_and_pages_are_joined():
    lines = OutputLines(7)
    first = lines.feed([chunk(1, "a\nPassword: ", 1.5), chunk(2, "secret\nb", 2.0)])
    second = lines.feed([chunk(3, "c\n\nd", 3.0)])
    last = lines.finish()
    assert texts(first) == ["a", "Password: secret"]
    assert texts(second) == ["bc", ""]
    assert texts(last) == ["d"]
    assert first[1]["time"] == "1970-01-01T00:00:01.500000Z"  # when the line began
    assert second[0]["time"] == "1970-01-01T00:00:02.000000Z"
    assert {entry["task_id"] for entry in first + second + last} == {7}


def test_output_ending_in_newline_has_no_trailing_entry():
    lines = OutputLines(1)
    assert texts(lines.feed([chunk(1, "x\ny\n")])) == ["x", "y"]
    assert lines.finish() == []
