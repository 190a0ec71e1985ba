"""The dashboard's files: served at / and /static/ from the package, nothing outside it,
with headers that keep the page to its own scripts and out of frames."""

from tests.hubkit import start_hub
from tests.rawhttp import exchange, request


async def test_root_is_the_dashboard_page_with_a_strict_policy(tmp_path):
    hub = await start_hub(tmp_path)
    try:
        api = await hub.api(login=False)
        async with api.session.get(hub.base_url + "/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert '<script type="module" src="/static/js/app.js">' in await response.text()
            csp = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        async with api.session.get(hub.base_url + "/static/js/app.js") as response:
            assert response.status == 200
            assert response.content_type == "text/javascript"
            assert "loginPage" in await response.text()
        async with api.session.get(hub.base_url + "/static/app.css") as response:
            assert response.content_type == "text/css"
        for path in ("/", "/static/js/app.js"):  # HEAD, as proxies and checkers ask
            async with api.session.head(hub.base_url + path) as response:
                assert response.status == 200, path
                assert await response.read() == b""
        async with api.session.get(hub.base_url + "/static/nothing.js") as response:
            assert response.status == 404
            assert (await response.json())["error"]
    finally:
        await hub.close()


async def test_static_never_serves_a_file_outside_its_folder(tmp_path):
    hub = await start_hub(tmp_path)
    try:
        for path in ("/static/../__init__.py", "/static/%2e%2e/__init__.py",
                     "/static/..%2f..%2froutes.py", "/static/js/../../__init__.py",
                     "/static//etc/passwd", "/static/%2fetc%2fpasswd"):
            answer = await exchange(hub.base_url, request("GET", path))
            assert answer.status in (400, 404), (path, answer.status)
            assert b"import" not in answer.body and b"root:" not in answer.body, path
    finally:
        await hub.close()
