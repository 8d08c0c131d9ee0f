"""Who sent a request: the principal recorded as ``by`` on the operator events it causes."""

from __future__ import annotations

from aiohttp import web

from flowweaver.engine.operator import ANONYMOUS

from .auth import PRINCIPAL_KEY


def principal(request: web.Request) -> str:
    """Return the principal of ``request``.

    Without authentication every request is ``anonymous``; with it (``serve --auth token``),
    this is the token's name. Every route that records ``by`` asks here and nowhere else.
    """
    name: str = request.get(PRINCIPAL_KEY, ANONYMOUS)
    return name
