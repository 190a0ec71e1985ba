"""The storage interface the rest of the hub codes against.

Rows travel as plain dicts of column -> value. SQLite is the one backend today; the interface
is what a PostgreSQL backend serving several hubs will implement.
"""

import abc
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from hub.errors import CONFIGURATION_EXIT, HubError

Row = dict[str, Any]


class OutputChunk(NamedTuple):
    """One output frame as stored (a tuple, so it goes to executemany as it is)."""

    task_id: int
    seq: int
    time: float
    stream: str
    data: str


class TaskUpdate(NamedTuple):
    """Columns of a task to change, stored in the same transaction as output."""

    task_id: int
    values: dict[str, Any]

FINAL_STATUSES = frozenset({"success", "error", "stopped"})


def utcnow() -> str:
    """Timestamps as Semaphore writes them: ISO 8601, UTC, with a Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def decode_tags(raw: str | None) -> list[str]:
    """A `tags` column (a JSON list) as a list; anything else as no tags."""
    value = json.loads(raw or "[]")
    return [tag for tag in value if isinstance(tag, str)] if isinstance(value, list) else []


class StoreError(HubError):
    """A request the store cannot carry out (conflict, bad reference, unusable database)."""

    exit_code = CONFIGURATION_EXIT


class NotFound(StoreError):
    """The object asked for does not exist (or not in that project)."""


class Store(abc.ABC):
    @abc.abstractmethod
    async def open(self) -> None: ...
    @abc.abstractmethod
    async def close(self) -> None: ...
    @abc.abstractmethod
    async def probe_write(self) -> int:
        """Write to the database file for real (a committed write of the schema version it
        already has) and return that version; raises if the write fails."""
    @abc.abstractmethod
    async def runner_states(self) -> list[tuple[int, int | None, bool]]:
        """(id, project_id, active) of every registered runner, for the metrics."""

    # Users, sessions, API tokens.
    @abc.abstractmethod
    async def create_user(self, username: str, name: str, email: str, password_hash: str,
                          admin: bool = False) -> Row: ...
    @abc.abstractmethod
    async def get_user(self, user_id: int) -> Row: ...
    @abc.abstractmethod
    async def find_user_by_login(self, login: str) -> Row | None: ...
    @abc.abstractmethod
    async def list_users(self) -> list[Row]: ...
    @abc.abstractmethod
    async def create_session(self, user_id: int, token_hash: str, expires: float) -> None: ...
    @abc.abstractmethod
    async def find_session_user(self, token_hash: str, now: float) -> Row | None: ...
    @abc.abstractmethod
    async def delete_session(self, token_hash: str) -> None: ...
    @abc.abstractmethod
    async def delete_user_sessions(self, user_id: int, keep_token_hash: str = "") -> int:
        """End every session of the user but the one with `keep_token_hash`; how many."""
    @abc.abstractmethod
    async def create_api_token(self, user_id: int, token_id: str, token_hash: str) -> Row: ...
    @abc.abstractmethod
    async def list_api_tokens(self, user_id: int) -> list[Row]: ...
    @abc.abstractmethod
    async def find_api_token_user(self, token_hash: str) -> Row | None: ...
    @abc.abstractmethod
    async def expire_api_token(self, user_id: int, token_id: str) -> None: ...
    @abc.abstractmethod
    async def expire_user_api_tokens(self, user_id: int) -> int:
        """Revoke every API token of the user; how many were live."""

    @abc.abstractmethod
    async def update_user(self, user_id: int, values: dict[str, Any]) -> None: ...
    @abc.abstractmethod
    async def delete_user(self, user_id: int) -> None: ...

    # Projects.
    @abc.abstractmethod
    async def create_project(self, values: dict[str, Any], owner_id: int) -> Row: ...
    @abc.abstractmethod
    async def get_project(self, project_id: int) -> Row: ...
    @abc.abstractmethod
    async def list_projects(self, user_id: int | None) -> list[Row]: ...
    @abc.abstractmethod
    async def update_project(self, project_id: int, values: dict[str, Any]) -> None: ...
    @abc.abstractmethod
    async def delete_project(self, project_id: int) -> None: ...
    @abc.abstractmethod
    async def project_role(self, project_id: int, user_id: int) -> str | None: ...
    @abc.abstractmethod
    async def list_project_users(self, project_id: int) -> list[Row]: ...
    @abc.abstractmethod
    async def set_project_role(self, project_id: int, user_id: int, role: str) -> None: ...
    @abc.abstractmethod
    async def remove_project_user(self, project_id: int, user_id: int) -> None: ...

    # Rows that belong to a project (keys, repositories, inventory, environment, templates).
    @abc.abstractmethod
    async def create_row(self, table: str, project_id: int, values: dict[str, Any]) -> Row: ...
    @abc.abstractmethod
    async def get_row(self, table: str, project_id: int, row_id: int) -> Row: ...
    @abc.abstractmethod
    async def list_rows(self, table: str, project_id: int, sort: str = "",
                        descending: bool = False) -> list[Row]: ...
    @abc.abstractmethod
    async def update_row(self, table: str, project_id: int, row_id: int,
                         values: dict[str, Any]) -> None: ...
    @abc.abstractmethod
    async def delete_row(self, table: str, project_id: int, row_id: int) -> None: ...

    # Environment secrets (stored encrypted).
    @abc.abstractmethod
    async def list_env_secrets(self, environment_id: int) -> list[Row]: ...
    @abc.abstractmethod
    async def put_env_secret(self, environment_id: int, secret_id: int | None, name: str,
                             kind: str, value: str) -> None: ...
    @abc.abstractmethod
    async def delete_env_secret(self, environment_id: int, secret_id: int) -> None: ...
    @abc.abstractmethod
    async def environment_passwords(self) -> list[Row]:
        """{id, password} of every environment that has a vault password, all projects."""
    @abc.abstractmethod
    async def set_environment_password(self, environment_id: int, stored: str) -> None: ...

    # Runners.
    @abc.abstractmethod
    async def create_runner(self, values: dict[str, Any]) -> Row: ...
    @abc.abstractmethod
    async def get_runner(self, runner_id: int) -> Row: ...
    @abc.abstractmethod
    async def find_runner_by_token_hash(self, token_hash: str) -> Row | None: ...
    @abc.abstractmethod
    async def list_runners(self, project_id: int | None) -> list[Row]: ...
    @abc.abstractmethod
    async def update_runner(self, runner_id: int, values: dict[str, Any]) -> None: ...
    @abc.abstractmethod
    async def delete_runner(self, runner_id: int) -> None: ...
    @abc.abstractmethod
    async def list_all_runners(self) -> list[Row]: ...

    # Staged runner updates (hub/core/rollout.py).
    @abc.abstractmethod
    async def create_rollout(self, values: dict[str, Any]) -> Row: ...
    @abc.abstractmethod
    async def live_rollout(self) -> Row | None: ...
    @abc.abstractmethod
    async def last_rollout(self) -> Row | None: ...
    @abc.abstractmethod
    async def end_rollout(self, rollout_id: int, state: str, error: str = "") -> None: ...

    # One-time runner registration tokens.
    @abc.abstractmethod
    async def create_registration_token(self, token_hash: str, project_id: int | None,
                                        tags: str, expires: float) -> Row: ...
    @abc.abstractmethod
    async def list_registration_tokens(self) -> list[Row]: ...
    @abc.abstractmethod
    async def find_registration_token(self, token_hash: str) -> Row | None: ...
    @abc.abstractmethod
    async def claim_registration_token(self, token_hash: str, now: float) -> Row | None:
        """Mark the token used if it is unused and not expired at `now`, atomically: of two
        concurrent claims exactly one gets the row, the other None."""
    @abc.abstractmethod
    async def bind_registration_token(self, token_id: int, runner_id: int) -> None: ...
    @abc.abstractmethod
    async def delete_registration_token(self, token_id: int) -> None: ...

    # Integrations' webhook aliases (the public endpoint finds its integrations by one).
    @abc.abstractmethod
    async def find_integration_alias(self, alias: str) -> Row | None: ...

    # The audit trail (Semaphore's events), newest first.
    @abc.abstractmethod
    async def add_event(self, values: dict[str, Any]) -> None: ...
    @abc.abstractmethod
    async def list_events(self, project_ids: Sequence[int] | None,
                          limit: int | None = None) -> list[Row]:
        """Events of these projects (None: every event, with those of no project), newest
        first, at most `limit`."""

    # Tasks and their output.
    @abc.abstractmethod
    async def create_task(self, values: dict[str, Any],
                          event: Callable[[int], dict[str, Any]] | None = None) -> Row:
        """Store a new task; with `event` (the audit row, given the task's id) both commit
        in one transaction, so neither exists without the other."""
    @abc.abstractmethod
    async def get_task(self, task_id: int, project_id: int | None = None) -> Row: ...
    @abc.abstractmethod
    async def list_tasks(self, project_id: int, limit: int | None = None, sort: str = "",
                         descending: bool = True) -> list[Row]: ...
    @abc.abstractmethod
    async def list_unfinished_tasks(self) -> list[Row]: ...

    @abc.abstractmethod
    async def list_active_schedules(self) -> list[Row]: ...

    @abc.abstractmethod
    async def set_schedule_fire(self, schedule_id: int, due: str) -> None: ...
    @abc.abstractmethod
    async def end_schedule(self, schedule_id: int, delete: bool) -> None: ...
    @abc.abstractmethod
    async def update_task(self, task_id: int, values: dict[str, Any]) -> None: ...
    @abc.abstractmethod
    async def delete_task(self, task_id: int, project_id: int) -> None: ...
    @abc.abstractmethod
    async def write_output(self, chunks: Sequence[OutputChunk],
                           task_updates: Iterable[TaskUpdate] = ()) -> None:
        """Store output and task changes in one transaction. Each task's chunks come in seq
        order; a chunk at or below the task's last stored seq is a resend and is dropped."""
    @abc.abstractmethod
    async def read_output(self, task_id: int, after_seq: int = 0,
                          limit: int = -1) -> list[Row]:
        """Stored chunks with seq > after_seq, in seq order; at most `limit` (-1: all)."""

    # Runners' resource history (hub/core/metrics.py, hub/store/sqlite_metrics.py).
    @abc.abstractmethod
    async def write_metrics(self, raw: Sequence[tuple[int, int, bytes]],
                            minutes: Sequence[tuple[Any, ...]], rollups: Sequence[int],
                            prune: dict[str, int]) -> None:
        """One flush of closed minutes, hourly roll-ups and pruning, in one transaction."""
    @abc.abstractmethod
    async def last_rollup(self) -> int | None: ...
    @abc.abstractmethod
    async def read_raw_metrics(self, runner_id: int,
                               buckets: Sequence[int]) -> list[tuple[int, bytes]]: ...
    @abc.abstractmethod
    async def read_metrics(self, tier: str, runner_id: int,
                           buckets: Sequence[int]) -> list[Row]: ...
    @abc.abstractmethod
    async def delete_metrics(self, runner_id: int,
                             buckets: Mapping[str, Sequence[int]]) -> None: ...
