"""TaskWorker with real processes: assign, idempotence, limits, cancel, acks, resend."""

import asyncio
import time
from pathlib import Path

import pytest

from agent.worker import TaskWorker
from protocol.frames import (
    Accepted,
    Finished,
    HeldTask,
    Output,
    Rejected,
    RepositorySpec,
    RunnerFrame,
    TaskSpec,
)

DEADLINE = 30.0


class Frames(list):
    """Every frame the worker emits, in order."""

    async def until(self, predicate, what: str) -> RunnerFrame:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            for frame in self:
                if predicate(frame):
                    return frame
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {what} frame within {DEADLINE} s; got {list(self)!r}")

    async def finished(self, task_id: int) -> Finished:
        return await self.until(
            lambda f: isinstance(f, Finished) and f.task_id == task_id, f"finished({task_id})")

    def of(self, task_id: int, kind: type) -> list:
        return [f for f in self if isinstance(f, kind) and f.task_id == task_id]


@pytest.fixture
async def make_worker(tmp_path):
    workers: list[TaskWorker] = []

    def make(max_parallel_tasks: int = 4) -> tuple[TaskWorker, Frames]:
        frames = Frames()
        worker = TaskWorker(tmp_path / "work", max_parallel_tasks, frames.append,
                            kill_grace=0.5)
        workers.append(worker)
        return worker, frames

    yield make
    for worker in workers:
        worker.stop_all("test over")
        runners = [s.runner for s in worker.tasks.values() if s.runner is not None]
        await asyncio.wait_for(asyncio.gather(*runners, return_exceptions=True), DEADLINE)


def spec(folder: Path, body: str, app: str = "bash") -> TaskSpec:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.sh").write_text(body)
    return TaskSpec(project_id=1, template_id=1, app=app, playbook="run.sh",
                    repository=RepositorySpec(url=str(folder)))


async def wait_lines(path: Path, count: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never had {count} lines")


async def test_assign_emits_accepted_then_output_then_finished(tmp_path, make_worker):
    worker, frames = make_worker()
    worker.assign(1, spec(tmp_path / "repo", "echo hello\necho warn >&2\n"))
    finished = await frames.finished(1)
    assert isinstance(frames[0], Accepted) and frames[0].task_id == 1
    assert isinstance(frames[-1], Finished)
    outputs = frames[1:-1]
    assert outputs and all(isinstance(f, Output) and f.task_id == 1 for f in outputs)
    assert [f.seq for f in outputs] == list(range(1, len(outputs) + 1))
    assert "".join(f.data for f in outputs if f.stream == "stdout") == "hello\n"
    assert "".join(f.data for f in outputs if f.stream == "stderr") == "warn\n"
    assert finished.status == "success" and finished.exit_code == 0
    assert finished.last_seq == outputs[-1].seq


async def test_second_assign_of_a_running_task_starts_no_second_process(tmp_path,
                                                                        make_worker):
    worker, frames = make_worker()
    pids = tmp_path / "pids"
    task = spec(tmp_path / "repo", f"echo $$ >> {pids}\nsleep 1\necho end\n")
    worker.assign(9, task)
    worker.assign(9, task)  # before the first process even started
    await wait_lines(pids, 1)
    worker.assign(9, task)  # while it runs
    finished = await frames.finished(9)
    assert finished.status == "success"
    assert len(frames.of(9, Accepted)) == 3
    assert len(frames.of(9, Finished)) == 1
    assert len(pids.read_text().splitlines()) == 1
    assert "".join(f.data for f in frames.of(9, Output)) == "end\n"


async def test_assign_beyond_max_parallel_tasks_is_rejected_as_busy(tmp_path, make_worker):
    worker, frames = make_worker(max_parallel_tasks=1)
    worker.assign(1, spec(tmp_path / "repo", "sleep 1000\n"))
    worker.assign(2, spec(tmp_path / "repo", "sleep 1000\n"))
    rejected = frames.of(2, Rejected)
    assert len(rejected) == 1 and "busy" in rejected[0].reason
    assert not frames.of(2, Accepted)
    assert worker.running_ids == [1]
    worker.cancel(1)
    await frames.finished(1)


async def test_unsupported_app_is_rejected(tmp_path, make_worker):
    worker, frames = make_worker()
    worker.assign(3, spec(tmp_path / "repo", "echo hi\n", app="cobol"))
    assert [type(f) for f in frames] == [Rejected]
    assert frames[0].task_id == 3 and "cobol" in frames[0].reason
    assert worker.tasks == {}


async def test_a_draining_runner_rejects_assigns(tmp_path, make_worker):
    worker, frames = make_worker()
    worker.draining = True
    worker.assign(4, spec(tmp_path / "repo", "echo hi\n"))
    assert [type(f) for f in frames] == [Rejected]
    assert "draining" in frames[0].reason
    assert worker.tasks == {}


async def test_cancel_stops_the_task(tmp_path, make_worker):
    worker, frames = make_worker()
    started = tmp_path / "started"
    worker.assign(5, spec(tmp_path / "repo", f"echo $$ > {started}\nsleep 1000\n"))
    await wait_lines(started, 1)
    worker.cancel(5, "user pressed stop")
    finished = await frames.finished(5)
    assert finished.status == "stopped"
    assert finished.message == "user pressed stop"


async def test_held_tasks_then_final_ack_forgets_the_task(tmp_path, make_worker):
    worker, frames = make_worker()
    gate = tmp_path / "gate"
    body = f"echo first\nwhile [ ! -e {gate} ]; do sleep 0.05; done\necho second\n"
    worker.assign(6, spec(tmp_path / "repo", body))
    first = await frames.until(lambda f: isinstance(f, Output) and "first" in f.data, "output")
    assert worker.held_tasks() == [HeldTask(task_id=6, state="running", last_seq=first.seq)]
    worker.ack(6, first.seq, finished=True)  # nothing finished yet: the task stays held
    assert 6 in worker.tasks
    gate.touch()
    finished = await frames.finished(6)
    assert finished.last_seq > first.seq
    assert worker.held_tasks() == [HeldTask(task_id=6, state="finished",
                                            last_seq=finished.last_seq)]
    idle = asyncio.ensure_future(worker.wait_idle())
    await asyncio.sleep(0.05)
    assert not idle.done()
    worker.ack(6, finished.last_seq, finished=True)
    await asyncio.wait_for(idle, DEADLINE)
    assert worker.tasks == {} and worker.held_tasks() == []
    assert worker.unacked_frames({}) == []


async def test_unacked_frames_resends_after_the_acked_seq_plus_finished(tmp_path,
                                                                        make_worker):
    worker, frames = make_worker()
    body = "for i in 1 2 3 4 5; do echo line$i; sleep 0.2; done\n"
    worker.assign(8, spec(tmp_path / "repo", body))
    finished = await frames.finished(8)
    outputs = frames.of(8, Output)
    assert len(outputs) >= 3, outputs
    assert "".join(f.data for f in outputs) == "".join(f"line{i}\n" for i in range(1, 6))
    acked = outputs[1].seq
    resend = worker.unacked_frames(acked={8: acked})
    assert resend == [*[f for f in outputs if f.seq > acked], finished]
    # The ack given through unacked_frames sticks; the task is still held until the final ack.
    assert worker.unacked_frames(acked={}) == resend
    assert worker.held_tasks() == [HeldTask(task_id=8, state="finished",
                                            last_seq=finished.last_seq)]
    worker.ack(8, finished.last_seq)
    assert worker.unacked_frames(acked={}) == [finished]
    worker.ack(8, finished.last_seq, finished=True)
    await asyncio.wait_for(worker.wait_idle(), DEADLINE)


async def test_finished_is_on_disk_before_it_is_sent_and_gone_after_its_ack(tmp_path,
                                                                             make_worker):
    worker, _ = make_worker()
    spool = tmp_path / "work" / "spool" / "task_5"
    seen_on_disk: list[bool] = []

    def emit(frame: RunnerFrame) -> None:
        if isinstance(frame, Finished):
            seen_on_disk.append((spool / "finished.json").exists())
        frames.append(frame)

    frames = Frames()
    worker._emit = emit
    worker.assign(5, spec(tmp_path / "repo", "true\n"))
    finished = await frames.finished(5)
    assert seen_on_disk == [True]
    assert not list(spool.glob("*.frames"))  # it printed nothing: no segment file
    worker.ack(5, finished.last_seq, finished=True)
    await asyncio.wait_for(worker.wait_idle(), DEADLINE)
    assert not spool.exists()  # removed in a thread; wait_idle waited for it
