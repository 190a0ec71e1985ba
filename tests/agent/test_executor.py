"""TaskExecution with real processes, real git repositories and a real OutputCoalescer."""

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from agent.executor import Outcome, TaskExecution
from agent.output import OutputCoalescer
from protocol.frames import Output, RepositorySpec, TaskSecrets, TaskSpec
from protocol.ledger import OutputLedger
from tests.gitkit import git, repo_with_branch

DEADLINE = 30.0


class Run:
    """One execution wired to a ledger and a sink that collects every frame it emits."""

    def __init__(self, tmp_path: Path, spec: TaskSpec, task_id: int = 7, **kwargs):
        self.frames: list[Output] = []
        self.ledger = OutputLedger(task_id)
        self.sink = OutputCoalescer(self.ledger, self.frames.append)
        self.work_root = tmp_path / "work"
        self.execution = TaskExecution(task_id, spec, self.work_root, self.sink, **kwargs)

    async def run(self) -> Outcome:
        return await asyncio.wait_for(self.execution.run(), DEADLINE)

    def text(self, stream: str | None = None) -> str:
        return "".join(f.data for f in self.frames if stream in (None, f.stream))


def bash_spec(folder: Path, body: str, **kwargs) -> TaskSpec:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.sh").write_text(body)
    return TaskSpec(project_id=1, template_id=1, app="bash", playbook="run.sh",
                    repository=RepositorySpec(url=str(folder)), **kwargs)


def alive(pid: int) -> bool:
    """Whether pid is a live process (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def wait_for_file(path: Path) -> str:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


async def wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.fixture
def leftovers():
    """Pids (and the groups they lead) to SIGKILL at teardown: a failing test leaves none."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)




async def test_script_output_both_streams_numbered_without_gaps(tmp_path):
    body = "".join(f"echo out{i}\necho err{i} >&2\n" for i in range(20))
    run = Run(tmp_path, bash_spec(tmp_path / "repo", body))
    outcome = await run.run()
    assert outcome.status == "success", outcome
    assert outcome.exit_code == 0
    assert [f.seq for f in run.frames] == list(range(1, len(run.frames) + 1))
    assert run.ledger.last_seq == len(run.frames)
    assert run.text("stdout") == "".join(f"out{i}\n" for i in range(20))
    assert run.text("stderr") == "".join(f"err{i}\n" for i in range(20))
    assert all(f.task_id == 7 for f in run.frames)


async def test_arguments_environment_secrets_and_task_id_reach_the_script(tmp_path):
    body = 'echo "args=[$1][$2]"\necho "env=$GREETING"\necho "secret=$TOKEN"\n' \
           'echo "task=$SEMAPHORE_TASK_ID"\n'
    spec = bash_spec(tmp_path / "repo", body, arguments=["a", "b c"],
                     environment={"GREETING": "hi there"})
    # Opened secrets reach the process as environment variables (masking is the sink's job).
    run = Run(tmp_path, spec, task_id=42, secrets=TaskSecrets(env={"TOKEN": "s3cret"}))
    outcome = await run.run()
    assert outcome.status == "success", (outcome, run.text())
    assert run.text("stdout") == "args=[a][b c]\nenv=hi there\nsecret=s3cret\ntask=42\n"


async def test_python_app_runs_a_python_script(tmp_path):
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "main.py").write_text("import sys\nprint('py', sys.argv[1:], 6 * 7)\n")
    spec = TaskSpec(project_id=1, template_id=1, app="python", playbook="main.py",
                    arguments=["x"], repository=RepositorySpec(url=str(folder)))
    run = Run(tmp_path, spec)
    outcome = await run.run()
    assert outcome.status == "success", (outcome, run.text())
    assert run.text("stdout") == "py ['x'] 42\n"


async def test_nonzero_exit_is_an_error_with_its_code(tmp_path):
    run = Run(tmp_path, bash_spec(tmp_path / "repo", "echo failing\nexit 3\n"))
    outcome = await run.run()
    assert outcome.status == "error"
    assert outcome.exit_code == 3
    assert "exit code 3" in outcome.message
    assert "failing\n" in run.text()


async def test_partial_line_is_sent_while_the_process_still_runs(tmp_path):
    run = Run(tmp_path, bash_spec(tmp_path / "repo", "printf 'Password: '\nsleep 2\necho done\n"))
    runner = asyncio.ensure_future(run.run())
    seen_while_running = False
    deadline = time.monotonic() + DEADLINE
    while not runner.done() and time.monotonic() < deadline:
        if any("Password: " in f.data for f in run.frames):
            seen_while_running = True
            break
        await asyncio.sleep(0.02)
    assert seen_while_running, "the prompt was not emitted before the process ended"
    prompt = next(f for f in run.frames if "Password: " in f.data)
    assert "done" not in prompt.data
    outcome = await runner
    assert outcome.status == "success"
    assert run.text() == "Password: done\n"


async def test_clone_branch_from_a_real_repository(tmp_path):
    origin = repo_with_branch(tmp_path / "origin", "run.sh", "echo on main\n", "feature",
                              'echo "on feature in $(basename "$PWD")"\n', "Feature script")
    spec = TaskSpec(project_id=1, template_id=1, app="bash", playbook="run.sh",
                    repository=RepositorySpec(url=f"file://{origin}", branch="feature"))
    run = Run(tmp_path, spec, task_id=11)
    outcome = await run.run()
    assert outcome.status == "success", (outcome, run.text())
    assert outcome.commit_hash == git(origin, "rev-parse", "feature")
    assert outcome.commit_message == "Feature script"
    assert "on feature in repository\n" in run.text("stdout")
    assert not list(run.work_root.glob("task_11*"))


async def test_clone_of_missing_repository_reports_gits_error(tmp_path):
    spec = TaskSpec(project_id=1, template_id=1, app="bash", playbook="run.sh",
                    repository=RepositorySpec(url=f"file://{tmp_path}/no-such-repo"))
    run = Run(tmp_path, spec)
    outcome = await run.run()
    assert outcome.status == "error"
    assert "clone" in outcome.message
    text = run.text().lower()
    assert any(s in text for s in ("does not exist", "not found", "fatal")), text


async def test_missing_repository_folder_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere"
    spec = TaskSpec(project_id=1, template_id=1, app="bash", playbook="run.sh",
                    repository=RepositorySpec(url=str(missing)))
    run = Run(tmp_path, spec)
    outcome = await run.run()
    assert outcome.status == "error"
    assert str(missing) in outcome.message
    assert str(missing) in run.text()


async def test_unsupported_app_is_an_error(tmp_path):
    spec = TaskSpec(project_id=1, template_id=1, app="ansible-nope", playbook="x.yml")
    run = Run(tmp_path, spec)
    outcome = await run.run()
    assert outcome.status == "error"
    assert "ansible-nope" in outcome.message
    assert "ansible-nope" in run.text()


async def test_stop_kills_the_script_and_its_background_child(tmp_path, leftovers):
    folder = tmp_path / "repo"
    body = "sleep 1000 &\necho $! > child.pid\necho $$ > main.pid\nsleep 1000\n"
    run = Run(tmp_path, bash_spec(folder, body), kill_grace=5.0)
    runner = asyncio.ensure_future(run.run())
    child = int(await wait_for_file(folder / "child.pid"))
    main = int(await wait_for_file(folder / "main.pid"))
    leftovers += [child, main]
    assert alive(child) and alive(main)
    run.execution.stop("user pressed stop")
    outcome = await asyncio.wait_for(runner, DEADLINE)
    assert outcome.status == "stopped"
    assert outcome.message == "user pressed stop"
    assert await wait_gone(main), "the script survived stop()"
    assert await wait_gone(child), "the background child survived stop()"


async def test_stop_kills_a_script_that_ignores_sigterm_after_the_grace(tmp_path,
                                                                         leftovers):
    folder = tmp_path / "repo"
    body = "trap 'echo got TERM' TERM\necho $$ > main.pid\nwhile :; do sleep 0.1; done\n"
    run = Run(tmp_path, bash_spec(folder, body), kill_grace=0.5)
    runner = asyncio.ensure_future(run.run())
    main = int(await wait_for_file(folder / "main.pid"))
    leftovers.append(main)
    run.execution.stop()
    outcome = await asyncio.wait_for(runner, DEADLINE)
    assert outcome.status == "stopped"
    assert outcome.exit_code == -9  # SIGKILL, after SIGTERM was tried and ignored
    assert "got TERM" in run.text()
    assert await wait_gone(main)


async def test_timeout_kills_the_process_group(tmp_path, leftovers):
    folder = tmp_path / "repo"
    body = "sleep 30 &\necho $! > child.pid\necho $$ > main.pid\nsleep 30\n"
    run = Run(tmp_path, bash_spec(folder, body, timeout_sec=1), kill_grace=0.5)
    outcome = await run.run()
    main, child = (int((folder / name).read_text()) for name in ("main.pid", "child.pid"))
    leftovers += [main, child]
    assert outcome.status == "error"
    assert "timed out" in outcome.message
    assert "timed out" in run.text("stderr")
    assert await wait_gone(main)
    assert await wait_gone(child)


async def test_work_dir_is_removed_after_the_run(tmp_path):
    script = tmp_path / "elsewhere" / "run.sh"
    script.parent.mkdir()
    script.write_text('touch "$HOME/left-behind"\necho $HOME\n')
    spec = TaskSpec(project_id=1, template_id=1, app="bash", playbook="run.sh",
                    repository=RepositorySpec(url=str(script.parent)))
    run = Run(tmp_path, spec, task_id=5)
    outcome = await run.run()
    assert outcome.status == "success", (outcome, run.text())
    home = Path(run.text("stdout").strip())  # HOME: the task's own folder
    assert home.parent == run.work_root and home.name.startswith("task_5_")
    assert run.work_root.is_dir()
    assert not home.exists()


async def test_a_leftover_background_process_does_not_hold_the_task(tmp_path, leftovers):
    # The script ends at once, but a child it left behind keeps its stdout/stderr open.
    folder = tmp_path / "repo"
    body = "sleep 120 &\necho $! > daemon.pid\necho $$ > main.pid\necho started\n"
    run = Run(tmp_path, bash_spec(folder, body))
    runner = asyncio.ensure_future(run.execution.run())
    leftovers.append(int(await wait_for_file(folder / "main.pid")))
    leftovers.append(int(await wait_for_file(folder / "daemon.pid")))
    done, _ = await asyncio.wait({runner}, timeout=DEADLINE)
    if not done:
        run.execution.stop()
    outcome = await asyncio.wait_for(runner, DEADLINE)
    assert done, f"run() still waiting {DEADLINE} s after the script exited: {outcome}"
    assert outcome.status == "success" and outcome.exit_code == 0, outcome
    assert "started\n" in run.text("stdout")
