"""The runner's on-disk spool: every output frame the hub has not acked yet, per task.

Frames are appended, one JSON line each, to segment files under
`<tmp_path>/spool/task_<id>/`; a segment is deleted as soon as every frame in it is acked, and
the whole folder when the task is done. Memory holds only an index (seq, segment, offset,
length), so a long hub outage costs disk, bounded by the task's unacked-bytes limit
(backpressure), not the runner's RAM. The folder also records the task's process and, once it
ends, its finished frame, so that a runner restarted after a crash can still deliver both.
Writes are not fsynced: the spool is for lost connections, hubs and runner processes, not for
a lost machine.
"""

import json
import os
import shutil
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from protocol.codec import ProtocolError, decode_runner_frame, encode
from protocol.frames import Finished, Output

SEGMENT_BYTES = 4 * 1024 * 1024


PROCESS_FILE = "process.json"
FINISHED_FILE = "finished.json"


@dataclass
class Recovered:
    """What a spool folder left by an earlier runner process holds."""

    task_id: int
    frames: "DiskFrames"
    last_seq: int
    finished: Finished | None
    # {"pid", "started", "uid"} of each process group the task started (its program, its
    # ssh-agent), to kill after a crash
    processes: list[dict]


class DiskFrames:
    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._index: deque[tuple[int, int, int, int]] = deque()  # seq, segment, offset, size
        self._segment = 0
        self._segment_size = 0
        # Opened at the first frame: a task that prints nothing creates no segment file.
        self._file: BinaryIO | None = None

    @classmethod
    def recover(cls, folder: Path) -> Recovered:
        """Reopen a task's spool after a runner restart: every frame still on disk, in
        order (a torn last line, from a crash mid-write, is dropped), and what it recorded."""
        spool = cls.__new__(cls)
        spool.folder = folder
        spool._index = deque()
        segments = sorted(int(p.stem) for p in folder.glob("*.frames"))
        last_seq = 0
        for segment in segments:
            offset = 0
            for line in spool._path(segment).read_bytes().splitlines(keepends=True):
                try:
                    frame = decode_runner_frame(line)
                except ProtocolError:
                    break
                if isinstance(frame, Output) and frame.seq > last_seq:
                    spool._index.append((frame.seq, segment, offset, len(line)))
                    last_seq = frame.seq
                offset += len(line)
        spool._segment = (segments[-1] + 1) if segments else 0
        spool._segment_size = 0
        spool._file = None
        finished = None
        if (folder / FINISHED_FILE).exists():
            try:
                frame = decode_runner_frame((folder / FINISHED_FILE).read_bytes())
                finished = frame if isinstance(frame, Finished) else None
            except ProtocolError:
                finished = None
        processes = _read_processes(folder / PROCESS_FILE)
        task_id = int(folder.name.removeprefix("task_"))
        return Recovered(task_id, spool, max(last_seq, finished.last_seq if finished else 0),
                         finished, processes)

    def record_process(self, pid: int, started: float, uid: int) -> None:
        """A process group leader of the task, to kill its group after a runner crash; start
        time and user tell it apart from a later process that reuses the pid."""
        path = self.folder / PROCESS_FILE
        known = _read_processes(path)
        known.append({"pid": pid, "started": started, "uid": uid})
        path.write_text(json.dumps(known))

    def record_finished(self, frame: Finished) -> None:
        (self.folder / FINISHED_FILE).write_bytes(encode(frame))

    def _path(self, segment: int) -> Path:
        return self.folder / f"{segment:06d}.frames"

    def _open_segment(self, segment: int) -> BinaryIO:
        return open(self._path(segment), "ab", buffering=0)

    def append(self, frame: Output) -> None:
        if self._file is not None and self._segment_size >= SEGMENT_BYTES:
            self._file.close()
            self._file = None
            self._segment += 1
            self._segment_size = 0
        if self._file is None:
            self._file = self._open_segment(self._segment)
        data = encode(frame) + b"\n"
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
        handles: dict[int, BinaryIO] = {}
        try:
            for _seq, segment, offset, size in self._index:
                if segment not in handles:
                    handles[segment] = open(self._path(segment), "rb")
                handle = handles[segment]
                handle.seek(offset)
                frame = decode_runner_frame(handle.read(size))
                assert isinstance(frame, Output)  # the spool holds output frames only
                frames.append(frame)
        finally:
            for handle in handles.values():
                handle.close()
        return frames

    def remove(self) -> None:
        """The task is done and its finished frame acked: nothing left to keep. The folder
        holds only files of ours: unlinked one by one, cheaper on the event loop than rmtree
        (which guards each entry against symlink races); rmtree for anything else found."""
        if self._file is not None:
            self._file.close()
        try:
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    os.unlink(entry.path)
            os.rmdir(self.folder)
        except OSError:  # gone already, or not only our files: the careful way
            shutil.rmtree(self.folder, ignore_errors=True)


def _read_processes(path: Path) -> list[dict]:
    """The recorded process groups; an older runner wrote one object, not a list."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if isinstance(found, dict):
        return [found]
    return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []
