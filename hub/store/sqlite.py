"""The SQLite store: one file, WAL, versioned migrations, batched output writes.

The queries live in three parts (people, work, runner metrics) over one connection class;
this module puts them together behind the Store interface.
"""

from hub.store.base import Store, utcnow
from hub.store.sqlite_base import PROJECT_TABLES, SqliteConnection
from hub.store.sqlite_metrics import MetricsQueries
from hub.store.sqlite_people import PeopleQueries
from hub.store.sqlite_work import WorkQueries

__all__ = ["PROJECT_TABLES", "SqliteStore", "open_store", "utcnow"]


class SqliteStore(PeopleQueries, WorkQueries, MetricsQueries, SqliteConnection, Store):
    """The default store (the PostgreSQL one will implement the same Store interface)."""


async def open_store(path: str) -> SqliteStore:
    store = SqliteStore(path)
    await store.open()
    return store
