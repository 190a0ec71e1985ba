"""Terraform and OpenTofu tasks, Semaphore's way with a saved plan: init, the workspace, plan;
when the plan has changes the task waits for a user's decision, then applies exactly the
plan that was confirmed, or ends `stopped` when it is rejected.

Beyond Semaphore: `plan -detailed-exitcode -out=<file>` says whether there are changes (no
scraping of "No changes."), and `apply <file>` applies what was shown and confirmed, not a
new plan. Secret variables reach the program in a private var-file, never in its argv.
"""

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agent.apps import UnsupportedApp, app_args, check_app
from agent.taskenv import PlaybookError, resolve_folder, task_environment, write_private_file
from protocol.frames import TaskSpec

if TYPE_CHECKING:
    from agent.executor import Outcome, TaskExecution

TERRAFORM_APPS = frozenset({"terraform", "tofu"})
DEFAULT_WORKSPACE = "default"
# What terraform itself accepts as a workspace name; never an option (`-x`).
WORKSPACE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")

ConfirmationState = Literal["waiting", "applying"]


@dataclass(frozen=True)
class Verdict:
    approved: bool
    message: str


class ConfirmationGate:
    """Where a task waits for the hub's decision on its plan. `notify` (set by the worker)
    tells the hub each step: `waiting` when the task starts to wait, `applying` once a
    confirmation came. A decision that comes while nothing waits is ignored (the hub resends
    decisions after a reconnect)."""

    def __init__(self) -> None:
        self.notify: Callable[[ConfirmationState], None] = lambda state: None
        self._decision: asyncio.Future[Verdict] | None = None

    @property
    def awaiting(self) -> bool:
        return self._decision is not None and not self._decision.done()

    def decide(self, approved: bool, message: str) -> None:
        if self.awaiting:
            assert self._decision is not None
            self._decision.set_result(Verdict(approved, message))

    async def wait(self, stop: asyncio.Event, timeout: float | None) -> Verdict | str:
        """The decision, or why none came: "stop" or "timeout"."""
        self._decision = asyncio.get_running_loop().create_future()
        self.notify("waiting")
        stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        waiting: set[asyncio.Future[Any]] = {self._decision, stopper}
        try:
            done, _ = await asyncio.wait(waiting, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if self._decision in done:
            verdict = self._decision.result()
            if verdict.approved:
                self.notify("applying")
            return verdict
        self._decision.cancel()
        return "stop" if stopper in done else "timeout"


class TerraformRun:
    """One terraform (or tofu) task inside its execution: the execution's processes, folder,
    secrets and stop; this class knows the commands and the order."""

    def __init__(self, execution: "TaskExecution", checkout: Path, outcome: "Outcome"):
        self.execution = execution
        self.spec = execution.spec
        self.checkout = checkout
        self.outcome = outcome
        # The task's timeout covers the whole run, the wait for a decision included.
        self.deadline = (time.monotonic() + execution.timeout
                         if execution.timeout is not None else None)

    async def run(self) -> "Outcome":
        execution, spec, outcome = self.execution, self.spec, self.outcome
        try:
            program = check_app(spec)
            folder = resolve_folder(self.checkout, spec.playbook, "terraform folder")
            workspace = workspace_of(spec)
        except (UnsupportedApp, PlaybookError) as exc:
            return await self._error(str(exc))
        env, refused = task_environment(spec, execution.secrets, execution.identity,
                                        execution.work_dir, execution.task_id)
        for name in refused:
            await execution._say(f"environment variable {name!r} ignored: not a valid name\n")
        base = [program, *app_args(spec.app)]
        if await self._step([*base, "init", "-input=false"], folder, env, "init") is None:
            return outcome
        if workspace != DEFAULT_WORKSPACE and not await self._workspace(base, workspace,
                                                                        folder, env):
            return outcome
        plan_file = execution.work_dir / "task.tfplan"  # in the task's 0700 folder
        code = await self._step(base + self._plan_args(plan_file), folder, env, "plan",
                                changes_ok=True)
        if code is None:
            return outcome
        if code == 0:
            await execution._say("No changes to apply.\n")
            return outcome
        if spec.dry_run:
            outcome.exit_code = 0  # the plan's 2 says "changes", not a failure
            await execution._say("Dry run: the plan is not applied.\n")
            return outcome
        await execution._say("The plan has changes: waiting for a user to confirm or reject "
                             "it.\n")
        execution.sink.flush()  # the plan's output goes out before the task says it waits
        verdict = await execution.confirmation.wait(execution._stop, self._remaining())
        outcome.exit_code = None  # no process ends the wait
        if verdict == "stop":
            outcome.status, outcome.message = "stopped", execution._stop_reason
            return outcome
        if verdict == "timeout":
            return await self._timed_out()
        assert isinstance(verdict, Verdict)
        if not verdict.approved:
            outcome.status = "stopped"
            outcome.message = verdict.message or "plan rejected"
            await execution._say(f"{outcome.message}: nothing applied.\n")
            return outcome
        await execution._say(f"{verdict.message or 'plan confirmed'}: applying it.\n")
        # Exactly the confirmed plan: no variables or arguments, which a saved plan refuses.
        await self._step([*base, "apply", "-lock=false", "-input=false", "-auto-approve",
                          str(plan_file)], folder, env, "apply")
        return outcome

    def _plan_args(self, plan_file: Path) -> list[str]:
        """As Semaphore's getTerraformArgs: `-var name=value` for each extra var, then the
        template's and the task's arguments; the secret vars (which override the others) in
        a private var-file, never in argv."""
        spec, secrets = self.spec, self.execution.secrets
        args = ["plan", "-lock=false", "-input=false", "-detailed-exitcode",
                f"-out={plan_file}"]
        for name, value in spec.extra_vars.items():
            if name != "semaphore_vars":
                text = value if isinstance(value, str) else json.dumps(value)
                args += ["-var", f"{name}={text}"]
        if secrets.vars:
            var_file = write_private_file(self.execution.work_dir / "secrets.tfvars.json",
                                          json.dumps(secrets.vars), self.execution.identity)
            args.append(f"-var-file={var_file}")
        return [*args, *spec.arguments, *spec.task_arguments]

    async def _workspace(self, base: list[str], name: str, folder: Path,
                         env: dict[str, str]) -> bool:
        """Select the workspace, creating it when it does not exist (what newer versions'
        `select -or-create` does; terraform before 1.4 has no such flag)."""
        code, ended_by = await self._process([*base, "workspace", "select", name], folder, env)
        if ended_by != "exit":
            await self._ended_early(ended_by)
            return False
        if code == 0:
            return True
        await self.execution._say(f"Creating workspace {name!r}.\n")
        return await self._step([*base, "workspace", "new", name], folder, env,
                                "workspace new") is not None

    async def _step(self, argv: list[str], folder: Path, env: dict[str, str], what: str,
                    changes_ok: bool = False) -> int | None:
        """Run one command; its exit code when it succeeded (with changes_ok, 2 too: the
        plan has changes), else None with the outcome saying how the task ended."""
        code, ended_by = await self._process(argv, folder, env)
        self.outcome.exit_code = code
        if ended_by != "exit":
            await self._ended_early(ended_by)
            return None
        if code == 0 or (changes_ok and code == 2):
            return code
        self.outcome.status = "error"
        self.outcome.message = f"{self.spec.app} {what} failed with exit code {code}"
        await self.execution._say(self.outcome.message + "\n")
        return None

    async def _process(self, argv: list[str], folder: Path,
                       env: dict[str, str]) -> tuple[int | None, str]:
        remaining = self._remaining()
        if remaining is not None and remaining <= 0:
            return None, "timeout"
        return await self.execution._run_process(argv, folder, env, remaining)

    async def _ended_early(self, ended_by: str) -> None:
        if ended_by == "stop":
            self.outcome.status, self.outcome.message = "stopped", self.execution._stop_reason
        else:
            await self._timed_out()

    async def _timed_out(self) -> "Outcome":
        self.outcome.status = "error"
        self.outcome.message = f"timed out after {self.execution.timeout} s"
        await self.execution._say(f"Task {self.outcome.message}; its processes were killed\n")
        return self.outcome

    async def _error(self, message: str) -> "Outcome":
        self.outcome.status, self.outcome.message = "error", message
        await self.execution._say(message + "\n")
        return self.outcome

    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


def workspace_of(spec: TaskSpec) -> str:
    """The workspace the task's inventory names (type terraform-workspace), else default."""
    inventory = spec.inventory
    if inventory is None or inventory.type != "terraform-workspace":
        return DEFAULT_WORKSPACE
    name = inventory.content.strip() or DEFAULT_WORKSPACE
    if not WORKSPACE_NAME.match(name):
        raise PlaybookError(f"terraform workspace {name!r} is not a valid name (letters, "
                            "digits, `_`, `-` and `.`, not starting with `-` or `.`)")
    return name
