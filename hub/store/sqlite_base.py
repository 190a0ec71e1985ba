"""The SQLite connection: opening, migrations, and the query helpers every part uses."""


import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from hub.store.base import NotFound, Row, StoreError
from hub.store.migrations import LATEST_VERSION, MIGRATIONS, Migration

T = TypeVar("T")

# Commits on the loop connection between two checkpoints of the write-ahead log (a small
# task write adds about 3 pages: some 4 MB of log at most, as SQLite's own default).
CHECKPOINT_AFTER_COMMITS = 300

# Tables whose rows belong to one project and are handled through the generic row methods,
# with the columns a caller may set.
PROJECT_TABLES: dict[str, frozenset[str]] = {
    "access_key": frozenset({"name", "type", "secret"}),
    "repository": frozenset({"name", "git_url", "git_branch", "ssh_key_id"}),
    "inventory": frozenset({"name", "type", "inventory", "ssh_key_id", "become_key_id",
                            "repository_id"}),
    "environment": frozenset({"name", "password", "json", "env"}),
    "template": frozenset({"name", "app", "playbook", "arguments", "description", "git_branch",
                           "repository_id", "inventory_id", "environment_id",
                           "allow_override_args_in_task", "type", "runner_tag",
                           "timeout_sec", "allow_override_branch_in_task", "vaults",
                           "view_id", "survey_vars", "task_params", "allow_parallel_tasks",
                           "suppress_success_alerts", "autorun", "start_version",
                           "build_template_id"}),
    "project_view": frozenset({"title", "position"}),
    "schedule": frozenset({"template_id", "name", "cron_format", "type", "run_at", "active",
                           "delete_after_run", "last_fire", "created"}),
    "integration": frozenset({"template_id", "name", "auth_method", "auth_secret_id",
                              "auth_header", "searchable", "task_params"}),
    "integration_matcher": frozenset({"integration_id", "name", "match_type", "method",
                                      "body_data_type", "key", "value"}),
    "integration_extract_value": frozenset({"integration_id", "name", "value_source",
                                            "body_data_type", "key", "variable",
                                            "variable_type"}),
    "integration_alias": frozenset({"integration_id", "alias"}),
}
RUNNER_COLUMNS = frozenset({"project_id", "name", "token_hash", "active", "tags", "webhook",
                            "max_parallel_tasks", "public_key", "platform", "version", "touched",
                            "shared_identity", "update_state", "update_target",
                            "update_error", "update_wave"})
ROLLOUT_COLUMNS = frozenset({"version", "project_id", "runner_id", "canary", "healthy_seconds"})
EVENT_COLUMNS = frozenset({"project_id", "user_id", "integration_id", "object_id",
                           "object_type", "object_name", "description", "project_name",
                           "username", "created"})
TASK_COLUMNS = frozenset({"status", "status_message", "runner_id", "exit_code", "commit_hash",
                          "commit_message", "start", "end", "last_seq", "secret"})


def _keep_private(path: Path) -> None:
    """The database holds password hashes and sealed secrets: readable by the hub alone,
    whatever the umask (SQLite gives its -wal and -shm files the same mode)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:
        pass  # opening it fails just after, with a message that names the file


class SqliteConnection:
    """Two connections to one database, each for what it does fastest.

    The database thread (aiosqlite) runs large work: scans, output batches, migrations. The
    loop connection answers on the event loop's own thread what touches a handful of pages:
    a row read by its key, a task inserted with its audit event. Why: handing a statement
    to the thread and getting the answer back costs 0.1-0.7 ms of waiting (a queue, a wake,
    the GIL passed back and forth, the next loop turn), while SQLite reads a row in 0.02 ms
    and commits a small write to the WAL in about 0.1 ms (synchronous=NORMAL: no fsync).

    Nothing is cached: in WAL mode a read sees every committed write (a deleted session is
    refused on the very next request) and never waits for the writer. Writes on either
    connection hold `_write_lock`, so the two never contend for SQLite's write lock; only
    another process can, and then the loop connection (busy_timeout 0: the loop never
    sleeps in SQLite) hands the work to the thread, which waits like every statement. The
    loop connection never checkpoints (wal_autocheckpoint 0): a checkpoint copies pages and
    syncs the file, which belongs on the thread."""

    def __init__(self, path: str):
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._loop_db: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._loop_commits = 0
        self._checkpoint: asyncio.Task | None = None

    # Life cycle.

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            _keep_private(Path(self.path))
        try:
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from None
        self._db.row_factory = aiosqlite.Row
        try:
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                           "busy_timeout=5000"):
                await self._db.execute(f"PRAGMA {pragma}")
            await self._migrate()
            self._loop_db = self._open_loop_connection()
        except sqlite3.DatabaseError as exc:
            await self._db.close()
            raise StoreError(f"database {self.path} cannot be used: {exc}") from None
        except StoreError:
            await self._db.close()
            raise

    def _open_loop_connection(self) -> sqlite3.Connection | None:
        """None for an in-memory database, which a second connection cannot see."""
        if self.path == ":memory:":
            return None
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        for pragma in ("busy_timeout=0", "synchronous=NORMAL", "foreign_keys=ON",
                       "wal_autocheckpoint=0"):
            conn.execute(f"PRAGMA {pragma}")
        return conn

    async def close(self) -> None:
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
        if self._loop_db is not None:
            self._loop_db.close()
            self._loop_db = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def probe_write(self) -> int:
        """A committed write that changes nothing: the schema version, set to itself.

        BEGIN IMMEDIATE ... ROLLBACK only takes a lock and an UPDATE rolled back never
        leaves the page cache, so neither notices a file that can no longer be written; a
        commit does (SQLite writes the header page to the WAL)."""
        async with self._write_lock:
            (version,) = await self._one_value("PRAGMA user_version")
            await self.db.execute(f"PRAGMA user_version = {int(version)}")
        return int(version)

    async def _migrate(self) -> None:
        (version,) = await self._one_value("PRAGMA user_version")
        if version > LATEST_VERSION:
            raise StoreError(
                f"database {self.path} has schema version {version}, newer than this program "
                f"knows ({LATEST_VERSION}); run a newer semaphore or restore a backup")
        if version == LATEST_VERSION:
            return
        # Foreign keys off while the schema changes (SQLite's 12-step ALTER TABLE procedure:
        # a rebuilt parent table must not cascade into its children when the old one is
        # dropped). The pragma is a no-op inside a transaction, so it goes around them.
        await self.db.execute("PRAGMA foreign_keys = OFF")
        try:
            for number in range(version + 1, LATEST_VERSION + 1):
                await self._apply_migration(number, MIGRATIONS[number - 1])
        finally:
            await self.db.execute("PRAGMA foreign_keys = ON")

    async def _apply_migration(self, number: int, migration: Migration) -> None:
        """One migration and its version bump in one transaction, committed only if every
        foreign key still points at a row."""
        db = self.db
        try:
            if isinstance(migration, str):
                # executescript commits whatever is pending first: BEGIN rides in the script.
                await db.executescript(f"BEGIN; {migration}")
            else:
                await db.execute("BEGIN")
                await migration(db)
            broken = list(await db.execute_fetchall("PRAGMA foreign_key_check"))
            if broken:
                table, rowid, parent, _ = broken[0]
                raise StoreError(f"migration {number} of {self.path} would leave "
                                 f"{len(broken)} broken reference(s), e.g. {table} row "
                                 f"{rowid} -> {parent}; it was not applied")
            await db.execute(f"PRAGMA user_version = {number}")
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is closed")
        return self._db

    # Reads take one round trip to the database thread (execute_fetchall), not three.

    async def _one_value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = list(await self.db.execute_fetchall(sql, params))
        return rows[0] if rows else None

    async def _fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = list(await self.db.execute_fetchall(sql, params))
        return dict(rows[0]) if rows else None

    async def _point(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """One row found through a key or a unique index, read on the loop's thread (see the
        class); only for queries that touch a handful of pages, never scans."""
        if self._loop_db is not None:
            try:
                row = self._loop_db.execute(sql, params).fetchone()
            except sqlite3.OperationalError:
                pass  # busy or locked for a moment: ask the database thread, which waits
            else:
                return dict(row) if row is not None else None
        return await self._fetch_one(sql, params)

    async def _fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [dict(row) for row in await self.db.execute_fetchall(sql, params)]

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Cursor:
        """One autocommitted write. The lock keeps it out of the output writer's open
        transaction: on one shared connection it would otherwise join (and could be rolled
        back with) that batch."""
        async with self._write_lock:
            return await self.db.execute(sql, params)

    async def _small_transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` as one transaction on the loop connection (see the class): only for a few
        rows. On the thread instead when another process holds the write lock."""
        async with self._write_lock:
            conn = self._loop_db
            if conn is not None:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError:
                    pass  # another process writes: the thread waits for it
                else:
                    result = _run_begun(conn, work)
                    self._committed_on_loop()
                    return result
            return await self._on_thread(work)

    def _committed_on_loop(self) -> None:
        """The loop connection never checkpoints (see the class); every so many of its
        commits the thread copies the log into the database, so the log does not grow
        without end. It holds the write lock meanwhile, as SQLite's own checkpoint in a
        commit would: with writes going on, the next writer could not start the log over."""
        self._loop_commits += 1
        if self._loop_commits >= CHECKPOINT_AFTER_COMMITS and self._checkpoint is None:
            self._loop_commits = 0
            self._checkpoint = asyncio.get_running_loop().create_task(self._checkpoint_wal())

    async def _checkpoint_wal(self) -> None:
        try:
            async with self._write_lock:
                await self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except (sqlite3.Error, StoreError, ValueError):
            pass  # closed or busy: the next round (or the thread's own commits) does it
        finally:
            self._checkpoint = None

    async def _in_one_transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` as one transaction on the database thread: one hand-over for any number
        of statements, committed (or rolled back if it raises) before this returns."""
        async with self._write_lock:
            return await self._on_thread(work)

    async def _on_thread(self, work: Callable[[sqlite3.Connection], T]) -> T:
        # aiosqlite has no public way to run a function on its thread; `_execute` is the
        # one it uses for each of its own statements.
        def run(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            return _run_begun(conn, work)

        db = self.db
        return await db._execute(run, db._conn)

    async def _insert(self, table: str, values: dict[str, Any]) -> int:
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        try:
            cursor = await self._execute(
                f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(values.values()))
        except sqlite3.IntegrityError as exc:
            raise StoreError(_integrity_message(exc)) from None
        assert cursor.lastrowid is not None  # an INSERT that succeeded made a row
        return cursor.lastrowid

    async def _insert_returning(self, table: str, values: dict[str, Any]) -> Row:
        """Insert and read the stored row back in one round trip (INSERT ... RETURNING)."""
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        try:
            async with self._write_lock:
                rows = list(await self.db.execute_fetchall(
                    f"INSERT INTO {table} ({columns}) VALUES ({marks}) RETURNING *",
                    tuple(values.values())))
        except sqlite3.IntegrityError as exc:
            raise StoreError(_integrity_message(exc)) from None
        return dict(rows[0])

    async def _update(self, table: str, where: str, params: Sequence[Any],
                      values: dict[str, Any]) -> int:
        if not values:
            return 0
        assignments = ", ".join(f"{column} = ?" for column in values)
        try:
            cursor = await self._execute(f"UPDATE {table} SET {assignments} WHERE {where}",
                                         (*values.values(), *params))
        except sqlite3.IntegrityError as exc:
            raise StoreError(_integrity_message(exc)) from None
        return cursor.rowcount

def _run_begun(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """The rest of a transaction begun on `conn`: `work`, then commit; rollback if it
    raises."""
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _found(row: Row | None, what: str, key: object) -> Row:
    if row is None:
        raise NotFound(f"{what} {key} not found")
    return row


def _check_columns(table: str, values: dict[str, Any]) -> None:
    if table not in PROJECT_TABLES:
        raise StoreError(f"unknown table {table}")
    _check_keys(values, PROJECT_TABLES[table], table)


def _check_keys(values: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = set(values) - allowed
    if unknown:
        raise StoreError(f"{what} has no column(s) {', '.join(sorted(unknown))}")


def _integrity_message(exc: sqlite3.IntegrityError) -> str:
    text = str(exc)
    if text.startswith("UNIQUE constraint failed: "):
        column = text.rsplit(".", 1)[-1]
        return f"{column} is already taken"
    if "FOREIGN KEY" in text:
        return "a referenced object does not exist"
    return text
