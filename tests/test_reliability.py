"""Reliability under real faults: kill -9 and SIGTERM of the hub, cut connections, kill -9,
SIGSTOP/SIGCONT and restarts of runners.

Every process is real (`semaphore server`, `semaphore runner start`, bash tasks) and every fault
is real (signals, aborted TCP connections). Tests assert outcomes: final states, stored output
exactly as printed (every line once, in order), runner ids, exit codes. Deadlines are generous.
"""

import shutil
import time

import pytest

from tests.faults import wait_until, write_script
from tests.lab import (
    assert_exact_output,
    expected_lines,
    lines_script,
    stored_lines,
    wait_final,
)

# 1. The hub is killed with SIGKILL (or stopped with SIGTERM) mid-output and restarted on the
#    same database.


@pytest.mark.parametrize("stop", ["kill9", "terminate"])
def test_hub_kill9_mid_output_then_restart_stores_every_line_once(lab, stop):
    count = 500
    hub = lab.hub(heartbeat_interval=0.5, runner_lost_timeout=60)
    _, rest, project = lab.online_runner(hub, "r1", max_parallel_tasks=10)
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
    _, rest, project = lab.online_runner(hub, "r2", web_host=proxy.url, max_parallel_tasks=5)
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
    runner, rest, project = lab.online_runner(hub, "r3")
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
    runner, rest, project = lab.online_runner(hub, "r4")
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
    runner, rest, project = lab.online_runner(hub, "r5s", web_host=proxy.url)
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
    runner, rest, project = lab.online_runner(hub, "r5")
    template = rest.template(project, lab.scripts, lines_script(lab, "slow.sh", 1000, 0.05))
    task = rest.run(project, template)
    wait_until(lambda: stored_lines(rest, project, task) >= 5, 60, message=lab.logs)

    runner.kill9()
    shutil.rmtree(runner.folder / "work" / "spool")  # as if its disk had been wiped
    runner.start()
    done = wait_final(rest, lab, project, task, timeout=lost_timeout / 4)
    assert done["status"] == "error", (done, lab.logs())
    assert done["status_message"] == "runner restarted", done


# 6. The seam of the fast task path: a new task is stored already `starting` on a free runner,
#    and its assign goes out after the commit. The hub dies between the two (the assign lost
#    with it, or still unread in the runner's socket): the task runs once, never twice, and
#    is never lost.


def counting_script(lab, name: str, runs_file) -> str:
    """A task that notes each run of itself in `runs_file`, then prints 20 lines."""
    write_script(lab.scripts, name, f'echo "$SEMAPHORE_TASK_ID" >> {runs_file}\n'
                 'for i in $(seq 1 20); do echo "$SEMAPHORE_TASK_ID $i"; done\n')
    return name


def test_hub_killed_after_storing_a_task_starting_before_its_assign_left_runs_it_once(lab):
    hub = lab.hub(heartbeat_interval=0.5, runner_lost_timeout=60)
    proxy = lab.proxy(hub.port)
    _, rest, project = lab.online_runner(hub, "seam1", web_host=proxy.url)
    runner_id = rest.runner("seam1")["id"]
    runs = lab.folder / "runs-seam1"
    template = rest.template(project, lab.scripts, counting_script(lab, "once.sh", runs))

    proxy.swallow_replies = True  # whatever the hub sends now never reaches the runner
    task = rest.run(project, template)
    stored = rest.task(project, task)
    # Committed as given to the runner before the assign was sent (no second write).
    assert stored["status"] == "starting" and stored["runner_id"] == runner_id, stored
    hub.kill9()
    hub.restart()
    rest = hub.rest()
    proxy.swallow_replies = False
    proxy.cut()  # the runner's dead session: it reconnects, its hello holds no task

    done = wait_final(rest, lab, project, task)
    assert done["status"] == "success", (done, lab.logs())
    assert_exact_output(rest, lab, project, task, 20)
    assert runs.read_text() == f"{task}\n", "the task did not run exactly once"


def test_hub_killed_with_an_assign_unread_by_a_frozen_runner_runs_the_task_once(lab):
    hub = lab.hub(heartbeat_interval=0.5, runner_lost_timeout=60)
    runner, rest, project = lab.online_runner(hub, "seam2")
    runs = lab.folder / "runs-seam2"
    template = rest.template(project, lab.scripts, counting_script(lab, "once.sh", runs))

    runner.sigstop()  # the assign reaches its socket, unread
    task = rest.run(project, template)
    assert rest.task(project, task)["status"] == "starting"
    hub.kill9()
    hub.restart()
    rest = hub.rest()
    runner.sigcont()  # it may read the old assign, then finds its session gone

    done = wait_final(rest, lab, project, task)
    assert done["status"] == "success", (done, lab.logs())
    assert_exact_output(rest, lab, project, task, 20)
    assert runs.read_text() == f"{task}\n", "the task did not run exactly once"
