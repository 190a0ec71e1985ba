"""The SQLite store: one file, WAL, versioned migrations, batched output writes."""

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from hub.store.base import FINAL_STATUSES, NotFound, OutputChunk, Row, Store, StoreError
from hub.store.migrations import LATEST_VERSION, MIGRATIONS

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
                           "timeout_sec"}),
}
RUNNER_COLUMNS = frozenset({"project_id", "name", "token_hash", "active", "tags", "webhook",
                            "max_parallel_tasks", "public_key", "platform", "version", "touched"})
TASK_COLUMNS = frozenset({"status", "status_message", "runner_id", "exit_code", "commit_hash",
                          "commit_message", "start", "end", "last_seq"})


def utcnow() -> str:
    """Timestamps as Semaphore writes them: ISO 8601, UTC, with a Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def open_store(path: str) -> "SqliteStore":
    store = SqliteStore(path)
    await store.open()
    return store


class SqliteStore(Store):
    def __init__(self, path: str):
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    # Life cycle.

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
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
        except sqlite3.DatabaseError as exc:
            await self._db.close()
            raise StoreError(f"database {self.path} cannot be used: {exc}") from None
        except StoreError:
            await self._db.close()
            raise

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _migrate(self) -> None:
        (version,) = await self._one_value("PRAGMA user_version")
        if version > LATEST_VERSION:
            raise StoreError(
                f"database {self.path} has schema version {version}, newer than this program "
                f"knows ({LATEST_VERSION}); run a newer semaphore or restore a backup")
        for number in range(version + 1, LATEST_VERSION + 1):
            # executescript commits first; the version bump rides in the same script.
            await self.db.executescript(
                f"BEGIN; {MIGRATIONS[number - 1]}; PRAGMA user_version = {number}; COMMIT;")

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is closed")
        return self._db

    # Reads take one round trip to the database thread (execute_fetchall), not three.

    async def _one_value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self.db.execute_fetchall(sql, params)
        return rows[0] if rows else None

    async def _fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.db.execute_fetchall(sql, params)
        return dict(rows[0]) if rows else None

    async def _fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [dict(row) for row in await self.db.execute_fetchall(sql, params)]

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Cursor:
        """One autocommitted write. The lock keeps it out of the output writer's open
        transaction: on one shared connection it would otherwise join (and could be rolled
        back with) that batch."""
        async with self._write_lock:
            return await self.db.execute(sql, params)

    async def _insert(self, table: str, values: dict[str, Any]) -> int:
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        try:
            cursor = await self._execute(
                f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(values.values()))
        except sqlite3.IntegrityError as exc:
            raise StoreError(_integrity_message(exc)) from None
        return cursor.lastrowid

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

    # Users, sessions, API tokens.

    async def create_user(self, username: str, name: str, email: str, password_hash: str,
                          admin: bool = False) -> Row:
        user_id = await self._insert("user", {
            "username": username, "name": name, "email": email, "password": password_hash,
            "admin": int(admin), "created": utcnow()})
        return await self.get_user(user_id)

    async def get_user(self, user_id: int) -> Row:
        return _found(await self._fetch_one("SELECT * FROM user WHERE id = ?", (user_id,)),
                      "user", user_id)

    async def find_user_by_login(self, login: str) -> Row | None:
        return await self._fetch_one(
            "SELECT * FROM user WHERE username = ? OR email = ?", (login, login))

    async def list_users(self) -> list[Row]:
        return await self._fetch_all("SELECT * FROM user ORDER BY id")

    async def create_session(self, user_id: int, token_hash: str, expires: float) -> None:
        await self._insert("session", {"token_hash": token_hash, "user_id": user_id,
                                       "created": utcnow(), "expires": expires})

    async def find_session_user(self, token_hash: str, now: float) -> Row | None:
        return await self._fetch_one(
            "SELECT user.* FROM session JOIN user ON user.id = session.user_id "
            "WHERE session.token_hash = ? AND session.expires > ?", (token_hash, now))

    async def delete_session(self, token_hash: str) -> None:
        await self._execute("DELETE FROM session WHERE token_hash = ?", (token_hash,))

    async def create_api_token(self, user_id: int, token_id: str, token_hash: str) -> Row:
        await self._insert("api_token", {"id": token_id, "token_hash": token_hash,
                                         "user_id": user_id, "created": utcnow()})
        return _found(await self._fetch_one("SELECT * FROM api_token WHERE id = ?",
                                            (token_id,)), "api token", token_id)

    async def list_api_tokens(self, user_id: int) -> list[Row]:
        return await self._fetch_all(
            "SELECT * FROM api_token WHERE user_id = ? ORDER BY created", (user_id,))

    async def find_api_token_user(self, token_hash: str) -> Row | None:
        return await self._fetch_one(
            "SELECT user.* FROM api_token JOIN user ON user.id = api_token.user_id "
            "WHERE api_token.token_hash = ? AND api_token.expired = 0", (token_hash,))

    async def expire_api_token(self, user_id: int, token_id: str) -> None:
        changed = await self._update("api_token", "user_id = ? AND id = ?", (user_id, token_id),
                                     {"expired": 1})
        if not changed:
            raise NotFound(f"api token {token_id} not found")

    # Projects and membership.

    async def create_project(self, values: dict[str, Any], owner_id: int) -> Row:
        project_id = await self._insert("project", {**values, "created": utcnow()})
        await self._insert("project_user", {"project_id": project_id, "user_id": owner_id,
                                            "role": "owner"})
        return await self.get_project(project_id)

    async def get_project(self, project_id: int) -> Row:
        return _found(await self._fetch_one("SELECT * FROM project WHERE id = ?",
                                            (project_id,)), "project", project_id)

    async def list_projects(self, user_id: int | None) -> list[Row]:
        if user_id is None:  # an admin sees every project
            return await self._fetch_all("SELECT * FROM project ORDER BY id")
        return await self._fetch_all(
            "SELECT project.* FROM project JOIN project_user ON project_user.project_id = "
            "project.id WHERE project_user.user_id = ? ORDER BY project.id", (user_id,))

    async def update_project(self, project_id: int, values: dict[str, Any]) -> None:
        if not await self._update("project", "id = ?", (project_id,), values):
            await self.get_project(project_id)

    async def delete_project(self, project_id: int) -> None:
        cursor = await self._execute("DELETE FROM project WHERE id = ?", (project_id,))
        if not cursor.rowcount:
            raise NotFound(f"project {project_id} not found")

    async def project_role(self, project_id: int, user_id: int) -> str | None:
        row = await self._one_value(
            "SELECT role FROM project_user WHERE project_id = ? AND user_id = ?",
            (project_id, user_id))
        return row[0] if row else None

    # Rows that belong to a project: keys, repositories, inventories, environments, templates.

    async def create_row(self, table: str, project_id: int, values: dict[str, Any]) -> Row:
        _check_columns(table, values)
        row_id = await self._insert(table, {**values, "project_id": project_id})
        return await self.get_row(table, project_id, row_id)

    async def get_row(self, table: str, project_id: int, row_id: int) -> Row:
        _check_columns(table, {})
        return _found(await self._fetch_one(
            f"SELECT * FROM {table} WHERE id = ? AND project_id = ?", (row_id, project_id)),
            table.replace("_", " "), row_id)

    async def list_rows(self, table: str, project_id: int) -> list[Row]:
        _check_columns(table, {})
        return await self._fetch_all(
            f"SELECT * FROM {table} WHERE project_id = ? ORDER BY id", (project_id,))

    async def update_row(self, table: str, project_id: int, row_id: int,
                         values: dict[str, Any]) -> None:
        _check_columns(table, values)
        await self.get_row(table, project_id, row_id)
        await self._update(table, "id = ? AND project_id = ?", (row_id, project_id), values)

    async def delete_row(self, table: str, project_id: int, row_id: int) -> None:
        _check_columns(table, {})
        try:
            cursor = await self._execute(
                f"DELETE FROM {table} WHERE id = ? AND project_id = ?", (row_id, project_id))
        except sqlite3.IntegrityError:
            raise StoreError(f"{table.replace('_', ' ')} {row_id} is still in use") from None
        if not cursor.rowcount:
            raise NotFound(f"{table.replace('_', ' ')} {row_id} not found")

    # Environment secrets (values arrive encrypted; the store never sees plaintext).

    async def list_env_secrets(self, environment_id: int) -> list[Row]:
        return await self._fetch_all("SELECT * FROM environment_secret WHERE environment_id = ?"
                                     " ORDER BY id", (environment_id,))

    async def put_env_secret(self, environment_id: int, secret_id: int | None, name: str,
                             kind: str, value: str) -> None:
        """Create (secret_id None) or update one secret of an environment."""
        if secret_id is None:
            await self._insert("environment_secret", {"environment_id": environment_id,
                                                      "name": name, "type": kind,
                                                      "secret": value})
        elif not await self._update("environment_secret", "id = ? AND environment_id = ?",
                                    (secret_id, environment_id), {"secret": value}):
            raise NotFound(f"secret {secret_id} not found in environment {environment_id}")

    async def delete_env_secret(self, environment_id: int, secret_id: int) -> None:
        cursor = await self._execute(
            "DELETE FROM environment_secret WHERE id = ? AND environment_id = ?",
            (secret_id, environment_id))
        if not cursor.rowcount:
            raise NotFound(f"secret {secret_id} not found in environment {environment_id}")

    # Runners.

    async def create_runner(self, values: dict[str, Any]) -> Row:
        _check_keys(values, RUNNER_COLUMNS, "runner")
        runner_id = await self._insert("runner", {**values, "created": utcnow()})
        return await self.get_runner(runner_id)

    async def get_runner(self, runner_id: int) -> Row:
        return _found(await self._fetch_one("SELECT * FROM runner WHERE id = ?", (runner_id,)),
                      "runner", runner_id)

    async def find_runner_by_token_hash(self, token_hash: str) -> Row | None:
        return await self._fetch_one("SELECT * FROM runner WHERE token_hash = ?", (token_hash,))

    async def list_runners(self, project_id: int | None) -> list[Row]:
        if project_id is None:
            return await self._fetch_all("SELECT * FROM runner WHERE project_id IS NULL "
                                         "ORDER BY id")
        return await self._fetch_all("SELECT * FROM runner WHERE project_id = ? ORDER BY id",
                                     (project_id,))

    async def update_runner(self, runner_id: int, values: dict[str, Any]) -> None:
        _check_keys(values, RUNNER_COLUMNS, "runner")
        if not await self._update("runner", "id = ?", (runner_id,), values):
            raise NotFound(f"runner {runner_id} not found")

    async def delete_runner(self, runner_id: int) -> None:
        cursor = await self._execute("DELETE FROM runner WHERE id = ?", (runner_id,))
        if not cursor.rowcount:
            raise NotFound(f"runner {runner_id} not found")

    async def create_registration_token(self, token_hash: str, project_id: int | None,
                                        tags: str, expires: float) -> Row:
        token_id = await self._insert("registration_token", {
            "token_hash": token_hash, "project_id": project_id, "tags": tags,
            "expires": expires, "created": utcnow()})
        return _found(await self._fetch_one("SELECT * FROM registration_token WHERE id = ?",
                                            (token_id,)), "registration token", token_id)

    async def list_registration_tokens(self) -> list[Row]:
        return await self._fetch_all("SELECT * FROM registration_token ORDER BY id")

    async def find_registration_token(self, token_hash: str) -> Row | None:
        return await self._fetch_one("SELECT * FROM registration_token WHERE token_hash = ?",
                                     (token_hash,))

    async def claim_registration_token(self, token_hash: str, now: float) -> Row | None:
        # One conditional UPDATE: SQLite applies it whole, so only one claim sees used = 0.
        cursor = await self._execute(
            "UPDATE registration_token SET used = 1 "
            "WHERE token_hash = ? AND used = 0 AND expires > ?", (token_hash, now))
        return await self.find_registration_token(token_hash) if cursor.rowcount else None

    async def bind_registration_token(self, token_id: int, runner_id: int) -> None:
        await self._update("registration_token", "id = ?", (token_id,),
                           {"runner_id": runner_id})

    async def bound_tags(self, runner_id: int) -> list[str]:
        """Tags the one-time token a runner registered with binds it to."""
        rows = await self._fetch_all("SELECT tags FROM registration_token WHERE runner_id = ?",
                                     (runner_id,))
        return [tag for row in rows for tag in json.loads(row["tags"] or "[]")]

    async def delete_registration_token(self, token_id: int) -> None:
        cursor = await self._execute("DELETE FROM registration_token WHERE id = ?",
                                     (token_id,))
        if not cursor.rowcount:
            raise NotFound(f"registration token {token_id} not found")

    # Tasks.

    async def create_task(self, values: dict[str, Any]) -> Row:
        task_id = await self._insert("task", {**values, "created": utcnow()})
        return await self.get_task(task_id)

    async def get_task(self, task_id: int, project_id: int | None = None) -> Row:
        if project_id is None:
            row = await self._fetch_one("SELECT * FROM task WHERE id = ?", (task_id,))
        else:
            row = await self._fetch_one("SELECT * FROM task WHERE id = ? AND project_id = ?",
                                        (task_id, project_id))
        return _found(row, "task", task_id)

    async def list_tasks(self, project_id: int, limit: int | None = None) -> list[Row]:
        sql = "SELECT * FROM task WHERE project_id = ? ORDER BY id DESC"
        if limit is not None:
            return await self._fetch_all(sql + " LIMIT ?", (project_id, limit))
        return await self._fetch_all(sql, (project_id,))

    async def list_unfinished_tasks(self) -> list[Row]:
        placeholders = ", ".join("?" for _ in FINAL_STATUSES)
        return await self._fetch_all(
            f"SELECT * FROM task WHERE status NOT IN ({placeholders}) ORDER BY id",
            tuple(FINAL_STATUSES))

    async def update_task(self, task_id: int, values: dict[str, Any]) -> None:
        _check_keys(values, TASK_COLUMNS, "task")
        if not await self._update("task", "id = ?", (task_id,), values):
            raise NotFound(f"task {task_id} not found")

    async def delete_task(self, task_id: int, project_id: int) -> None:
        cursor = await self._execute("DELETE FROM task WHERE id = ? AND project_id = ?",
                                     (task_id, project_id))
        if not cursor.rowcount:
            raise NotFound(f"task {task_id} not found")

    async def write_output(self, chunks: Sequence[OutputChunk],
                           task_updates: Iterable[tuple[int, dict[str, Any]]] = ()) -> None:
        """Store output chunks and task changes in one transaction (one fsync per batch)."""
        async with self._write_lock:
            await self._write_batch(chunks, task_updates)

    async def _write_batch(self, chunks: Sequence[OutputChunk],
                           task_updates: Iterable[tuple[int, dict[str, Any]]]) -> None:
        db = self.db
        await db.execute("BEGIN")
        try:
            if chunks:
                chunks = await self._new_chunks(chunks)
            if chunks:
                await db.executemany(
                    "INSERT OR IGNORE INTO task_output (task_id, seq, time, stream, data) "
                    "VALUES (?, ?, ?, ?, ?)", chunks)
                last: dict[int, tuple[int, int]] = {}
                for task_id, seq, _time, _stream, data in chunks:
                    prev_seq, size = last.get(task_id, (0, 0))
                    last[task_id] = (max(prev_seq, seq), size + len(data))
                await db.executemany(
                    "UPDATE task SET last_seq = MAX(last_seq, ?), output_bytes = output_bytes + ?"
                    " WHERE id = ?", [(seq, size, tid) for tid, (seq, size) in last.items()])
            for task_id, values in task_updates:
                _check_keys(values, TASK_COLUMNS, "task")
                assignments = ", ".join(f"{column} = ?" for column in values)
                await db.execute(f"UPDATE task SET {assignments} WHERE id = ?",
                                 (*values.values(), task_id))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def _new_chunks(self, chunks: Sequence[OutputChunk]) -> list[OutputChunk]:
        """Drop chunks already stored (a resend): seqs of a task are stored in order, so
        anything at or below the task's last_seq is a duplicate."""
        task_ids = sorted({chunk[0] for chunk in chunks})
        marks = ", ".join("?" for _ in task_ids)
        rows = await self.db.execute_fetchall(
            f"SELECT id, last_seq FROM task WHERE id IN ({marks})", task_ids)
        stored = {row[0]: row[1] for row in rows}
        return [chunk for chunk in chunks if chunk[1] > stored.get(chunk[0], 0)]

    async def read_output(self, task_id: int, after_seq: int = 0,
                          limit: int = -1) -> list[Row]:
        return await self._fetch_all(
            "SELECT seq, time, stream, data FROM task_output WHERE task_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?", (task_id, after_seq, limit))


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
