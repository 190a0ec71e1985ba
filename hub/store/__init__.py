"""Storage behind one interface (`Store`); SQLite through aiosqlite is the default backend."""

from hub.store.base import NotFound, Row, Store, StoreError, utcnow
from hub.store.sqlite import SqliteStore, open_store

__all__ = ["NotFound", "Row", "SqliteStore", "Store", "StoreError", "open_store", "utcnow"]
