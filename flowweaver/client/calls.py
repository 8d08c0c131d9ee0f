"""Every route of the HTTP API as a :class:`Call`: what to send and how to read the answer.

Sans-IO: nothing here opens a connection. :class:`~flowweaver.client.Client` (httpx, blocking)
and :class:`~flowweaver.client.AsyncClient` (aiohttp) send the same calls, so both have the
same methods, typed alike, answering the Structs the server encodes (``flowweaver.api.schemas``).

Adding a route: write its builder here, name it in :data:`ROUTES`, and give each client a line
``name = _method(calls.name)``; the test that walks the OpenAPI paths checks all three.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote

import msgspec

from flowweaver.api.schemas import (
    Health,
    LineageOut,
    RunList,
    RunOut,
    WorkflowCreated,
    WorkflowList,
    WorkflowOut,
)
from flowweaver.domain.events import TERMINAL_EVENT_NAMES, RunEvent
from flowweaver.domain.spec import WorkflowSpec
from flowweaver.schedules import ScheduleList, ScheduleOut, ScheduleTriggered
from flowweaver.tokens import TokenOut

if TYPE_CHECKING:
    from flowweaver.api.auth_routes import TicketOut, TokenCreatedOut, TokenList
    from flowweaver.api.ui_routes import Whoami
    from flowweaver.store.chain import ChainCheck

T = TypeVar("T")
JSON = "application/json"
EVENT_STREAM = "text/event-stream"


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request and the reader of its 2xx answer's body.

    ``idempotent`` calls are retried after a dropped connection or a 502/503/504/429 answer:
    every GET, and POST /runs or a fork that carries an idempotency key.
    """

    method: str
    path: str
    read: Callable[[bytes], T]
    params: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = False
    extra_time: float = 0.0
    """Seconds the answer may take beyond the client's timeout (``Prefer: wait=N``)."""


# --- wire types the server writes by hand (as bytes) rather than from a Struct ----------------


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One run event as the API sends it: ``data`` is its JSON (camelCase), ``offset`` its
    position in the stream it came from (the run's version, or the log position on the audit
    feed)."""

    offset: int
    type: str
    run_id: str
    version: int
    timestamp: datetime
    data: dict[str, Any]

    @property
    def is_terminal(self) -> bool:
        """Say whether this event ends its run (RunCompleted, RunFailed, RunCancelled)."""
        return self.type in TERMINAL_EVENT_NAMES

    def decode(self) -> RunEvent:
        """Return the domain event (``flowweaver.domain.events``) this JSON encodes.

        Raises:
            msgspec.ValidationError: an event type this code does not know.
        """
        fields = {k: v for k, v in self.data.items() if k not in ("runId", "version", "position")}
        event: RunEvent = msgspec.convert(fields, RunEvent)
        return event


def event_from(data: dict[str, Any], offset: int | None = None) -> Event:
    """Return the :class:`Event` of one API event object (``offset`` defaults to its version).

    Raises:
        msgspec.ValidationError: the object lacks type, runId, version or timestamp.
    """
    head = msgspec.convert(data, _EventHead, strict=False)
    return Event(
        offset=head.version if offset is None else offset,
        type=head.type,
        run_id=head.run_id,
        version=head.version,
        timestamp=head.timestamp,
        data=data,
    )


class _EventHead(msgspec.Struct, rename="camel"):
    type: str
    run_id: str
    version: int
    timestamp: datetime


class HistoryPage(msgspec.Struct, frozen=True, kw_only=True):
    """GET /runs/{id}/events: a page of a run's events; ``next_after`` pages on (None: the end)."""

    run_id: str
    events: list[Event]
    next_after: int | None


class LogPage(msgspec.Struct, frozen=True, kw_only=True):
    """GET /events as JSON: a page of every run's events by log position; ``next`` pages on."""

    events: list[Event]
    next: int | None


class RunDiff(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """GET /runs/{id}/diff: what changed from version ``from_`` to ``to``: [old, new] per field."""

    run_id: str
    from_: int = msgspec.field(name="from")
    to: int
    run: dict[str, list[Any]]
    tasks: dict[str, dict[str, list[Any]]]
    events: list[dict[str, Any]]
    event_count: int
    events_truncated: bool
    next_after: int | None


class _RawHistory(msgspec.Struct, rename="camel"):
    run_id: str
    events: list[dict[str, Any]]
    next_after: int | None


class _RawLog(msgspec.Struct):
    events: list[dict[str, Any]]
    next: int | None


def _history(body: bytes) -> HistoryPage:
    raw = msgspec.json.decode(body, type=_RawHistory)
    return HistoryPage(
        run_id=raw.run_id, events=[event_from(e) for e in raw.events], next_after=raw.next_after
    )


def _log(body: bytes) -> LogPage:
    raw = msgspec.json.decode(body, type=_RawLog)
    return LogPage(events=[event_from(e, e.get("position")) for e in raw.events], next=raw.next)


def _decoder(into: type[T]) -> Callable[[bytes], T]:
    return msgspec.json.Decoder(into).decode


def _nothing(body: bytes) -> None:
    return None


def _text(body: bytes) -> str:
    return body.decode()


def _bytes(body: bytes) -> bytes:
    return body


_encoder = msgspec.json.Encoder()


def _json_body(value: Any) -> bytes:
    return _encoder.encode(value)


def _id(value: str) -> str:
    return quote(value, safe="")


def _query(**values: Any) -> dict[str, str]:
    """Return the query parameters that are set, as the API spells them."""
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(value)
        else:
            out[name] = str(value)
    return out


def _prefer(wait: int | None) -> dict[str, str]:
    return {"Prefer": f"wait={wait}"} if wait is not None else {}


_run = _decoder(RunOut)


# --- workflows ----------------------------------------------------------------------------------


def register_workflow(definition: WorkflowSpec | Mapping[str, Any]) -> Call[WorkflowCreated]:
    """POST /workflows: record a definition as a new version (the same again changes nothing)."""
    return Call("POST", "/workflows", _decoder(WorkflowCreated), body=_json_body(definition))


def list_workflows() -> Call[WorkflowList]:
    """GET /workflows: the latest version of every workflow."""
    return Call("GET", "/workflows", _decoder(WorkflowList), idempotent=True)


def get_workflow(workflow_id: str, version: int | None = None) -> Call[WorkflowOut]:
    """GET /workflows/{id}: its latest version, or ``version``."""
    return Call(
        "GET",
        f"/workflows/{_id(workflow_id)}",
        _decoder(WorkflowOut),
        params=_query(version=version),
        idempotent=True,
    )


# --- runs ---------------------------------------------------------------------------------------


def start_run(
    workflow_id: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    version: int | None = None,
    on_task_failure: str | None = None,
    wait: int | None = None,
) -> Call[RunOut]:
    """POST /runs: start a run; with ``idempotency_key`` a repeat answers the same run.

    ``wait`` (seconds) asks the server to answer once the run ends, within that long.
    """
    body: dict[str, Any] = {"workflowId": workflow_id}
    extra = {
        "parameters": parameters,
        "idempotencyKey": idempotency_key,
        "version": version,
        "onTaskFailure": on_task_failure,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return Call(
        "POST",
        "/runs",
        _run,
        body=_json_body(body),
        headers=_prefer(wait),
        idempotent=idempotency_key is not None,
        extra_time=wait or 0,
    )


def list_runs(
    *,
    workflow_id: str | None = None,
    status: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    submitted_by: str | None = None,
) -> Call[RunList]:
    """GET /runs: a page of runs, newest first; pass ``next_cursor`` as ``cursor`` to page on."""
    params = _query(
        workflowId=workflow_id,
        status=status,
        limit=limit,
        cursor=cursor,
        submittedBy=submitted_by,
    )
    return Call("GET", "/runs", _decoder(RunList), params=params, idempotent=True)


def get_run(run_id: str, *, at: int | None = None, as_of: str | None = None) -> Call[RunOut]:
    """GET /runs/{id}: the run's state, or as of event ``at`` or instant ``as_of`` (RFC 3339)."""
    params = _query(at=at, asOf=as_of)
    return Call("GET", f"/runs/{_id(run_id)}", _run, params=params, idempotent=True)


def history(
    run_id: str,
    *,
    after: int = 0,
    limit: int | None = None,
    types: Sequence[str] | None = None,
) -> Call[HistoryPage]:
    """GET /runs/{id}/events: a page of the run's stored events after version ``after``."""
    params = _query(after=after, limit=limit, types=types)
    return Call(
        "GET",
        f"/runs/{_id(run_id)}/events",
        _history,
        params=params,
        headers={"Accept": JSON},
        idempotent=True,
    )


def log_page(
    *,
    after: int = 0,
    limit: int | None = None,
    types: Sequence[str] | None = None,
    run_id: str | None = None,
) -> Call[LogPage]:
    """GET /events as JSON: a page of every run's events after log position ``after``."""
    params = _query(after=after, limit=limit, types=types, runId=run_id)
    return Call("GET", "/events", _log, params=params, headers={"Accept": JSON}, idempotent=True)


def fork_run(
    run_id: str,
    *,
    at_version: int | None = None,
    reset: Sequence[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any] | None = None,
    reason: str = "",
    idempotency_key: str | None = None,
    on_task_failure: str | None = None,
    wait: int | None = None,
) -> Call[RunOut]:
    """POST /runs/{id}/fork: a new run from a version of this one (default: rerun what failed)."""
    values = {
        "atVersion": at_version,
        "reset": list(reset) if reset is not None else None,
        "parameters": parameters,
        "outputs": outputs,
        "reason": reason or None,
        "idempotencyKey": idempotency_key,
        "onTaskFailure": on_task_failure,
    }
    body = {k: v for k, v in values.items() if v is not None}
    return Call(
        "POST",
        f"/runs/{_id(run_id)}/fork",
        _run,
        body=_json_body(body),
        headers=_prefer(wait),
        idempotent=idempotency_key is not None,
        extra_time=wait or 0,
    )


def lineage(
    run_id: str, *, limit: int | None = None, cursor: str | None = None
) -> Call[LineageOut]:
    """GET /runs/{id}/lineage: the run's parent and its forks, newest first."""
    return Call(
        "GET",
        f"/runs/{_id(run_id)}/lineage",
        _decoder(LineageOut),
        params=_query(limit=limit, cursor=cursor),
        idempotent=True,
    )


def diff_run(run_id: str, start: int, end: int) -> Call[RunDiff]:
    """GET /runs/{id}/diff: what changed from version ``start`` to ``end``, and the events."""
    params = _query(**{"from": start, "to": end})
    return Call("GET", f"/runs/{_id(run_id)}/diff", _decoder(RunDiff), params, idempotent=True)


def verify_run(run_id: str) -> Call[ChainCheck]:
    """GET /runs/{id}/verify: check the run's stored events against their hash chain."""
    from flowweaver.store.chain import ChainCheck  # noqa: PLC0415 - the stores load on use

    return Call("GET", f"/runs/{_id(run_id)}/verify", _decoder(ChainCheck), idempotent=True)


def export_run(run_id: str) -> Call[bytes]:
    """GET /runs/{id}/export: the run's stored events as NDJSON (``flowweaver import`` reads it)."""
    return Call("GET", f"/runs/{_id(run_id)}/export", _bytes, idempotent=True)


# --- operator actions ---------------------------------------------------------------------------


def _action(run_id: str, action: str, reason: str) -> Call[RunOut]:
    body = _json_body({"reason": reason} if reason else {})
    return Call("POST", f"/runs/{_id(run_id)}/{action}", _run, body=body)


def pause_run(run_id: str, reason: str = "") -> Call[RunOut]:
    """POST /runs/{id}/pause: schedule no new task until resumed; the run's state."""
    return _action(run_id, "pause", reason)


def resume_run(run_id: str, reason: str = "") -> Call[RunOut]:
    """POST /runs/{id}/resume: resume a paused run; the run's state."""
    return _action(run_id, "resume", reason)


def cancel_run(run_id: str, reason: str = "") -> Call[RunOut]:
    """POST /runs/{id}/cancel: ask the run to stop; the run's state once the request is stored."""
    return _action(run_id, "cancel", reason)


def retry_task(run_id: str, task_id: str, reason: str = "") -> Call[RunOut]:
    """POST /runs/{id}/tasks/{taskId}/retry: start the task's next attempt now."""
    return _action(run_id, f"tasks/{_id(task_id)}/retry", reason)


def skip_task(run_id: str, task_id: str, reason: str = "") -> Call[RunOut]:
    """POST /runs/{id}/tasks/{taskId}/skip: skip a task that is not completed nor running."""
    return _action(run_id, f"tasks/{_id(task_id)}/skip", reason)


def complete_task(run_id: str, task_id: str, output: Any, reason: str = "") -> Call[RunOut]:
    """POST /runs/{id}/tasks/{taskId}/complete: complete a task by hand with ``output``."""
    body = _json_body({"output": output, "reason": reason})
    return Call("POST", f"/runs/{_id(run_id)}/tasks/{_id(task_id)}/complete", _run, body=body)


def send_signal(run_id: str, name: str, payload: Any = None) -> Call[RunOut]:
    """POST /runs/{id}/signals/{name}: complete the run's tasks that wait for signal ``name``
    (their output: ``{"result": payload}``); the run's state once SignalReceived is stored.

    Raises:
        NotFoundError: no such run, or no task of its workflow waits for ``name``.
        InvalidCommandError: the run ended, is being cancelled, or already got the signal.
    """
    body = _json_body({"payload": payload})
    return Call("POST", f"/runs/{_id(run_id)}/signals/{_id(name)}", _run, body=body)


# --- schedules ----------------------------------------------------------------------------------

_schedule = _decoder(ScheduleOut)


def create_schedule(
    schedule_id: str,
    workflow_id: str,
    cron: str,
    *,
    timezone: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    overlap: str | None = None,
    catchup_window: float | None = None,
    paused: bool | None = None,
) -> Call[ScheduleOut]:
    """POST /schedules: create a schedule, or replace the definition of the one with this id
    (the same definition again changes nothing); ``paused`` also pauses or resumes it.

    Left out, ``timezone`` is UTC, ``overlap`` skip and ``catchup_window`` 60 s.
    """
    values = {
        "id": schedule_id,
        "workflowId": workflow_id,
        "cron": cron,
        "timezone": timezone,
        "parameters": parameters,
        "overlap": overlap,
        "catchupWindow": catchup_window,
        "paused": paused,
    }
    body = {k: v for k, v in values.items() if v is not None}
    return Call("POST", "/schedules", _schedule, body=_json_body(body))


def list_schedules() -> Call[ScheduleList]:
    """GET /schedules: every schedule, with its next fire times."""
    return Call("GET", "/schedules", _decoder(ScheduleList), idempotent=True)


def get_schedule(schedule_id: str) -> Call[ScheduleOut]:
    """GET /schedules/{id}: a schedule with its next five fire times."""
    return Call("GET", f"/schedules/{_id(schedule_id)}", _schedule, idempotent=True)


def delete_schedule(schedule_id: str) -> Call[None]:
    """DELETE /schedules/{id}: delete a schedule; the runs it started are not touched."""
    return Call("DELETE", f"/schedules/{_id(schedule_id)}", _nothing)


def _schedule_action(schedule_id: str, action: str, reason: str) -> Call[ScheduleOut]:
    body = _json_body({"reason": reason} if reason else {})
    return Call("POST", f"/schedules/{_id(schedule_id)}/{action}", _schedule, body=body)


def pause_schedule(schedule_id: str, reason: str = "") -> Call[ScheduleOut]:
    """POST /schedules/{id}/pause: stop it firing until resumed; the schedule as it now is."""
    return _schedule_action(schedule_id, "pause", reason)


def resume_schedule(schedule_id: str, reason: str = "") -> Call[ScheduleOut]:
    """POST /schedules/{id}/resume: fire a paused schedule again, from now."""
    return _schedule_action(schedule_id, "resume", reason)


def trigger_schedule(schedule_id: str) -> Call[ScheduleTriggered]:
    """POST /schedules/{id}/trigger: fire it now (paused or not); the fire and its run."""
    return Call(
        "POST",
        f"/schedules/{_id(schedule_id)}/trigger",
        _decoder(ScheduleTriggered),
        body=b"{}",
    )


# --- operations ---------------------------------------------------------------------------------


def openapi() -> Call[dict[str, Any]]:
    """GET /openapi.json: the OpenAPI 3.1 document of the server."""
    return Call("GET", "/openapi.json", _decoder(dict[str, Any]), idempotent=True)


def metrics() -> Call[str]:
    """GET /metrics: every metric in the Prometheus text format."""
    return Call("GET", "/metrics", _text, headers={"Accept": "text/plain"}, idempotent=True)


def health() -> Call[Health]:
    """GET /healthz: answers while the server serves (liveness)."""
    return Call("GET", "/healthz", _decoder(Health), idempotent=True)


def ready() -> Call[Health]:
    """GET /readyz: answers once the event store answers and takes writes (readiness).

    Raises:
        ServerError: 503, not ready.
    """
    return Call("GET", "/readyz", _decoder(Health), idempotent=True)


# --- authentication (serve --auth token) --------------------------------------------------------


def create_ticket(path: str) -> Call[TicketOut]:
    """POST /auth/tickets: a one-use, 60 s ticket for the event stream at ``path``."""
    from flowweaver.api.auth_routes import TicketOut  # noqa: PLC0415 - aiohttp's server types

    return Call("POST", "/auth/tickets", _decoder(TicketOut), body=_json_body({"path": path}))


def sign_in(token: str) -> Call[None]:
    """POST /auth/session: the web UI's sign-in (the token goes to an HttpOnly cookie)."""
    return Call("POST", "/auth/session", _nothing, body=_json_body({"token": token}))


def sign_out() -> Call[None]:
    """DELETE /auth/session: the web UI's sign-out."""
    return Call("DELETE", "/auth/session", _nothing)


def list_tokens() -> Call[TokenList]:
    """GET /auth/tokens: every token by name (admin), never its secret."""
    from flowweaver.api.auth_routes import TokenList  # noqa: PLC0415 - aiohttp's server types

    return Call("GET", "/auth/tokens", _decoder(TokenList), idempotent=True)


def create_token(name: str, role: str) -> Call[TokenCreatedOut]:
    """POST /auth/tokens: a new token (admin); its secret is in the answer, this once."""
    from flowweaver.api.auth_routes import TokenCreatedOut  # noqa: PLC0415 - likewise

    body = _json_body({"name": name, "role": role})
    return Call("POST", "/auth/tokens", _decoder(TokenCreatedOut), body=body)


def revoke_token(name: str) -> Call[TokenOut]:
    """POST /auth/tokens/{name}/revoke: refuse the token from now on (admin)."""
    return Call("POST", f"/auth/tokens/{_id(name)}/revoke", _decoder(TokenOut), body=b"{}")


def whoami() -> Call[Whoami]:
    """GET /auth/whoami: who the token is (``anonymous`` without auth), its role, and the
    log's position now (follow ``log_events(after=log_position)`` to miss nothing after it)."""
    from flowweaver.api.ui_routes import Whoami  # noqa: PLC0415 - aiohttp's server types

    return Call("GET", "/auth/whoami", _decoder(Whoami), idempotent=True)


# --- the map from routes to methods -------------------------------------------------------------

STREAMS = {
    ("GET", "/events/{runId}"): "events",
    ("GET", "/events"): "log_events",
}
"""The SSE routes: each client's generator of that name reads them (and resumes them)."""

ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/workflows"): "register_workflow",
    ("GET", "/workflows"): "list_workflows",
    ("GET", "/workflows/{workflowId}"): "get_workflow",
    ("POST", "/runs"): "start_run",
    ("GET", "/runs"): "list_runs",
    ("GET", "/runs/{runId}"): "get_run",
    ("GET", "/runs/{runId}/events"): "history",
    ("POST", "/runs/{runId}/fork"): "fork_run",
    ("GET", "/runs/{runId}/lineage"): "lineage",
    ("GET", "/runs/{runId}/diff"): "diff_run",
    ("GET", "/runs/{runId}/verify"): "verify_run",
    ("GET", "/runs/{runId}/export"): "export_run",
    ("POST", "/runs/{runId}/pause"): "pause_run",
    ("POST", "/runs/{runId}/resume"): "resume_run",
    ("POST", "/runs/{runId}/cancel"): "cancel_run",
    ("POST", "/runs/{runId}/tasks/{taskId}/retry"): "retry_task",
    ("POST", "/runs/{runId}/tasks/{taskId}/skip"): "skip_task",
    ("POST", "/runs/{runId}/tasks/{taskId}/complete"): "complete_task",
    ("POST", "/runs/{runId}/signals/{name}"): "send_signal",
    ("POST", "/schedules"): "create_schedule",
    ("GET", "/schedules"): "list_schedules",
    ("GET", "/schedules/{scheduleId}"): "get_schedule",
    ("DELETE", "/schedules/{scheduleId}"): "delete_schedule",
    ("POST", "/schedules/{scheduleId}/pause"): "pause_schedule",
    ("POST", "/schedules/{scheduleId}/resume"): "resume_schedule",
    ("POST", "/schedules/{scheduleId}/trigger"): "trigger_schedule",
    ("GET", "/openapi.json"): "openapi",
    ("GET", "/metrics"): "metrics",
    ("GET", "/healthz"): "health",
    ("GET", "/readyz"): "ready",
    ("POST", "/auth/tickets"): "create_ticket",
    ("POST", "/auth/session"): "sign_in",
    ("DELETE", "/auth/session"): "sign_out",
    ("GET", "/auth/tokens"): "list_tokens",
    ("POST", "/auth/tokens"): "create_token",
    ("POST", "/auth/tokens/{name}/revoke"): "revoke_token",
    ("GET", "/auth/whoami"): "whoami",
}
"""Every (method, path) of the OpenAPI document and the builder here, and client method, of
the same name. ``GET /events`` as JSON is :func:`log_page` too."""
