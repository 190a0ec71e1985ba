"""`GET /api/runner/binary[.sha256|.sig]?arch=amd64[&version=V]`: the runner build matching
this hub (or `version`), as Jenkins serves agent.jar from its controller.

Public, like agent.jar: a build holds no secret, and a host being set up has no token yet.
What makes a download trustworthy is TLS to the hub and, for updates, the release key's
signature (docs/security.md).
"""

from aiohttp import web

from hub.api.common import ApiError, hub_of
from hub.runner_binaries import BinaryError, RunnerBinary, check_version, find_binary
from protocol.elf import ARCHES
from protocol.version import PACKAGE_VERSION


def _binary(request: web.Request) -> RunnerBinary:
    arch = request.query.get("arch", "amd64")
    if arch not in ARCHES:
        raise ApiError(400, f"field `arch`: unknown architecture {arch!r}; one of "
                            f"{', '.join(sorted(ARCHES))}")
    version = request.query.get("version", PACKAGE_VERSION)
    try:
        check_version(version)
    except BinaryError as exc:
        raise ApiError(400, f"field `version`: {exc}") from None
    try:
        return find_binary(hub_of(request).config.runner_binaries_path, version, arch)
    except BinaryError as exc:
        raise ApiError(404, str(exc)) from None


async def binary(request: web.Request) -> web.StreamResponse:
    found = _binary(request)
    return web.FileResponse(found.path, headers={
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f'attachment; filename="{found.file_name}"',
        "X-Semaphore-Version": found.version, "X-Semaphore-Sha256": found.sha256})


async def sha256(request: web.Request) -> web.Response:
    """`sha256sum -c` format, named `semaphore`: the file the README's curl line writes."""
    found = _binary(request)
    name = request.query.get("name", "semaphore")
    if not name or "/" in name or "\n" in name:
        raise ApiError(400, "field `name`: a file name, without / or new lines")
    return web.Response(text=f"{found.sha256}  {name}\n", content_type="text/plain")


async def signature(request: web.Request) -> web.Response:
    return web.Response(text=_binary(request).signature + "\n", content_type="text/plain")
