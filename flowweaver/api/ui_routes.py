"""The web UI: static pages at ``/ui/`` (``/`` redirects there) and ``GET /auth/whoami``.

Every asset ships in the package (``flowweaver/api/ui/``) and is read once, when the app is
built: the pages need no internet and no second server. Each UI answer carries a Content
Security Policy that allows scripts, styles and connections to this origin only (no inline
script, no eval), so a page can send no request beyond the server that served it.

``GET /auth/whoami`` tells the page who it is signed in as, and so which actions to offer; it
answers with and without ``--auth token``.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from . import schemas
from .auth import PRINCIPAL_KEY, TOKENS
from .errors import ApiError
from .principal import principal

UI_DIR = Path(__file__).with_name("ui")
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
UI_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


class Whoami(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """GET /auth/whoami: who the request is from, what it may do, and the log's position.

    ``auth`` is ``token`` or ``none``; without auth the principal is ``anonymous`` and may do
    everything (role ``admin``). ``log_position`` is the log's last position when asked: read
    ``GET /runs`` after this and follow ``GET /events?after=logPosition``, and nothing is missed.
    """

    auth: str
    name: str
    role: str
    log_position: int


WHOAMI_WIRE_TYPES = (Whoami,)


class Asset(msgspec.Struct, frozen=True):
    """One file of the UI, read at start-up."""

    body: bytes
    content_type: str
    etag: str


def load_assets(root: Path = UI_DIR) -> dict[str, Asset]:
    """Read every file under ``root`` whose suffix the UI serves; key: its path under root."""
    assets: dict[str, Asset] = {}
    for file in sorted(root.rglob("*")):
        content_type = CONTENT_TYPES.get(file.suffix)
        if content_type is None or not file.is_file():
            continue
        body = file.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        assets[file.relative_to(root).as_posix()] = Asset(body, content_type, etag)
    return assets


ASSETS: web.AppKey[dict[str, Asset]] = web.AppKey("ui_assets", dict)


def add_ui_routes(app: web.Application, expect: Any) -> None:
    """Register ``/``, ``/ui/{path}`` and ``/auth/whoami`` on ``app``."""
    app[ASSETS] = load_assets()
    r = app.router
    r.add_get("/", redirect_root, expect_handler=expect)
    r.add_get("/ui/{path:.*}", get_ui, expect_handler=expect)
    r.add_get("/auth/whoami", whoami, expect_handler=expect)


async def redirect_root(request: web.Request) -> web.Response:
    """``/`` is the UI's: 302 to ``/ui/``."""
    return web.Response(status=302, headers={"Location": "/ui/", **UI_HEADERS})


async def get_ui(request: web.Request) -> web.Response:
    """Serve one asset of the UI; ``/ui/`` is its page. 404 problem for anything else."""
    path = request.match_info["path"] or "index.html"
    asset = request.app[ASSETS].get(path)
    if asset is None:
        raise ApiError(404, "not-found", "the UI has no such file")
    headers = {**UI_HEADERS, "ETag": asset.etag}
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers
    )


async def whoami(request: web.Request) -> web.Response:
    """Return who sent the request, their role, and the log's position now."""
    from .app import ENGINE  # noqa: PLC0415 - the app module imports the routes

    store = request.app[ENGINE].store
    position = await asyncio.to_thread(store.max_position)
    if TOKENS in request.app:
        entry = request.app[TOKENS].get(request[PRINCIPAL_KEY])
        role = entry.role if entry is not None else "reader"
        body = Whoami(auth="token", name=principal(request), role=role, log_position=position)
    else:
        body = Whoami(auth="none", name=principal(request), role="admin", log_position=position)
    return web.Response(
        body=schemas.encoder.encode(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
