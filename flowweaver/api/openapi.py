"""The OpenAPI 3.1 document of the API, its schemas generated from the wire types.

Component schemas come from msgspec (``schema_components``) so they cannot drift from what
the decoders accept and the encoders write; the paths are listed here, and a test checks them
against the app's router.
"""

from __future__ import annotations

import functools
import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec

from flowweaver.domain.events import RUN_EVENT_NAMES, RUN_STATUSES
from flowweaver.domain.spec import MAX_TASKS, WorkflowSpec

from . import schemas
from .chain_routes import chain_paths
from .errors import Problem
from .openapi_auth import add_auth_document
from .openapi_limits import add_limits_document
from .openapi_signals import add_signals_document
from .openapi_travel import add_travel_document
from .openapi_ui import add_ui_document

REF = "#/components/schemas/{name}"
PROBLEM = "application/problem+json"
JSON = "application/json"
SSE = "text/event-stream"
MAX_OFFSET = 2**63 - 1

_WIRE_TYPES: tuple[Any, ...] = (
    WorkflowSpec,
    schemas.RunRequest,
    schemas.ForkRequest,
    schemas.LineageOut,
    schemas.ActionRequest,
    schemas.CompleteTaskRequest,
    schemas.WorkflowCreated,
    schemas.WorkflowOut,
    schemas.WorkflowList,
    schemas.RunOut,
    schemas.RunList,
    schemas.Health,
    Problem,
)

# msgspec anchors Python patterns with (?!\n)$ so that `$` cannot match before a final
# newline; JSON Schema patterns are ECMA-262, where `$` already means the very end.
_PY_ANCHOR = re.compile(r"\(\?!\\n\)\$$")


def _ecma_patterns(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                _PY_ANCHOR.sub("$", v)
                if k == "pattern" and isinstance(v, str)
                else _ecma_patterns(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_ecma_patterns(v) for v in node]
    return node


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": _ref("Problem")}}}


def _json_response(
    description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


_PREFERENCE_APPLIED = {
    "description": "`wait=N` when a Prefer: wait was asked and the answer is the ended run",
    "schema": {"type": "string"},
}


def _offset_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
    }


_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "Resume after this offset (an `id:` the stream sent); wins over `after`.",
    "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
}
_RUN_ID = {
    "name": "runId",
    "in": "path",
    "required": True,
    "description": "The run's id (a UUID).",
    "schema": {"type": "string"},
}
_WORKFLOW_ID = {
    "name": "workflowId",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}
_SSE_EXAMPLE = (
    "retry: 1000\n\n"
    "id: 1\nevent: RunStarted\n"
    'data: {"type":"RunStarted","runId":"d3d648da-52b7-5a89-b411-23579625e03a","version":1,'
    '"timestamp":"2026-11-26T02:40:06.099067Z","workflowId":"example-workflow",...}\n\n'
    ": keep-alive\n\n"
)
_SSE_MEDIA = {
    "schema": {
        "type": "string",
        "description": (
            "text/event-stream (WHATWG HTML, server-sent events). First a `retry:` line; then "
            "one message per stored event, oldest first: `id:` its offset (the run version on "
            "per-run streams, the global log position on /events), `event:` the event name "
            "(one of RunEvent.type), `data:` the event as one line of JSON, a RunEvent object "
            "(#/components/schemas/RunEvent); and a `: keep-alive` comment line while idle. "
            "Per-run streams close after the run's terminal event (RunCompleted, RunFailed or "
            "RunCancelled). Resume with `Last-Event-ID` or `?after=`: no gap, no duplicate."
        ),
    },
    "example": _SSE_EXAMPLE,
    "x-sse-data": _ref("RunEvent"),
}
_SSE_BODY = {
    "description": "The event stream (see the media type's schema for its messages)",
    "headers": {
        "Cache-Control": {"description": "`no-cache`", "schema": {"type": "string"}},
    },
    "content": {SSE: _SSE_MEDIA},
}
_BAD_BODY = {
    "400": _problem("The body is not JSON"),
    "408": _problem("The body did not arrive in time"),
    "413": _problem("The body is larger than the server accepts"),
    "415": _problem(
        "Not sent as application/json (UTF-8): every POST says so, even one with no body"
    ),
    "422": _problem("The document breaks a rule; `errors` lists each with its JSON path"),
}


def _paths() -> dict[str, Any]:
    return {
        "/workflows": {
            "post": {
                "operationId": "registerWorkflow",
                "summary": "Register a workflow definition as its next version",
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("WorkflowSpec")}},
                },
                "responses": {
                    "201": _json_response("A new version was recorded", _ref("WorkflowCreated")),
                    "200": _json_response(
                        "Identical to the latest version; nothing recorded",
                        _ref("WorkflowCreated"),
                    ),
                    **_BAD_BODY,
                },
            },
            "get": {
                "operationId": "listWorkflows",
                "summary": "The latest version of every workflow",
                "responses": {"200": _json_response("Workflows by id", _ref("WorkflowList"))},
            },
        },
        "/workflows/{workflowId}": {
            "get": {
                "operationId": "getWorkflow",
                "summary": "One version of a workflow (the latest by default)",
                "parameters": [
                    _WORKFLOW_ID,
                    {
                        "name": "version",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 2**31},
                    },
                ],
                "responses": {
                    "200": _json_response("The definition", _ref("WorkflowOut")),
                    "400": _problem("A malformed query parameter"),
                    "404": _problem("No such workflow or version"),
                },
            }
        },
        "/runs": {
            "post": {
                "operationId": "startRun",
                "summary": "Start a run of a workflow",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "Same as the body's idempotencyKey (they must agree).",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 256},
                    },
                    {
                        "name": "Prefer",
                        "in": "header",
                        "required": False,
                        "description": (
                            "RFC 7240. `wait=N` (N whole seconds, 0 to 60) answers when the run"
                            " ends within N seconds, with `Preference-Applied: wait=N`; else"
                            " after N seconds with the run as it stands. Other preferences are"
                            " ignored."
                        ),
                        "schema": {"type": "string"},
                        "example": "wait=10",
                    },
                    {
                        "name": "traceparent",
                        "in": "header",
                        "required": False,
                        "description": (
                            "W3C Trace Context: the parent of the run's trace spans, recorded"
                            " in RunStarted.traceparent. A value that is not valid is ignored."
                        ),
                        "schema": {"type": "string", "maxLength": 256},
                        "example": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("RunRequest")}},
                },
                "responses": {
                    "201": _json_response(
                        "The run was started (with Prefer: wait, ended or as it stands), or"
                        " accepted with status `queued` when its workflow's concurrency limit"
                        " is reached (it begins, RunDequeued, when a slot frees)",
                        _ref("RunOut"),
                        headers={"Preference-Applied": _PREFERENCE_APPLIED},
                    ),
                    "200": _json_response(
                        "The run this idempotency key already started",
                        _ref("RunOut"),
                        headers={"Preference-Applied": _PREFERENCE_APPLIED},
                    ),
                    "404": _problem("No such workflow or version"),
                    "409": _problem("The idempotency key was used for a different request"),
                    **_BAD_BODY,
                },
            },
            "get": {
                "operationId": "listRuns",
                "summary": "Runs, newest first, with filters and cursor pagination",
                "parameters": [
                    {"name": "workflowId", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(RUN_STATUSES)},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _json_response("A page of runs", _ref("RunList")),
                    "400": _problem("A malformed query parameter or cursor"),
                },
            },
        },
        "/runs/{runId}": {
            "get": {
                "operationId": "getRun",
                "summary": "A run's state, or its state as of event `at`",
                "parameters": [
                    _RUN_ID,
                    {
                        "name": "at",
                        "in": "query",
                        "required": False,
                        "description": "A run version: the state right after that event.",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_OFFSET},
                    },
                ],
                "responses": {
                    "200": _json_response("The run's state", _ref("RunOut")),
                    "400": _problem("A malformed `at`, or one beyond the run's last event"),
                    "404": _problem("No such run"),
                },
            }
        },
        "/runs/{runId}/events": {
            "get": {
                "operationId": "getRunEvents",
                "summary": "A page of a run's history; SSE with `Accept: text/event-stream`",
                "description": (
                    "Without `Accept: text/event-stream` (the JSON history), the query "
                    "parameters are `after` and `limit`; `Last-Event-ID` is ignored. With it "
                    "(the SSE stream, as GET /events/{runId}), they are `after` and the "
                    "`Last-Event-ID` header, which wins over `after`; `limit` is ignored. "
                    "Other query parameters are ignored."
                ),
                "parameters": [
                    _RUN_ID,
                    _offset_param(
                        "after",
                        "Both forms: return (or replay) events with a version greater than "
                        "this. The JSON history answers an empty page past the end; the "
                        "stream answers 400 past the end.",
                    ),
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "JSON history only: events per page (default 100).",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                    {
                        **_LAST_EVENT_ID,
                        "description": "SSE only: resume after this offset; wins over `after`.",
                    },
                ],
                "responses": {
                    "200": {
                        "description": (
                            "The events, oldest first, as JSON; or, for "
                            "`Accept: text/event-stream`, the SSE stream"
                        ),
                        "headers": _SSE_BODY["headers"],
                        "content": {JSON: {"schema": _ref("EventPage")}, SSE: _SSE_MEDIA},
                    },
                    "400": _problem(
                        "A malformed offset or limit; for the stream, an offset beyond the "
                        "run's last event"
                    ),
                    "404": _problem("No such run"),
                },
            }
        },
        "/runs/{runId}/fork": {
            "post": {
                "operationId": "forkRun",
                "summary": "Start a new run from a version of this one (rerun)",
                "description": (
                    "No body (or `{}`) reruns from the point of failure: atVersion is the run's "
                    "last event and reset every task not completed as of it. Reset tasks and "
                    "everything downstream of them run again; every other task completed as of "
                    "atVersion is carried with its output (or its override in `outputs`) and "
                    "does not run again. The parent, live or ended, is not changed. The new "
                    "run's first event is RunForked."
                ),
                "parameters": [
                    _RUN_ID,
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "Same as the body's idempotencyKey (they must agree).",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 256},
                    },
                    {
                        "name": "Prefer",
                        "in": "header",
                        "required": False,
                        "description": "`wait=N` (0 to 60 s), as on POST /runs.",
                        "schema": {"type": "string"},
                        "example": "wait=10",
                    },
                ],
                "requestBody": {
                    "required": False,
                    "content": {JSON: {"schema": _ref("ForkRequest")}},
                },
                "responses": {
                    "201": _json_response(
                        "The fork was started (with Prefer: wait, ended or as it stands); "
                        "parentRunId and parentVersion name where it came from",
                        _ref("RunOut"),
                        headers={"Preference-Applied": _PREFERENCE_APPLIED},
                    ),
                    "200": _json_response(
                        "The fork this idempotency key already started",
                        _ref("RunOut"),
                        headers={"Preference-Applied": _PREFERENCE_APPLIED},
                    ),
                    "404": _problem("No such run"),
                    "409": _problem("The idempotency key was used for a different fork"),
                    **_BAD_BODY,
                    "422": _problem(
                        "atVersion beyond the run's last event, a reset task the workflow "
                        "lacks, an output override for a task that is not carried, or a "
                        "field of the wrong shape; `errors` names each path. Nothing is stored."
                    ),
                },
            }
        },
        "/runs/{runId}/lineage": {
            "get": {
                "operationId": "getRunLineage",
                "summary": "The run this one was forked from, and the runs forked from it",
                "parameters": [
                    _RUN_ID,
                    {
                        "name": "limit",
                        "in": "query",
                        "description": "The most children on one page (default 100).",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "nextCursor of the page before.",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": _json_response(
                        "The parent (null unless a fork) and a page of children, newest first",
                        _ref("LineageOut"),
                    ),
                    "400": _problem("A malformed limit or cursor"),
                    "404": _problem("No such run"),
                },
            }
        },
        **_operator_paths(),
        "/events/{runId}": {
            "get": {
                "operationId": "streamRun",
                "summary": "SSE stream of one run; ends after its terminal event",
                "parameters": [
                    _RUN_ID,
                    _offset_param("after", "Replay events with a version greater than this."),
                    _LAST_EVENT_ID,
                ],
                "responses": {
                    "200": _SSE_BODY,
                    "400": _problem("A malformed offset, or one beyond the run's last event"),
                    "404": _problem("No such run"),
                },
            }
        },
        "/events": {
            "get": {
                "operationId": "streamLog",
                "summary": "SSE stream of every run's events by global log position",
                "parameters": [
                    _offset_param("after", "Replay events after this log position."),
                    _LAST_EVENT_ID,
                ],
                "responses": {
                    "200": _SSE_BODY,
                    "400": _problem("A malformed offset, or one beyond the end of the log"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "responses": {"200": _json_response("OpenAPI 3.1", {"type": "object"})},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "The Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "getHealth",
                "summary": "Liveness: the process answers",
                "responses": {"200": _json_response("Alive", _ref("Health"))},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "getReadiness",
                "summary": "Readiness: the event store answers",
                "responses": {
                    "200": _json_response("Ready", _ref("Health")),
                    "503": _problem("The event store does not answer"),
                },
            }
        },
        **chain_paths(),
    }


_EVENT_SCHEMA = {
    "title": "RunEvent",
    "description": (
        "A run event as stored: type, runId, version, timestamp, then the event's own "
        "fields (taskId, attempt, output, error with its traceback, logs, ...)."
    ),
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": list(RUN_EVENT_NAMES)},
        "runId": {"type": "string"},
        "version": {"type": "integer", "minimum": 1},
        "timestamp": {"type": "string", "format": "date-time"},
        "hash": {
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
            "description": (
                "Last member: SHA-256 over the previous event's hash and this event's JSON "
                "before this member (see GET /runs/{runId}/verify); absent from events "
                "stored before hash chains."
            ),
        },
    },
    "required": ["type", "runId", "version", "timestamp"],
}
_TASK_ID = {
    "name": "taskId",
    "in": "path",
    "required": True,
    "description": "The task's id in the run's workflow.",
    "schema": {"type": "string"},
}

# (path, operationId, summary, event, what the 409 means); every action answers alike.
_OPERATOR_ACTIONS = (
    (
        "/runs/{runId}/pause",
        "pauseRun",
        "Pause a running run: no new task starts; running attempts finish and are recorded",
        "RunPaused",
        "The run is not running (paused, being cancelled, or ended)",
    ),
    (
        "/runs/{runId}/resume",
        "resumeRun",
        "Resume a paused run: what the pause held starts",
        "RunResumed",
        "The run is not paused",
    ),
    (
        "/runs/{runId}/cancel",
        "cancelRun",
        "Ask a run to stop; RunCancelled follows when nothing runs",
        "RunCancelRequested",
        "The run already ended",
    ),
    (
        "/runs/{runId}/tasks/{taskId}/retry",
        "retryTask",
        "Start a task's next attempt now (even in a paused run)",
        "TaskRetried",
        "The task is not waiting for a retry, nor failed in a paused run; or the run ended",
    ),
    (
        "/runs/{runId}/tasks/{taskId}/skip",
        "skipTask",
        "Skip a task that has not completed and is not running, and what depends on it",
        "TaskSkipped",
        "The task completed, runs, or was skipped; or the run ended",
    ),
    (
        "/runs/{runId}/tasks/{taskId}/complete",
        "completeTask",
        "Complete a task by hand with `output` as its published output (attempt 0)",
        "TaskCompleted",
        "The task completed or runs; or the run ended",
    ),
)


def _operator_paths() -> dict[str, Any]:
    """The operator actions: each stores one event with `by` and `reason`, answers 202."""
    paths: dict[str, Any] = {}
    for path, operation_id, summary, event, conflict in _OPERATOR_ACTIONS:
        is_complete = operation_id == "completeTask"
        parameters = [_RUN_ID, _TASK_ID] if "{taskId}" in path else [_RUN_ID]
        paths[path] = {
            "post": {
                "operationId": operation_id,
                "summary": summary,
                "description": (
                    f"Stores {event} with `by` (the principal; `anonymous` without auth) and "
                    "`reason`, on the node that owns the run (any node takes the request). "
                    "Nothing is stored on any error."
                ),
                "parameters": parameters,
                "requestBody": {
                    "required": is_complete,
                    "content": {
                        JSON: {
                            "schema": _ref(
                                "CompleteTaskRequest" if is_complete else "ActionRequest"
                            )
                        }
                    },
                },
                "responses": {
                    "202": _json_response(f"{event} is stored: the run's state", _ref("RunOut")),
                    "404": _problem("No such run" + (" or task" if "{taskId}" in path else "")),
                    "409": _problem(conflict),
                    **_BAD_BODY,
                    "503": _problem(
                        "No node that owns the run answered in time (a takeover may be under "
                        "way); Retry-After says when to try again"
                    ),
                },
            }
        }
    return paths


_EVENT_PAGE = {
    "title": "EventPage",
    "type": "object",
    "properties": {
        "runId": {"type": "string"},
        "events": {"type": "array", "items": _ref("RunEvent")},
        "nextAfter": {
            "anyOf": [{"type": "integer"}, {"type": "null"}],
            "description": "Pass as `after` for the next page; null when this page is the end.",
        },
    },
    "required": ["runId", "events", "nextAfter"],
}


def _version() -> str:
    try:
        return version("flowweaver")
    except PackageNotFoundError:
        return "0.0.0"


def build_document() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document as a dict."""
    _, components = msgspec.json.schema_components(_WIRE_TYPES, ref_template=REF)
    components = _ecma_patterns(components)
    # validate_workflow enforces these (with its own message, beside the other errors), so
    # the type does not: say so in the schema all the same.
    tasks = components["WorkflowSpec"]["properties"]["tasks"]
    tasks["minItems"] = 1
    tasks["maxItems"] = MAX_TASKS
    components["RunEvent"] = _EVENT_SCHEMA
    components["EventPage"] = _EVENT_PAGE
    document = add_travel_document(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "Flowweaver",
                "version": _version(),
                "description": (
                    "Event-sourced workflow engine. Errors are RFC 9457 problem+json; a 422 lists "
                    "each problem with its JSON path in `errors`. Every POST sends "
                    "`Content-Type: application/json`, even with no body (else 415). Any "
                    "operation answers 421 to a `Host` that is a DNS name the server was not "
                    "given with --allowed-host (localhost and IP addresses are always answered)."
                ),
            },
            "paths": _paths(),
            "components": {"schemas": dict(sorted(components.items()))},
        }
    )
    from .openapi_schedules import add_schedule_document  # noqa: PLC0415 - routes import this module

    document = add_schedule_document(add_signals_document(document), _ecma_patterns)
    return add_auth_document(add_ui_document(add_limits_document(document)))


@functools.cache
def openapi_document() -> bytes:
    """Return the OpenAPI document as JSON, built once."""
    return msgspec.json.encode(build_document())
