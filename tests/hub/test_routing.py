"""The project routes' index (hub/routing.py) finds exactly what aiohttp's own router finds:
the same handler, the same path variables, the same 404s and 405s, for every route."""

import re

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from hub.routes import ROUTES, add_routes

SAMPLES = {"project_id": "7", "resource": "templates"}


def concrete(path: str) -> str:
    """A request path for a route path: each variable filled with a value it accepts."""
    def fill(match: re.Match) -> str:
        name, _, pattern = match.group(1).partition(":")
        if name in SAMPLES:
            return SAMPLES[name]
        if pattern and "|" in pattern:
            return pattern.split("|")[0]
        return "12" if not pattern or pattern.startswith("\\d") else "x"
    return re.sub(r"\{([^{}]+(?:\{[^{}]*\}[^{}]*)*)\}", fill, path)


def plain_app() -> web.Application:
    """The same routes through aiohttp's own router alone (the reference)."""
    app = web.Application()
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
        if method == "GET" and not path.startswith("/api/"):
            app.router.add_route("HEAD", path, handler)
        if not path.endswith("/") and not path.startswith("/static/"):
            app.router.add_route(method, path + "/", handler)
    return app


def ours() -> web.Application:
    app = web.Application()
    add_routes(app)
    return app


async def resolved(app: web.Application, method: str, path: str):
    info = await app.router.resolve(make_mocked_request(method, path, app=app))
    if info.http_exception is not None:
        exc = info.http_exception
        return exc.status, sorted(getattr(exc, "allowed_methods", ()) or ())
    return info.handler, dict(info)


@pytest.mark.parametrize("method,path,handler", sorted(ROUTES, key=lambda r: r[:2]),
                         ids=[f"{m} {p}" for m, p, _ in sorted(ROUTES, key=lambda r: r[:2])])
async def test_every_route_resolves_as_with_aiohttps_router(method, path, handler):
    reference, indexed = plain_app(), ours()
    assert (await resolved(indexed, method, concrete(path)))[0] is handler
    for candidate in (concrete(path), concrete(path) + "/"):
        for asked in (method, "PATCH"):  # PATCH: no route has it, so 405 (or 404)
            assert await resolved(indexed, asked, candidate) == await resolved(
                reference, asked, candidate), (asked, candidate)


@pytest.mark.parametrize("path", ["/api/project/7/nothing", "/api/project/x/tasks",
                                  "/api/project/7/tasks/12/nothing", "/api/project/",
                                  "/api/project/7/templates/12/13", "/api/projectx/7"])
async def test_paths_no_route_has_are_refused_alike(path):
    for method in ("GET", "POST"):
        assert await resolved(ours(), method, path) == await resolved(plain_app(), method, path)


def test_a_route_of_the_index_builds_its_url_and_the_index_moves_under_a_prefix():
    from hub.routing import SegmentIndex

    async def handler(request):
        return web.Response()

    index = SegmentIndex("/api/project")
    index.add_route("GET", "/api/project/{project_id:\\d+}/tasks/{task_id}", handler)
    assert str(index.url_for(route="/api/project/{project_id:\\d+}/tasks/{task_id}",
                             project_id="3", task_id="9")) == "/api/project/3/tasks/9"
    with pytest.raises(KeyError):
        index.url_for(route="/api/project/{project_id:\\d+}/nothing", project_id="3")
    index.add_prefix("/v2")
    assert str(index.url_for(route="/api/project/{project_id:\\d+}/tasks/{task_id}",
                             project_id="3", task_id="9")) == "/v2/api/project/3/tasks/9"


async def test_an_index_mounted_in_a_sub_application_resolves_under_its_prefix():
    from hub.routing import SegmentIndex

    async def handler(request):
        return web.Response()

    sub = web.Application()
    index = SegmentIndex("/api/project")
    index.add_route("GET", "/api/project/{project_id:\\d+}/tasks", handler)
    sub.router.register_resource(index)
    app = web.Application()
    app.add_subapp("/v2", sub)
    info = await app.router.resolve(make_mocked_request("GET", "/v2/api/project/4/tasks",
                                                        app=app))
    assert info.handler is handler and info["project_id"] == "4"
