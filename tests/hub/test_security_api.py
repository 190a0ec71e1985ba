"""Security features through a real hub: one-time registration tokens, login and registration
rate limits, CSRF checks, and the per-session frame rate limit of the runner endpoint."""

import asyncio
import calendar
import json
import time

import aiohttp

from hub import gateway
from hub.ratelimit import SlidingWindow
from hub.security import hash_password, hash_token
from protocol.codec import decode_hub_frame, encode
from protocol.frames import Error, Heartbeat, Hello, Welcome
from protocol.version import PROTOCOL_VERSION
from tests.hubkit import ADMIN_PASSWORD, REGISTRATION_TOKEN, start_hub, write_script

TOKENS = "/api/runners/registration_tokens"
REGISTER = "/api/internal/runners"


async def register_with(hub, token: str, **extra) -> tuple[int, dict]:
    client = await hub.api(login=False)
    return await client.request("POST", REGISTER, {"registration_token": token, **extra})


async def raw_request(hub, method: str, path: str, body=None,
                      headers: dict | None = None) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) without a cookie jar."""
    async with aiohttp.ClientSession() as session, session.request(
            method, hub.base_url + path, json=body, headers=headers or {}) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else {}, dict(response.headers)


# One-time registration tokens.


async def test_registration_token_binds_runner_to_project_and_tags(hub, api):
    pid = await api.project()
    before = time.time()
    created = await api.ok("POST", TOKENS, {"project_id": pid, "tags": ["db", "eu"],
                                            "expires_in_sec": 600}, 201)
    token = created["token"]
    assert len(token) >= 43 and created["project_id"] == pid and created["tags"] == ["db", "eu"]
    expires = calendar.timegm(time.strptime(created["expires"], "%Y-%m-%dT%H:%M:%SZ"))
    assert before + 598 <= expires <= time.time() + 601
    listed = await api.ok("GET", TOKENS)
    assert [(t["id"], t["used"], t["runner_id"]) for t in listed] == [(created["id"], False, None)]
    assert "token" not in listed[0] and token not in json.dumps(listed)
    row = await hub.hub.store.find_registration_token(hash_token(token))
    assert token not in json.dumps(row)  # only the hash is stored

    status, answer = await register_with(hub, token, name="bound", tags=["gpu", "db"])
    assert status == 200, answer
    runner = await hub.hub.store.get_runner(answer["id"])
    # The token's tags, exactly: `gpu`, asked for by the registrant, is not added.
    assert runner["project_id"] == pid and json.loads(runner["tags"]) == ["db", "eu"]
    assert [r["id"] for r in await api.ok("GET", f"/api/project/{pid}/runners")] == [runner["id"]]
    assert await api.ok("GET", "/api/runners") == []  # not a global runner
    listed = await api.ok("GET", TOKENS)
    assert (listed[0]["used"], listed[0]["runner_id"]) == (True, runner["id"])

    status, body = await register_with(hub, token, name="again")
    assert status == 401 and body["error"] == "registration token already used"
    # The shared token keeps working next to one-time tokens.
    assert (await register_with(hub, REGISTRATION_TOKEN, name="shared"))[0] == 200


async def test_expired_revoked_and_wrong_registration_tokens_say_why(hub, api):
    expiring = await api.ok("POST", TOKENS, {"expires_in_sec": 60}, 201)
    await hub.hub.store.db.execute("UPDATE registration_token SET expires = ? WHERE id = ?",
                                   (time.time() - 1, expiring["id"]))
    status, body = await register_with(hub, expiring["token"])
    assert status == 401 and body["error"] == "registration token expired"

    revoked = await api.ok("POST", TOKENS, {}, 201)
    await api.ok("DELETE", f"{TOKENS}/{revoked['id']}", status=204)
    status, body = await register_with(hub, revoked["token"])
    assert status == 401 and body["error"] == "wrong registration token"
    assert (await api.request("DELETE", f"{TOKENS}/{revoked['id']}"))[0] == 404
    assert [t["id"] for t in await api.ok("GET", TOKENS)] == [expiring["id"]]

    status, body = await api.request("POST", TOKENS, {"expires_in_sec": 59})
    assert status == 400 and "expires_in_sec" in body["error"]
    status, body = await api.request("POST", TOKENS, {"project_id": 999})
    assert status == 400 and "project 999" in body["error"]
    assert await hub.hub.store.list_runners(None) == []


async def test_concurrent_registrations_with_one_token_have_one_winner(hub, api):
    for _ in range(3):
        token = (await api.ok("POST", TOKENS, {}, 201))["token"]
        answers = await asyncio.gather(*(register_with(hub, token, name=f"r{i}")
                                         for i in range(4)))
        statuses = sorted(status for status, _ in answers)
        assert statuses == [200, 401, 401, 401], answers
        assert all(body["error"] == "registration token already used"
                   for status, body in answers if status == 401)
    assert len(await hub.hub.store.list_runners(None)) == 3


async def test_registration_tokens_are_admin_only(hub, api):
    created = await api.ok("POST", TOKENS, {}, 201)
    store = hub.hub.store
    await store.create_user("dev", "Dev", "dev@example.com", hash_password("pw"))
    dev = await hub.api(login=False)
    await dev.login("dev", "pw")
    for method, path in (("GET", TOKENS), ("POST", TOKENS),
                         ("DELETE", f"{TOKENS}/{created['id']}")):
        status, body = await dev.request(method, path, {} if method == "POST" else None)
        assert status == 403 and "admin" in body["error"], (method, status, body)
    anonymous = await hub.api(login=False)
    assert (await anonymous.request("GET", TOKENS))[0] == 401


async def test_shared_token_can_change_without_touching_registered_runners(tmp_path):
    hub = await start_hub(tmp_path)
    try:
        token = await hub.register("old")
    finally:
        await hub.close()
    hub = await start_hub(tmp_path, runner_registration_token="a-new-shared-token")
    try:
        status, body = await register_with(hub, REGISTRATION_TOKEN)
        assert status == 401 and body["error"] == "wrong registration token"
        assert (await register_with(hub, "a-new-shared-token"))[0] == 200
        async with aiohttp.ClientSession() as session, session.ws_connect(
                hub.ws_url, headers={"Authorization": f"Bearer {token}"}) as ws:
            await ws.send_bytes(encode(Hello(protocol_version=PROTOCOL_VERSION,
                                             runner_version="test")))
            assert isinstance(decode_hub_frame((await ws.receive(timeout=5)).data), Welcome)
    finally:
        await hub.close()


# Rate limits.


def test_sliding_window_with_a_fake_clock():
    now = [1000.0]
    window = SlidingWindow(limit=3, window=60, clock=lambda: now[0], max_keys=4)
    for _ in range(3):
        assert window.retry_after("a") == 0
        window.hit("a")
        now[0] += 10
    assert window.retry_after("a") == 30  # the first hit leaves the window at 1060
    window.forgive("a")
    assert window.retry_after("a") == 0
    window.hit("a")
    now[0] += 30
    assert window.retry_after("a") == 0
    window.clear("a")
    for key in "bcdefg":  # past max_keys the oldest keys go: memory stays bounded
        window.hit(key)
    assert len(window._events) <= 4


async def test_login_is_rate_limited_per_login_name(hub):
    await hub.hub.store.create_user("dev", "Dev", "dev@example.com", hash_password("pw"))
    wrong = {"auth": "dev", "password": "nope"}
    for _ in range(4):
        assert (await raw_request(hub, "POST", "/api/auth/login", wrong))[0] == 401
    # A success clears the name's failures: five more wrong tries are plain 401s.
    assert (await raw_request(hub, "POST", "/api/auth/login",
                              {"auth": "dev", "password": "pw"}))[0] == 204
    for _ in range(5):
        assert (await raw_request(hub, "POST", "/api/auth/login", wrong))[0] == 401
    # The sixth is refused before the password is looked at, even the right one.
    status, body, headers = await raw_request(hub, "POST", "/api/auth/login",
                                              {"auth": "DEV", "password": "pw"})
    assert status == 429
    seconds = int(headers["Retry-After"])
    assert 1 <= seconds <= 60
    assert body["error"] == f"too many login attempts; try again in {seconds} s"
    # Another login name from the same address is not locked out.
    assert (await raw_request(hub, "POST", "/api/auth/login",
                              {"auth": "admin", "password": ADMIN_PASSWORD}))[0] == 204


async def test_login_is_rate_limited_per_client_address(hub):
    for i in range(20):
        status, _, _ = await raw_request(hub, "POST", "/api/auth/login",
                                         {"auth": f"nobody{i}", "password": "x"})
        assert status == 401
    status, body, headers = await raw_request(hub, "POST", "/api/auth/login",
                                              {"auth": "admin", "password": ADMIN_PASSWORD})
    assert status == 429 and "too many login attempts" in body["error"]
    assert int(headers["Retry-After"]) >= 1


async def test_registration_attempts_are_rate_limited_per_client_address(hub):
    # Successful registrations do not count (a fleet may enrol many runners at once)...
    for i in range(12):
        assert (await register_with(hub, REGISTRATION_TOKEN, name=f"ok{i}"))[0] == 200
    # ...failed ones do: ten, and then even the right token waits.
    for _ in range(10):
        assert (await register_with(hub, "guess"))[0] == 401
    status, body, headers = await raw_request(hub, "POST", REGISTER,
                                              {"registration_token": REGISTRATION_TOKEN})
    assert status == 429 and "too many runner registration attempts" in body["error"]
    assert 1 <= int(headers["Retry-After"]) <= 60


# CSRF.


async def test_cookie_requests_from_another_site_are_refused(hub, api):
    own = hub.base_url
    cases = [({"Origin": "http://evil.example"}, 403),
             ({"Origin": "null"}, 403),
             ({"Origin": own.replace("127.0.0.1", "localhost")}, 403),
             ({"Referer": "https://evil.example/page"}, 403),
             ({"Origin": "http://evil.example", "Referer": own + "/"}, 403),
             ({"Origin": own}, 201),
             ({"Referer": own + "/project/1/history"}, 201),
             ({}, 201)]
    for headers, expected in cases:
        status, body = await api.request("POST", "/api/projects", {"name": "p"},
                                         headers=headers)
        assert status == expected, (headers, status, body)
        if expected == 403:
            assert body == {"error": "cross-site request refused"}
    # Safe methods are not checked; unsafe ones are, whatever the path.
    evil = {"Origin": "http://evil.example"}
    assert (await api.request("GET", "/api/projects", headers=evil))[0] == 200
    assert (await api.request("DELETE", "/api/project/1", headers=evil))[0] == 403
    assert (await api.request("POST", "/api/auth/logout", headers=evil))[0] == 403
    assert len(await api.ok("GET", "/api/projects")) == 3


async def test_bearer_requests_are_not_checked_and_login_is(hub, api):
    token = (await api.ok("POST", "/api/user/tokens", status=201))["id"]
    status, body, _ = await raw_request(hub, "POST", "/api/projects", {"name": "p"}, {
        "Authorization": f"Bearer {token}", "Origin": "http://evil.example"})
    assert status == 201, body
    login = {"auth": "admin", "password": ADMIN_PASSWORD}
    status, body, _ = await raw_request(hub, "POST", "/api/auth/login", login,
                                        {"Origin": "http://evil.example"})
    assert status == 403 and body == {"error": "cross-site request refused"}
    assert (await raw_request(hub, "POST", "/api/auth/login", login,
                              {"Origin": hub.base_url}))[0] == 204


async def test_configured_web_host_counts_as_same_origin(tmp_path):
    # Behind a TLS-terminating proxy the hub sees http://127.0.0.1:port; the browser's
    # Origin is the public address.
    hub = await start_hub(tmp_path, web_host="https://hub.example.com")
    try:
        api = await hub.api()
        for origin, expected in (("https://hub.example.com", 201),
                                 ("https://hub.example.com:443", 201),
                                 ("http://hub.example.com", 403),
                                 ("https://other.example.com", 403)):
            status, _ = await api.request("POST", "/api/projects", {"name": "p"},
                                          headers={"Origin": origin})
            assert status == expected, origin
    finally:
        await hub.close()


# Hostile runner sessions.


async def test_frame_flood_ends_only_that_session(hub, api, tmp_path, monkeypatch):
    # A tenth of the hub's frame rate limit: at 10,000 frames/s a loaded machine may decode
    # the flood slower than the bucket refills, and the limit (the thing tested) never trips.
    monkeypatch.setattr(gateway, "FRAME_RATE", 1000.0)
    monkeypatch.setattr(gateway, "FRAME_BURST", 4000.0)
    scripts = tmp_path / "s"
    write_script(scripts, "slow.sh", "echo one\nsleep 1\necho two\n")
    good = await hub.start_runner(tmp_path, name="good")
    pid = await api.project()
    task_id = await api.run(pid, await api.template(pid, scripts, "slow.sh"))
    await api.wait_status(pid, task_id, {"running"})

    session = aiohttp.ClientSession()
    hub.sessions.append(session)
    ws = await session.ws_connect(hub.ws_url, headers={
        "Authorization": f"Bearer {await hub.register('flood')}"})
    await ws.send_bytes(encode(Hello(protocol_version=PROTOCOL_VERSION, runner_version="x")))
    assert isinstance(decode_hub_frame((await ws.receive(timeout=5)).data), Welcome)
    sent = 0

    async def flood() -> None:
        nonlocal sent
        beat = encode(Heartbeat(time=0.0))
        try:
            while not ws.closed and sent < 500_000:
                await ws.send_bytes(beat)
                sent += 1
                if sent % 1000 == 0:
                    await asyncio.sleep(0)  # let the close come in
        except (ConnectionError, aiohttp.ClientError):
            pass

    flooding = asyncio.create_task(flood())
    try:
        message = await ws.receive(timeout=30)
        frame = decode_hub_frame(message.data)
        assert isinstance(frame, Error) and frame.code == "rate_limited", frame
        closing = await ws.receive(timeout=10)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1008
    finally:
        flooding.cancel()
        await asyncio.gather(flooding, return_exceptions=True)
    assert sent > 4000
    # The real runner did not notice: still connected, and its task ends whole.
    task = await api.wait_status(pid, task_id)
    assert task["status"] == "success"
    assert await api.raw_output(pid, task_id) == "one\ntwo\n"
    assert good.connection.runner_id in hub.hub.dispatcher.links
