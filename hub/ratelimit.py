"""In-memory rate limits: a sliding window of failures per key, and failures with exponential
backoff per key. What each limits, and how a client is told, lives with what it limits (the
login's in hub/api/session.py, registration's in hub/api/runners.py; a runner session's frame
rate is a session rule, in protocol/session.py)."""

import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")
Clock = Callable[[], float]


class SlidingWindow:
    """At most `limit` events per key within the last `window` seconds.

    Only keys with recent events are kept, each with at most `limit` stamps (callers stop
    hitting a key once it is over), and at most `max_keys` keys: past that the oldest keys are
    dropped, so a flood of distinct keys costs bounded memory instead of growing the hub.
    """

    def __init__(self, limit: int, window: float, clock: Clock = time.monotonic,
                 max_keys: int = 100_000):
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._events: dict[str, deque[float]] = {}

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may have another event; 0 when it may now."""
        events = self._fresh(key)
        if events is None or len(events) < self.limit:
            return 0.0
        return max(events[0] + self.window - self.clock(), 0.001)

    def hit(self, key: str) -> None:
        events = self._fresh(key)
        if events is None:
            if len(self._events) >= self.max_keys:
                self._evict()
            events = self._events[key] = deque(maxlen=self.limit)
        events.append(self.clock())

    def forgive(self, key: str) -> None:
        """Take back the latest event (an attempt counted up front that turned out fine)."""
        events = self._events.get(key)
        if events:
            events.pop()
            if not events:
                del self._events[key]

    def clear(self, key: str) -> None:
        self._events.pop(key, None)

    def _fresh(self, key: str) -> deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        horizon = self.clock() - self.window
        while events and events[0] <= horizon:
            events.popleft()
        if not events:
            del self._events[key]
            return None
        return events

    def _evict(self) -> None:
        horizon = self.clock() - self.window
        for key in [k for k, events in self._events.items() if events[-1] <= horizon]:
            del self._events[key]
        if len(self._events) >= self.max_keys:
            # Still full: drop the half inserted first (dicts keep insertion order).
            for key in list(self._events)[:len(self._events) - self.max_keys // 2]:
                del self._events[key]


class Backoff:
    """`free` failures per key, then a wait that doubles with each further failure.

    After failure number `free + k` (k >= 0) the key waits `base * 2**k` seconds, at most
    `cap`, counted from that failure. A key with no failure for `forget` seconds starts over.
    Each key costs one small entry whatever it does, and at most `max_keys` are kept (the
    oldest go first), so a flood of distinct keys cannot grow the hub.
    """

    def __init__(self, free: int, base: float, cap: float, forget: float,
                 clock: Clock = time.monotonic, max_keys: int = 100_000):
        self.free = free
        self.base = base
        self.cap = cap
        self.forget = forget
        self.clock = clock
        self.max_keys = max_keys
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (count, last failure)

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again; 0 when it may now."""
        count, last = self._fresh(key)
        if count < self.free:
            return 0.0
        wait = min(self.base * 2 ** (count - self.free), self.cap)
        return max(last + wait - self.clock(), 0.0)

    def hit(self, key: str) -> None:
        count, _ = self._fresh(key)
        if key not in self._failures and len(self._failures) >= self.max_keys:
            self._evict()
        self._failures.pop(key, None)  # re-inserted last: the dict stays oldest-first
        self._failures[key] = (count + 1, self.clock())

    def forgive(self, key: str) -> None:
        """Take back the latest failure (an attempt counted up front that turned out fine)."""
        count, last = self._fresh(key)
        if count > 1:
            self._failures[key] = (count - 1, last)
        else:
            self._failures.pop(key, None)

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)

    def _fresh(self, key: str) -> tuple[int, float]:
        entry = self._failures.get(key)
        if entry is None:
            return 0, 0.0
        if entry[1] + self.forget <= self.clock():
            del self._failures[key]
            return 0, 0.0
        return entry

    def _evict(self) -> None:
        horizon = self.clock() - self.forget
        for key in [k for k, (_, last) in self._failures.items() if last <= horizon]:
            del self._failures[key]
        if len(self._failures) >= self.max_keys:
            for key in list(self._failures)[:len(self._failures) - self.max_keys // 2]:
                del self._failures[key]


class Remembered:
    """Keys seen within the last `ttl` seconds; at most `max_keys`, the oldest dropped first."""

    def __init__(self, ttl: float, clock: Clock = time.monotonic, max_keys: int = 100_000):
        self.ttl = ttl
        self.clock = clock
        self.max_keys = max_keys
        self._seen: dict[str, float] = {}

    def add(self, key: str) -> None:
        self._seen.pop(key, None)
        if len(self._seen) >= self.max_keys:
            for old in list(self._seen)[:len(self._seen) - self.max_keys // 2]:
                del self._seen[old]
        self._seen[key] = self.clock()

    def __contains__(self, key: str) -> bool:
        seen = self._seen.get(key)
        return seen is not None and seen + self.ttl > self.clock()


# Limiter state lives as long as its application (a test's hub starts with fresh counters);
# the application is frozen once started, so it cannot hold the state in its own mapping.
_PER_APP: "weakref.WeakKeyDictionary[web.Application, dict[str, Any]]" = (
    weakref.WeakKeyDictionary())


def per_app(app: web.Application, name: str, factory: Callable[[], T]) -> T:
    """The `name` limiter of this application, made by `factory` on first use."""
    state = _PER_APP.setdefault(app, {})
    if name not in state:
        state[name] = factory()
    return state[name]
