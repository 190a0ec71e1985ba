"""The runner's on-disk spool: every output frame the hub has not acked yet, per task.

Frames are appended to segment files under `<tmp_path>/spool/task_<id>/`; a segment is
deleted as soon as every frame in it is acked, and the whole folder when the task is done.
Memory holds only an index (seq, segment, offset, length), so a long hub outage costs disk,
bounded by the task's unacked-bytes limit (backpressure), not the runner's RAM. Writes are
not fsynced: the spool outlives a lost connection or hub, which is what it is for.
"""

import shutil
from collections import deque
from pathlib import Path

from protocol.codec import decode_runner_frame, encode
from protocol.frames import Output

SEGMENT_BYTES = 4 * 1024 * 1024


class DiskFrames:
    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._index: deque[tuple[int, int, int, int]] = deque()  # seq, segment, offset, size
        self._segment = 0
        self._segment_size = 0
        self._file = self._open_segment(0)

    def _path(self, segment: int) -> Path:
        return self.folder / f"{segment:06d}.frames"

    def _open_segment(self, segment: int):
        return open(self._path(segment), "ab", buffering=0)

    def append(self, frame: Output) -> None:
        if self._segment_size >= SEGMENT_BYTES:
            self._file.close()
            self._segment += 1
            self._segment_size = 0
            self._file = self._open_segment(self._segment)
        data = encode(frame)
        self._file.write(data)
        self._index.append((frame.seq, self._segment, self._segment_size, len(data)))
        self._segment_size += len(data)

    def drop_through(self, seq: int) -> None:
        oldest = self._index[0][1] if self._index else self._segment
        while self._index and self._index[0][0] <= seq:
            self._index.popleft()
        first_kept = self._index[0][1] if self._index else self._segment
        for segment in range(oldest, first_kept):  # every frame in them is acked
            self._path(segment).unlink(missing_ok=True)

    def frames(self) -> list[Output]:
        frames = []
        handles: dict[int, object] = {}
        try:
            for _seq, segment, offset, size in self._index:
                if segment not in handles:
                    handles[segment] = open(self._path(segment), "rb")
                handle = handles[segment]
                handle.seek(offset)
                frames.append(decode_runner_frame(handle.read(size)))
        finally:
            for handle in handles.values():
                handle.close()
        return frames

    def remove(self) -> None:
        """The task is done and its finished frame acked: nothing left to keep."""
        self._file.close()
        shutil.rmtree(self.folder, ignore_errors=True)
