"""The OpenAPI entry of POST /runs/{runId}/signals/{name} (api/signal_routes.py).

Added to the document :func:`flowweaver.api.openapi.build_document` builds, with the
SignalRequest schema from its msgspec type.
"""

from __future__ import annotations

from typing import Any

import msgspec

from flowweaver.domain.ids import ID_PATTERN

from .schemas import SignalRequest

REF = "#/components/schemas/{name}"
PROBLEM = "application/problem+json"
JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": _ref("Problem")}}}


def signal_path() -> dict[str, Any]:
    """Return the path item of the signal route."""
    return {
        "post": {
            "operationId": "sendSignal",
            "summary": "Send a run a signal: the tasks waiting for it complete with the payload",
            "description": (
                "Stores SignalReceived with `name`, `payload` and `by` (the principal; "
                "`anonymous` without auth), and a TaskCompleted, with the payload as its "
                "result, for every task of the run that waits for the signal. A task not "
                "reached yet completes when it is. A name is taken once. Any node takes the "
                "request; the node that owns the run decides it. Nothing is stored on any error."
            ),
            "parameters": [
                {
                    "name": "runId",
                    "in": "path",
                    "required": True,
                    "description": "The run's id (a UUID).",
                    "schema": {"type": "string"},
                },
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "description": "The signal's name (a task's `wait.signal`).",
                    "schema": {"type": "string", "pattern": ID_PATTERN},
                },
            ],
            "requestBody": {
                "required": False,
                "content": {JSON: {"schema": _ref("SignalRequest")}},
            },
            "responses": {
                "202": {
                    "description": "SignalReceived is stored: the run's state",
                    "content": {JSON: {"schema": _ref("RunOut")}},
                },
                "400": _problem("The body is not JSON"),
                "404": _problem("No such run, or no task of its workflow waits for the signal"),
                "408": _problem("The body did not arrive in time"),
                "409": _problem(
                    "The run ended or is being cancelled, or it already received the signal"
                ),
                "413": _problem("The body is larger than the server accepts"),
                "415": _problem(
                    "Not sent as application/json (UTF-8): every POST says so, even one with "
                    "no body"
                ),
                "422": _problem(
                    "A bad signal name, or a payload over the task data limit; `errors` lists "
                    "each problem with its JSON path"
                ),
                "503": _problem(
                    "No node that owns the run answered in time (a takeover may be under "
                    "way); Retry-After says when to try again"
                ),
            },
        }
    }


def add_signals_document(document: dict[str, Any]) -> dict[str, Any]:
    """Add the signal route and the SignalRequest schema to ``document``; return it."""
    _, components = msgspec.json.schema_components((SignalRequest,), ref_template=REF)
    schemas = document["components"]["schemas"]
    schemas.update(components)
    document["components"]["schemas"] = dict(sorted(schemas.items()))
    document["paths"]["/runs/{runId}/signals/{name}"] = signal_path()
    return document
