"""The web dashboard: `/` (one HTML page) and `/static/...` (its scripts, styles, icons).

Every file ships inside the package (hub/web/static/), so the dashboard works on a closed
network and from the wheel: no CDN, no build step. The page talks to the hub only through
the REST API and `/api/ws`, with the same session cookie, roles and CSRF rules as any client.
"""

import mimetypes
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"

# The page runs only its own scripts, talks only to its own origin, and cannot be framed
# (clickjacking); output and names from the API are inserted as text, never as HTML.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html",
         ".svg": "image/svg+xml", ".png": "image/png", ".txt": "text/plain"}


def _file_response(path: Path, cache: str) -> web.Response:
    content_type = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    response = web.Response(body=path.read_bytes(),
                            content_type=content_type or "application/octet-stream")
    if response.content_type.startswith("text/"):
        response.charset = "utf-8"
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = cache
    return response


async def index(request: web.Request) -> web.Response:
    return _file_response(STATIC / "index.html", "no-cache")


async def static(request: web.Request) -> web.Response:
    """A file under hub/web/static, nothing outside it (no `..`, no symlink out)."""
    name = request.match_info["path"]
    root = STATIC.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise web.HTTPNotFound()
    # Revalidated each time (a hub upgrade changes them); they are small.
    return _file_response(path, "no-cache")
