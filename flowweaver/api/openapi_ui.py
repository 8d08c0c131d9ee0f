"""The OpenAPI entries of the web UI: ``/``, ``/ui/{path}`` and ``GET /auth/whoami``."""

from __future__ import annotations

from typing import Any

import msgspec

from .ui_routes import WHOAMI_WIRE_TYPES

REF = "#/components/schemas/{name}"
PROBLEM = "application/problem+json"

_UI_PATHS: dict[str, Any] = {
    "/": {
        "get": {
            "operationId": "uiRoot",
            "summary": "Redirect to the web UI at /ui/",
            "responses": {"302": {"description": "Location: /ui/"}},
        }
    },
    "/ui/{path}": {
        "get": {
            "operationId": "uiAsset",
            "summary": "The web UI: its page (empty path) and its scripts and styles",
            "description": (
                "Every file ships in the package; each answer has a Content-Security-Policy "
                "that allows this origin only. No data is served here: the page reads the API."
            ),
            "parameters": [
                {
                    "name": "path",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[a-z0-9-]*(\\.[a-z]+)?$"},
                    "description": "A file of the UI; empty for its page",
                }
            ],
            "responses": {
                "200": {
                    "description": "The file",
                    "content": {
                        "text/html": {"schema": {"type": "string"}},
                        "text/javascript": {"schema": {"type": "string"}},
                        "text/css": {"schema": {"type": "string"}},
                        "image/svg+xml": {"schema": {"type": "string"}},
                        "text/plain": {"schema": {"type": "string"}},
                    },
                },
                "304": {"description": "Not modified (If-None-Match matched the ETag)"},
                "404": {
                    "description": "The UI has no such file",
                    "content": {PROBLEM: {"schema": {"$ref": REF.format(name="Problem")}}},
                },
            },
        }
    },
    "/auth/whoami": {
        "get": {
            "operationId": "whoami",
            "summary": "Who the request is from, its role, and the log's position now",
            "description": (
                "Answers with and without --auth token (`auth` says which; without it the "
                "principal is `anonymous` with role `admin`). The web UI reads it to offer only "
                "the actions the role allows, and follows `GET /events?after=logPosition`."
            ),
            "responses": {
                "200": {
                    "description": "The principal",
                    "content": {
                        "application/json": {"schema": {"$ref": REF.format(name="Whoami")}}
                    },
                }
            },
        }
    },
}


def add_ui_document(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the UI's routes and the Whoami schema to ``doc``."""
    doc["paths"].update(_UI_PATHS)
    _, components = msgspec.json.schema_components(WHOAMI_WIRE_TYPES, ref_template=REF)
    doc["components"]["schemas"].update(components)
    doc["components"]["schemas"] = dict(sorted(doc["components"]["schemas"].items()))
    return doc
