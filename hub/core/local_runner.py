"""The hub's embedded runner: with `use_remote_runner` off, the hub runs tasks itself.

It is the runner's own TaskWorker, wired to the hub without a socket: frames the worker emits
go, in order, to the same RunnerReports the websocket gateway feeds, so a local task is
stored, acked and finished exactly as a remote one.
"""

import asyncio
import base64

import nacl.public
import structlog

from agent.keys import SecretOpener
from agent.worker import TaskWorker
from hub.core.links import LOCAL_RUNNER_ID, RunnerLink
from hub.core.reports import RunnerReports
from protocol.frames import HubFrame, RunnerFrame

log = structlog.get_logger("hub.local_runner")


class LocalLink(RunnerLink):
    def __init__(self, reports: RunnerReports, tmp_path: str, max_parallel_tasks: int,
                 max_duration_sec: int = 0):
        super().__init__(runner_id=LOCAL_RUNNER_ID, name="local", project_id=None,
                         tags=frozenset(), max_parallel_tasks=max_parallel_tasks, any_tag=True)
        self.reports = reports
        # A key pair of its own, for this process's life: secrets reach the embedded runner
        # sealed, through exactly the code path a remote runner uses.
        private_key = nacl.public.PrivateKey.generate()
        self.public_key = base64.b64encode(bytes(private_key.public_key)).decode()
        self.worker = TaskWorker(tmp_path, max_parallel_tasks, self._from_worker,
                                 max_duration_sec=max_duration_sec,
                                 opener=SecretOpener(private_key))
        self.worker.clear_spool()  # the hub ended at start whatever ran here before
        self.worker.max_output_bytes = reports.max_output_bytes
        self.apps = self.worker.apps
        self._frames: asyncio.Queue[RunnerFrame] = asyncio.Queue()
        self._pump: asyncio.Task | None = None

    def start(self) -> None:
        self._pump = asyncio.get_running_loop().create_task(self._deliver())

    async def stop(self) -> None:
        self.worker.stop_all("hub shutting down")
        try:
            await asyncio.wait_for(self.worker.wait_idle(), 10)
        except TimeoutError:
            log.warning("local_runner.stop.timeout", running=self.worker.running_ids)
        if self._pump is not None:
            self._pump.cancel()

    def send(self, frame: HubFrame) -> None:
        self.worker.handle(frame)

    def close(self, code: int, reason: str) -> None:
        """Nothing to close: the embedded runner lives as long as the hub."""

    def _from_worker(self, frame: RunnerFrame) -> None:
        self._frames.put_nowait(frame)

    async def _deliver(self) -> None:
        while True:
            frame = await self._frames.get()
            try:
                await self.reports.handle(self, frame)
            except Exception:
                log.exception("local_runner.frame.failed", frame=type(frame).__name__)
