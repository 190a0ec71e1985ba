"""Accounts and project roles under attack, against a real hub: the environment vault
password, sessions and tokens after a password change, login lock-outs, login names that
would mean two users, and what each project role may do."""

import asyncio
import sqlite3

import aiohttp
import pytest

from hub.crypto import is_encrypted
from hub.ratelimit import Backoff
from hub.store.migrations import MIGRATIONS
from tests.hubkit import ADMIN_LOGIN, ADMIN_PASSWORD, Api, start_hub, write_script

LOGIN = "/api/auth/login"


async def make_user(api: Api, username: str, email: str | None = None) -> int:
    created = await api.ok("POST", "/api/users", {
        "name": username.title(), "username": username,
        "email": email or f"{username}@example.com", "password": f"{username}-password"}, 201)
    return created["id"]


def client_from(hub, address: str) -> Api:
    """A REST client whose requests come from `address` (any 127.x.y.z is this machine)."""
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                    connector=aiohttp.TCPConnector(local_addr=(address, 0)))
    hub.sessions.append(session)
    return Api(hub.base_url, session)


async def logged_in(hub, username: str, address: str = "127.0.0.1") -> Api:
    client = client_from(hub, address)
    await client.login(username, f"{username}-password")
    return client


async def try_login(client: Api, login: str, password: str) -> int:
    status, _ = await client.request("POST", LOGIN, {"auth": login, "password": password})
    return status


# A. The environment's vault password.


def stored_password(hub, environment_id: int) -> str:
    with sqlite3.connect(hub.config.database_path) as db:
        return db.execute("SELECT password FROM environment WHERE id = ?",
                          (environment_id,)).fetchone()[0]


async def test_vault_password_is_encrypted_and_shown_to_nobody(hub, api):
    pid = await api.project()
    guest = await make_user(api, "guest")
    await api.ok("POST", f"/api/project/{pid}/users", {"user_id": guest, "role": "guest"}, 204)
    path = f"/api/project/{pid}/environment"
    created = await api.ok("POST", path, {"name": "prod", "password": "vault-secret-1"}, 201)
    env = f"{path}/{created['id']}"
    assert created["password"] == ""
    stored = stored_password(hub, created["id"])
    assert is_encrypted(stored) and "vault-secret-1" not in stored
    assert hub.hub.cipher.decrypt(stored) == "vault-secret-1"

    reader = await logged_in(hub, "guest")
    for client in (api, reader):
        assert (await client.ok("GET", env))["password"] == ""
        assert [e["password"] for e in await client.ok("GET", path)] == [""]
    # Clients get it empty and send it back so: an empty one keeps the stored one...
    await api.ok("PUT", env, {"name": "prod-2", "password": ""}, 204)
    assert hub.hub.cipher.decrypt(stored_password(hub, created["id"])) == "vault-secret-1"
    await api.ok("PUT", env, {"name": "prod-2"}, 204)
    assert hub.hub.cipher.decrypt(stored_password(hub, created["id"])) == "vault-secret-1"
    # ...and a new one replaces it, encrypted again.
    await api.ok("PUT", env, {"name": "prod-2", "password": "vault-secret-2"}, 204)
    assert hub.hub.cipher.decrypt(stored_password(hub, created["id"])) == "vault-secret-2"


async def test_vault_password_needs_access_key_encryption(tmp_path):
    hub = await start_hub(tmp_path, access_key_encryption="")
    try:
        api = await hub.api()
        pid = await api.project()
        status, body = await api.request("POST", f"/api/project/{pid}/environment",
                                         {"name": "e", "password": "vault-secret-1"})
        assert status == 400 and "access_key_encryption" in body["error"]
        await api.ok("POST", f"/api/project/{pid}/environment", {"name": "e"}, 201)
    finally:
        await hub.close()


def old_database_with_a_clear_vault_password(path) -> None:
    """A database as the hub before encrypted vault passwords left it (schema 3)."""
    with sqlite3.connect(path) as db:
        for migration in MIGRATIONS[:3]:
            db.executescript(migration)
        db.executescript("""
            PRAGMA user_version = 3;
            INSERT INTO project (id, name, created) VALUES (1, 'old', '2024-01-01T00:00:00Z');
            INSERT INTO environment (id, project_id, name, password)
                VALUES (1, 1, 'prod', 'clear-vault-pw');
            INSERT INTO environment (id, project_id, name) VALUES (2, 1, 'none');""")


async def test_clear_vault_passwords_of_an_older_hub_are_encrypted_at_start(tmp_path):
    old_database_with_a_clear_vault_password(tmp_path / "hub.sqlite")
    hub = await start_hub(tmp_path)
    try:
        stored = stored_password(hub, 1)
        assert is_encrypted(stored) and hub.hub.cipher.decrypt(stored) == "clear-vault-pw"
        assert stored_password(hub, 2) == ""
        api = await hub.api()
        assert (await api.ok("GET", "/api/project/1/environment/1"))["password"] == ""
    finally:
        await hub.close()
    hub = await start_hub(tmp_path)  # a second start leaves sealed ones alone
    try:
        assert hub.hub.cipher.decrypt(stored_password(hub, 1)) == "clear-vault-pw"
    finally:
        await hub.close()


async def test_without_a_key_clear_vault_passwords_stay_but_are_never_shown(tmp_path):
    old_database_with_a_clear_vault_password(tmp_path / "hub.sqlite")
    hub = await start_hub(tmp_path, access_key_encryption="")
    try:
        assert stored_password(hub, 1) == "clear-vault-pw"
        api = await hub.api()
        assert (await api.ok("GET", "/api/project/1/environment/1"))["password"] == ""
    finally:
        await hub.close()


# B. A password change and the sessions and tokens made with the old one.


async def test_own_password_change_ends_other_sessions_and_can_revoke_tokens(hub, api):
    alice = await make_user(api, "alice")
    here, elsewhere = await logged_in(hub, "alice"), await logged_in(hub, "alice")
    token = (await here.ok("POST", "/api/user/tokens", status=201))["id"]
    script = client_from(hub, "127.0.0.1")
    bearer = {"Authorization": f"Bearer {token}"}

    await here.ok("POST", f"/api/users/{alice}/password", {"password": "new-password-1"}, 204)
    assert (await here.ok("GET", "/api/user"))["id"] == alice  # the session that changed it
    assert (await elsewhere.request("GET", "/api/user"))[0] == 401
    assert (await script.request("GET", "/api/user", headers=bearer))[0] == 200

    await here.ok("POST", f"/api/users/{alice}/password",
                  {"password": "new-password-2", "revoke_tokens": True}, 204)
    assert (await script.request("GET", "/api/user", headers=bearer))[0] == 401
    assert (await here.ok("GET", "/api/user"))["id"] == alice
    assert [t["expired"] for t in await here.ok("GET", "/api/user/tokens")] == [True]


async def test_password_change_by_api_token_ends_every_session(hub, api):
    alice = await make_user(api, "alice")
    browser = await logged_in(hub, "alice")
    token = (await browser.ok("POST", "/api/user/tokens", status=201))["id"]
    script = client_from(hub, "127.0.0.1")
    status, _ = await script.request("POST", f"/api/users/{alice}/password",
                                     {"password": "new-password-1"},
                                     headers={"Authorization": f"Bearer {token}"})
    assert status == 204
    assert (await browser.request("GET", "/api/user"))[0] == 401


async def test_admin_reset_ends_all_the_users_sessions(hub, api):
    alice = await make_user(api, "alice")
    first, second = await logged_in(hub, "alice"), await logged_in(hub, "alice")
    token = (await first.ok("POST", "/api/user/tokens", status=201))["id"]
    await api.ok("POST", f"/api/users/{alice}/password", {"password": "reset-password"}, 204)
    for client in (first, second):
        assert (await client.request("GET", "/api/user"))[0] == 401
    assert (await api.ok("GET", "/api/user"))["username"] == ADMIN_LOGIN  # the admin's stays
    script = client_from(hub, "127.0.0.1")
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await script.request("GET", "/api/user", headers=bearer))[0] == 200
    await api.ok("POST", f"/api/users/{alice}/password",
                 {"password": "reset-password-2", "revoke_tokens": True}, 204)
    assert (await script.request("GET", "/api/user", headers=bearer))[0] == 401
    status, body = await api.request("POST", f"/api/users/{alice}/password",
                                     {"password": "x", "revoke_tokens": True})
    assert status == 400 and "password" in body["error"]


# C. Login lock-outs.


async def test_guessing_from_one_address_does_not_lock_the_user_out_elsewhere(hub, api):
    await make_user(api, "alice")
    attacker = client_from(hub, "127.0.0.2")
    for _ in range(5):
        assert await try_login(attacker, "alice", "guess") == 401
    status, body = await attacker.request("POST", LOGIN,
                                          {"auth": "alice", "password": "alice-password"})
    assert status == 429 and "too many login attempts" in body["error"]
    # Her email names the same account: no fresh count by switching to it.
    assert await try_login(attacker, "alice@example.com", "guess") == 429
    # Alice, from her own address, is not locked out.
    assert await try_login(client_from(hub, "127.0.0.1"), "alice", "alice-password") == 204


async def test_the_wait_doubles_with_each_further_failure():
    now = [0.0]
    backoff = Backoff(free=5, base=15, cap=900, forget=3600, clock=lambda: now[0])
    for _ in range(5):
        assert backoff.retry_after("k") == 0
        backoff.hit("k")
    waits = []
    for _ in range(8):
        waits.append(backoff.retry_after("k"))
        now[0] += waits[-1]
        assert backoff.retry_after("k") == 0
        backoff.hit("k")
    assert waits == [15, 30, 60, 120, 240, 480, 900, 900]
    backoff.forgive("k")  # an attempt counted up front that succeeded
    assert backoff.retry_after("k") == 900
    now[0] += 3600  # an hour without failures: it starts over
    assert backoff.retry_after("k") == 0
    backoff.hit("k")
    assert backoff.retry_after("k") == 0
    small = Backoff(free=1, base=1, cap=1, forget=10, clock=lambda: now[0], max_keys=4)
    for key in "abcdefgh":  # past max_keys the oldest keys go: memory stays bounded
        small.hit(key)
    assert len(small._failures) <= 4


async def test_distributed_guessing_meets_a_ceiling_that_known_addresses_pass(hub, api):
    await make_user(api, "alice")
    home = client_from(hub, "127.0.0.1")
    assert await try_login(home, "alice", "alice-password") == 204
    # 100 guesses from 20 addresses, each within its own allowance...
    attackers = [client_from(hub, f"127.0.1.{i}") for i in range(1, 21)]
    statuses = await asyncio.gather(*(try_login(client, "alice", f"guess{n}")
                                      for client in attackers for n in range(5)))
    assert statuses == [401] * 100
    # ...and the account takes no more guesses from anywhere new, even the right password...
    newcomer = client_from(hub, "127.0.2.1")
    status, body = await newcomer.request("POST", LOGIN,
                                          {"auth": "alice", "password": "alice-password"})
    assert status == 429 and "too many login attempts" in body["error"]
    # ...while Alice, where she has logged in before, still gets in.
    assert await try_login(client_from(hub, "127.0.0.1"), "alice", "alice-password") == 204
    # Other accounts are not affected.
    assert await try_login(newcomer, ADMIN_LOGIN, ADMIN_PASSWORD) == 204


# D. A login name must name one user.


@pytest.mark.parametrize(("body", "field"), [
    ({"username": "mallory", "email": "admin"}, "email"),
    ({"username": "mallory", "email": "ADMIN"}, "email"),
    ({"username": "admin@example.com", "email": "m@example.com"}, "username"),
])
async def test_a_new_users_login_names_cannot_be_someone_elses(api, body, field):
    status, answer = await api.request("POST", "/api/users", {
        "name": "Mallory", "password": "mallory-password", **body})
    assert status == 400 and f"field `{field}`" in answer["error"], answer
    assert [u["username"] for u in await api.ok("GET", "/api/users")] == [ADMIN_LOGIN]


async def test_a_user_cannot_take_someone_elses_login_name_later(hub, api):
    mallory = await make_user(api, "mallory")
    client = await logged_in(hub, "mallory")
    for body, field in (({"username": "mallory", "email": "admin"}, "email"),
                        ({"username": "admin@example.com", "email": "m@x.io"}, "username")):
        status, answer = await client.request("PUT", f"/api/users/{mallory}",
                                              {"name": "M", **body})
        assert status == 400 and f"field `{field}`" in answer["error"], answer
    # Nor can another user be given one that is hers.
    bob = await make_user(api, "bob")
    status, answer = await api.request("PUT", f"/api/users/{bob}", {
        "name": "Bob", "username": "bob", "email": "mallory"})
    assert status == 400 and "field `email`" in answer["error"]
    # "admin" still logs in as the admin, with the admin's password only.
    assert await try_login(client_from(hub, "127.0.0.3"), "admin", "mallory-password") == 401
    assert await try_login(client_from(hub, "127.0.0.3"), "admin", ADMIN_PASSWORD) == 204
    # Their own login names stay theirs to keep.
    await client.ok("PUT", f"/api/users/{mallory}", {
        "name": "M", "username": "mallory", "email": "mallory"}, 204)


async def test_a_username_wins_over_an_email_left_by_an_older_hub(hub, api):
    # Older hubs let mallory's email be "admin"; the database may still say so.
    await hub.hub.store.db.execute("DROP TRIGGER user_login_names_insert")
    await make_user(api, "mallory", email="admin")
    assert await try_login(client_from(hub, "127.0.0.3"), "admin", "mallory-password") == 401
    assert await try_login(client_from(hub, "127.0.0.3"), "admin", ADMIN_PASSWORD) == 204


# E. Project roles, as Semaphore has them.


async def project_with_every_role(hub, api) -> tuple[int, dict[str, Api], dict[str, int]]:
    pid = await api.project()
    clients, ids = {}, {}
    for role in ("owner", "manager", "task_runner", "guest"):
        ids[role] = await make_user(api, role.replace("_", ""))
        await api.ok("POST", f"/api/project/{pid}/users",
                     {"user_id": ids[role], "role": role}, 204)
        clients[role] = await logged_in(hub, role.replace("_", ""))
    return pid, clients, ids


async def test_only_owners_update_the_project_and_manage_members(hub, api):
    pid, clients, ids = await project_with_every_role(hub, api)
    outsider = await make_user(api, "outsider")
    for role in ("manager", "task_runner", "guest"):
        client = clients[role]
        for method, path, body in (
                ("PUT", f"/api/project/{pid}", {"name": "taken over"}),
                ("DELETE", f"/api/project/{pid}", None),
                ("POST", f"/api/project/{pid}/users", {"user_id": outsider, "role": "owner"}),
                ("PUT", f"/api/project/{pid}/users/{ids[role]}", {"role": "owner"}),
                ("DELETE", f"/api/project/{pid}/users/{ids['owner']}", None)):
            status, answer = await client.request(method, path, body)
            assert status == 403 and "owner" in answer["error"], (role, method, path, answer)
        # Every member sees the project and its members.
        assert (await client.ok("GET", f"/api/project/{pid}"))["name"] == "P"
        assert len(await client.ok("GET", f"/api/project/{pid}/users")) == 5
    owner = clients["owner"]
    await owner.ok("PUT", f"/api/project/{pid}", {"name": "renamed"}, 204)
    await owner.ok("PUT", f"/api/project/{pid}/users/{ids['guest']}", {"role": "manager"}, 204)
    status, answer = await owner.request("POST", f"/api/project/{pid}/users",
                                         {"user_id": ids["guest"], "role": "owner"})
    assert status == 409 and "field `user_id`" in answer["error"]
    # An owner (not an admin) can neither demote nor remove themselves...
    for method, body in (("PUT", {"role": "guest"}), ("DELETE", None)):
        status, answer = await owner.request(method, f"/api/project/{pid}/users/{ids['owner']}",
                                             body)
        assert status == 400 and "an owner cannot" in answer["error"], answer
    # ...an admin can.
    await api.ok("PUT", f"/api/project/{pid}/users/{ids['owner']}", {"role": "manager"}, 204)
    members = {m["username"]: m["role"] for m in await api.ok("GET", f"/api/project/{pid}/users")}
    assert members == {"admin": "owner", "owner": "manager", "manager": "manager",
                       "taskrunner": "task_runner", "guest": "manager"}
    await api.ok("DELETE", f"/api/project/{pid}", status=204)


async def test_what_managers_task_runners_and_guests_may_do(hub, api, tmp_path):
    pid, clients, _ = await project_with_every_role(hub, api)
    scripts = tmp_path / "s"
    write_script(scripts, "t.sh", "echo ran\n")
    await hub.start_runner(tmp_path)
    template = await api.template(pid, scripts, "t.sh")
    # Resources: owners and managers.
    for role, expected in (("owner", 201), ("manager", 201), ("task_runner", 403),
                           ("guest", 403)):
        status, _ = await clients[role].request("POST", f"/api/project/{pid}/keys",
                                                {"name": f"k-{role}", "type": "none"})
        assert status == expected, role
    # Tasks: task runners and up start them; a guest only looks.
    task_id = 0
    for role, expected in (("owner", 201), ("manager", 201), ("task_runner", 201),
                           ("guest", 403)):
        status, task = await clients[role].request("POST", f"/api/project/{pid}/tasks",
                                                   {"template_id": template})
        assert status == expected, role
        if status == 201:
            task_id = task["id"]
            await api.wait_status(pid, task_id)
    assert await clients["guest"].raw_output(pid, task_id) == "ran\n"
    # A task and its output are the project's history: only admins delete them.
    for role in ("owner", "manager", "task_runner", "guest"):
        status, answer = await clients[role].request("DELETE",
                                                     f"/api/project/{pid}/tasks/{task_id}")
        assert status == 403, (role, answer)
    await api.ok("DELETE", f"/api/project/{pid}/tasks/{task_id}", status=204)
