"""The OpenAPI entries of authentication: security schemes, each operation's role, /auth routes.

Added to the document :func:`flowweaver.api.openapi.build_document` builds. The schemes apply
when the server runs with ``serve --auth token``; each operation says the role it needs in
``x-required-role`` (absent: open to all) and lists 401 and 403.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .auth import ROUTE_ROLES, SESSION_COOKIE
from .auth_routes import AUTH_WIRE_TYPES

REF = "#/components/schemas/{name}"
JSON = "application/json"
PROBLEM = "application/problem+json"
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"sessionCookie": []}]
STREAM_SECURITY = [*SECURITY, {"ticket": []}]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": _ref("Problem")}}}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": _ref(name)}}}


_NOT_ON = _problem("The server runs with --auth none: there is nothing to sign in to")
_BAD = {
    "400": _problem("The body is not JSON"),
    "415": _problem("The body is not application/json"),
    "422": _problem("The body breaks the schema; `errors` names each path"),
}
_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The token's name",
}

_SUBMITTED_BY = {
    "name": "submittedBy",
    "in": "query",
    "schema": {"type": "string", "maxLength": 128},
    "description": (
        "Only the runs this principal started or forked: a token's name (`anonymous` for "
        "requests without auth). Runs indexed before this filter existed match no name."
    ),
}

_AUTH_PATHS: dict[str, Any] = {
    "/auth/tickets": {
        "post": {
            "operationId": "createTicket",
            "summary": "A ticket for one event stream (EventSource cannot send headers)",
            "description": (
                "Pass it as `?ticket=` on a GET of the stream named by `path` (the log, or one "
                "run, by either of its routes): once, within 60 s, on this node. It acts as the "
                "token that asked for it."
            ),
            "requestBody": _body("TicketRequest"),
            "responses": {
                "201": {
                    "description": "The ticket",
                    "content": {JSON: {"schema": _ref("TicketOut")}},
                },
                "404": _NOT_ON,
                **_BAD,
                "503": _problem("Too many tickets are outstanding on this node"),
            },
        }
    },
    "/auth/session": {
        "post": {
            "operationId": "signIn",
            "summary": "Sign a browser in: the token goes into an HttpOnly cookie",
            "description": (
                f"Sets `{SESSION_COOKIE}` (HttpOnly, SameSite=Strict, Path=/, Secure under "
                "TLS). A request that changes something on the strength of the cookie alone "
                "must carry an Origin header naming this server, else 403."
            ),
            "requestBody": _body("SessionRequest"),
            "responses": {
                "204": {"description": "Signed in; Set-Cookie carries the session"},
                "401": _problem("The token is malformed, unknown or revoked"),
                "403": _problem("The Origin header names another site"),
                "404": _NOT_ON,
                **_BAD,
            },
        },
        "delete": {
            "operationId": "signOut",
            "summary": "Sign a browser out: the cookie is cleared",
            "responses": {
                "204": {"description": "Signed out"},
                "403": _problem("The Origin header names another site"),
                "404": _NOT_ON,
            },
        },
    },
    "/auth/tokens": {
        "get": {
            "operationId": "listTokens",
            "summary": "Every token: name, role, who made it and when, revoked or not",
            "responses": {
                "200": {
                    "description": "The tokens",
                    "content": {JSON: {"schema": _ref("TokenList")}},
                },
                "404": _NOT_ON,
            },
        },
        "post": {
            "operationId": "createToken",
            "summary": "Make a token; the answer shows it this once",
            "requestBody": _body("TokenRequest"),
            "responses": {
                "201": {
                    "description": "The token; only its hash is stored",
                    "content": {JSON: {"schema": _ref("TokenCreatedOut")}},
                },
                "404": _NOT_ON,
                "409": _problem("A token of that name exists (names are never reused)"),
                **_BAD,
            },
        },
    },
    "/auth/tokens/{name}/revoke": {
        "post": {
            "operationId": "revokeToken",
            "summary": "Revoke a token: every node refuses it within a second",
            "description": "Sent as application/json like every POST; the body, if any, is `{}`.",
            "parameters": [_NAME],
            "requestBody": {
                "required": False,
                "content": {
                    JSON: {
                        "schema": {
                            "type": "object",
                            "properties": {},
                            "additionalProperties": False,
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "The token as it now is",
                    "content": {JSON: {"schema": _ref("TokenOut")}},
                },
                "404": _problem("No token has that name, or --auth none"),
                **_BAD,
            },
        }
    },
}

_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from `flowweaver tokens create` (`fw_...`)",
    },
    "sessionCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": "Set by POST /auth/session; writes need a same-origin Origin header",
    },
    "ticket": {
        "type": "apiKey",
        "in": "query",
        "name": "ticket",
        "description": "From POST /auth/tickets: one use, 60 s, the stream it was asked for",
    },
}


def add_auth_document(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the /auth routes, the security schemes and each operation's role to ``doc``."""
    doc["paths"].update(_AUTH_PATHS)
    doc["paths"]["/runs"]["get"]["parameters"].append(_SUBMITTED_BY)
    _, components = msgspec.json.schema_components(AUTH_WIRE_TYPES, ref_template=REF)
    schemas = doc["components"]["schemas"]
    schemas.update(components)
    doc["components"]["schemas"] = dict(sorted(schemas.items()))
    doc["components"]["securitySchemes"] = _SCHEMES
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            role = ROUTE_ROLES.get((method.upper(), path), "admin")
            if role is None:
                operation["security"] = []
                continue
            streams = path in ("/events", "/events/{runId}", "/runs/{runId}/events")
            operation["security"] = STREAM_SECURITY if streams else SECURITY
            operation["x-required-role"] = role
            responses = operation["responses"]
            responses.setdefault(
                "401",
                _problem(
                    "With --auth token: no token, or one malformed, unknown or revoked "
                    "(WWW-Authenticate: Bearer)"
                ),
            )
            responses.setdefault("403", _problem(f"With --auth token: a role below {role}"))
    return doc
