"""Reliability under real faults: kill -9 of the hub and of runners, cut connections,
SIGSTOP/SIGCONT, graceful and forced runner stops, output floods and task timeouts.

Every process is real (`semaphore server`, `semaphore runner start`, bash tasks) and every fault
is real (signals, aborted TCP connections). Tests assert outcomes: final states, stored output
exactly as printed (every line once, in order), runner ids, exit codes. Deadlines are generous.
"""

import shutil
import time
from pathlib import Path

import psutil
import pytest

from tests.faults import (
    FINAL,
    HubProcess,
    Rest,
    RunnerProcess,
    tail,
    wait_until,
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

    def runner(self, web_host: str, name: str, tags=(), max_parallel_tasks: int = 1,
               start: bool = True) -> RunnerProcess:
        runner = RunnerProcess(self.folder / f"runner-{name}", web_host, name, tags,
                               max_parallel_tasks)
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


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


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


# 1. The hub is killed with SIGKILL (or stopped with SIGTERM) mid-output and restarted on the
#    same database.


@pytest.mark.parametrize("stop", ["kill9", "terminate"])
def test_hub_kill9_mid_output_then_restart_stores_every_line_once(lab, stop):
    count = 500
    hub = lab.hub(heartbeat_interval=0.5, runner_lost_timeout=60)
    lab.runner(hub.base_url, "r1", max_parallel_tasks=10)
    rest = hub.rest()
    rest.wait_runner_online("r1", logs=lab.logs)
    project = rest.project()
    template = rest.template(project, lab.scripts, lines_script(lab, "lines.sh", count, 0.01))
    tasks = [rest.run(project, template) for _ in range(10)]
    wait_until(lambda: all(stored_lines(rest, project, t) >= 20 for t in tasks), 60,
               message=lab.logs)
    statuses = {t: rest.task(project, t)["status"] for t in tasks}
    assert set(statuses.values()) == {"running"}, f"not mid-output at the kill: {statuses}"

    getattr(hub, stop)()
    time.sleep(1.0)  # the tasks go on printing; the runner keeps their output, unacked
    hub.restart()
    rest = hub.rest()

    for task_id in tasks:
        done = wait_final(rest, lab, project, task_id)
        assert done["status"] == "success", (done, lab.logs())
    for task_id in tasks:
        assert_exact_output(rest, lab, project, task_id, count)


# 2. The connection between runner and hub is cut, RST-like, several times mid-output.


def test_connection_cut_mid_output_repeatedly_stores_every_line_once(lab):
    count = 400
    hub = lab.hub(heartbeat_interval=0.5, runner_lost_timeout=60)
    proxy = lab.proxy(hub.port)
    lab.runner(proxy.url, "r2", max_parallel_tasks=5)
    rest = hub.rest()
    rest.wait_runner_online("r2", logs=lab.logs)
    project = rest.project()
    template = rest.template(project, lab.scripts, lines_script(lab, "lines.sh", count, 0.02))
    tasks = [rest.run(project, template) for _ in range(5)]
    wait_until(lambda: all(stored_lines(rest, project, t) >= 10 for t in tasks), 60,
               message=lab.logs)

    mid_output_cuts = 0
    for cut in range(5):
        # A live session through the proxy, then cut it.
        rest.wait_runner_online("r2", logs=lab.logs)
        wait_until(lambda: proxy.live >= 1, 60, message="no connection through the proxy")
        time.sleep(0.4)
        statuses = {t: rest.task(project, t)["status"] for t in tasks}
        if cut == 0:
            assert set(statuses.values()) == {"running"}, f"not mid-output: {statuses}"
        mid_output_cuts += "running" in statuses.values()
        assert proxy.cut() >= 1
    assert mid_output_cuts >= 3, f"only {mid_output_cuts} cuts hit running tasks"

    for task_id in tasks:
        done = wait_final(rest, lab, project, task_id)
        assert done["status"] == "success", (done, lab.logs())
    for task_id in tasks:
        assert_exact_output(rest, lab, project, task_id, count)
    assert proxy.accepted >= 6, "the runner did not reconnect after every cut"


# 3. A runner killed with SIGKILL; a task it never accepted goes to another runner.


def test_runner_kill9_mid_task_ends_task_runner_lost(lab):
    hub = lab.hub(heartbeat_interval=0.5, runner_lost_timeout=2)
    runner = lab.runner(hub.base_url, "r3")
    rest = hub.rest()
    rest.wait_runner_online("r3", logs=lab.logs)
    project = rest.project()
    template = rest.template(project, lab.scripts, lines_script(lab, "slow.sh", 1000, 0.05))
    task = rest.run(project, template)
    wait_until(lambda: stored_lines(rest, project, task) >= 5, 60, message=lab.logs)

    runner.kill9()
    done = wait_final(rest, lab, project, task)
    assert done["status"] == "error", (done, lab.logs())
    assert "runner lost" in done["status_message"], done


def test_task_assigned_to_a_runner_that_never_accepted_it_runs_on_another(lab):
    hub = lab.hub(heartbeat_interval=1.0, runner_lost_timeout=2)
    rest = hub.rest()
    runner_a = lab.runner(hub.base_url, "a", tags=["x"])
    rest.wait_runner_online("a", logs=lab.logs)
    a_id = rest.runner("a")["id"]
    project = rest.project()
    template = rest.template(project, lab.scripts, lines_script(lab, "short.sh", 20, 0),
                             runner_tag="x")

    runner_a.sigstop()
    task = rest.run(project, template)
    starting = rest.wait_status(project, task, {"starting"}, logs=lab.logs)
    assert starting["runner_id"] == a_id, starting
    runner_a.kill9()
    waiting = rest.wait_status(project, task, {"waiting"}, logs=lab.logs)
    assert waiting["runner_id"] is None, waiting

    lab.runner(hub.base_url, "b", tags=["x"])
    rest.wait_runner_online("b", logs=lab.logs)
    b_id = rest.runner("b")["id"]
    done = wait_final(rest, lab, project, task)
    assert done["status"] == "success", (done, lab.logs())
    assert done["runner_id"] == b_id != a_id, done
    assert_exact_output(rest, lab, project, task, 20)


# 4. A runner frozen with SIGSTOP goes offline; thawed, it reconnects and delivers everything.


def test_sigstopped_runner_goes_offline_and_after_sigcont_delivers_all_output(lab):
    count = 300
    hub = lab.hub(heartbeat_interval=0.3, runner_lost_timeout=30)
    runner = lab.runner(hub.base_url, "r4")
    rest = hub.rest()
    rest.wait_runner_online("r4", logs=lab.logs)
    project = rest.project()
    template = rest.template(project, lab.scripts, lines_script(lab, "lines.sh", count, 0.01))
    task = rest.run(project, template)
    wait_until(lambda: stored_lines(rest, project, task) >= 10, 60, message=lab.logs)

    runner.sigstop()
    rest.wait_runner_online("r4", online=False, logs=lab.logs)
    assert rest.task(project, task)["status"] == "running"
    runner.sigcont()
    rest.wait_runner_online("r4", logs=lab.logs)

    done = wait_final(rest, lab, project, task)
    assert done["status"] == "success", (done, lab.logs())
    assert_exact_output(rest, lab, project, task, count)


# 5. A runner killed with SIGKILL and restarted (new process, same token): with its spool, it
#    delivers what the task printed and ends it; without (its disk was wiped), the hub ends it.


def test_restarted_runner_delivers_the_spooled_output_of_its_killed_task(lab):
    lost_timeout = 120
    hub = lab.hub(heartbeat_interval=0.5, runner_lost_timeout=lost_timeout)
    proxy = lab.proxy(hub.port)
    runner = lab.runner(proxy.url, "r5s")
    rest = hub.rest()
    rest.wait_runner_online("r5s", logs=lab.logs)
    project = rest.project()
    template = rest.template(project, lab.scripts, lines_script(lab, "spooled.sh", 1000, 0.01))
    task = rest.run(project, template)
    wait_until(lambda: stored_lines(rest, project, task) >= 5, 60, message=lab.logs)
    # Cut the hub off first, so that what it prints next is only in the runner's spool...
    proxy.pause()
    stored_before = stored_lines(rest, project, task)
    time.sleep(0.5)
    runner.kill9()  # ...then kill the runner: the spool is all that is left of that output
    proxy.resume()
    runner.start()
    done = wait_final(rest, lab, project, task, timeout=lost_timeout / 4)
    assert done["status"] == "error", (done, lab.logs())
    assert done["status_message"] == "runner restarted while the task ran", done
    output = rest.raw_output(project, task)
    count = output.count("\n")
    assert output == expected_lines(task, count), (output[-300:], lab.logs())
    assert count > stored_before + 10, (stored_before, count)  # the spool delivered the rest


def test_restarted_runner_ends_its_lost_task_runner_restarted_at_once(lab):
    lost_timeout = 120
    hub = lab.hub(heartbeat_interval=0.5, runner_lost_timeout=lost_timeout)
    runner = lab.runner(hub.base_url, "r5")
    rest = hub.rest()
    rest.wait_runner_online("r5", logs=lab.logs)
    project = rest.project()
    template = rest.template(project, lab.scripts, lines_script(lab, "slow.sh", 1000, 0.05))
    task = rest.run(project, template)
    wait_until(lambda: stored_lines(rest, project, task) >= 5, 60, message=lab.logs)

    runner.kill9()
    shutil.rmtree(runner.folder / "work" / "spool")  # as if its disk had been wiped
    runner.start()
    done = wait_final(rest, lab, project, task, timeout=lost_timeout / 4)
    assert done["status"] == "error", (done, lab.logs())
    assert done["status_message"] == "runner restarted", done


# 6. Graceful stop (SIGTERM): drain, finish, deliver, exit 0; a second SIGTERM stops tasks.


def test_sigterm_drains_runner_finishes_task_takes_no_new_one_and_exits_0(lab):
    count = 100
    hub = lab.hub(heartbeat_interval=0.3, runner_lost_timeout=30)
    runner = lab.runner(hub.base_url, "r6", max_parallel_tasks=2)
    rest = hub.rest()
    rest.wait_runner_online("r6", logs=lab.logs)
    r6 = rest.runner("r6")["id"]
    project = rest.project()
    template = rest.template(project, lab.scripts, lines_script(lab, "lines.sh", count, 0.03))
    first = rest.run(project, template)
    wait_until(lambda: stored_lines(rest, project, first) >= 5, 60, message=lab.logs)

    runner.sigterm()
    second = rest.run(project, template)
    seen: list[dict] = []

    def refused_with_reason() -> bool:
        task = rest.task(project, second)
        seen.append(task)
        assert task["status"] in ("waiting", "starting"), (task, lab.logs())
        reason = task.get("waiting_reason", "")
        return task["status"] == "waiting" and ("draining" in reason or "busy" in reason)

    wait_until(refused_with_reason, 60, message=lambda: f"second task: {seen[-3:]}")
    assert rest.task(project, first)["status"] == "running", "the drain ended the first task"

    assert runner.wait(60) == 0, tail(runner.log_file)
    done = rest.task(project, first)
    assert done["status"] == "success", (done, lab.logs())
    assert_exact_output(rest, lab, project, first, count)
    after = rest.task(project, second)
    assert after["status"] == "waiting" and after["runner_id"] is None, after
    assert not any(t["status"] == "running" for t in seen), seen
    assert all(t["runner_id"] in (None, r6) for t in seen), seen


def test_second_sigterm_stops_running_task_and_runner_exits_0(lab):
    hub = lab.hub(heartbeat_interval=0.3, runner_lost_timeout=30)
    runner = lab.runner(hub.base_url, "r6b")
    rest = hub.rest()
    rest.wait_runner_online("r6b", logs=lab.logs)
    project = rest.project()
    write_script(lab.scripts, "long.sh", "echo started\nsleep 600\n")
    task = rest.run(project, rest.template(project, lab.scripts, "long.sh"))
    wait_until(lambda: "started" in rest.raw_output(project, task), 60, message=lab.logs)

    runner.sigterm()
    time.sleep(0.3)  # two separate signals, not one coalesced delivery
    runner.sigterm()
    done = wait_final(rest, lab, project, task)
    assert done["status"] == "stopped", (done, lab.logs())
    assert runner.wait(60) == 0, tail(runner.log_file)


def test_second_sigterm_without_a_hub_exits_and_the_next_start_delivers(lab):
    hub = lab.hub(heartbeat_interval=0.3, runner_lost_timeout=120)
    runner = lab.runner(hub.base_url, "r6c")
    rest = hub.rest()
    rest.wait_runner_online("r6c", logs=lab.logs)
    project = rest.project()
    write_script(lab.scripts, "long.sh", "echo started\nsleep 600\n")
    task = rest.run(project, rest.template(project, lab.scripts, "long.sh"))
    wait_until(lambda: "started" in rest.raw_output(project, task), 60, message=lab.logs)

    hub.kill9()
    runner.sigterm()
    time.sleep(0.3)
    runner.sigterm()
    # It cannot tell the hub: after a bounded wait it exits, its spool keeping the end.
    assert runner.wait(60) == 0, tail(runner.log_file)
    hub.restart()
    runner.start()
    rest = hub.rest()
    done = wait_final(rest, lab, project, task)
    assert done["status"] == "stopped", (done, lab.logs())
    assert rest.raw_output(project, task) == "started\n"


# 7. Stopping a task while its runner is offline: the cancel goes out on reconnect.


def test_stop_while_runner_offline_is_delivered_on_reconnect(lab):
    hub = lab.hub(heartbeat_interval=0.3, runner_lost_timeout=60)
    runner = lab.runner(hub.base_url, "r7")
    rest = hub.rest()
    rest.wait_runner_online("r7", logs=lab.logs)
    project = rest.project()
    write_script(lab.scripts, "ticks.sh",
                 "echo started\nwhile true; do echo tick; sleep 0.2; done\n")
    task = rest.run(project, rest.template(project, lab.scripts, "ticks.sh"))
    wait_until(lambda: "started" in rest.raw_output(project, task), 60, message=lab.logs)

    runner.sigstop()
    rest.wait_runner_online("r7", online=False, logs=lab.logs)
    rest.stop(project, task)
    assert rest.task(project, task)["status"] == "stopping"
    runner.sigcont()

    done = wait_final(rest, lab, project, task)
    assert done["status"] == "stopped", (done, lab.logs())


# 8. A task printing far more than max_task_output_bytes.


def test_output_past_the_limit_is_cut_and_the_hub_stays_small(lab):
    limit = 1_000_000
    hub = lab.hub(heartbeat_interval=0.5, runner_lost_timeout=60, max_task_output_bytes=limit)
    lab.runner(hub.base_url, "r8")
    rest = hub.rest()
    rest.wait_runner_online("r8", logs=lab.logs)
    project = rest.project()
    write_script(lab.scripts, "flood.sh", "yes 0123456789 | head -c 50000000; echo END\n")
    task = rest.run(project, rest.template(project, lab.scripts, "flood.sh"))

    hub_process = psutil.Process(hub.pid)
    peak = 0

    def ended() -> dict | None:
        nonlocal peak
        peak = max(peak, hub_process.memory_info().rss)
        current = rest.task(project, task)
        return current if current["status"] in FINAL else None

    done = wait_until(ended, 120, interval=0.02,
                      message=lambda: f"flood task never ended\n{lab.logs()}")
    peak = max(peak, hub_process.memory_info().rss)
    assert done["status"] == "success", (done, lab.logs())
    assert done["exit_code"] == 0, done
    output = rest.raw_output(project, task)
    assert len(output.encode()) <= limit + 4096, len(output.encode())
    assert "output cut" in output, output[-300:]
    assert output.startswith("0123456789\n0123456789\n"), output[:100]
    assert peak < 300 * MiB, f"hub RSS peaked at {peak / MiB:.0f} MiB"


# 9. max_task_duration_sec.


def test_task_past_max_duration_ends_error_timed_out(lab):
    hub = lab.hub(heartbeat_interval=0.5, runner_lost_timeout=60, max_task_duration_sec=1)
    lab.runner(hub.base_url, "r9")
    rest = hub.rest()
    rest.wait_runner_online("r9", logs=lab.logs)
    project = rest.project()
    write_script(lab.scripts, "sleepy.sh", "echo started\nsleep 30\n")
    task = rest.run(project, rest.template(project, lab.scripts, "sleepy.sh"))

    done = wait_final(rest, lab, project, task, timeout=20)
    assert done["status"] == "error", (done, lab.logs())
    assert "timed out" in done["status_message"], done
