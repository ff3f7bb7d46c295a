"""The web console: one HTML page, one script and one style sheet, served from the package as they are.

No framework and no build step. The files hold no data, so they are served without a token; every call
the script makes to the API sends the bearer token the person typed (kept in the tab's sessionStorage).
A strict Content-Security-Policy allows only these files: no inline script or style, no other origin,
so even a value that slipped into markup could not run. The script itself never builds markup from data
(``textContent`` everywhere).
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from foldline.gateway.errors import NotFound

#: The console's files and their media types; nothing else under /console/ is served.
FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
PREFIX = "/console/"

_cache: dict[str, bytes] = {}


def is_console_path(path: str) -> bool:
    """Paths served without a token: the page and its two files (they hold no data)."""
    return path == "/" or (path.startswith(PREFIX) and path[len(PREFIX) :] in FILES)


def _file(name: str) -> bytes:
    body = _cache.get(name)
    if body is None:
        body = _cache[name] = resources.files("foldline.gateway").joinpath("console", name).read_bytes()
    return body


async def console_page(request: Request) -> Response:
    return Response(_file("index.html"), media_type=FILES["index.html"], headers=HEADERS)


async def console_file(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in FILES:
        raise NotFound(f"the console has no file {name[:60]!r}", code="not_found")
    return Response(_file(name), media_type=FILES[name], headers=HEADERS)
