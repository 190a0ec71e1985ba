"""Tokens that start with "-" (one random token in 64): the quick start makes none, and the
runner's command line takes one anyway, as a user may paste it."""

import asyncio
import json
import sys
from pathlib import Path

import pytest

from hub.quickstart import cli_safe_token
from tests.hubkit import start_hub

ROOT = Path(__file__).resolve().parents[1]
DASH_TOKEN = "-hDash-token-from-an-older-install"


async def semaphore(*args: str) -> tuple[int, str]:
    """The installed command, as a separate process (the hub runs in this one's loop)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.cli", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, output.decode()


def test_quickstart_tokens_never_start_with_a_dash():
    # Without the fix 4096 tokens hold ~64 that do; the chance of none is about 1e-28.
    tokens = [cli_safe_token(24) for _ in range(4096)]
    assert not [token for token in tokens if token.startswith("-")]
    assert len(set(tokens)) == len(tokens) and {len(token) for token in tokens} == {32}


@pytest.mark.parametrize("flag", [["--registration-token", DASH_TOKEN],
                                  [f"--registration-token={DASH_TOKEN}"]])
async def test_runner_setup_and_register_with_a_token_starting_with_a_dash(tmp_path, flag):
    hub = await start_hub(tmp_path, runner_registration_token=DASH_TOKEN)
    try:
        config = tmp_path / "runner" / "config.json"
        code, output = await semaphore(
            "runner", "setup", "--config", str(config), "--non-interactive",
            "--web-host", hub.base_url, *flag, "--name", "dash", "--tmp-path",
            str(tmp_path / "work"), "--allow-root-tasks")
        assert code == 0, output
        assert json.loads(config.read_text())["runner"]["registration_token"] == DASH_TOKEN
        code, output = await semaphore("runner", "register", "--config", str(config))
        assert code == 0, output
        assert [r["name"] for r in await hub.hub.store.list_runners(None)] == ["dash"]
    finally:
        await hub.close()
