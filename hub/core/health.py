"""Readiness: may a load balancer send this hub work? (/api/ready, semaphore_hub_ready)

Ready when the database takes a real write, its schema is the one this program knows, and
the hub is not shutting down. A check's result is kept READY_CACHE_SECONDS: a load balancer
asking many times a second costs the database one small write a second at most.
"""

import asyncio
import time

import structlog

from hub.store import Store
from hub.store.migrations import LATEST_VERSION

log = structlog.get_logger("hub.health")

READY_CACHE_SECONDS = 1.0
# A database that does not answer this fast is not ready (a lock held elsewhere, a hung disk).
CHECK_TIMEOUT = 3.0


class Readiness:
    def __init__(self, store: Store):
        self.store = store
        self.shutting_down = False
        self._reasons: list[str] = []
        self._checked = -float("inf")  # monotonic time of the last check
        self._lock = asyncio.Lock()

    @property
    def last_ready(self) -> bool:
        """The last check's verdict, without checking again (for the metrics' gauge)."""
        return not self.shutting_down and not self._reasons

    async def reasons(self) -> list[str]:
        """Why the hub is not ready (empty: it is); each reason names the failing check and
        nothing secret (no path, no error text: those go to the log)."""
        if self.shutting_down:
            return ["shutting down"]
        if time.monotonic() - self._checked < READY_CACHE_SECONDS:
            return self._reasons
        async with self._lock:  # callers arriving together share one check
            if time.monotonic() - self._checked >= READY_CACHE_SECONDS:
                self._reasons = await self._check()
                self._checked = time.monotonic()
        return ["shutting down"] if self.shutting_down else self._reasons

    async def _check(self) -> list[str]:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                version = await self.store.probe_write()
        except Exception as exc:
            if not self._reasons:  # once per failure, not once per check
                log.error("health.database_unwritable", error=str(exc)[:300],
                          error_type=type(exc).__name__)
            return ["database: not writable"]
        if version != LATEST_VERSION:
            return [f"database: schema version {version}, this hub needs {LATEST_VERSION}"]
        if self._reasons:
            log.info("health.database_writable")
        return []
