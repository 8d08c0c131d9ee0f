"""Fork and rerun: POST /runs/{id}/fork starts a run from a version of another one, and
GET /runs/{id}/lineage says where a run came from and which runs came from it."""

from __future__ import annotations

from aiohttp import web

from flowweaver.domain.spec import nesting_error
from flowweaver.errors import ValidationError

from . import schemas
from .app import BRIDGE
from .errors import bad_request
from .prefer import wait_seconds
from .principal import principal
from .routes import _expect, _json, _read_json_body, _run_id, idempotency_key, started_run

EMPTY_FORK = schemas.ForkRequest()
"""No body, or ``{}``: rerun from the point of failure."""


def add_fork_routes(app: web.Application) -> None:
    """Register the fork and lineage routes on ``app``."""
    app.router.add_post("/runs/{runId}/fork", post_fork, expect_handler=_expect)
    app.router.add_get("/runs/{runId}/lineage", get_lineage, expect_handler=_expect)


async def post_fork(request: web.Request) -> web.Response:
    """Fork a run: 201 with the new run, 200 for a repeated idempotency key, 409 for a key
    reused with another request; ``Prefer: wait=N`` as on POST /runs.

    Nothing is stored for a request that is refused.
    """
    parent_id = _run_id(request)
    wait = wait_seconds(request.headers.getall("Prefer", ()))
    body = await _read_json_body(request, required=False)
    fork = EMPTY_FORK if body is None else schemas.decode_body(schemas.fork_request_decoder, body)
    for value, path in ((fork.parameters, "$.parameters"), (fork.outputs, "$.outputs")):
        deep = nesting_error(value, path)
        if deep is not None:
            raise ValidationError([deep])
    key = idempotency_key(request, fork.idempotency_key)
    handle = await request.app[BRIDGE].fork_run(
        parent_id,
        at_version=fork.at_version,
        reset=fork.reset,
        parameters=fork.parameters,
        outputs=fork.outputs,
        reason=fork.reason,
        idempotency_key=key,
        on_task_failure=fork.on_task_failure,
        by=principal(request),
    )
    return await started_run(request, handle, wait)


async def get_lineage(request: web.Request) -> web.Response:
    """Return the run's parent and its forks, newest first (``?limit=``, ``?cursor=``)."""
    run_id = _run_id(request)
    query = schemas.decode_query(request.query, schemas.LineageQuery)
    try:
        lineage = await request.app[BRIDGE].lineage(run_id, limit=query.limit, cursor=query.cursor)
    except ValidationError as e:
        raise bad_request("cursor is not one this server issued", path="$.query.cursor") from e
    return _json(schemas.lineage_out(lineage))
