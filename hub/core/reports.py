"""What runners report about tasks (accepted, rejected, output, finished), applied to the hub.

Both the websocket gateway and the embedded local runner hand their frames here, so a task
behaves the same wherever it runs. A runner speaks only for the tasks assigned to it: a frame
about any other task is refused and logged, never applied.
"""


import structlog

from hub.core.lifecycle import ActiveTask, TaskLifecycle, TaskState
from hub.core.links import RunnerLink
from hub.core.output_writer import OutputWriter
from hub.store.base import OutputChunk
from protocol.codec import ProtocolError
from protocol.frames import Accepted, Confirmation, Finished, Output, Rejected, RunnerFrame
from protocol.session import ReportVerdict, judge_report

log = structlog.get_logger("hub.reports")

OUTPUT_LIMIT_SLACK = 64 * 1024


class NotYourTask(Exception):
    """A frame about a task that is not assigned to the runner that sent it."""


class RunnerReports:
    """Applies a runner's task frames: output to the writer, the rest as life-cycle moves."""

    def __init__(self, lifecycle: TaskLifecycle, writer: OutputWriter, max_output_bytes: int):
        self.lifecycle = lifecycle
        self.writer = writer
        self.max_output_bytes = max_output_bytes

    async def handle(self, link: RunnerLink, frame: RunnerFrame) -> None:
        """Apply one task frame; raises NotYourTask or ProtocolError when it cannot be."""
        if not isinstance(frame, Accepted | Rejected | Output | Finished | Confirmation):
            return
        task = self.lifecycle.get(frame.task_id)
        verdict = judge_report(frame, link.runner_id, task)
        if isinstance(verdict, ProtocolError):
            raise verdict
        if isinstance(frame, Finished) and verdict is not ReportVerdict.APPLY:
            # Ended by the hub meanwhile (stopped, runner lost) or given to another runner
            # since: nothing is applied, but the runner may forget it (else it would hold it,
            # and resend it, forever).
            link.ack(frame.task_id, frame.last_seq, finished=True)
        if verdict is ReportVerdict.NOT_YOURS:
            raise NotYourTask(f"task {frame.task_id} is not assigned to this runner")
        if task is None:  # gone
            return
        if verdict is ReportVerdict.DUPLICATE:  # output resent after a reconnect
            if isinstance(frame, Output) and frame.seq <= task.stored_seq:
                link.ack(task.task_id, task.stored_seq)
        elif isinstance(frame, Output):
            await self._output(link, task, frame)
        elif isinstance(frame, Finished):
            await self._finished(link, task, frame)
        elif isinstance(frame, Accepted):
            await self._accepted(task)
        elif isinstance(frame, Confirmation):
            await self._confirmation(task, frame)
        else:
            await self._rejected(link, task, frame)

    async def _accepted(self, task: ActiveTask) -> None:
        if task.status == TaskState.STARTING:  # else a repeated assign answered again
            await self.lifecycle.run(task)

    async def _confirmation(self, task: ActiveTask, frame: Confirmation) -> None:
        """The task's plan waits for a user, or the runner applies it (after a confirm)."""
        if frame.state == "waiting" and task.status == TaskState.RUNNING:
            await self.lifecycle.await_confirmation(task)
        elif frame.state == "applying" and task.status == TaskState.CONFIRMED:
            await self.lifecycle.resume(task)

    async def _rejected(self, link: RunnerLink, task: ActiveTask, frame: Rejected) -> None:
        if task.status != TaskState.STARTING:
            return
        log.info("task.rejected", task_id=task.task_id, runner_id=link.runner_id,
                 reason=frame.reason)
        # Back to waiting, for any runner but this one.
        await self.lifecycle.requeue(task, f"runner `{link.name}` rejected it: {frame.reason}",
                                     refused_by=link.runner_id)

    async def _output(self, link: RunnerLink, task: ActiveTask, frame: Output) -> None:
        task.received_seq = frame.seq
        data = self._within_limit(task, frame.data)
        seq = frame.seq

        def acked() -> None:
            task.stored_seq = max(task.stored_seq, seq)
            link.ack(task.task_id, task.stored_seq)

        await self.writer.submit_output(
            OutputChunk(task.task_id, seq, frame.time, frame.stream, data), acked)

    def _within_limit(self, task: ActiveTask, data: str) -> str:
        """Cut output past the task's limit, saying so once; the seq still counts."""
        if task.output_cut:
            return ""
        # The runner cuts at the limit itself; the hub only stops a runner that does not,
        # with some slack for the runner's own notice.
        limit = self.max_output_bytes + OUTPUT_LIMIT_SLACK
        task.output_bytes += len(data)
        if task.output_bytes <= limit:
            return data
        task.output_cut = True
        keep = len(data) - (task.output_bytes - limit)
        return (data[:max(keep, 0)] + f"\n[output cut: the task printed more than "
                f"{self.max_output_bytes} bytes; the rest is not stored]\n")

    async def _finished(self, link: RunnerLink, task: ActiveTask, frame: Finished) -> None:
        message = frame.message if frame.status != "success" else ""
        values = {"status_message": message, "exit_code": frame.exit_code}
        if frame.commit_hash:
            values |= {"commit_hash": frame.commit_hash, "commit_message": frame.commit_message}

        def acked() -> None:
            link.ack(task.task_id, frame.last_seq, finished=True)

        if not self.lifecycle.finished(task, TaskState(frame.status), values, acked):
            acked()  # refused (and logged): the runner may still forget it
            return
        log.info("task.finished", task_id=task.task_id, runner_id=link.runner_id,
                 status=frame.status, exit_code=frame.exit_code, last_seq=frame.last_seq)
