"""Hostile input thrown at a live hub, as an attacker would: bytes that are not UTF-8, numbers
past 64 bits, JSON nested without end (in bodies and in the JSON Semaphore keeps inside
string fields), broken encodings, bad header bytes. Each is a 400 naming the field (a 404 for
an id in a path that no row can have), never a 500, never a traceback, and at most a short
log line; the hub goes on serving. What is unexpected anyway is a JSON 500 and one line."""

import gzip
import json
import logging

import aiohttp
import pytest
import structlog

from tests.rawhttp import exchange, request

BIG = [2**63, 2**64 + 5, int("9" * 60)]
# A path id no row can have, and ones that are no integer at all.
PATH_OUT_OF_RANGE = [str(2**63), str(2**64 + 5), "9" * 5000, "-1", "0"]
PATH_NOT_INTEGER = ["1_0", "%D9%A3", "0x10", "1.0", "%201"]


def assert_clean_error(status: int, body, expected_status: int, *fragments: str) -> None:
    """The answer is JSON {"error": ...} with every fragment in it, and nothing more."""
    assert status == expected_status, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert "Traceback" not in body["error"] and "File \"" not in body["error"], body
    for fragment in fragments:
        assert fragment in body["error"], (fragment, body)
    assert len(body["error"]) < 400, body


@pytest.fixture
def quiet(caplog):
    """What the hub logged while the test ran: structlog events, and any stdlib record."""
    caplog.set_level(logging.WARNING)
    with structlog.testing.capture_logs() as events:
        yield events, caplog


async def _scene(api) -> dict:
    """A project with one of each resource, ids to aim at."""
    pid = await api.project()
    template = await api.ok("POST", f"/api/project/{pid}/templates",
                            {"name": "t", "app": "bash", "playbook": "x.sh"}, 201)
    return {"pid": pid, "template": template["id"]}


# Bodies that are not UTF-8.


@pytest.mark.parametrize(("path", "raw", "field", "times"), [
    ("/api/auth/login", b'{"auth": "ad\xffmin", "password": "x"}', "`auth`", 50),
    ("/api/auth/login", b'{"password": "x", "auth": "\xc3\x28"}', "`auth`", 50),
    # Registration counts failures per address (10 a minute): stay below.
    ("/api/internal/runners", b'{"registration_token": "\xfe\xff"}', "`registration_token`",
     5),
])
async def test_unauthenticated_bodies_that_are_not_utf8_are_400(hub, path, raw, field, times,
                                                                quiet):
    events, caplog = quiet
    client = await hub.api(login=False)
    for _ in range(times):  # what an attacker repeats: each costs no log at all
        status, body = await client.request("POST", path, raw=raw)
        assert_clean_error(status, body, 400, field, "not valid UTF-8")
    assert events == [] and caplog.records == [], (events, caplog.records)
    assert await client.request("GET", "/api/ping") == (200, "pong")


async def test_authenticated_bodies_that_are_not_utf8_name_the_field(hub, api):
    pid = (await _scene(api))["pid"]
    cases = [
        ("/api/projects", b'{"name": "\xc3\x28"}', "field `name`"),
        (f"/api/project/{pid}/environment",
         b'{"name": "e", "secrets": [{"name": "a", "secret": "x\xffy"}]}',
         "field `secrets[0].secret`"),
        (f"/api/project/{pid}/templates",
         b'{"name": "t", "app": "bash", "arguments": "[\\"\xe2\x82\\"]"}', "field `arguments`"),
    ]
    for path, raw, field in cases:
        status, body = await api.request("POST", path, raw=raw)
        assert_clean_error(status, body, 400, field, "not valid UTF-8")


async def test_a_body_nested_without_end_is_400_naming_the_field(hub, quiet):
    events, caplog = quiet
    client = await hub.api(login=False)
    deep = "[" * 100_000 + "]" * 100_000
    raw = f'{{"auth": "a", "password": "b", "extra": {deep}}}'.encode()
    status, body = await client.request("POST", "/api/auth/login", raw=raw)
    assert_clean_error(status, body, 400, "field `extra`", "nested too deeply")
    # Nested where the model wants a string: its type is wrong at the first bracket.
    raw = f'{{"auth": {deep}, "password": "b"}}'.encode()
    status, body = await client.request("POST", "/api/auth/login", raw=raw)
    assert_clean_error(status, body, 400, "field `auth`", "Expected `str`, got `array`")
    assert events == [] and caplog.records == []


async def test_a_body_whose_encoding_is_broken_is_400(hub, quiet):
    events, caplog = quiet
    client = await hub.api(login=False)
    broken = gzip.compress(b'{"auth": "a", "password": "b"}')[:-12] + b"garbage!"
    for raw in [b"not gzip at all", broken]:
        status, body = await client.request("POST", "/api/auth/login", raw=raw,
                                            headers={"Content-Encoding": "gzip"})
        assert_clean_error(status, body, 400, "request body cannot be read",
                           "content-encoding: gzip")
    # Some are refused by aiohttp's parser itself, before the app: still a 400 and no trace.
    for encoding in ("deflate", "br"):
        answer = await exchange(hub.base_url, request(
            "POST", "/api/auth/login", b"\x00\x01\x02", {"Content-Encoding": encoding}))
        assert answer.status == 400 and b"Traceback" not in answer.body, answer
    assert len(events) <= 2 and all(e["event"] == "http.bad_request" for e in events), events
    assert caplog.records == []


async def test_error_messages_do_not_echo_megabytes(api):
    status, body = await api.request("POST", "/api/projects", raw=json.dumps(
        {"name": "p", "type": 5, "alert_chat": "x" * 3_000_000}).encode())
    assert status == 400 and "field `type`" in body["error"]
    pid = (await _scene(api))["pid"]
    status, body = await api.request("POST", f"/api/project/{pid}/templates",
                                     {"name": "t", "app": "x" * 1_000_000})
    assert_clean_error(status, body, 400, "field `app`")


# Numbers past 64 bits.


def _id_paths(scene: dict, big: str) -> list[tuple[str, str, dict | None, str]]:
    pid = scene["pid"]
    project = f"/api/project/{pid}"
    paths = [("GET", f"/api/project/{big}", None, "project_id"),
             ("GET", f"/api/users/{big}", None, "user_id"),
             ("POST", f"/api/users/{big}/password", {"password": "password-1"}, "user_id"),
             ("PUT", f"{project}/users/{big}", {"role": "guest"}, "user_id"),
             ("DELETE", f"{project}/users/{big}", None, "user_id"),
             ("GET", f"{project}/tasks/{big}", None, "task_id"),
             ("GET", f"{project}/tasks/{big}/output", None, "task_id"),
             ("GET", f"{project}/tasks/{big}/raw_output", None, "task_id"),
             ("POST", f"{project}/tasks/{big}/stop", None, "task_id"),
             ("DELETE", f"{project}/tasks/{big}", None, "task_id"),
             ("GET", f"/api/runners/{big}", None, "runner_id"),
             ("POST", f"/api/runners/{big}/active", {"active": False}, "runner_id"),
             ("GET", f"{project}/runners/{big}", None, "runner_id"),
             ("DELETE", f"/api/runners/registration_tokens/{big}", None, "token_id")]
    for resource in ("keys", "repositories", "inventory", "environment", "templates"):
        paths += [("GET", f"{project}/{resource}/{big}", None, "item_id"),
                  ("DELETE", f"{project}/{resource}/{big}", None, "item_id")]
    return paths


@pytest.mark.parametrize("big", PATH_OUT_OF_RANGE)
async def test_an_id_in_a_path_that_no_row_can_have_is_404(api, big, quiet):
    events, caplog = quiet
    for method, path, body, param in _id_paths(await _scene(api), big):
        status, answer = await api.request(method, path, body)
        if param == "project_id" and not big.isdigit():  # the route itself wants digits
            assert_clean_error(status, answer, 404, "Not Found")
        else:
            assert_clean_error(status, answer, 404, f"{param} {big[:40]}", "not found")
    assert not [e for e in events if e["log_level"] in ("error", "critical")], events
    assert caplog.records == []


@pytest.mark.parametrize("raw", PATH_NOT_INTEGER)
async def test_an_id_in_a_path_that_is_no_integer_is_400(api, raw):
    scene = await _scene(api)
    for path, param in [(f"/api/users/{raw}", "user_id"),
                        (f"/api/project/{scene['pid']}/tasks/{raw}", "task_id"),
                        (f"/api/runners/{raw}", "runner_id")]:
        status, answer = await api.request("GET", path)
        assert_clean_error(status, answer, 400, f"{param} must be an integer")


@pytest.mark.parametrize("big", BIG)
async def test_numbers_in_bodies_past_64_bits_are_400_naming_the_field(hub, api, big):
    scene = await _scene(api)
    project = f"/api/project/{scene['pid']}"
    cases = [
        (f"{project}/tasks", {"template_id": big}, "`template_id`"),
        (f"{project}/tasks", {"template_id": scene["template"], "inventory_id": big},
         "`inventory_id`"),
        (f"{project}/templates", {"name": "t", "app": "bash", "repository_id": big},
         "`repository_id`"),
        (f"{project}/templates", {"name": "t", "app": "bash", "timeout_sec": big},
         "`timeout_sec`"),
        (f"{project}/repositories", {"name": "r", "git_url": "/x", "ssh_key_id": big},
         "`ssh_key_id`"),
        (f"{project}/inventory", {"name": "i", "become_key_id": big}, "`become_key_id`"),
        (f"{project}/environment", {"name": "e", "secrets": [
            {"id": big, "name": "a", "secret": "b", "operation": "update"}]},
         "`secrets[0].id`"),
        (f"{project}/users", {"user_id": big, "role": "guest"}, "`user_id`"),
        ("/api/projects", {"name": "q", "max_parallel_tasks": big}, "`max_parallel_tasks`"),
        ("/api/runners", {"name": "r", "max_parallel_tasks": big}, "`max_parallel_tasks`"),
        ("/api/runners/registration_tokens", {"project_id": big}, "`project_id`"),
    ]
    for path, body, field in cases:
        status, answer = await api.request("POST", path, body)
        assert_clean_error(status, answer, 400, f"field {field}")
    client = await hub.api(login=False)
    status, answer = await client.request("POST", "/api/internal/runners", {
        "registration_token": "whatever", "max_parallel_tasks": big})
    assert_clean_error(status, answer, 400, "field `max_parallel_tasks`")


# JSON kept inside string fields.


async def test_json_in_string_fields_is_capped_in_depth_and_size(api, quiet):
    events, caplog = quiet
    project = f"/api/project/{(await _scene(api))['pid']}"
    deep_array = "[" * 40 + "]" * 40
    very_deep = "[" * 100_000 + "]" * 100_000
    deep_object = '{"a": ' * 40 + "1" + "}" * 40
    cases = [
        (f"{project}/templates", {"name": "t", "app": "bash", "arguments": deep_array},
         "field `arguments`", "nests deeper than 32 levels"),
        (f"{project}/templates", {"name": "t", "app": "bash", "arguments": very_deep},
         "field `arguments`", "nests deeper than 32 levels"),
        (f"{project}/environment", {"name": "e", "env": deep_object},
         "field `env`", "nests deeper than 32 levels"),
        (f"{project}/environment", {"name": "e", "json": deep_array},
         "field `json`", "nests deeper than 32 levels"),
        (f"{project}/environment", {"name": "e", "json": very_deep},
         "field `json`", "nests deeper than 32 levels"),
        (f"{project}/environment", {"name": "e", "env": json.dumps({"k": "v" * 300_000})},
         "field `env`", "characters long"),
        (f"{project}/environment", {"name": "e", "env": "x" * 1_000_000},
         "field `env`", "characters long"),
        (f"{project}/environment", {"name": "e", "env": "{not json"},
         "field `env`", "not valid JSON"),
    ]
    for path, body, *fragments in cases:
        status, answer = await api.request("POST", path, body)
        assert_clean_error(status, answer, 400, *fragments)
    # Nesting within the cap, and brackets inside strings, are fine.
    await api.ok("POST", f"{project}/environment",
                 {"name": "e", "env": json.dumps({"k": [[[1]]], "s": "[[[[" * 50})}, 201)
    assert not [e for e in events if e["log_level"] in ("error", "critical")]
    assert caplog.records == []


# Header bytes that are not UTF-8.


@pytest.mark.parametrize(("method", "path", "headers", "status"), [
    ("GET", "/api/user", {"Authorization": b"Bearer \xff\xfe"}, 401),
    ("GET", "/api/user", {"Cookie": b"semaphore=\xff\xfe"}, 401),
    ("DELETE", "/api/internal/runners", {"Authorization": b"Bearer \xc3\x28"}, 401),
    ("GET", "/api/internal/runners/ws", {
        "Authorization": b"Bearer \xff", "Upgrade": "websocket", "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}, 401),
])
async def test_header_bytes_that_are_not_utf8_are_a_wrong_token(hub, method, path, headers,
                                                                status, quiet):
    events, caplog = quiet
    answer = await exchange(hub.base_url, request(method, path, headers=headers))
    assert_clean_error(answer.status, answer.json(), status)
    assert not [e for e in events if e["log_level"] in ("error", "critical")]
    assert caplog.records == []


async def test_malformed_http_is_400_and_one_short_log_line_a_minute(hub, quiet):
    events, caplog = quiet
    for _ in range(20):
        answer = await exchange(hub.base_url, b"GET /api/\xff HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.status == 400 and b"Traceback" not in answer.body
    bad = [e for e in events if e["event"] == "http.bad_request"]
    assert len(bad) == 1 and len(events) == 1, events
    assert "Traceback" not in json.dumps(bad) and len(json.dumps(bad)) < 500
    assert caplog.records == []
    assert (await exchange(hub.base_url, request("GET", "/api/ping"))).body == b"pong"


# What is unexpected anyway.


async def test_an_unexpected_exception_is_a_json_500_and_one_log_line(hub, api, quiet):
    events, caplog = quiet
    store = hub.hub.store
    # A real fault: the table the handler reads is gone (as after a broken migration).
    await store.db.execute("ALTER TABLE api_token RENAME TO api_token_gone")
    try:
        for _ in range(3):
            status, body = await api.request("GET", "/api/user/tokens")
            assert_clean_error(status, body, 500)
            assert body == {"error": "internal error"}
    finally:
        await store.db.execute("ALTER TABLE api_token_gone RENAME TO api_token")
    errors = [e for e in events if e["log_level"] == "error"]
    assert len(errors) == 3, events
    assert {e["event"] for e in errors} == {"http.internal_error"}
    assert errors[0]["path"] == "/api/user/tokens"
    assert errors[0]["error"].startswith("OperationalError: no such table: api_token")
    # The line of the hub's own code it came through (not aiosqlite's), not a stack.
    assert errors[0]["where"].startswith("sqlite_"), errors[0]
    assert "Traceback" not in json.dumps(errors)
    assert caplog.records == []
    await api.ok("GET", "/api/user/tokens")


async def test_an_answer_that_fails_midway_is_cut_not_left_looking_whole(hub, api, quiet):
    events, _ = quiet
    scene = await _scene(api)
    output = f"/api/project/{scene['pid']}/tasks/{await api.run(scene['pid'], scene['template'])}"
    store = hub.hub.store
    await store.db.execute("ALTER TABLE task_output RENAME TO task_output_gone")
    try:
        # The headers of the streamed answer are out before the rows are read: the client
        # must see a broken answer, not an empty list that looks whole.
        with pytest.raises(aiohttp.ClientPayloadError):
            await api.request("GET", f"{output}/output")
    finally:
        await store.db.execute("ALTER TABLE task_output_gone RENAME TO task_output")
    assert [e["event"] for e in events if e["log_level"] == "error"] == [
        "http.internal_error"], events
    assert await api.ok("GET", f"{output}/output") == []
