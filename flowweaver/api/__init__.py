"""The aiohttp front end: app factory, routes, SSE, problem+json errors, OpenAPI."""

from flowweaver.api.app import ApiConfig, create_app
from flowweaver.api.server import GuardedSite, make_runner

__all__ = ["ApiConfig", "GuardedSite", "create_app", "make_runner"]
