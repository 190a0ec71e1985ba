"""What the dispatcher knows of one connected runner, whatever carries its frames."""

import abc
import time
from dataclasses import dataclass, field

import msgspec

from hub.crypto import seal_for_runner
from protocol.frames import Ack, Assign, Cancel, HubFrame, Metrics, TaskSecrets, TaskSpec

LOCAL_RUNNER_ID = 0  # the hub's embedded runner (use_remote_runner off); NULL in the database
# What a runner that does not list its apps (older than the apps field) can run.
LEGACY_APPS = frozenset({"bash", "python", "powershell"})


@dataclass(eq=False)
class RunnerLink(abc.ABC):
    runner_id: int
    name: str
    project_id: int | None
    tags: frozenset[str]
    max_parallel_tasks: int  # 0: no limit
    assigned: set[int] = field(default_factory=set)
    # Slots taken for new tasks being stored already given to this runner (Dispatcher.claim):
    # counted as busy until the task is in `assigned`.
    reserved: int = 0
    draining: bool = False
    any_tag: bool = False  # the embedded runner serves every tag
    public_key: str = ""  # base64; a task's secrets are sealed to it
    metrics: Metrics = field(default_factory=Metrics)
    last_seen: float = 0.0
    # The apps it runs (app -> version), from its hello; None: an older runner that did not
    # say, which runs the shell apps.
    apps: dict[str, str] | None = None
    # Its build and machine (hello), when this session began (monotonic), and why its last
    # self-update did not take (hello; "" if it did or none was tried): for rollouts.
    version: str = ""
    platform: str = ""
    connected_mono: float = field(default_factory=time.monotonic)
    update_error: str = ""

    def can_run(self, app: str) -> bool:
        return app in (self.apps if self.apps is not None else LEGACY_APPS)

    @property
    def has_free_slot(self) -> bool:
        return not self.draining and (
            self.max_parallel_tasks <= 0
            or len(self.assigned) + self.reserved < self.max_parallel_tasks)

    @property
    def load(self) -> float:
        held = len(self.assigned) + self.reserved
        if self.max_parallel_tasks <= 0:
            return held / 1000
        return held / self.max_parallel_tasks

    def assign(self, task_id: int, spec: TaskSpec, secrets: TaskSecrets | None = None) -> None:
        if secrets is not None:
            spec = msgspec.structs.replace(
                spec, sealed_secrets=seal_for_runner(self.public_key, secrets))
        self.send(Assign(task_id=task_id, spec=spec))

    def cancel(self, task_id: int, reason: str) -> None:
        self.send(Cancel(task_id=task_id, reason=reason))

    def ack(self, task_id: int, seq: int, finished: bool = False) -> None:
        self.send(Ack(task_id=task_id, seq=seq, finished=finished))

    @abc.abstractmethod
    def send(self, frame: HubFrame) -> None:
        """Queue a frame for the runner; never blocks."""

    @abc.abstractmethod
    def close(self, code: int, reason: str) -> None:
        """End the session (the runner reconnects unless it was refused)."""
