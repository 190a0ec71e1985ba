"""SQLite queries for the runners' resource history (hub/core/metrics.py has the design).

Every table is keyed (bucket, runner_id): a flush appends at the end of the b-tree and
pruning cuts its front. One runner's rows are read and deleted by naming each bucket
(`bucket IN (...)`): one key lookup per bucket, where a range on bucket alone would walk
every runner's rows in that range.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from hub.store.base import Row
from hub.store.sqlite_base import SqliteConnection

# Runners per flush transaction (the write lock is let go between them).
FLUSH_CHUNK = 500
# Table of each coarse tier.
TIER_TABLES = {"1m": "metric_1m", "1h": "metric_1h"}
# The aggregate columns after (bucket, runner_id), in order (hub/core/metrics.py AGGREGATE).
AGGREGATE_COLUMNS = ("samples", "cpu_percent", "cpu_percent_max", "memory_used",
                     "memory_used_max", "memory_total", "disk_free", "disk_free_min", "load1",
                     "load1_max", "running", "running_max")
_ALL = ", ".join(("bucket", "runner_id", *AGGREGATE_COLUMNS))
_MARKS = ", ".join("?" for _ in range(2 + len(AGGREGATE_COLUMNS)))
# How a stored aggregate and a new one for the same (bucket, runner) combine: the hub
# stopped in the middle of a minute and wrote its part, the next hub writes the rest.
_WEIGHTED = "({c} * samples + excluded.{c} * excluded.samples) / (samples + excluded.samples)"
_MERGE = ", ".join([
    "samples = samples + excluded.samples",
    *(f"{c} = {_WEIGHTED.format(c=c)}" for c in ("cpu_percent", "memory_used", "disk_free",
                                                  "load1", "running")),
    *(f"{c} = MAX({c}, excluded.{c})" for c in ("cpu_percent_max", "memory_used_max",
                                               "memory_total", "load1_max", "running_max")),
    "disk_free_min = MIN(disk_free_min, excluded.disk_free_min)"])
# One hour of minutes rolled up per runner: averages weighted by the samples behind them.
_AVG = "SUM({c} * samples) / SUM(samples)"
_ROLLUP = (
    f"INSERT OR REPLACE INTO metric_1h ({_ALL}) SELECT ?, runner_id, SUM(samples), "
    f"{_AVG.format(c='cpu_percent')}, MAX(cpu_percent_max), "
    f"{_AVG.format(c='memory_used')}, MAX(memory_used_max), MAX(memory_total), "
    f"{_AVG.format(c='disk_free')}, MIN(disk_free_min), "
    f"{_AVG.format(c='load1')}, MAX(load1_max), "
    f"{_AVG.format(c='running')}, MAX(running_max) "
    "FROM metric_1m WHERE bucket >= ? AND bucket < ? GROUP BY runner_id")


class MetricsQueries(SqliteConnection):
    async def write_metrics(self, raw: Sequence[tuple[int, int, bytes]],
                            minutes: Sequence[tuple[Any, ...]], rollups: Sequence[int],
                            prune: dict[str, int]) -> None:
        """One flush: closed minutes' packed points and aggregates, the hours to roll up
        from minutes (bucket starts), and for each table the bucket below which its rows go.

        Written in transactions of FLUSH_CHUNK runners, the write lock let go between them:
        at 10,000 runners one transaction held it for a second or more, and task output
        (the same lock) waited that long. A flush cut short by a crash loses only minutes
        the hub held in memory anyway."""
        for start in range(0, max(len(raw), len(minutes)), FLUSH_CHUNK):
            await self._metrics_transaction(raw[start:start + FLUSH_CHUNK],
                                            minutes[start:start + FLUSH_CHUNK], (), {})
        if rollups or prune:
            await self._metrics_transaction((), (), rollups, prune)

    async def _metrics_transaction(self, raw: Sequence[tuple[int, int, bytes]],
                                   minutes: Sequence[tuple[Any, ...]], rollups: Sequence[int],
                                   prune: dict[str, int]) -> None:
        async with self._write_lock:
            db = self.db
            await db.execute("BEGIN")
            try:
                if raw:
                    await db.executemany(
                        "INSERT INTO metric_raw (bucket, runner_id, points) VALUES (?, ?, ?) "
                        "ON CONFLICT (bucket, runner_id) DO UPDATE SET "
                        "points = CAST(points || excluded.points AS BLOB)", raw)
                if minutes:
                    await db.executemany(
                        f"INSERT INTO metric_1m ({_ALL}) VALUES ({_MARKS}) "
                        f"ON CONFLICT (bucket, runner_id) DO UPDATE SET {_MERGE}", minutes)
                for hour in rollups:
                    await db.execute(_ROLLUP, (hour, hour, hour + 3600))
                for table, below in prune.items():
                    await db.execute(f"DELETE FROM {_table(table)} WHERE bucket < ?",
                                     (below,))
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise

    async def last_rollup(self) -> int | None:
        """The newest hour rolled up, if any."""
        row = await self._one_value("SELECT MAX(bucket) FROM metric_1h")
        return None if row is None else row[0]

    async def read_raw_metrics(self, runner_id: int,
                               buckets: Sequence[int]) -> list[tuple[int, bytes]]:
        if not buckets:
            return []
        marks = ", ".join("?" for _ in buckets)
        rows = await self.db.execute_fetchall(
            f"SELECT bucket, points FROM metric_raw WHERE bucket IN ({marks}) "
            "AND runner_id = ? ORDER BY bucket", (*buckets, runner_id))
        return [(row[0], row[1]) for row in rows]

    async def read_metrics(self, tier: str, runner_id: int, buckets: Sequence[int]) -> list[Row]:
        if not buckets:
            return []
        marks = ", ".join("?" for _ in buckets)
        return await self._fetch_all(
            f"SELECT {_ALL} FROM {_table(tier)} WHERE bucket IN ({marks}) AND runner_id = ? "
            "ORDER BY bucket", (*buckets, runner_id))

    async def delete_metrics(self, runner_id: int,
                             buckets: Mapping[str, Sequence[int]]) -> None:
        """The runner's rows in each table, at the buckets named (its whole retention)."""
        async with self._write_lock:
            db = self.db
            await db.execute("BEGIN")
            try:
                for table, names in buckets.items():
                    if names:
                        marks = ", ".join("?" for _ in names)
                        await db.execute(f"DELETE FROM {_table(table)} WHERE bucket IN "
                                         f"({marks}) AND runner_id = ?", (*names, runner_id))
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise


def _table(tier: str) -> str:
    return "metric_raw" if tier == "raw" else TIER_TABLES[tier]
