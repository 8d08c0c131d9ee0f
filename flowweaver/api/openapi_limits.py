"""The OpenAPI entries of the per-client limits: a 429 on every operation they apply to.

Added to the document :func:`flowweaver.api.openapi.build_document` builds. ``/healthz`` and
``/readyz`` are never limited, so they get none.
"""

from __future__ import annotations

from typing import Any

from .server import HEALTH_PATHS

PROBLEM = "application/problem+json"
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def too_many_requests() -> dict[str, Any]:
    """Return the 429 response: past ``--rate-limit``, or past ``--sse-per-client`` streams."""
    return {
        "description": (
            "Too many requests from this client (its principal, or its address without "
            "auth): past `--rate-limit` requests per second (`rate-limited`), or, on a "
            "stream, past `--sse-per-client` streams at once (`too-many-streams`)"
        ),
        "headers": {
            "Retry-After": {
                "description": "whole seconds to wait before the next request (at least 1)",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def add_limits_document(document: dict[str, Any]) -> dict[str, Any]:
    """Add the 429 answer to every limited operation of ``document``; return it."""
    for path, item in document["paths"].items():
        if path in HEALTH_PATHS:
            continue
        for method in _METHODS:
            operation = item.get(method)
            if operation is not None:
                operation.setdefault("responses", {}).setdefault("429", too_many_requests())
    return document
