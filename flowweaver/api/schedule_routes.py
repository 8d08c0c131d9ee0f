"""The schedule routes: create or replace, list, show, pause, resume, trigger and delete.

Schedules live in the store (see :mod:`flowweaver.schedules`); every route reads what the
store holds at the request, so a change made on another node or by the CLI is seen at once.
POST /schedules of an id that exists replaces its definition (200, a new version); the same
definition again changes nothing (200). Trigger records a fire now and starts its run here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from aiohttp import web

from flowweaver.domain.ids import ID_PATTERN, whole_string
from flowweaver.domain.schedule import (
    DEFAULT_CATCHUP_WINDOW,
    MAX_CATCHUP_WINDOW,
    MAX_CRON_CHARS,
    MAX_TIMEZONE_CHARS,
    Overlap,
    ScheduleSpec,
)
from flowweaver.domain.spec import nesting_error
from flowweaver.domain.tokens import role_allows
from flowweaver.engine.scheduler import Scheduler, start_fire
from flowweaver.errors import FieldError, NotFoundError, StoreConfigError, ValidationError
from flowweaver.ports import ScheduleLog
from flowweaver.schedules import (
    FireTimeOut,
    ScheduleList,
    ScheduleOut,
    ScheduleRegistry,
    ScheduleTriggered,
    schedule_out,
)

from . import schemas
from .app import BRIDGE, CONFIG, ENGINE
from .auth import TOKENS
from .errors import ApiError
from .principal import principal
from .routes import _expect, _json, _read_json_body

_Id = Annotated[str, msgspec.Meta(pattern=whole_string(ID_PATTERN))]
MAX_SCHEDULE_ID_CHARS = 200


class ScheduleRequest(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    """POST /schedules: a schedule's definition (``paused`` also pauses or resumes it)."""

    id: _Id
    workflow_id: _Id
    cron: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CRON_CHARS)]
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TIMEZONE_CHARS)] = "UTC"
    parameters: dict[str, Any] = {}
    overlap: Overlap = "skip"
    catchup_window: Annotated[float, msgspec.Meta(ge=0, le=MAX_CATCHUP_WINDOW)] = (
        DEFAULT_CATCHUP_WINDOW
    )
    paused: bool | None = None


class ScheduleAction(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The optional body of pause and resume: why, recorded with the event."""

    reason: Annotated[str, msgspec.Meta(max_length=4096)] = ""


SCHEDULE_WIRE_TYPES = (
    ScheduleRequest,
    ScheduleAction,
    ScheduleOut,
    FireTimeOut,
    ScheduleList,
    ScheduleTriggered,
)
_request_decoder = msgspec.json.Decoder(ScheduleRequest)
_action_decoder = msgspec.json.Decoder(ScheduleAction)

SCHEDULES: web.AppKey[ScheduleRegistry] = web.AppKey("schedules", ScheduleRegistry)
SCHEDULER: web.AppKey[Scheduler] = web.AppKey("scheduler", Scheduler)


def add_schedule_routes(app: web.Application) -> None:
    """Register the schedule routes, and run the scheduler when the config says so."""
    engine = app[ENGINE]
    store = engine.store
    if isinstance(store, ScheduleLog):
        registry = ScheduleRegistry(store, check_workflow=store.get_workflow, clock=engine.clock)
        app[SCHEDULES] = registry
        if app[CONFIG].scheduler:
            app[SCHEDULER] = Scheduler(engine, registry)
            app.cleanup_ctx.append(_run_scheduler)
    r = app.router
    r.add_post("/schedules", post_schedule, expect_handler=_expect)
    r.add_get("/schedules", list_schedules, expect_handler=_expect)
    r.add_get("/schedules/{scheduleId}", get_schedule, expect_handler=_expect)
    r.add_delete("/schedules/{scheduleId}", delete_schedule, expect_handler=_expect)
    r.add_post("/schedules/{scheduleId}/pause", pause_schedule, expect_handler=_expect)
    r.add_post("/schedules/{scheduleId}/resume", resume_schedule, expect_handler=_expect)
    r.add_post("/schedules/{scheduleId}/trigger", trigger_schedule, expect_handler=_expect)


async def _run_scheduler(app: web.Application) -> AsyncIterator[None]:
    scheduler = app[SCHEDULER]
    scheduler.start()
    yield
    await asyncio.to_thread(scheduler.close)


def _registry(request: web.Request) -> ScheduleRegistry:
    registry = request.app.get(SCHEDULES)
    if registry is None:
        raise StoreConfigError("this server's store keeps no schedules")
    return registry


def _may_change(request: web.Request) -> bool:
    """Say whether the caller may change a schedule (operator or above; anyone without auth)."""
    tokens = request.app.get(TOKENS)
    if tokens is None:
        return True
    entry = tokens.get(principal(request))
    return entry is not None and role_allows(entry.role, "operator")


def _id(request: web.Request) -> str:
    return request.match_info["scheduleId"][:MAX_SCHEDULE_ID_CHARS]


async def _call(request: web.Request, func: Any, *args: Any, **kwargs: Any) -> Any:
    return await request.app[BRIDGE].read_store(lambda _store: func(*args, **kwargs))


async def _shown(request: web.Request, schedule_id: str, status: int = 200) -> web.Response:
    registry = _registry(request)
    entry = await _call(request, registry.get, schedule_id)
    return _json(schedule_out(entry, registry.now()), status=status)


async def post_schedule(request: web.Request) -> web.Response:
    """Create a schedule (201) or replace one's definition (200); 422 stores nothing."""
    body = await _read_json_body(request)
    assert body is not None
    asked = schemas.decode_body(_request_decoder, body)
    deep = nesting_error(asked.parameters, "$.parameters")
    if deep is not None:
        raise ValidationError([deep])
    spec = ScheduleSpec(
        id=asked.id,
        workflow_id=asked.workflow_id,
        cron=asked.cron,
        timezone=asked.timezone,
        parameters=asked.parameters,
        overlap=asked.overlap,
        catchup_window=float(asked.catchup_window),
    )
    registry = _registry(request)
    by = principal(request)
    may_replace = _may_change(request)

    def put() -> tuple[Any, bool]:
        registry.refresh()
        if not may_replace and spec.id in {e.definition.id for e in registry.entries()}:
            raise ApiError(
                403,
                "forbidden",
                f"schedule {spec.id!r} exists: replacing it is a schedule change, "
                "which needs the role operator",
            )
        return registry.put(spec, paused=asked.paused, by=by)

    entry, created = await _call(request, put)
    response = _json(schedule_out(entry, registry.now()), status=201 if created else 200)
    response.headers["Location"] = f"/schedules/{spec.id}"
    return response


async def list_schedules(request: web.Request) -> web.Response:
    """Return every schedule with its next fire times."""
    registry = _registry(request)

    def read() -> list[Any]:
        registry.refresh()
        return registry.entries()

    entries = await _call(request, read)
    now = registry.now()
    return _json(ScheduleList(schedules=[schedule_out(e, now) for e in entries]))


async def get_schedule(request: web.Request) -> web.Response:
    """Return one schedule with its next five fire times."""
    registry = _registry(request)
    await _call(request, registry.refresh)
    return await _shown(request, _id(request))


async def _reason(request: web.Request) -> str:
    body = await _read_json_body(request, required=False)
    if body is None:
        return ""
    return schemas.decode_body(_action_decoder, body).reason


async def pause_schedule(request: web.Request) -> web.Response:
    """Pause a schedule (200 with it; a paused one stays as it is)."""
    reason = await _reason(request)
    registry = _registry(request)
    await _call(request, registry.pause, _id(request), by=principal(request), reason=reason)
    return await _shown(request, _id(request))


async def resume_schedule(request: web.Request) -> web.Response:
    """Resume a schedule: it fires from now on."""
    reason = await _reason(request)
    registry = _registry(request)
    await _call(request, registry.resume, _id(request), by=principal(request), reason=reason)
    return await _shown(request, _id(request))


async def trigger_schedule(request: web.Request) -> web.Response:
    """Fire a schedule now (paused or not): 201 with the run it started."""
    await _read_json_body(request, required=False)
    registry = _registry(request)
    schedule_id = _id(request)
    engine = request.app[ENGINE]

    def check() -> None:
        # A run this node cannot start is refused before its fire is stored.
        registry.refresh()
        workflow_id = registry.get(schedule_id).definition.workflow_id
        try:
            spec = engine.store.get_workflow(workflow_id).definition
        except NotFoundError:
            raise ValidationError(
                [FieldError("$.workflowId", f"the schedule's workflow {workflow_id!r} is gone")]
            ) from None
        missing = engine.handlers.missing(t.handler for t in spec.tasks if t.handler)
        if missing:
            raise ValidationError(
                [
                    FieldError(
                        "$.workflowId",
                        f"workflow {workflow_id!r} needs handler(s) not registered here: "
                        + ", ".join(missing),
                    )
                ]
            )

    await _call(request, check)
    fire = await _call(request, registry.trigger, schedule_id, by=principal(request))
    handle = await _call(request, start_fire, engine, fire, schedule_id)
    return _json(
        ScheduleTriggered(
            schedule_id=schedule_id,
            fire_time=fire.fire_time,
            run_id=handle.run_id,
            idempotency_key=fire.idempotency_key,
        ),
        status=201,
        headers={"Location": f"/runs/{handle.run_id}"},
    )


async def delete_schedule(request: web.Request) -> web.Response:
    """Delete a schedule (204); the runs it started are not touched."""
    registry = _registry(request)
    await _call(request, registry.delete, _id(request), by=principal(request))
    return web.Response(status=204)
