"""Reconnect delays: exponential, capped, with jitter so a fleet does not reconnect in step."""

import random
from collections.abc import Iterator


def backoff_delays(base: float = 0.5, cap: float = 30.0, factor: float = 2.0,
                   rng: random.Random | None = None) -> Iterator[float]:
    """Yield delays base, 2*base, ... up to cap, each drawn from [d/2, d]."""
    rng = rng or random.Random()
    delay = base
    while True:
        yield rng.uniform(delay / 2, delay)
        delay = min(cap, delay * factor)
