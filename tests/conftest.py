import pytest

from tests.hubkit import start_hub


@pytest.fixture
async def hub(tmp_path):
    running = await start_hub(tmp_path)
    yield running
    await running.close()


@pytest.fixture
async def api(hub):
    return await hub.api()
