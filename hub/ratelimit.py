"""In-memory rate limits: a sliding window of failures per key, and a token bucket."""

import math
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from hub.api.common import ApiError

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


class TokenBucket:
    """`rate` events per second on average, with bursts of up to `burst`."""

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._tokens = burst
        self._stamp = clock()

    def take(self) -> bool:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


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


def too_many(what: str, wait: float) -> ApiError:
    """429 {"error": "too many <what>; try again in N s"} with Retry-After: N."""
    seconds = max(math.ceil(wait), 1)
    error = ApiError(429, f"too many {what}; try again in {seconds} s")
    error.headers["Retry-After"] = str(seconds)
    return error
