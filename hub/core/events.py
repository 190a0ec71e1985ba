"""In-process publish/subscribe of hub events (task, runner and output changes) for live
views (the browser websocket, hub/api/live.py)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

# A subscriber that falls this far behind loses events rather than growing the hub's memory.
SUBSCRIBER_QUEUE = 1000


class Subscription(asyncio.Queue):
    """A subscriber's queue of events; `dropped` counts the ones it lost by falling behind,
    so it knows to re-read what it shows from the store instead of trusting the stream."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    def publish(self, kind: str, **payload: Any) -> None:
        if not self._subscribers:
            return
        # One dict for every subscriber: a slow one holds a reference, never a copy.
        event = {"type": kind, **payload}
        for queue in self._subscribers:
            if queue.qsize() < SUBSCRIBER_QUEUE:
                queue.put_nowait(event)
            else:
                queue.dropped += 1

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        queue = Subscription()
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)
