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
