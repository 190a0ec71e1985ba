"""How the runner's event loop learns that a task's process exited.

Python 3.11's default (ThreadedChildWatcher) starts a thread per process, only to block in
waitpid(): its start was 8 % of a busy runner's event loop (bench/PROFILE.md), and eight such
threads contend for the GIL. A pidfd watcher instead adds the process's pidfd to the loop's
selector: no thread, the exit seen in the loop. Python 3.12 and later pick it by themselves
where the kernel has pidfds (and deprecate choosing a watcher), so this only acts on 3.11.
"""

import asyncio
import os
import sys
import warnings


def use_pidfd_watcher() -> bool:
    """Before the runner's event loop starts (asyncio.run attaches the watcher to it): the
    pidfd watcher where this Python defaults to another and the kernel has pidfds."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # a kernel before 5.3, or a sandbox refusing the call
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
    return True
