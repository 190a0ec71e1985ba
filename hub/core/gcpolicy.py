"""Keep the garbage collector's full passes short: freeze what survives each of them.

A full collection (generation 2) walks every tracked object and holds the interpreter, so the
event loop, while it does. 10,000 runner sessions are millions of objects: measured at 10,000
simulated runners, full passes took 0.2-1.2 s while the runners connected (issue 15). Nearly
all of those objects live as long as their session, so walking them again and again finds
nothing. The policy: after a young (generation 1) or full collection, at most once every
FREEZE_EVERY, `gc.freeze()` what survived it (moving lists, O(1)); a full pass then walks only
what survived since the last freeze, never the whole heap. Freezing only after full passes
is not enough: CPython starts a full pass when the survivors since the last one reach 25 % of
the heap it left, so each pass would still walk a quarter of 10,000 sessions. The start-up
objects are frozen once the hub has started (hub/app.py).

The price: frozen objects that later become unreachable *in a cycle* (a closed session's
objects that refer to each other) are only freed by reference counting, which cannot free a
cycle. Every RECLAIM_INTERVAL the policy unfreezes everything and runs one full collection
(that pause is the one left, logged as `hub.gc_reclaimed` with its length and what it freed),
then freezes the survivors again; memory held by such cycles is bounded by what one interval
produces.
"""

import asyncio
import gc
import time

import structlog

log = structlog.get_logger("hub.gc")

RECLAIM_INTERVAL = 3600.0
FREEZE_EVERY = 1.0  # s: a full pass walks at most about this long's survivors


class GcPolicy:
    def __init__(self, reclaim_interval: float = RECLAIM_INTERVAL,
                 freeze_every: float = FREEZE_EVERY):
        self.reclaim_interval, self.freeze_every = reclaim_interval, freeze_every
        self.freezes = 0
        self._frozen_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = False
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        gc.callbacks.append(self._on_gc)
        self._task = self._loop.create_task(self._reclaim_periodically())

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        """A collection of generation 1 or 2 ended: freeze its survivors from the loop, soon
        (any thread may have set off the collection, and the collector is still running its
        callbacks); at most once every freeze_every."""
        if (phase != "stop" or info["generation"] == 0 or self._pending or self._loop is None
                or time.monotonic() - self._frozen_at < self.freeze_every):
            return
        self._pending = True
        try:
            self._loop.call_soon_threadsafe(self._freeze)
        except RuntimeError:  # the loop is closed: the hub is gone
            self._pending = False

    def _freeze(self) -> None:
        self._pending = False
        self._frozen_at = time.monotonic()
        gc.freeze()
        self.freezes += 1

    async def _reclaim_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.reclaim_interval)
            self.reclaim()

    def reclaim(self) -> int:
        """Free the cycles that became garbage while frozen: one full pass over everything."""
        frozen = gc.get_freeze_count()
        started = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        log.info("hub.gc_reclaimed", frozen=frozen, collected=collected,
                 seconds=round(time.perf_counter() - started, 3))
        return collected
