"""Operator actions on live runs: pause, resume, cancel, and retry, skip or complete a task.

Each is one event that records ``by`` (see :mod:`flowweaver.api.principal`) and ``reason``.
The answer is 202 with the run's state as GET /runs/{id} encodes it, once the event is
stored; 409 when the run or task is not in a state that allows the action, 404 for an
unknown run or task, 503 with Retry-After when no node that owns the run answered in time.
Nothing is stored on any error. In a cluster the node that gets the request hands the action
to the node that owns the run (see :mod:`flowweaver.engine.actions`).
"""

from __future__ import annotations

from aiohttp import web

from flowweaver.domain.run import RunState
from flowweaver.domain.spec import nesting_error
from flowweaver.errors import ValidationError

from . import schemas
from .app import BRIDGE
from .principal import principal
from .routes import _expect, _json, _read_json_body, _run_id

MAX_TASK_ID_CHARS = 200
"""A task id in a path longer than this names no task (ids are at most 64 characters)."""


def add_operator_routes(app: web.Application) -> None:
    """Register the operator action routes on ``app``."""
    r = app.router
    r.add_post("/runs/{runId}/pause", pause_run, expect_handler=_expect)
    r.add_post("/runs/{runId}/resume", resume_run, expect_handler=_expect)
    r.add_post("/runs/{runId}/cancel", cancel_run, expect_handler=_expect)
    r.add_post("/runs/{runId}/tasks/{taskId}/retry", retry_task, expect_handler=_expect)
    r.add_post("/runs/{runId}/tasks/{taskId}/skip", skip_task, expect_handler=_expect)
    r.add_post("/runs/{runId}/tasks/{taskId}/complete", complete_task, expect_handler=_expect)


async def _reason(request: web.Request) -> str:
    """Return the optional body's ``reason`` ("" without a body).

    Raises:
        ApiError: not JSON (415), too large (413), malformed (400).
        ValidationError: a body of the wrong shape (422).
    """
    body = await _read_json_body(request, required=False)
    if body is None:
        return ""
    return schemas.decode_body(schemas.action_request_decoder, body).reason


def _task_id(request: web.Request) -> str:
    return request.match_info["taskId"][:MAX_TASK_ID_CHARS]


def _accepted(state: RunState) -> web.Response:
    return _json(schemas.run_out(state), status=202)


async def pause_run(request: web.Request) -> web.Response:
    """Pause a running run: 202 with its state; 409 unless it is running."""
    run_id, reason = _run_id(request), await _reason(request)
    bridge = request.app[BRIDGE]
    state = await bridge.act(bridge.engine.pause_run, run_id, by=principal(request), reason=reason)
    return _accepted(state)


async def resume_run(request: web.Request) -> web.Response:
    """Resume a paused run: 202 with its state; 409 unless it is paused."""
    run_id, reason = _run_id(request), await _reason(request)
    bridge = request.app[BRIDGE]
    state = await bridge.act(bridge.engine.resume_run, run_id, by=principal(request), reason=reason)
    return _accepted(state)


async def cancel_run(request: web.Request) -> web.Response:
    """Ask a run to stop: 202 with its state once the request is recorded; 409 once ended."""
    run_id, reason = _run_id(request), await _reason(request)
    bridge = request.app[BRIDGE]
    state = await bridge.act(bridge.engine.cancel_run, run_id, reason, by=principal(request))
    return _accepted(state)


async def retry_task(request: web.Request) -> web.Response:
    """Start a task's next attempt now: one waiting for its retry, or failed in a paused run."""
    run_id, reason = _run_id(request), await _reason(request)
    bridge = request.app[BRIDGE]
    state = await bridge.act(
        bridge.engine.retry_task, run_id, _task_id(request), by=principal(request), reason=reason
    )
    return _accepted(state)


async def skip_task(request: web.Request) -> web.Response:
    """Skip a task that has not completed and is not running, and what depends on it."""
    run_id, reason = _run_id(request), await _reason(request)
    bridge = request.app[BRIDGE]
    state = await bridge.act(
        bridge.engine.skip_task, run_id, _task_id(request), by=principal(request), reason=reason
    )
    return _accepted(state)


async def complete_task(request: web.Request) -> web.Response:
    """Complete a task by hand with ``output`` as its published output (attempt 0)."""
    run_id = _run_id(request)
    body = await _read_json_body(request)
    assert body is not None
    wanted = schemas.decode_body(schemas.complete_task_request_decoder, body)
    deep = nesting_error(wanted.output, "$.output")
    if deep is not None:
        raise ValidationError([deep])
    bridge = request.app[BRIDGE]
    state = await bridge.act(
        bridge.engine.complete_task,
        run_id,
        _task_id(request),
        wanted.output,
        by=principal(request),
        reason=wanted.reason,
    )
    return _accepted(state)
