"""In-process publish/subscribe of hub events (task and runner changes) for live views."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

# A subscriber that falls this far behind loses events rather than growing the hub's memory.
SUBSCRIBER_QUEUE = 1000


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue] = set()

    def publish(self, kind: str, **payload: Any) -> None:
        if not self._subscribers:
            return
        event = {"type": kind, **payload}
        for queue in self._subscribers:
            if queue.qsize() < SUBSCRIBER_QUEUE:
                queue.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue]:
        queue: asyncio.Queue = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)
