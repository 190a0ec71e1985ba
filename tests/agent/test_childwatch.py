"""agent/childwatch.py: on Python 3.11 the runner watches its task processes by pidfd."""

import subprocess
import sys

import pytest

SCRIPT = """
import asyncio, threading
from agent.childwatch import use_pidfd_watcher

async def main():
    before = threading.active_count()
    procs = [await asyncio.create_subprocess_exec("sh", "-c", f"exit {i}") for i in range(5)]
    codes = [await p.wait() for p in procs]
    print(use, codes, threading.active_count() - before)

use = use_pidfd_watcher()
asyncio.run(main())
"""


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ choose the pidfd watcher")
def test_processes_are_watched_without_a_thread_each():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True).stdout.split(maxsplit=1)
    assert out[0] == "True"
    assert out[1].strip() == "[0, 1, 2, 3, 4] 0"
