"""The OpenAPI entries of time travel and audit: ``asOf``, the diff route, the feed filters.

Added to the document :func:`flowweaver.api.openapi.build_document` builds, so the entries of
issue 11's debugging features stay in one place.
"""

from __future__ import annotations

from typing import Any

from flowweaver.travel import MAX_DIFF_EVENTS

from .audit_routes import SCAN_BUDGET

REF = "#/components/schemas/{name}"
JSON = "application/json"
PROBLEM = "application/problem+json"
MAX_OFFSET = 2**63 - 1


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": _ref("Problem")}}}


def _types(where: str) -> dict[str, Any]:
    return {
        "name": "types",
        "in": "query",
        "required": False,
        "description": (
            f"{where}Only events of these types, comma-separated (e.g. "
            "`RunPaused,TaskRetried`); an unknown name is a 400. Offsets stay what they are, "
            "so Last-Event-ID resumes a filtered stream."
        ),
        "schema": {"type": "string"},
        "example": "RunPaused,RunResumed,TaskRetried,TaskSkipped",
    }


def _bounds(where: str) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": (
                f"{where}Only events stamped {side} this RFC 3339 instant (included); "
                "a malformed instant, or until before since, is a 400."
            ),
            "schema": {"type": "string"},
            "example": example,
        }
        for name, side, example in (
            ("since", "at or after", "2026-11-30T00:00:00Z"),
            ("until", "at or before", "2026-12-06T23:59:59Z"),
        )
    ]


_VERSION = {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}
_CHANGE = {
    "type": "array",
    "minItems": 2,
    "maxItems": 2,
    "description": "[value at from, value at to], as the run's JSON shows the field",
}
RUN_DIFF = {
    "title": "RunDiff",
    "type": "object",
    "properties": {
        "runId": {"type": "string"},
        "from": _VERSION,
        "to": _VERSION,
        "run": {"type": "object", "additionalProperties": _CHANGE},
        "tasks": {
            "type": "object",
            "description": "By task id: its fields that changed (unchanged tasks are left out)",
            "additionalProperties": {"type": "object", "additionalProperties": _CHANGE},
        },
        "events": {
            "type": "array",
            "items": _ref("RunEvent"),
            "maxItems": MAX_DIFF_EVENTS,
            "description": f"Events from+1..to, the first {MAX_DIFF_EVENTS} at most",
        },
        "eventCount": {"type": "integer", "description": "to - from: how many events lie between"},
        "eventsTruncated": {"type": "boolean", "description": "Some events were left out"},
        "nextAfter": {
            "anyOf": [{"type": "integer"}, {"type": "null"}],
            "description": (
                "When truncated: the last version listed; page on with "
                "GET /runs/{id}/events?after=nextAfter up to `to`"
            ),
        },
    },
    "required": [
        "runId",
        "from",
        "to",
        "run",
        "tasks",
        "events",
        "eventCount",
        "eventsTruncated",
        "nextAfter",
    ],
}
LOG_PAGE = {
    "title": "LogPage",
    "type": "object",
    "properties": {
        "events": {
            "type": "array",
            "items": {
                "allOf": [
                    _ref("RunEvent"),
                    {
                        "type": "object",
                        "properties": {"position": {"type": "integer", "minimum": 1}},
                        "required": ["position"],
                    },
                ]
            },
        },
        "next": {
            "anyOf": [{"type": "integer"}, {"type": "null"}],
            "description": (
                "Pass as `after` for the next page; null once the end of the log is reached. "
                f"A filtered page looks at {SCAN_BUDGET} records at most, so it may hold fewer "
                "events than `limit` (even none) with a `next` to go on from."
            ),
        },
    },
    "required": ["events", "next"],
}


def add_travel_document(doc: dict[str, Any]) -> dict[str, Any]:
    """Add time travel and the audit filters to the OpenAPI document ``doc``; return it."""
    paths = doc["paths"]
    get_run = paths["/runs/{runId}"]["get"]
    get_run["summary"] = "A run's state, or its state as of event `at` or instant `asOf`"
    get_run["parameters"].append(
        {
            "name": "asOf",
            "in": "query",
            "required": False,
            "description": (
                "An RFC 3339 instant with its offset (`Z` or `+02:00`; a `+` sent unencoded "
                "is read as one): the state after the run's last event stamped at or before "
                "it. Not with `at`."
            ),
            "schema": {"type": "string", "format": "date-time", "maxLength": 64},
        }
    )
    get_run["responses"]["400"] = _problem(
        "A malformed `at` or `asOf`, both given, `at` beyond the run's last event, or `asOf` "
        "before its first"
    )
    paths["/runs/{runId}/diff"] = {
        "get": {
            "operationId": "diffRun",
            "summary": "What changed in a run between two versions, and the events between",
            "parameters": [
                paths["/events/{runId}"]["get"]["parameters"][0],
                {
                    "name": "from",
                    "in": "query",
                    "required": True,
                    "description": "The older version (0: before the first event)",
                    "schema": _VERSION,
                },
                {
                    "name": "to",
                    "in": "query",
                    "required": True,
                    "description": "The newer version: from <= to <= the run's last",
                    "schema": _VERSION,
                },
            ],
            "responses": {
                "200": {
                    "description": "The fields that changed and the events between",
                    "content": {JSON: {"schema": _ref("RunDiff")}},
                },
                "400": _problem("from or to missing, malformed, or not 0 <= from <= to <= head"),
                "404": _problem("No such run"),
            },
        }
    }
    history = paths["/runs/{runId}/events"]["get"]
    history["parameters"] += [_types("Both forms: "), *_bounds("Both forms: ")]
    history["description"] += (
        f" `types` filters both; a filtered JSON page looks at {SCAN_BUDGET} events at most, "
        "so it may hold fewer than `limit` with a `nextAfter` to go on from. A filtered "
        "stream still ends after the run's terminal event, sent or not."
    )
    paths["/events/{runId}"]["get"]["parameters"] += [_types(""), *_bounds("")]
    feed = paths["/events"]["get"]
    feed["summary"] = (
        "Every run's events by global log position: SSE, or JSON pages with "
        "`Accept: application/json` (the audit feed)"
    )
    feed["parameters"] += [
        _types("Both forms: "),
        *_bounds("Both forms: "),
        {
            "name": "runId",
            "in": "query",
            "required": False,
            "description": "Both forms: only this run's events (ids stay log positions)",
            "schema": {"type": "string"},
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "JSON only: events per page (default 100)",
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
        },
    ]
    streamed = feed["responses"]["200"]  # shared with the other streams: copied, not changed
    feed["responses"]["200"] = {
        **streamed,
        "description": "The SSE stream; or, for `Accept: application/json`, a page of the log",
        "content": {**streamed["content"], JSON: {"schema": _ref("LogPage")}},
    }
    feed["responses"]["400"] = _problem(
        "A malformed offset, limit, runId or type name; for the stream, an offset beyond the "
        "end of the log"
    )
    feed["responses"]["404"] = _problem("runId names no run")
    schemas = doc["components"]["schemas"]
    schemas["RunDiff"] = RUN_DIFF
    schemas["LogPage"] = LOG_PAGE
    doc["components"]["schemas"] = dict(sorted(schemas.items()))
    return doc
