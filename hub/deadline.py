"""A wait for the next message that ends at a deadline: one timer per session, not per message.

A runner's session waits for its next frame until a deadline that moves with every frame
(silence counts from the last frame handled). `asyncio.timeout` around each wait makes a
Timeout and a timer for every frame and cancels both a moment later: at 10,000 runners, a
heartbeat each every few seconds, those objects (and asyncio's timer heap, rebuilt when half
its handles are cancelled) were most of what each young garbage collection had to walk
(bench/PROFILE.md). `ReceiveDeadline` keeps one timer armed; when it fires before the current
deadline (which has moved since) it re-arms itself once, so it fires about once per silence
period, and it ends the wait by cancelling the waiting task, as `asyncio.timeout` would.
"""

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class ReceiveDeadline:
    """Bounds `wait(awaitable, deadline)` calls made one after another by one task."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: asyncio.Task | None = None
        self._expired = False

    async def wait(self, awaitable: Awaitable[T], deadline: float | None) -> T | None:
        """What `awaitable` gives, or None if `deadline` (loop time; None: no limit) passes
        first."""
        if deadline is not None and self._loop.time() >= deadline:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # never started: nothing to wait for
            return None
        self._deadline = deadline
        if deadline is not None and (self._timer is None or self._timer.when() > deadline):
            self._arm(deadline)
        task = asyncio.current_task()
        assert task is not None
        self._waiting, self._expired = task, False
        cancelling = task.cancelling()
        try:
            return await awaitable
        except asyncio.CancelledError:
            # Ours (the deadline passed) unless someone else cancelled the task too.
            if self._expired and task.uncancel() <= cancelling:
                return None
            raise
        finally:
            self._waiting = None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._fired)

    def _fired(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        if self._loop.time() < deadline:  # moved on since: wait for the new one
            self._arm(deadline)
        elif self._waiting is not None and not self._expired:
            self._expired = True
            self._waiting.cancel()
        # Else the task is busy with a frame: its next wait sees the deadline passed.
