"""The SQLite store on a real file: migrations, CRUD scoping, output writes."""

import sqlite3

import pytest

from hub.store import NotFound, StoreError, open_store
from hub.store.base import OutputChunk
from hub.store.migrations import LATEST_VERSION


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "data" / "hub.sqlite")


@pytest.fixture
async def store(db_path):
    opened = await open_store(db_path)
    yield opened
    await opened.close()


@pytest.fixture
async def user(store):
    return await store.create_user("alice", "Alice", "alice@example.com", "hash")


@pytest.fixture
async def project(store, user):
    return await store.create_project({"name": "P"}, user["id"])


@pytest.fixture
async def template(store, project):
    return await store.create_row("template", project["id"], {"name": "t", "app": "bash"})


async def _task(store, project, template, status="waiting"):
    return await store.create_task({"project_id": project["id"],
                                    "template_id": template["id"], "status": status})


def _inspect(path: str, sql: str):
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchone()[0]


async def test_open_applies_migrations_in_wal_mode(db_path):
    store = await open_store(db_path)
    await store.close()
    assert _inspect(db_path, "PRAGMA user_version") == LATEST_VERSION
    assert _inspect(db_path, "PRAGMA journal_mode") == "wal"
    tables = {row[0] for row in sqlite3.connect(db_path).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"user", "project", "template", "runner", "task", "task_output"} <= tables


async def test_reopening_is_idempotent_and_keeps_data(db_path):
    store = await open_store(db_path)
    created = await store.create_user("bob", "Bob", "bob@example.com", "h")
    await store.close()
    for _ in range(2):
        store = await open_store(db_path)
        assert await store.get_user(created["id"]) == created
        assert [u["username"] for u in await store.list_users()] == ["bob"]
        await store.close()
    assert _inspect(db_path, "PRAGMA user_version") == LATEST_VERSION


async def test_database_from_a_newer_program_is_refused(db_path, tmp_path):
    (tmp_path / "data").mkdir()
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 5}")
    with pytest.raises(StoreError) as info:
        await open_store(db_path)
    assert "newer" in str(info.value)
    assert str(LATEST_VERSION + 5) in str(info.value)
    assert db_path in str(info.value)
    assert _inspect(db_path, "PRAGMA user_version") == LATEST_VERSION + 5  # left untouched


async def test_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"these are not the pages you are looking for\n" * 200)
    with pytest.raises(StoreError) as info:
        await open_store(str(path))
    assert str(path) in str(info.value)


async def test_users(store, user):
    assert user["username"] == "alice"
    assert user["admin"] == 0
    admin = await store.create_user("root", "Root", "root@example.com", "h", admin=True)
    assert admin["admin"] == 1
    assert await store.get_user(admin["id"]) == admin
    assert (await store.find_user_by_login("alice@example.com"))["id"] == user["id"]
    assert (await store.find_user_by_login("root"))["id"] == admin["id"]
    assert await store.find_user_by_login("nobody") is None
    assert [u["id"] for u in await store.list_users()] == [user["id"], admin["id"]]
    with pytest.raises(NotFound):
        await store.get_user(admin["id"] + 100)


@pytest.mark.parametrize(("username", "email", "column"), [
    ("alice", "other@example.com", "username"),
    ("other", "alice@example.com", "email"),
])
async def test_unique_user_fields(store, user, username, email, column):
    with pytest.raises(StoreError, match=f"{column} is already taken"):
        await store.create_user(username, "X", email, "h")
    assert len(await store.list_users()) == 1


async def test_projects(store, user, project):
    assert project["name"] == "P"
    assert await store.project_role(project["id"], user["id"]) == "owner"
    other = await store.create_user("carol", "Carol", "carol@example.com", "h")
    assert await store.project_role(project["id"], other["id"]) is None
    assert [p["id"] for p in await store.list_projects(user["id"])] == [project["id"]]
    assert await store.list_projects(other["id"]) == []
    assert [p["id"] for p in await store.list_projects(None)] == [project["id"]]
    await store.update_project(project["id"], {"name": "Renamed"})
    assert (await store.get_project(project["id"]))["name"] == "Renamed"
    await store.delete_project(project["id"])
    with pytest.raises(NotFound):
        await store.get_project(project["id"])


@pytest.mark.parametrize("operation", ["get", "update", "delete"])
async def test_missing_project_is_not_found(store, operation):
    calls = {"get": lambda: store.get_project(404),
             "update": lambda: store.update_project(404, {"name": "x"}),
             "delete": lambda: store.delete_project(404)}
    with pytest.raises(NotFound, match="404"):
        await calls[operation]()


async def test_project_rows_crud(store, project):
    pid = project["id"]
    key = await store.create_row("access_key", pid, {"name": "k", "type": "none"})
    repo = await store.create_row("repository", pid, {"name": "r", "git_url": "/src",
                                                      "ssh_key_id": key["id"]})
    assert repo["project_id"] == pid
    assert repo["git_branch"] == ""
    assert await store.get_row("repository", pid, repo["id"]) == repo
    await store.update_row("repository", pid, repo["id"], {"git_branch": "main"})
    assert (await store.get_row("repository", pid, repo["id"]))["git_branch"] == "main"
    second = await store.create_row("repository", pid, {"name": "r2", "git_url": "/src2"})
    assert [r["id"] for r in await store.list_rows("repository", pid)] == [repo["id"],
                                                                           second["id"]]
    with pytest.raises(StoreError, match="in use"):
        await store.delete_row("access_key", pid, key["id"])
    await store.delete_row("repository", pid, repo["id"])
    with pytest.raises(NotFound):
        await store.get_row("repository", pid, repo["id"])
    assert [r["id"] for r in await store.list_rows("repository", pid)] == [second["id"]]


@pytest.mark.parametrize("operation", ["get", "update", "delete"])
@pytest.mark.parametrize("whose", ["missing", "other_project"])
async def test_rows_are_scoped_to_their_project(store, user, project, operation, whose):
    other = await store.create_project({"name": "Other"}, user["id"])
    row = await store.create_row("inventory", project["id"], {"name": "inv"})
    row_id = row["id"] if whose == "other_project" else row["id"] + 100
    calls = {"get": lambda: store.get_row("inventory", other["id"], row_id),
             "update": lambda: store.update_row("inventory", other["id"], row_id,
                                                {"name": "stolen"}),
             "delete": lambda: store.delete_row("inventory", other["id"], row_id)}
    with pytest.raises(NotFound):
        await calls[operation]()
    assert await store.get_row("inventory", project["id"], row["id"]) == row


async def test_unknown_table_and_column_are_refused(store, project):
    with pytest.raises(StoreError, match="unknown table"):
        await store.create_row("user", project["id"], {"username": "x"})
    with pytest.raises(StoreError, match="project_id"):
        await store.create_row("access_key", project["id"], {"name": "k", "type": "none",
                                                             "project_id": 99})
    assert await store.list_rows("access_key", project["id"]) == []


async def test_write_output_stores_chunks_and_updates_tasks_together(store, project, template):
    first = await _task(store, project, template, "running")
    second = await _task(store, project, template, "running")
    await store.write_output(
        [OutputChunk(first["id"], 1, 1.0, "stdout", "one\n"),
         OutputChunk(second["id"], 1, 1.5, "stderr", "x"),
         OutputChunk(first["id"], 2, 2.0, "stderr", "two\n")],
        [(second["id"], {"status": "success", "exit_code": 0})])
    task = await store.get_task(first["id"])
    assert (task["last_seq"], task["output_bytes"], task["status"]) == (2, 8, "running")
    task = await store.get_task(second["id"])
    assert (task["last_seq"], task["output_bytes"], task["status"]) == (1, 1, "success")
    assert task["exit_code"] == 0
    assert await store.read_output(first["id"]) == [
        {"seq": 1, "time": 1.0, "stream": "stdout", "data": "one\n"},
        {"seq": 2, "time": 2.0, "stream": "stderr", "data": "two\n"}]


async def test_write_output_is_one_transaction(store, project, template):
    task = await _task(store, project, template, "running")
    with pytest.raises(StoreError):
        await store.write_output([OutputChunk(task["id"], 1, 1.0, "stdout", "lost\n")],
                                 [(task["id"], {"no_such_column": 1})])
    assert await store.read_output(task["id"]) == []
    row = await store.get_task(task["id"])
    assert (row["last_seq"], row["output_bytes"]) == (0, 0)
    await store.write_output([OutputChunk(task["id"], 1, 1.0, "stdout", "kept\n")])  # still usable
    assert [r["data"] for r in await store.read_output(task["id"])] == ["kept\n"]


async def test_repeated_seq_is_harmless(store, project, template):
    task = await _task(store, project, template, "running")
    await store.write_output([OutputChunk(task["id"], 1, 1.0, "stdout", "abc"),
                              OutputChunk(task["id"], 2, 2.0, "stdout", "defg")])
    await store.write_output([OutputChunk(task["id"], 1, 9.0, "stderr", "XYZ")])
    await store.write_output([OutputChunk(task["id"], 2, 9.0, "stdout", "defg"),
                              OutputChunk(task["id"], 2, 9.0, "stdout", "defg")])
    assert await store.read_output(task["id"]) == [
        {"seq": 1, "time": 1.0, "stream": "stdout", "data": "abc"},
        {"seq": 2, "time": 2.0, "stream": "stdout", "data": "defg"}]
    row = await store.get_task(task["id"])
    assert row["last_seq"] == 2
    assert row["output_bytes"] == 7  # what is stored, not what was sent


async def test_read_output_is_in_seq_order(store, project, template):
    task = await _task(store, project, template, "running")
    other = await _task(store, project, template, "running")
    # The store's contract: each task's chunks arrive in seq order (the hub accepts only the
    # next seq); anything at or below the last stored seq is a resend and is dropped.
    await store.write_output([OutputChunk(task["id"], 1, 1.0, "stdout", "a")])
    await store.write_output([OutputChunk(other["id"], 1, 0.0, "stdout", "other"),
                              OutputChunk(task["id"], 2, 2.0, "stdout", "b")])
    await store.write_output([OutputChunk(task["id"], 3, 3.0, "stdout", "c"),
                              OutputChunk(task["id"], 2, 2.0, "stdout", "b")])
    assert [r["seq"] for r in await store.read_output(task["id"])] == [1, 2, 3]
    assert "".join(r["data"] for r in await store.read_output(task["id"])) == "abc"
    assert (await store.get_task(task["id"]))["last_seq"] == 3
    assert await store.read_output(other["id"] + 100) == []


async def test_list_unfinished_tasks(store, project, template):
    statuses = ["waiting", "success", "starting", "error", "running", "stopped", "waiting"]
    tasks = [await _task(store, project, template, status) for status in statuses]
    unfinished = await store.list_unfinished_tasks()
    assert [t["id"] for t in unfinished] == [tasks[i]["id"] for i in (0, 2, 4, 6)]
    await store.update_task(tasks[4]["id"], {"status": "success"})
    assert [t["id"] for t in await store.list_unfinished_tasks()] == [
        tasks[i]["id"] for i in (0, 2, 6)]


async def test_tasks_are_scoped_and_missing_ones_not_found(store, user, project, template):
    task = await _task(store, project, template)
    other = await store.create_project({"name": "Other"}, user["id"])
    assert (await store.get_task(task["id"], project["id"]))["id"] == task["id"]
    with pytest.raises(NotFound):
        await store.get_task(task["id"], other["id"])
    with pytest.raises(NotFound):
        await store.delete_task(task["id"], other["id"])
    with pytest.raises(NotFound):
        await store.update_task(task["id"] + 100, {"status": "error"})
    await store.delete_task(task["id"], project["id"])
    with pytest.raises(NotFound):
        await store.get_task(task["id"])


async def test_a_failed_statement_rolls_the_whole_output_batch_back(store, project, template):
    task = await _task(store, project, template, "running")
    with pytest.raises(sqlite3.IntegrityError):  # status is NOT NULL: fails inside SQLite
        await store.write_output([OutputChunk(task["id"], 1, 1.0, "stdout", "lost\n")],
                                 [(task["id"], {"status": None})])
    assert await store.read_output(task["id"]) == []
    assert (await store.get_task(task["id"]))["status"] == "running"


async def test_a_task_and_its_event_are_stored_together_or_not_at_all(store, db_path, project,
                                                                    template):
    values = {"project_id": project["id"], "template_id": template["id"], "status": "waiting"}
    with pytest.raises(StoreError, match="no_such_column"):
        await store.create_task(values, lambda task_id: {"object_type": "task",
                                                         "no_such_column": task_id})
    assert _inspect(db_path, "SELECT count(*) FROM task") == 0
    with pytest.raises(StoreError, match="referenced object"):  # a project that is not there
        await store.create_task(values, lambda task_id: {
            "object_type": "task", "object_id": task_id, "project_id": 999,
            "description": "x"})
    assert _inspect(db_path, "SELECT count(*) FROM task") == 0

    row = await store.create_task(values, lambda task_id: {
        "object_type": "task", "object_id": task_id, "project_id": project["id"],
        "description": f"Task ID {task_id} queued for running"})
    assert row["status"] == "waiting" and row["created"]
    events = await store.list_events([project["id"]])
    assert [(e["object_id"], e["description"]) for e in events] == [
        (row["id"], f"Task ID {row['id']} queued for running")]
    assert events[0]["created"] == row["created"]


async def test_point_reads_see_each_committed_write_at_once(store, user, project, template):
    # They are answered by a second connection: a write through the first is seen by the
    # very next read, never a stale copy (a deleted session is refused at once).
    await store.create_session(user["id"], "hash-1", 4e9)
    assert (await store.find_session_user("hash-1", 1.0))["id"] == user["id"]
    await store.delete_session("hash-1")
    assert await store.find_session_user("hash-1", 1.0) is None
    await store.update_project(project["id"], {"name": "renamed"})
    assert (await store.get_project(project["id"]))["name"] == "renamed"
    await store.update_row("template", project["id"], template["id"], {"playbook": "b.sh"})
    assert (await store.get_row("template", project["id"], template["id"]))["playbook"] == "b.sh"
    await store.delete_row("template", project["id"], template["id"])
    with pytest.raises(NotFound):
        await store.get_row("template", project["id"], template["id"])


async def test_a_point_read_refused_by_a_busy_database_is_answered_by_the_other_path(
        store, project):
    # The loop-thread reader never sleeps in SQLite (busy_timeout 0). When SQLite refuses it
    # (a WAL reader is refused only in rare moments: recovery, a log being reset), the read
    # goes to the database thread, which waits for the lock like every other statement.
    # The refusal is injected: it cannot be provoked on demand in WAL mode.
    class Busy:
        def __init__(self, reader):
            self.reader, self.refused = reader, 0

        def execute(self, *args):
            self.refused += 1
            raise sqlite3.OperationalError("database is locked")

        def close(self):
            self.reader.close()

    busy = store._loop_db = Busy(store._loop_db)
    assert (await store.get_project(project["id"]))["name"] == "P"
    assert await store.find_session_user("nobody", 1.0) is None
    assert busy.refused == 2


async def test_a_move_stored_directly_waits_for_the_older_one_still_queued(store, project,
                                                                          template):
    # `running` rides the output writer's queue; a stop stored directly right after must
    # not be overwritten when that queue commits later.
    from hub.core.output_writer import OutputWriter

    task = await _task(store, project, template, "starting")
    writer = OutputWriter(store)
    writer.start()
    try:
        committed: list[str] = []
        writer.submit_update(task["id"], {"status": "running"},
                             lambda: committed.append("running"))
        await writer.settle(task["id"])
        assert committed == ["running"]
        await store.update_task(task["id"], {"status": "stopping"})
        await writer.flush()
        assert (await store.get_task(task["id"]))["status"] == "stopping"
        await writer.settle(task["id"])  # nothing queued for it: returns at once
    finally:
        await writer.stop()


async def test_a_task_created_while_another_process_writes_waits_for_it(store, db_path,
                                                                       project, template):
    # The loop connection is refused at once (busy_timeout 0: the event loop never sleeps
    # in SQLite); the insert goes to the database thread, which waits for the lock.
    import asyncio
    import threading

    other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    other.execute("UPDATE project SET name = 'by another process'")
    threading.Timer(0.3, lambda: (other.execute("COMMIT"), other.close())).start()
    row = await asyncio.wait_for(_task(store, project, template), 10)
    assert row["status"] == "waiting"
    assert (await store.get_project(project["id"]))["name"] == "by another process"
    assert _inspect(db_path, "SELECT count(*) FROM task") == 1


async def test_the_log_is_checkpointed_though_small_writes_commit_on_the_loop(
        store, db_path, project, template):
    # The loop connection never checkpoints itself; without the hub's own checkpoints
    # these 3,000 tasks would leave a log of some 30 MB.
    import asyncio
    import os

    for _ in range(3000):
        await _task(store, project, template)
        await asyncio.sleep(0)  # as a hub's loop turns between requests
    await asyncio.sleep(0.2)  # the last checkpoint, started in the background
    wal = os.path.getsize(db_path + "-wal")
    assert wal < 8 * 2**20, f"write-ahead log of {wal} bytes: not checkpointed"
    assert _inspect(db_path, "SELECT count(*) FROM task") == 3000
