"""Versioned schema migrations, applied in order; the version lives in PRAGMA user_version.

Append new migrations; never edit one that has shipped. A database whose version is newer than
the last migration here was written by a newer hub, and this one refuses to touch it.

A migration is SQL, or an async function of the connection for work SQL alone cannot say.
Each runs in one transaction with foreign key enforcement off (SQLite's documented procedure
for rebuilding a table: with it on, DROP TABLE would cascade into the child tables), and
`PRAGMA foreign_key_check` must come back empty before it commits.

New tables keyed by an integer use `id INTEGER PRIMARY KEY AUTOINCREMENT`: without
AUTOINCREMENT SQLite hands the id of a deleted newest row to the next one, and an id that
once meant another task or project must never come back.
"""

import re
from collections.abc import Awaitable, Callable

import aiosqlite

from hub.store.base import StoreError

Migration = str | Callable[[aiosqlite.Connection], Awaitable[None]]

# `id INTEGER PRIMARY KEY` not yet followed by AUTOINCREMENT, as the first migrations wrote it.
_REUSABLE_ID = re.compile(r"\bid\s+INTEGER\s+PRIMARY\s+KEY\b(?!\s+AUTOINCREMENT)",
                          re.IGNORECASE)
_TABLE_NAME = re.compile(r'^CREATE\s+TABLE\s+("?)(\w+)\1', re.IGNORECASE)


async def _rebuild_with_autoincrement(db: aiosqlite.Connection) -> None:
    """Every table keyed by a reusable integer id, rebuilt with AUTOINCREMENT.

    The new definition is the table's own stored CREATE statement with AUTOINCREMENT added,
    so every column is kept, whichever migration added it. Steps 4-8 of SQLite's 12-step
    ALTER TABLE procedure (foreign keys are off, see the module docstring): create the new
    table, copy every row with its id, drop the old table, rename the new one into its
    place, recreate the old table's indexes and triggers. Child tables reference parents by
    name, so their foreign keys point at the rebuilt table once it has the old name.
    """
    tables = await db.execute_fetchall(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite_%' ORDER BY rowid")
    for name, sql in tables:
        if _REUSABLE_ID.search(sql):
            await _rebuild_table(db, name, sql)


async def _rebuild_table(db: aiosqlite.Connection, name: str, sql: str) -> None:
    new = f"{name}__autoincrement"
    create = _TABLE_NAME.sub(f'CREATE TABLE "{new}"',
                             _REUSABLE_ID.sub("id INTEGER PRIMARY KEY AUTOINCREMENT", sql, 1))
    if f'"{new}"' not in create:
        raise StoreError(f"cannot rebuild table {name}: unexpected definition {sql!r}")
    # Indexes made by UNIQUE and PRIMARY KEY constraints have no SQL: the new table makes
    # its own. The others are made again once the table has its name back.
    extras = [row[0] for row in await db.execute_fetchall(
        "SELECT sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND tbl_name = ? "
        "AND sql IS NOT NULL ORDER BY rowid", (name,))]
    columns = ", ".join(f'"{row[1]}"' for row in await db.execute_fetchall(
        f'PRAGMA table_info("{name}")'))
    await db.execute(create)
    await db.execute(f'INSERT INTO "{new}" ({columns}) SELECT {columns} FROM "{name}"')
    await db.execute(f'DROP TABLE "{name}"')
    await db.execute(f'ALTER TABLE "{new}" RENAME TO "{name}"')
    for statement in extras:
        await db.execute(statement)


MIGRATIONS: list[Migration] = [
    # 1: the first schema.
    """
    CREATE TABLE user (
        id INTEGER PRIMARY KEY,
        created TEXT NOT NULL,
        username TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        email TEXT NOT NULL UNIQUE,
        password TEXT NOT NULL,
        admin INTEGER NOT NULL DEFAULT 0,
        alert INTEGER NOT NULL DEFAULT 0,
        external INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE session (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES user(id) ON DELETE CASCADE,
        created TEXT NOT NULL,
        expires REAL NOT NULL
    );
    CREATE TABLE api_token (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        user_id INTEGER NOT NULL REFERENCES user(id) ON DELETE CASCADE,
        created TEXT NOT NULL,
        expired INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE project (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        created TEXT NOT NULL,
        alert INTEGER NOT NULL DEFAULT 0,
        alert_chat TEXT NOT NULL DEFAULT '',
        max_parallel_tasks INTEGER NOT NULL DEFAULT 0,
        type TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE project_user (
        project_id INTEGER NOT NULL REFERENCES project(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL REFERENCES user(id) ON DELETE CASCADE,
        role TEXT NOT NULL,
        PRIMARY KEY (project_id, user_id)
    );
    CREATE TABLE access_key (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL REFERENCES project(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        secret TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE repository (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL REFERENCES project(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        git_url TEXT NOT NULL,
        git_branch TEXT NOT NULL DEFAULT '',
        ssh_key_id INTEGER REFERENCES access_key(id)
    );
    CREATE TABLE inventory (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL REFERENCES project(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        type TEXT NOT NULL DEFAULT 'static',
        inventory TEXT NOT NULL DEFAULT '',
        ssh_key_id INTEGER REFERENCES access_key(id),
        become_key_id INTEGER REFERENCES access_key(id),
        repository_id INTEGER REFERENCES repository(id)
    );
    CREATE TABLE environment (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL REFERENCES project(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        password TEXT NOT NULL DEFAULT '',
        json TEXT NOT NULL DEFAULT '{}',
        env TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE template (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL REFERENCES project(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        app TEXT NOT NULL DEFAULT 'ansible',
        playbook TEXT NOT NULL DEFAULT '',
        arguments TEXT NOT NULL DEFAULT '[]',
        description TEXT NOT NULL DEFAULT '',
        git_branch TEXT NOT NULL DEFAULT '',
        repository_id INTEGER REFERENCES repository(id),
        inventory_id INTEGER REFERENCES inventory(id),
        environment_id INTEGER REFERENCES environment(id),
        allow_override_args_in_task INTEGER NOT NULL DEFAULT 0,
        type TEXT NOT NULL DEFAULT '',
        runner_tag TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE runner (
        id INTEGER PRIMARY KEY,
        project_id INTEGER REFERENCES project(id) ON DELETE CASCADE,
        name TEXT NOT NULL DEFAULT '',
        token_hash TEXT NOT NULL UNIQUE,
        active INTEGER NOT NULL DEFAULT 1,
        tags TEXT NOT NULL DEFAULT '[]',
        webhook TEXT NOT NULL DEFAULT '',
        max_parallel_tasks INTEGER NOT NULL DEFAULT 0,
        public_key TEXT NOT NULL DEFAULT '',
        platform TEXT NOT NULL DEFAULT '',
        version TEXT NOT NULL DEFAULT '',
        created TEXT NOT NULL,
        touched TEXT
    );
    CREATE TABLE task (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL REFERENCES project(id) ON DELETE CASCADE,
        template_id INTEGER NOT NULL REFERENCES template(id) ON DELETE CASCADE,
        user_id INTEGER REFERENCES user(id) ON DELETE SET NULL,
        status TEXT NOT NULL,
        status_message TEXT NOT NULL DEFAULT '',
        playbook TEXT NOT NULL DEFAULT '',
        environment TEXT NOT NULL DEFAULT '',
        arguments TEXT,
        git_branch TEXT NOT NULL DEFAULT '',
        message TEXT NOT NULL DEFAULT '',
        inventory_id INTEGER,
        params TEXT NOT NULL DEFAULT '{}',
        runner_id INTEGER REFERENCES runner(id) ON DELETE SET NULL,
        exit_code INTEGER,
        commit_hash TEXT NOT NULL DEFAULT '',
        commit_message TEXT NOT NULL DEFAULT '',
        last_seq INTEGER NOT NULL DEFAULT 0,
        output_bytes INTEGER NOT NULL DEFAULT 0,
        created TEXT NOT NULL,
        start TEXT,
        end TEXT
    );
    CREATE INDEX task_project ON task(project_id, id);
    CREATE INDEX task_status ON task(status) WHERE status NOT IN ('success', 'error', 'stopped');
    -- One row per output frame (a chunk of lines); lines are split when read.
    CREATE TABLE task_output (
        task_id INTEGER NOT NULL REFERENCES task(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        time REAL NOT NULL,
        stream TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (task_id, seq)
    ) WITHOUT ROWID;
    """,
    # 2: a per-template task timeout (seconds, 0: none), enforced by the runner.
    """
    ALTER TABLE template ADD COLUMN timeout_sec INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: one-time runner registration tokens, and environment secrets (encrypted).
    """
    CREATE TABLE registration_token (
        id INTEGER PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        project_id INTEGER REFERENCES project(id) ON DELETE CASCADE,
        tags TEXT NOT NULL DEFAULT '[]',
        expires REAL NOT NULL,
        used INTEGER NOT NULL DEFAULT 0,
        runner_id INTEGER REFERENCES runner(id) ON DELETE SET NULL,
        created TEXT NOT NULL
    );
    CREATE TABLE environment_secret (
        id INTEGER PRIMARY KEY,
        environment_id INTEGER NOT NULL REFERENCES environment(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        type TEXT NOT NULL DEFAULT 'env',
        secret TEXT NOT NULL,
        UNIQUE (environment_id, name, type)
    );
    """,
    # 4: whether a runner's tasks run as the runner's own user (its hello says so).
    """
    ALTER TABLE runner ADD COLUMN shared_identity INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: Semaphore's allow_override_branch_in_task: may a task choose its git branch.
    """
    ALTER TABLE template ADD COLUMN allow_override_branch_in_task INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: ids are never reused (every integer-keyed table rebuilt with AUTOINCREMENT; rows,
    # ids, foreign keys and indexes kept). Ids freed before this ran can still come back
    # once: SQLite starts each table's sequence at the largest id it holds now.
    _rebuild_with_autoincrement,
    # 7: nobody logs in as someone else. Login takes a username or an email, so a user's
    # email must not be another user's username, nor a username another user's email
    # (compared case-insensitively, stricter than the lookup itself). The hub's API and
    # `semaphore user add` both get the message as a 400 naming the field.
    "".join(f"""
    CREATE TRIGGER user_login_names_{when} AFTER {event} ON user BEGIN
        SELECT RAISE(ABORT, 'field `email`: another user logs in with it as their username')
        WHERE EXISTS (SELECT 1 FROM user AS other
                      WHERE other.id != NEW.id AND lower(other.username) = lower(NEW.email));
        SELECT RAISE(ABORT, 'field `username`: another user logs in with it as their email')
        WHERE EXISTS (SELECT 1 FROM user AS other
                      WHERE other.id != NEW.id AND lower(other.email) = lower(NEW.username));
    END;
    """ for when, event in (("insert", "INSERT"), ("update", "UPDATE OF username, email"))),
    # 8: Semaphore's template `vaults` (ansible vault passwords from access keys, or a vault
    # password script in the repository): a JSON list of {id, name, type, vault_key_id,
    # script}, checked by the API, resolved into the task's sealed secrets at dispatch.
    """
    ALTER TABLE template ADD COLUMN vaults TEXT NOT NULL DEFAULT '[]';
    """,
    # 9: staged runner updates. One rollout row per target an admin set (the newest not
    # ended is the live one); each runner's part in it: pending (to be told), updating
    # (told; draining, then restarting), updated (back as the target), failed (why).
    """
    CREATE TABLE runner_rollout (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        version TEXT NOT NULL,
        project_id INTEGER REFERENCES project(id) ON DELETE CASCADE,
        runner_id INTEGER REFERENCES runner(id) ON DELETE CASCADE,
        canary INTEGER NOT NULL,
        healthy_seconds REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'running',
        error TEXT NOT NULL DEFAULT '',
        created TEXT NOT NULL,
        ended TEXT
    );
    ALTER TABLE runner ADD COLUMN update_state TEXT NOT NULL DEFAULT '';
    ALTER TABLE runner ADD COLUMN update_target TEXT NOT NULL DEFAULT '';
    ALTER TABLE runner ADD COLUMN update_error TEXT NOT NULL DEFAULT '';
    ALTER TABLE runner ADD COLUMN update_wave INTEGER NOT NULL DEFAULT 0;
    """,
    # 10: Semaphore's schedules: a cron expression (or, type `run_at`, one time) that starts a
    # template. `last_fire` is the due time last handled; a task keeps the schedule and due
    # time that made it, unique together, so a fire is never made twice (even when the hub
    # stopped between creating the task and recording last_fire).
    """
    CREATE TABLE schedule (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project_id INTEGER NOT NULL REFERENCES project(id) ON DELETE CASCADE,
        template_id INTEGER NOT NULL REFERENCES template(id) ON DELETE CASCADE,
        name TEXT NOT NULL DEFAULT '',
        cron_format TEXT NOT NULL DEFAULT '',
        type TEXT NOT NULL DEFAULT '',
        run_at TEXT,
        delete_after_run INTEGER NOT NULL DEFAULT 0,
        active INTEGER NOT NULL DEFAULT 1,
        last_fire TEXT,
        created TEXT NOT NULL
    );
    ALTER TABLE task ADD COLUMN schedule_id INTEGER REFERENCES schedule(id) ON DELETE SET NULL;
    ALTER TABLE task ADD COLUMN schedule_due TEXT;
    CREATE UNIQUE INDEX task_schedule_due ON task(schedule_id, schedule_due)
        WHERE schedule_id IS NOT NULL;
    """,
    # 11: Semaphore's views: named, ordered groups of a project's templates. A template is
    # in at most one; deleting a view leaves its templates in none. (The table is not named
    # `view`, a word of SQL's own.)
    """
    CREATE TABLE project_view (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project_id INTEGER NOT NULL REFERENCES project(id) ON DELETE CASCADE,
        title TEXT NOT NULL,
        position INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX project_view_project ON project_view(project_id, position);
    ALTER TABLE template ADD COLUMN view_id INTEGER REFERENCES project_view(id)
        ON DELETE SET NULL;
    """,
    # 12: Semaphore's events, the audit trail: who created, changed, deleted or ran what.
    # The names (project, user, object) are copied in when the event is written, so the
    # trail still reads right after the project, user or object is gone; their ids become
    # NULL then (an admin still sees every event).
    """
    CREATE TABLE event (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project_id INTEGER REFERENCES project(id) ON DELETE SET NULL,
        user_id INTEGER REFERENCES user(id) ON DELETE SET NULL,
        integration_id INTEGER,
        object_id INTEGER,
        object_type TEXT NOT NULL,
        object_name TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL,
        project_name TEXT,
        username TEXT,
        created TEXT NOT NULL
    );
    CREATE INDEX event_project ON event(project_id, id);
    """,
    # 13: the rest of Semaphore's template: its survey (variables asked for at each run, a
    # JSON list), its task_params (per-app allow_override_* flags and defaults, a JSON
    # object), allow_parallel_tasks, suppress_success_alerts and the build/deploy fields
    # (autorun, start_version, build_template_id). A task's `secret` holds the values of
    # the survey's secret variables, encrypted by the hub's cipher, only until it ends
    # (Semaphore keeps them out of the task's JSON; so does the API here).
    """
    ALTER TABLE template ADD COLUMN survey_vars TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE template ADD COLUMN task_params TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE template ADD COLUMN allow_parallel_tasks INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE template ADD COLUMN suppress_success_alerts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE template ADD COLUMN autorun INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE template ADD COLUMN start_version TEXT;
    ALTER TABLE template ADD COLUMN build_template_id INTEGER REFERENCES template(id)
        ON DELETE SET NULL;
    ALTER TABLE task ADD COLUMN secret TEXT NOT NULL DEFAULT '';
    """,
    # 14: Semaphore's integrations: a webhook (POST /api/integrations/{alias}) starts a
    # template's task. Matchers decide whether a payload starts one, extract values carry
    # parts of it into the task. An alias with no integration is the project's own: it
    # serves every `searchable` integration of the project. A task keeps the integration
    # that started it (NULL once the integration is deleted: the task is history).
    # auth_secret_id has no ON DELETE: a key an integration checks signatures with cannot
    # be deleted from under it.
    """
    CREATE TABLE integration (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project_id INTEGER NOT NULL REFERENCES project(id) ON DELETE CASCADE,
        template_id INTEGER NOT NULL REFERENCES template(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        auth_method TEXT NOT NULL DEFAULT '',
        auth_secret_id INTEGER REFERENCES access_key(id),
        auth_header TEXT NOT NULL DEFAULT '',
        searchable INTEGER NOT NULL DEFAULT 0,
        task_params TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE integration_matcher (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project_id INTEGER NOT NULL REFERENCES project(id) ON DELETE CASCADE,
        integration_id INTEGER NOT NULL REFERENCES integration(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        match_type TEXT NOT NULL,
        method TEXT NOT NULL,
        body_data_type TEXT NOT NULL DEFAULT '',
        key TEXT NOT NULL DEFAULT '',
        value TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX integration_matcher_integration ON integration_matcher(integration_id);
    CREATE TABLE integration_extract_value (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project_id INTEGER NOT NULL REFERENCES project(id) ON DELETE CASCADE,
        integration_id INTEGER NOT NULL REFERENCES integration(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        value_source TEXT NOT NULL,
        body_data_type TEXT NOT NULL DEFAULT '',
        key TEXT NOT NULL DEFAULT '',
        variable TEXT NOT NULL,
        variable_type TEXT NOT NULL DEFAULT 'environment'
    );
    CREATE INDEX integration_extract_value_integration
        ON integration_extract_value(integration_id);
    CREATE TABLE integration_alias (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project_id INTEGER NOT NULL REFERENCES project(id) ON DELETE CASCADE,
        integration_id INTEGER REFERENCES integration(id) ON DELETE CASCADE,
        alias TEXT NOT NULL UNIQUE
    );
    ALTER TABLE task ADD COLUMN integration_id INTEGER REFERENCES integration(id)
        ON DELETE SET NULL;
    """,
    # 15: runners' resource history (hub/core/metrics.py): each closed minute's heartbeat
    # points packed in one blob (kept an hour), that minute's averages and extremes (a day),
    # and hourly ones rolled up from them (30 days). Keyed by time first: a flush appends
    # at the end and pruning cuts the front. No foreign key: a runner's rows go when it is
    # deleted (hub/api/runners.py), and runner ids are never reused (AUTOINCREMENT).
    """
    CREATE TABLE metric_raw (
        bucket INTEGER NOT NULL,
        runner_id INTEGER NOT NULL,
        points BLOB NOT NULL,
        PRIMARY KEY (bucket, runner_id)
    ) WITHOUT ROWID;
    """ + "".join(f"""
    CREATE TABLE {table} (
        bucket INTEGER NOT NULL,
        runner_id INTEGER NOT NULL,
        samples INTEGER NOT NULL,
        cpu_percent REAL NOT NULL, cpu_percent_max REAL NOT NULL,
        memory_used REAL NOT NULL, memory_used_max REAL NOT NULL,
        memory_total REAL NOT NULL,
        disk_free REAL NOT NULL, disk_free_min REAL NOT NULL,
        load1 REAL NOT NULL, load1_max REAL NOT NULL,
        running REAL NOT NULL, running_max REAL NOT NULL,
        PRIMARY KEY (bucket, runner_id)
    ) WITHOUT ROWID;
    """ for table in ("metric_1m", "metric_1h")),
]

LATEST_VERSION = len(MIGRATIONS)
