"""The routes of DESIGN.md's HTTP surface. Writers go through the engine; readers the store."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import BadHttpMessage
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from flowweaver.domain.ids import canonical_run_id
from flowweaver.domain.spec import nesting_error
from flowweaver.engine import RunHandle
from flowweaver.engine.tracing import valid_traceparent
from flowweaver.errors import FieldError, NotFoundError, ValidationError
from flowweaver.observability import metrics

from . import schemas
from .app import BRIDGE, CONFIG, HUB, STREAMS
from .audit_routes import check_filter_run, log_page, run_page, wants_json
from .auth import refusal_before_body
from .auth_routes import add_auth_routes
from .chain_routes import add_chain_routes
from .errors import ApiError, bad_request, problem_response
from .exposure import check_before_body
from .openapi import openapi_document
from .prefer import wait_seconds
from .principal import principal
from .sse import event_json, log_stream, run_stream
from .sse.filters import parse_event_filter
from .travel_routes import add_travel_routes, as_of_version

JSON = "application/json"


def add_routes(app: web.Application) -> None:
    """Register every route of the API on ``app``."""
    r = app.router
    r.add_post("/workflows", post_workflow, expect_handler=_expect)
    r.add_get("/workflows", list_workflows, expect_handler=_expect)
    r.add_get("/workflows/{workflowId}", get_workflow, expect_handler=_expect)
    r.add_post("/runs", post_run, expect_handler=_expect)
    r.add_get("/runs", list_runs, expect_handler=_expect)
    r.add_get("/runs/{runId}", get_run, expect_handler=_expect)
    r.add_get("/runs/{runId}/events", get_run_events, expect_handler=_expect)
    r.add_get("/events/{runId}", get_run_stream, expect_handler=_expect)
    r.add_get("/events", get_log_stream, expect_handler=_expect)
    r.add_get("/openapi.json", get_openapi, expect_handler=_expect)
    r.add_get("/metrics", get_metrics, expect_handler=_expect)
    r.add_get("/healthz", get_healthz, expect_handler=_expect)
    r.add_get("/readyz", get_readyz, expect_handler=_expect)
    from .fork_routes import add_fork_routes  # noqa: PLC0415 - it builds on this module

    add_fork_routes(app)
    add_chain_routes(app)
    from .operator_routes import add_operator_routes  # noqa: PLC0415 - it uses this module's helpers

    add_operator_routes(app)
    from .signal_routes import add_signal_routes  # noqa: PLC0415 - it uses this module's helpers

    add_signal_routes(app)
    add_travel_routes(app, _expect)
    add_auth_routes(app, _expect)
    from .schedule_routes import add_schedule_routes  # noqa: PLC0415 - it uses this module's helpers

    add_schedule_routes(app)
    from .ui_routes import add_ui_routes  # noqa: PLC0415 - the web UI and GET /auth/whoami

    add_ui_routes(app, _expect)


async def _expect(request: web.Request) -> web.StreamResponse | None:
    """Answer ``Expect: 100-continue``: 421, 415 or 413 at once for a request refused, else 100.

    aiohttp's own handler sends 100 first, and the client then uploads a body the server
    will refuse. This runs before the middleware, so it answers problems itself.
    """
    if request.version != HttpVersion11:
        return None  # HTTP/1.0 has no interim answers; the body follows anyway
    try:
        check_before_body(request)  # a 421 or 415 at once, before the upload
    except ApiError as e:
        response = problem_response(
            e.status, e.slug, e.detail, instance=request.path, headers=e.headers
        )
        response.force_close()
        return response
    refused = refusal_before_body(request)
    if refused is not None:
        refused.force_close()  # the body was never asked for: do not read it as a request
        return refused
    expect = request.headers.get("Expect", "")
    if expect.lower() != "100-continue":
        return problem_response(
            417, None, "the only expectation answered is 100-continue", instance=request.path
        )
    limit = request.app[CONFIG].body_limit
    length = request.content_length
    if length is not None and length > limit:
        response = problem_response(
            413,
            "body-too-large",
            f"the body is {length} bytes; the limit is {limit}",
            instance=request.path,
        )
        response.force_close()  # the body was never asked for: do not read it as a request
        return response
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the interim answer is not part of the response's size
    return None


# --- helpers ----------------------------------------------------------------------------------


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=schemas.encoder.encode(body), status=status, content_type=JSON, headers=headers
    )


async def _read_json_body(request: web.Request, *, required: bool = True) -> bytes | None:
    """Return the raw JSON body after the media-type and size checks.

    Raises:
        ApiError: not JSON (415) or too large (413); missing when required (400).
    """
    content_type = request.headers.get("Content-Type")
    if content_type is not None and request.body_exists:
        mime = request.content_type
        if mime != JSON and not (mime.startswith("application/") and mime.endswith("+json")):
            raise ApiError(
                415,
                "unsupported-media-type",
                f"send the body as {JSON}, not {mime!r}",
                headers={"Accept-Post": JSON},
            )
    config = request.app[CONFIG]
    limit = config.body_limit
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(413, "body-too-large", f"the body is {length} bytes; the limit is {limit}")
    try:
        async with asyncio.timeout(config.body_timeout):
            body = await request.read()
    except TimeoutError:
        raise ApiError(
            408,
            "body-timeout",
            f"the request body did not arrive within {config.body_timeout:g} s",
        ) from None
    except (web.RequestPayloadError, BadHttpMessage) as e:
        # e.g. Content-Encoding: gzip on a body that is not gzip
        cause = e.__cause__ if isinstance(e.__cause__, BadHttpMessage) else e
        detail = cause.message if isinstance(cause, BadHttpMessage) else str(cause)
        raise ApiError(400, "bad-body", f"the body cannot be read: {detail.strip()}") from e
    if not body.strip():
        if required:
            raise ApiError(400, "malformed-json", "the request needs a JSON body")
        return None
    return body


def _run_id(request: web.Request) -> str:
    """Return the path's run id in its canonical spelling (any spelling uuid.UUID reads).

    Raises:
        NotFoundError: the id is no UUID, so no run has it.
    """
    raw = request.match_info["runId"]
    run_id = canonical_run_id(raw)
    if run_id is None:
        raise NotFoundError("run", raw[:80])
    return run_id


def _wants_event_stream(request: web.Request) -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


# --- workflows --------------------------------------------------------------------------------


async def post_workflow(request: web.Request) -> web.Response:
    """Register a workflow: 201 with the new version, 200 when identical to the latest."""
    body = await _read_json_body(request)
    assert body is not None
    spec = schemas.decode_body(schemas.workflow_decoder, body)
    version, created = await request.app[BRIDGE].register_workflow(spec)
    return _json(
        schemas.WorkflowCreated(id=spec.id, version=version),
        status=201 if created else 200,
        headers={"Location": f"/workflows/{spec.id}?version={version}"},
    )


async def list_workflows(request: web.Request) -> web.Response:
    """Return the latest version of every workflow."""
    found = await request.app[BRIDGE].list_workflows()
    return _json(schemas.WorkflowList(workflows=[schemas.workflow_out(w) for w in found]))


async def get_workflow(request: web.Request) -> web.Response:
    """Return one workflow's latest version, or ``?version=N``."""
    query = schemas.decode_query(request.query, schemas.WorkflowQuery)
    found = await request.app[BRIDGE].get_workflow(request.match_info["workflowId"], query.version)
    return _json(schemas.workflow_out(found))


# --- runs -------------------------------------------------------------------------------------


async def post_run(request: web.Request) -> web.Response:
    """Start a run: 201 new, 200 for a repeated idempotency key, 409 for a key reused.

    With ``Prefer: wait=N`` the answer waits until the run ends, N seconds at most; it
    carries ``Preference-Applied`` when it is the finished run.
    """
    wait = wait_seconds(request.headers.getall("Prefer", ()))
    body = await _read_json_body(request)
    assert body is not None
    run = schemas.decode_body(schemas.run_request_decoder, body)
    deep = nesting_error(run.parameters, "$.parameters")
    if deep is not None:
        raise ValidationError([deep])
    key = idempotency_key(request, run.idempotency_key)
    bridge = request.app[BRIDGE]
    handle = await bridge.start_run(
        run.workflow_id,
        parameters=run.parameters,
        idempotency_key=key,
        version=run.version,
        on_task_failure=run.on_task_failure,
        submitted_by=principal(request),
        priority=run.priority,
        # W3C Trace Context: the parent of the run's spans; one that is not valid is ignored.
        traceparent=valid_traceparent(request.headers.get("traceparent")) or "",
    )
    return await started_run(request, handle, wait)


def idempotency_key(request: web.Request, body_key: str | None) -> str | None:
    """Return the request's idempotency key: the body's, or the Idempotency-Key header's.

    Raises:
        ApiError: the header is not printable text (400).
        ValidationError: the body and the header name different keys.
    """
    header_key = request.headers.get("Idempotency-Key")
    if header_key is None:
        return body_key
    if not header_key.isprintable():  # undecodable bytes arrive as lone surrogates
        raise bad_request(
            "the Idempotency-Key header must be printable UTF-8 text",
            path="$.headers.Idempotency-Key",
        )
    if body_key is not None and body_key != header_key:
        raise ValidationError(
            [FieldError("$.idempotencyKey", "differs from the Idempotency-Key header")]
        )
    return header_key


async def started_run(request: web.Request, handle: RunHandle, wait: int | None) -> web.Response:
    """Answer a request that started a run: 201 new or 200 existing, with its Location.

    With ``wait`` (a ``Prefer: wait=N``) the answer waits until the run ends, N seconds at
    most, and carries ``Preference-Applied`` when it is the finished run.
    """
    bridge = request.app[BRIDGE]
    state = handle.state
    headers = {"Location": f"/runs/{handle.run_id}"}
    if wait is not None:
        if not state.is_terminal:
            final = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    final = await bridge.waits.wait_finished(handle.run_id)
            state = final if final is not None else await bridge.get_run(handle.run_id)
        if state.is_terminal:
            headers["Preference-Applied"] = f"wait={wait}"
    return _json(schemas.run_out(state), status=201 if handle.created else 200, headers=headers)


async def list_runs(request: web.Request) -> web.Response:
    """Return a page of runs, newest first, filtered by workflow and status."""
    query = schemas.decode_query(request.query, schemas.RunListQuery)
    try:
        page = await request.app[BRIDGE].list_runs(
            workflow_id=query.workflow_id,
            status=query.status,
            limit=query.limit,
            cursor=query.cursor,
            submitted_by=query.submitted_by,
        )
    except ValidationError as e:
        raise bad_request("cursor is not one this server issued", path="$.query.cursor") from e
    return _json(schemas.run_list(page))


async def get_run(request: web.Request) -> web.Response:
    """Return the run's state, or its state as of event ``?at=N`` or instant ``?asOf=``."""
    query = schemas.decode_query(request.query, schemas.RunStateQuery)
    at = query.at
    if query.as_of is not None:
        at = await as_of_version(request, _run_id(request), query.as_of, at)
    state = await request.app[BRIDGE].get_run(_run_id(request), at)
    if at is not None and state.version < at:
        raise bad_request(
            f"the run has {state.version} events; at must be at most that", path="$.query.at"
        )
    return _json(schemas.run_out(state))


async def get_run_events(request: web.Request) -> web.StreamResponse:
    """Return a page of the run's history, or its SSE stream for ``Accept: text/event-stream``."""
    run_id = _run_id(request)
    app = request.app
    wanted = parse_event_filter(request.query)
    if _wants_event_stream(request):
        return await run_stream(request, app[BRIDGE], app[HUB], app[STREAMS], run_id, wanted)
    if wanted is not None:
        return await run_page(request, run_id, wanted)
    query = schemas.decode_query(request.query, schemas.HistoryQuery)
    bridge = app[BRIDGE]
    page = await bridge.read_run(run_id, after=query.after, limit=query.limit)
    if not page and not await bridge.read_run(run_id, upto=1):
        raise NotFoundError("run", run_id)
    next_after = page[-1].version if len(page) == query.limit else None
    body = b'{"runId":%b,"events":[%b],"nextAfter":%b}' % (
        msgspec.json.encode(run_id),
        b",".join(event_json(rec) for rec in page),
        b"null" if next_after is None else b"%d" % next_after,
    )
    return web.Response(body=body, content_type=JSON)


# --- streams ----------------------------------------------------------------------------------


async def get_run_stream(request: web.Request) -> web.StreamResponse:
    """Stream one run's events (the original API's path)."""
    app = request.app
    run_id = _run_id(request)
    wanted = parse_event_filter(request.query)
    return await run_stream(request, app[BRIDGE], app[HUB], app[STREAMS], run_id, wanted)


async def get_log_stream(request: web.Request) -> web.StreamResponse:
    """Stream every run's events by log position (the audit feed); JSON pages if asked."""
    app = request.app
    wanted = parse_event_filter(request.query, run_id=True)
    if wants_json(request):
        return await log_page(request, wanted)
    await check_filter_run(request, wanted)
    return await log_stream(request, app[BRIDGE], app[HUB], app[STREAMS], wanted)


# --- operations -------------------------------------------------------------------------------


async def get_openapi(request: web.Request) -> web.Response:
    """Return the OpenAPI 3.1 document of this API."""
    return web.Response(body=openapi_document(), content_type=JSON)


async def get_metrics(request: web.Request) -> web.Response:
    """Return every metric in the Prometheus text format."""
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def get_healthz(request: web.Request) -> web.Response:
    """Answer while the process serves requests (liveness)."""
    return _json(schemas.Health(status="ok"))


async def get_readyz(request: web.Request) -> web.Response:
    """Answer 200 only when the event store answers and takes writes (readiness)."""
    try:
        async with asyncio.timeout(request.app[CONFIG].ready_timeout):
            await request.app[BRIDGE].ping()
    except Exception as e:  # noqa: BLE001 - whatever the store raises, it is not ready
        detail = (
            f"the event store is not ready: {e}" if str(e) else "the event store does not answer"
        )
        return problem_response(
            503, "not-ready", detail, instance=request.path, headers={"Retry-After": "1"}
        )
    return _json(schemas.Health(status="ready"))
