"""/api/ping and /api/info."""

from aiohttp import web

from hub.api.common import hub_of, json_response
from hub.release_key import public_key_text
from protocol.version import PACKAGE_VERSION


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="pong", content_type="text/plain")


async def info(request: web.Request) -> web.Response:
    hub = hub_of(request)
    config = hub.config
    return json_response({
        # Runners check the builds they update to against this (Ed25519, base64).
        "runner_release_key": public_key_text(hub.release_key),
        "version": PACKAGE_VERSION, "ansible": "", "web_host": config.web_host,
        "use_remote_runner": config.use_remote_runner,
        "auth_methods": {"login": True, "totp": False, "email": False},
        "git_client": "cmd_git", "schedule_timezone": config.schedule.timezone,
        "premium_features": {}})
