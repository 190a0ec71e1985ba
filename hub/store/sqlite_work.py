"""SQLite queries for work: project rows, secrets, runners, registration tokens, tasks and
their output."""

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hub.store.base import (
    FINAL_STATUSES,
    NotFound,
    OutputChunk,
    Row,
    StoreError,
    TaskUpdate,
    utcnow,
)
from hub.store.sorting import order_by
from hub.store.sqlite_base import (
    EVENT_COLUMNS,
    ROLLOUT_COLUMNS,
    RUNNER_COLUMNS,
    TASK_COLUMNS,
    SqliteConnection,
    _check_columns,
    _check_keys,
    _found,
    _integrity_message,
)

# The most an output batch may hold to be written on the event loop's thread (about 0.3 ms
# of SQLite); larger ones go to the database thread.
SMALL_BATCH_ROWS = 32
SMALL_BATCH_CHARS = 64 * 1024


class WorkQueries(SqliteConnection):
    # Rows that belong to a project: keys, repositories, inventories, environments, templates.

    async def create_row(self, table: str, project_id: int, values: dict[str, Any]) -> Row:
        _check_columns(table, values)
        return await self._insert_returning(table, {**values, "project_id": project_id})

    async def get_row(self, table: str, project_id: int, row_id: int) -> Row:
        _check_columns(table, {})
        return _found(await self._point(
            f"SELECT * FROM {table} WHERE id = ? AND project_id = ?", (row_id, project_id)),
            table.replace("_", " "), row_id)

    async def list_rows(self, table: str, project_id: int, sort: str = "",
                        descending: bool = False) -> list[Row]:
        _check_columns(table, {})
        return await self._fetch_all(
            f"SELECT * FROM {table} WHERE project_id = ? {order_by(table, sort, descending)}",
            (project_id,))

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

    # Environments' vault passwords (stored encrypted, like the secrets).

    async def environment_passwords(self) -> list[Row]:
        return await self._fetch_all(
            "SELECT id, password FROM environment WHERE password != '' ORDER BY id")

    async def set_environment_password(self, environment_id: int, stored: str) -> None:
        await self._update("environment", "id = ?", (environment_id,), {"password": stored})

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

    async def runner_states(self) -> list[tuple[int, int | None, bool]]:
        rows = await self.db.execute_fetchall("SELECT id, project_id, active FROM runner")
        return [(row[0], row[1], bool(row[2])) for row in rows]

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

    async def list_all_runners(self) -> list[Row]:
        return await self._fetch_all("SELECT * FROM runner ORDER BY id")

    # Staged runner updates.

    async def create_rollout(self, values: dict[str, Any]) -> Row:
        _check_keys(values, ROLLOUT_COLUMNS, "runner_rollout")
        return await self._insert_returning("runner_rollout", {**values, "created": utcnow()})

    async def live_rollout(self) -> Row | None:
        return await self._fetch_one("SELECT * FROM runner_rollout WHERE state = 'running' "
                                     "ORDER BY id DESC LIMIT 1")

    async def last_rollout(self) -> Row | None:
        return await self._fetch_one("SELECT * FROM runner_rollout ORDER BY id DESC LIMIT 1")

    async def end_rollout(self, rollout_id: int, state: str, error: str = "") -> None:
        await self._update("runner_rollout", "id = ? AND state = 'running'", (rollout_id,),
                           {"state": state, "error": error, "ended": utcnow()})

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

    async def delete_registration_token(self, token_id: int) -> None:
        cursor = await self._execute("DELETE FROM registration_token WHERE id = ?",
                                     (token_id,))
        if not cursor.rowcount:
            raise NotFound(f"registration token {token_id} not found")

    # The audit trail.

    async def find_integration_alias(self, alias: str) -> Row | None:
        return await self._fetch_one("SELECT * FROM integration_alias WHERE alias = ?",
                                     (alias,))

    async def add_event(self, values: dict[str, Any]) -> None:
        _check_keys(values, EVENT_COLUMNS, "event")
        await self._insert("event", {"created": utcnow(), **values})

    async def list_events(self, project_ids: Sequence[int] | None,
                          limit: int | None = None) -> list[Row]:
        where = ""
        params: tuple[Any, ...] = ()
        if project_ids is not None:
            if not project_ids:
                return []
            where = f"WHERE project_id IN ({', '.join('?' for _ in project_ids)})"
            params = tuple(project_ids)
        tail = " LIMIT ?" if limit is not None else ""
        return await self._fetch_all(
            f"SELECT * FROM event {where} ORDER BY id DESC{tail}",
            params + ((limit,) if limit is not None else ()))

    # Tasks.

    async def create_task(self, values: dict[str, Any],
                          event: Callable[[int], dict[str, Any]] | None = None) -> Row:
        task = {**values, "created": utcnow()}
        insert_task = (f"INSERT INTO task ({', '.join(task)}) "
                       f"VALUES ({', '.join('?' for _ in task)}) RETURNING *")

        def insert(conn: sqlite3.Connection) -> Row:
            row = dict(conn.execute(insert_task, tuple(task.values())).fetchone())
            if event is not None:
                values = {"created": task["created"], **event(row["id"])}
                _check_keys(values, EVENT_COLUMNS, "event")
                conn.execute(f"INSERT INTO event ({', '.join(values)}) "
                             f"VALUES ({', '.join('?' for _ in values)})",
                             tuple(values.values()))
            return row

        try:
            return await self._small_transaction(insert)
        except sqlite3.IntegrityError as exc:
            raise StoreError(_integrity_message(exc)) from None

    async def get_task(self, task_id: int, project_id: int | None = None) -> Row:
        if project_id is None:
            row = await self._point("SELECT * FROM task WHERE id = ?", (task_id,))
        else:
            row = await self._point("SELECT * FROM task WHERE id = ? AND project_id = ?",
                                    (task_id, project_id))
        return _found(row, "task", task_id)

    async def list_tasks(self, project_id: int, limit: int | None = None, sort: str = "",
                         descending: bool = True) -> list[Row]:
        sql = f"SELECT * FROM task WHERE project_id = ? {order_by('task', sort, descending)}"
        if limit is not None:
            return await self._fetch_all(sql + " LIMIT ?", (project_id, limit))
        return await self._fetch_all(sql, (project_id,))

    async def list_unfinished_tasks(self) -> list[Row]:
        placeholders = ", ".join("?" for _ in FINAL_STATUSES)
        return await self._fetch_all(
            f"SELECT * FROM task WHERE status NOT IN ({placeholders}) ORDER BY id",
            tuple(FINAL_STATUSES))

    async def list_active_schedules(self) -> list[Row]:
        """Every active schedule of every project (the scheduler's round)."""
        return await self._fetch_all("SELECT * FROM schedule WHERE active = 1 ORDER BY id")

    async def set_schedule_fire(self, schedule_id: int, due: str) -> None:
        await self._update("schedule", "id = ?", (schedule_id,), {"last_fire": due})

    async def end_schedule(self, schedule_id: int, delete: bool) -> None:
        """A run-once schedule that has fired: switched off, or deleted if it asked to be."""
        if delete:
            await self._execute("DELETE FROM schedule WHERE id = ?", (schedule_id,))
        else:
            await self._update("schedule", "id = ?", (schedule_id,), {"active": 0})

    async def update_task(self, task_id: int, values: dict[str, Any]) -> None:
        _check_keys(values, TASK_COLUMNS, "task")
        if not values:
            return
        assignments = ", ".join(f"{column} = ?" for column in values)
        # One row by its key: on the loop connection (a task's moves are the hot path).
        changed = await self._small_transaction(lambda conn: conn.execute(
            f"UPDATE task SET {assignments} WHERE id = ?", (*values.values(), task_id),
        ).rowcount)
        if not changed:
            raise NotFound(f"task {task_id} not found")

    async def delete_task(self, task_id: int, project_id: int) -> None:
        cursor = await self._execute("DELETE FROM task WHERE id = ? AND project_id = ?",
                                     (task_id, project_id))
        if not cursor.rowcount:
            raise NotFound(f"task {task_id} not found")

    async def write_output(self, chunks: Sequence[OutputChunk],
                           task_updates: Iterable[TaskUpdate] = ()) -> None:
        """Store output chunks and task changes in one transaction: one hand-over to the
        database thread for the whole batch, whatever its size."""
        updates = list(task_updates)
        for _, values in updates:
            _check_keys(values, TASK_COLUMNS, "task")
        # A small batch (a trivial task's output and its end, a few lines of a long one)
        # costs SQLite less than handing it to the database thread; a large one would hold
        # the event loop, so it goes there.
        small = (len(chunks) + len(updates) <= SMALL_BATCH_ROWS
                 and sum(len(chunk.data) for chunk in chunks) <= SMALL_BATCH_CHARS)
        write = self._small_transaction if small else self._in_one_transaction
        await write(lambda conn: _write_batch(conn, chunks, updates))

    async def read_output(self, task_id: int, after_seq: int = 0,
                          limit: int = -1) -> list[Row]:
        return await self._fetch_all(
            "SELECT seq, time, stream, data FROM task_output WHERE task_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?", (task_id, after_seq, limit))


def _write_batch(conn: sqlite3.Connection, chunks: Sequence[OutputChunk],
                 updates: list[TaskUpdate]) -> None:
    """The output writer's batch, on the database thread inside its transaction."""
    if chunks:
        chunks = _new_chunks(conn, chunks)
    if chunks:
        conn.executemany("INSERT OR IGNORE INTO task_output (task_id, seq, time, stream, data) "
                         "VALUES (?, ?, ?, ?, ?)", chunks)
        last: dict[int, tuple[int, int]] = {}
        for chunk in chunks:
            prev_seq, size = last.get(chunk.task_id, (0, 0))
            last[chunk.task_id] = (max(prev_seq, chunk.seq), size + len(chunk.data))
        conn.executemany(
            "UPDATE task SET last_seq = MAX(last_seq, ?), output_bytes = output_bytes + ?"
            " WHERE id = ?", [(seq, size, tid) for tid, (seq, size) in last.items()])
    for task_id, values in updates:
        assignments = ", ".join(f"{column} = ?" for column in values)
        conn.execute(f"UPDATE task SET {assignments} WHERE id = ?", (*values.values(), task_id))


def _new_chunks(conn: sqlite3.Connection,
                chunks: Sequence[OutputChunk]) -> list[OutputChunk]:
    """Drop chunks already stored (a resend): seqs of a task are stored in order, so
    anything at or below the task's last_seq is a duplicate."""
    task_ids = sorted({chunk.task_id for chunk in chunks})
    marks = ", ".join("?" for _ in task_ids)
    stored = {row[0]: row[1] for row in conn.execute(
        f"SELECT id, last_seq FROM task WHERE id IN ({marks})", task_ids)}
    return [chunk for chunk in chunks if chunk.seq > stored.get(chunk.task_id, 0)]
