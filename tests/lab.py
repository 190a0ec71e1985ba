"""The lab of the fault-injection tests: the processes and proxies of one test, and the
helpers that check output was stored exactly as printed."""

from pathlib import Path

import pytest

from tests.faults import (
    FINAL,
    HubProcess,
    Rest,
    RunnerProcess,
    tail,
    write_script,
)
from tests.proxy import CuttingProxy

MiB = 1024 * 1024


class Lab:
    """The processes and proxies of one test; all of them end with the test."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.scripts = folder / "scripts"
        self.hubs: list[HubProcess] = []
        self.runners: list[RunnerProcess] = []
        self.proxies: list[CuttingProxy] = []

    def hub(self, **overrides) -> HubProcess:
        hub = HubProcess(self.folder / f"hub{len(self.hubs) + 1}", **overrides)
        self.hubs.append(hub)
        return hub.start()

    def online_runner(self, hub: HubProcess, name: str, web_host: str | None = None,
                      **options) -> tuple[RunnerProcess, Rest, int]:
        """A runner of `hub` (reached at web_host, e.g. a proxy), online, with a logged-in
        REST client and a fresh project."""
        runner = self.runner(web_host or hub.base_url, name, **options)
        rest = hub.rest()
        rest.wait_runner_online(name, logs=self.logs)
        return runner, rest, rest.project()

    def runner(self, web_host: str, name: str, tags=(), max_parallel_tasks: int = 1,
               start: bool = True, **runner_options) -> RunnerProcess:
        runner = RunnerProcess(self.folder / f"runner-{name}", web_host, name, tags,
                               max_parallel_tasks, **runner_options)
        self.runners.append(runner)
        return runner.start() if start else runner

    def proxy(self, target_port: int) -> CuttingProxy:
        proxy = CuttingProxy(target_port)
        self.proxies.append(proxy)
        return proxy.start()

    def logs(self) -> str:
        """The tail of every log, for failure messages."""
        parts = [f"--- hub log {hub.log_file}:\n{tail(hub.log_file)}" for hub in self.hubs]
        parts += [f"--- runner {r.name} log:\n{tail(r.log_file)}" for r in self.runners]
        return "\n".join(parts)

    def close(self) -> None:
        for runner in self.runners:
            runner.close()
        for proxy in self.proxies:
            proxy.close()
        for hub in self.hubs:
            hub.close()


def lines_script(lab: Lab, name: str, count: int, pause: float) -> str:
    """A task printing "<task id> <n>" for n = 1..count, one line every `pause` seconds."""
    write_script(lab.scripts, name,
                 f'for i in $(seq 1 {count}); do echo "$SEMAPHORE_TASK_ID $i"; '
                 f"sleep {pause}; done\n")
    return name


def expected_lines(task_id: int, count: int) -> str:
    return "".join(f"{task_id} {i}\n" for i in range(1, count + 1))


def stored_lines(rest: Rest, project_id: int, task_id: int) -> int:
    return rest.raw_output(project_id, task_id).count("\n")


def assert_exact_output(rest: Rest, lab: Lab, project_id: int, task_id: int,
                        count: int) -> None:
    output = rest.raw_output(project_id, task_id)
    expected = expected_lines(task_id, count)
    if output != expected:
        numbers = [line.split(" ")[-1] for line in output.splitlines()]
        duplicates = sorted({n for n in numbers if numbers.count(n) > 1}, key=int)[:20]
        missing = sorted(set(str(i) for i in range(1, count + 1)) - set(numbers), key=int)[:20]
        pytest.fail(f"task {task_id}: stored output differs from what it printed: "
                    f"{len(numbers)} lines stored, {count} printed; duplicated {duplicates}; "
                    f"missing {missing}; first lines {output.splitlines()[:3]}\n{lab.logs()}")


def wait_final(rest: Rest, lab: Lab, project_id: int, task_id: int,
               timeout: float = 60.0) -> dict:
    return rest.wait_status(project_id, task_id, FINAL, timeout, logs=lab.logs)
