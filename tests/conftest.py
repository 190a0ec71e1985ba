import os
import signal
import subprocess

import pytest

from tests.hubkit import start_hub
from tests.lab import Lab


@pytest.fixture
async def hub(tmp_path):
    running = await start_hub(tmp_path)
    yield running
    await running.close()


@pytest.fixture
async def api(hub):
    return await hub.api()


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def processes():
    """Processes a test starts (append them); stopped with SIGINT at the end, killed if they
    do not go within 15 s."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in started:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def task_users():
    """Two users of the tests' own, for runners that switch to a task user (root only): the
    runner kills every process of a task user after each task, so never a shared one."""
    if os.geteuid() != 0:
        pytest.skip("switching to a task user needs root (CI runs as root)")
    names = [f"smtask{os.getpid() % 100000}{suffix}" for suffix in "ab"]
    for name in names:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        yield names
    finally:
        for name in names:
            subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
            subprocess.run(["userdel", name], capture_output=True)
