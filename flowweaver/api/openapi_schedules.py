"""The OpenAPI entries of schedules: /schedules and its actions, and their wire types.

Added to the document :func:`flowweaver.api.openapi.build_document` builds, before the roles
(openapi_auth) are applied to every operation.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .schedule_routes import SCHEDULE_WIRE_TYPES

REF = "#/components/schemas/{name}"
JSON = "application/json"
PROBLEM = "application/problem+json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": _ref("Problem")}}}


def _answer(description: str, name: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(name)}}}


_BAD = {
    "400": _problem("The body is not JSON"),
    "408": _problem("The body did not arrive in time"),
    "413": _problem("The body is larger than the server accepts"),
    "415": _problem("Not sent as application/json: every POST says so, even one with no body"),
    "422": _problem("The body breaks a rule; `errors` lists each with its JSON path"),
}
_STORE = {"503": _problem("The event store does not answer")}
_ID = {
    "name": "scheduleId",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The schedule's id",
}
_MISSING = {"404": _problem("No such schedule")}
_OPTIONAL_REASON = {
    "required": False,
    "content": {JSON: {"schema": _ref("ScheduleAction")}},
}


def _action(operation_id: str, summary: str, event: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "description": f"Stores {event} with `by` and `reason` (nothing if it changes nothing)",
            "parameters": [_ID],
            "requestBody": _OPTIONAL_REASON,
            "responses": {
                "200": _answer("The schedule as it now is", "ScheduleOut"),
                **_MISSING,
                **_BAD,
                **_STORE,
            },
        }
    }


_PATHS: dict[str, Any] = {
    "/schedules": {
        "post": {
            "operationId": "putSchedule",
            "summary": "Create a schedule, or replace the definition of the one with this id",
            "description": (
                "`cron` has 5 fields, or 6 with seconds first, read in `timezone` (an IANA name, "
                "default UTC). Each fire starts a run of `workflowId` with `parameters` and the "
                "idempotency key `schedule:<id>:<fire time, RFC 3339 UTC>`. `overlap` says what "
                "a fire does while the schedule's last run runs: `skip` (recorded as skipped, "
                "the default), `buffer_one` (one fire waits for it to end) or `allow`. Fires "
                "missed while no server ran start if they are at most `catchupWindow` seconds "
                "old (default 60), else are recorded as skipped. An id that exists is replaced: "
                "a new version (200); the same definition again stores nothing (200). A bad "
                "cron, time zone, overlap or window, or an unknown workflow, is 422 and stores "
                "nothing."
            ),
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": _ref("ScheduleRequest")}},
            },
            "responses": {
                "201": _answer("Created", "ScheduleOut"),
                "200": _answer("Replaced, or unchanged", "ScheduleOut"),
                "403": _problem(
                    "With --auth token: a role below submitter, or below operator to replace "
                    "a schedule that exists"
                ),
                **_BAD,
                **_STORE,
            },
        },
        "get": {
            "operationId": "listSchedules",
            "summary": "Every schedule, with its next fire times",
            "responses": {"200": _answer("The schedules, by id", "ScheduleList"), **_STORE},
        },
    },
    "/schedules/{scheduleId}": {
        "get": {
            "operationId": "getSchedule",
            "summary": "A schedule, with its next five fire times (in its zone and in UTC)",
            "parameters": [_ID],
            "responses": {"200": _answer("The schedule", "ScheduleOut"), **_MISSING, **_STORE},
        },
        "delete": {
            "operationId": "deleteSchedule",
            "summary": "Delete a schedule; the runs it started are not touched",
            "parameters": [_ID],
            "responses": {
                "204": {"description": "Deleted (ScheduleDeleted is stored)"},
                **_MISSING,
                **_STORE,
            },
        },
    },
    "/schedules/{scheduleId}/pause": _action(
        "pauseSchedule", "Stop a schedule firing until it is resumed", "SchedulePaused"
    ),
    "/schedules/{scheduleId}/resume": _action(
        "resumeSchedule",
        "Fire a paused schedule again, from now (fires while paused are not run)",
        "ScheduleResumed",
    ),
    "/schedules/{scheduleId}/trigger": {
        "post": {
            "operationId": "triggerSchedule",
            "summary": "Fire a schedule now, paused or not, whatever its overlap policy",
            "description": (
                "Stores ScheduleFired (manual, with `by`) and starts its run with the key "
                "`schedule:<id>:trigger:<now, RFC 3339 UTC>`."
            ),
            "parameters": [_ID],
            "requestBody": _OPTIONAL_REASON,
            "responses": {
                "201": _answer("The fire and the run it started", "ScheduleTriggered"),
                **_MISSING,
                **_BAD,
                **_STORE,
            },
        }
    },
}


def add_schedule_document(doc: dict[str, Any], ecma: Any) -> dict[str, Any]:
    """Add the /schedules routes and their schemas to ``doc`` (``ecma`` fixes patterns)."""
    doc["paths"].update(_PATHS)
    _, components = msgspec.json.schema_components(SCHEDULE_WIRE_TYPES, ref_template=REF)
    schemas = doc["components"]["schemas"]
    schemas.update(ecma(components))
    doc["components"]["schemas"] = dict(sorted(schemas.items()))
    return doc
