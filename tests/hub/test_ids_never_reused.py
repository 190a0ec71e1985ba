"""Ids are never reused: the newest task or project deleted, the next one still gets a new id.
On a fresh database, and on one the previous schema wrote, whose rows, foreign keys and
indexes the migration must keep."""

import re
import sqlite3
from pathlib import Path

import pytest

from hub.security import hash_password
from hub.store import StoreError, open_store
from hub.store.migrations import LATEST_VERSION, MIGRATIONS
from tests.hubkit import ADMIN_PASSWORD, start_hub, write_script

# The schema before ids were made permanent: the migrations up to the one that does it.
REBUILD = next(i for i, m in enumerate(MIGRATIONS) if callable(m))
OLD_SCHEMA = MIGRATIONS[:REBUILD]
ADMIN_HASH = hash_password(ADMIN_PASSWORD)


def tables_with_integer_ids(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return {name: sql for name, sql in db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table'")
            if re.search(r"\bid INTEGER PRIMARY KEY", sql)}


def dump(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table, as the database holds it."""
    with sqlite3.connect(path) as db:
        names = [n for (n,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        return {name: sorted(db.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr)
                for name in names}


def old_database(path: Path) -> None:
    """The previous schema with a bit of everything in it, including ids freed by deletes."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA foreign_keys = ON")
        for migration in OLD_SCHEMA:
            db.executescript(migration)
        db.executescript(f"""
            PRAGMA user_version = {len(OLD_SCHEMA)};
            INSERT INTO user (id, created, username, name, email, password, admin)
                VALUES (1, 't', 'admin', 'Admin', 'admin@example.com', '{ADMIN_HASH}', 1),
                       (2, 't', 'dev', 'Dev', 'dev@example.com', 'x', 0);
            INSERT INTO session VALUES ('s-hash', 2, 't', 1e12);
            INSERT INTO api_token (id, token_hash, user_id, created)
                VALUES ('abcd1234', 'h', 2, 't');
            INSERT INTO project (id, name, created) VALUES (1, 'P', 't'), (2, 'Q', 't');
            INSERT INTO project_user VALUES (1, 2, 'manager'), (2, 1, 'owner');
            INSERT INTO access_key (id, project_id, name, type, secret)
                VALUES (1, 1, 'k', 'login_password', 'enc:v1:zz');
            INSERT INTO repository (id, project_id, name, git_url, ssh_key_id)
                VALUES (1, 1, 'r', '/srv/r', 1);
            INSERT INTO inventory (id, project_id, name, ssh_key_id, repository_id)
                VALUES (1, 1, 'i', 1, 1);
            INSERT INTO environment (id, project_id, name) VALUES (1, 1, 'e');
            INSERT INTO environment_secret (id, environment_id, name, secret)
                VALUES (1, 1, 'TOKEN', 'enc:v1:yy');
            INSERT INTO template (id, project_id, name, app, repository_id, inventory_id,
                                  environment_id, timeout_sec)
                VALUES (1, 1, 't', 'bash', 1, 1, 1, 30);
            INSERT INTO runner (id, project_id, token_hash, created) VALUES (1, NULL, 'rh', 't');
            INSERT INTO registration_token (id, token_hash, expires, used, runner_id, created)
                VALUES (1, 'th', 1e12, 1, 1, 't');
            INSERT INTO task (id, project_id, template_id, user_id, status, runner_id,
                              last_seq, created)
                VALUES (1, 1, 1, 2, 'success', 1, 2, 't'), (2, 1, 1, 2, 'error', 1, 1, 't'),
                       (3, 1, 1, 2, 'success', 1, 0, 't');
            INSERT INTO task_output VALUES (1, 1, 1.0, 'out', 'one' || char(10)),
                                           (1, 2, 2.0, 'out', 'two' || char(10)),
                                           (2, 1, 3.0, 'err', 'boom' || char(10));
            DELETE FROM task WHERE id = 3;""")


async def test_a_fresh_database_has_only_ids_that_are_never_reused(tmp_path):
    store = await open_store(str(tmp_path / "fresh.sqlite"))
    await store.close()
    tables = tables_with_integer_ids(tmp_path / "fresh.sqlite")
    assert {"user", "project", "task", "runner", "environment_secret"} <= set(tables)
    for name, sql in tables.items():
        assert "AUTOINCREMENT" in sql, name


async def test_deleted_newest_task_and_project_ids_are_not_handed_out_again(hub, api, tmp_path):
    scripts = tmp_path / "s"
    write_script(scripts, "t.sh", "echo ran\n")
    await hub.start_runner(tmp_path)
    pid = await api.project()
    template = await api.template(pid, scripts, "t.sh")
    first = await api.run(pid, template)
    newest = await api.run(pid, template)
    for task_id in (first, newest):
        await api.wait_status(pid, task_id)
    await api.ok("DELETE", f"/api/project/{pid}/tasks/{newest}", status=204)
    again = await api.run(pid, template)
    assert again > newest
    await api.wait_status(pid, again)
    assert await api.raw_output(pid, again) == "ran\n"
    status, _ = await api.request("GET", f"/api/project/{pid}/tasks/{newest}")
    assert status == 404  # the deleted task's id means nothing now, not someone else's task

    gone = await api.project("gone")
    await api.ok("DELETE", f"/api/project/{gone}", status=204)
    assert await api.project("next") > gone
    assert (await api.request("GET", f"/api/project/{gone}"))[0] == 404


async def test_migration_keeps_rows_references_and_indexes_of_an_old_database(tmp_path):
    path = tmp_path / "hub.sqlite"
    old_database(path)
    before = dump(path)
    hub = await start_hub(tmp_path)  # migrates; the hub kit adds no admin (one exists)
    try:
        # Later migrations may add columns (ALTER TABLE puts them last): the old ones, and
        # every row, are kept as they were.
        after = dump(path)
        assert set(before) <= set(after)
        assert {name: [row[:len(before[name][0])] if before[name] else row
                       for row in after[name]] for name in before} == before
        for name, sql in tables_with_integer_ids(path).items():
            assert "AUTOINCREMENT" in sql, name
        with sqlite3.connect(path) as db:
            indexes = {n for (n,) in db.execute("SELECT name FROM sqlite_master "
                                                "WHERE type = 'index' AND sql IS NOT NULL")}
            assert {"task_project", "task_status"} <= indexes
            assert db.execute("PRAGMA foreign_key_check").fetchall() == []
            assert db.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        api = await hub.api()
        assert await api.raw_output(1, 1) == "one\ntwo\n"
        store = hub.hub.store
        # Foreign keys still act: a runner's deletion clears its tasks' runner_id, a
        # project's deletion takes its rows and their output with it.
        await store.delete_runner(1)
        assert (await store.get_task(1))["runner_id"] is None
        status, body = await api.request("DELETE", "/api/project/1/keys/1")
        assert status == 400 and "still in use" in body["error"]
        # The newest task, 2, deleted: the next task is 3, and never 2 again.
        await api.ok("DELETE", "/api/project/1/tasks/2", status=204)
        task = await store.create_task({"project_id": 1, "template_id": 1,
                                        "status": "waiting"})
        assert task["id"] == 3
        await api.ok("DELETE", "/api/project/1", status=204)
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT COUNT(*) FROM task_output").fetchone()[0] == 0
            assert db.execute("SELECT COUNT(*) FROM environment_secret").fetchone()[0] == 0
            assert db.execute("SELECT COUNT(*) FROM project_user").fetchone()[0] == 1
    finally:
        await hub.close()


async def test_a_migration_that_would_break_a_reference_is_not_applied(tmp_path):
    path = tmp_path / "hub.sqlite"
    with sqlite3.connect(path) as db:
        for migration in OLD_SCHEMA:
            db.executescript(migration)
        # A dangling reference (written with foreign keys off, as any tool may).
        db.executescript(f"""
            PRAGMA user_version = {len(OLD_SCHEMA)};
            INSERT INTO project (id, name, created) VALUES (1, 'P', 't');
            INSERT INTO template (id, project_id, name) VALUES (1, 1, 't');
            INSERT INTO task (id, project_id, template_id, status, created)
                VALUES (1, 1, 9, 'success', 't');""")
    with pytest.raises(StoreError) as info:
        await open_store(str(path))
    assert "broken reference" in str(info.value) and "task" in str(info.value)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(OLD_SCHEMA)
        assert "AUTOINCREMENT" not in tables_with_integer_ids(path)["task"]
        assert db.execute("SELECT COUNT(*) FROM task").fetchone()[0] == 1
