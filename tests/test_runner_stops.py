"""Stopping things on purpose, under real processes: graceful and forced runner stops, a stop
while the runner is offline, output floods past the limit, and task timeouts.

Tests assert outcomes (final states, exact output, exit codes); deadlines are generous.
"""

import time

import psutil

from tests.faults import FINAL, tail, wait_until, write_script
from tests.lab import (
    MiB,
    assert_exact_output,
    lines_script,
    stored_lines,
    wait_final,
)

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
    runner, rest, project = lab.online_runner(hub, "r6b")
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
    runner, rest, project = lab.online_runner(hub, "r6c")
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
    runner, rest, project = lab.online_runner(hub, "r7")
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
    _, rest, project = lab.online_runner(hub, "r8")
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
    _, rest, project = lab.online_runner(hub, "r9")
    write_script(lab.scripts, "sleepy.sh", "echo started\nsleep 30\n")
    task = rest.run(project, rest.template(project, lab.scripts, "sleepy.sh"))

    done = wait_final(rest, lab, project, task, timeout=20)
    assert done["status"] == "error", (done, lab.logs())
    assert "timed out" in done["status_message"], done
