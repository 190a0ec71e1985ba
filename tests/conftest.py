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
