"""hub/core/gcpolicy.py: what survives a full collection is frozen (out of the next full
passes), and the periodic reclaim frees cycles that became garbage while frozen."""

import asyncio
import gc
import weakref

import structlog

from hub.core.gcpolicy import GcPolicy


class Node:
    """A cycle when two point at each other; weakref-able to see it freed."""

    def __init__(self) -> None:
        self.other: Node | None = None


async def test_survivors_of_a_full_collection_are_frozen_then_reclaimed():
    policy = GcPolicy(reclaim_interval=3600)
    policy.start()
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        freed = weakref.ref(a)
        gc.collect()  # a full pass: a and b survive it
        await asyncio.sleep(0)  # the freeze runs on the loop, just after
        await asyncio.sleep(0)
        assert policy.freezes >= 1
        assert gc.is_tracked(a) and gc.get_freeze_count() > 0
        del a, b
        gc.collect()  # frozen: not walked, so the cycle is not freed
        assert freed() is not None
        with structlog.testing.capture_logs() as logs:
            collected = policy.reclaim()
        assert freed() is None and collected >= 2
        entry = next(e for e in logs if e["event"] == "hub.gc_reclaimed")
        assert entry["collected"] == collected and entry["seconds"] >= 0
        assert gc.get_freeze_count() > 0  # the survivors are frozen again
    finally:
        await policy.stop()
    assert policy._on_gc not in gc.callbacks


async def test_survivors_of_a_young_collection_are_frozen_at_most_once_per_period():
    policy = GcPolicy(reclaim_interval=3600, freeze_every=0.0)
    policy.start()
    try:
        gc.collect(1)
        await asyncio.sleep(0)
        assert policy.freezes == 1
        gc.collect(0)  # generation 0 alone: not worth a freeze
        await asyncio.sleep(0)
        assert policy.freezes == 1
        policy.freeze_every = 3600.0
        gc.collect(1)  # too soon after the last one
        await asyncio.sleep(0)
        assert policy.freezes == 1
    finally:
        await policy.stop()
