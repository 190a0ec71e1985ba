"""/api/ping and /api/info."""

from aiohttp import web

from hub.api.common import hub_of, json_response
from protocol.version import PACKAGE_VERSION


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="pong", content_type="text/plain")


async def info(request: web.Request) -> web.Response:
    config = hub_of(request).config
    return json_response({
        "version": PACKAGE_VERSION, "ansible": "", "web_host": config.web_host,
        "use_remote_runner": config.use_remote_runner,
        "auth_methods": {"login": True, "totp": False, "email": False},
        "git_client": "cmd_git", "schedule_timezone": "UTC", "premium_features": {}})
