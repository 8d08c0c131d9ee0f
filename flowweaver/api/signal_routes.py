"""POST /runs/{runId}/signals/{name}: send a run a signal (docs/concepts.md, "Signals and waits").

The body ``{"payload": ...}`` is optional (no body: the payload is null). The answer is 202
with the run's state as GET /runs/{id} encodes it, once SignalReceived (with ``by``, the
principal) is stored, together with the TaskCompleted of every task that waited for it. 404
for an unknown run or a signal no task of its workflow waits for; 409 when the run ended, is
being cancelled or already received the signal; 422 for a bad name or a payload over the task
data limit; 503 as for the operator actions. In a cluster the node that gets the request hands
it to the node that owns the run, as it does an operator action.
"""

from __future__ import annotations

from aiohttp import web

from flowweaver.domain.spec import nesting_error
from flowweaver.errors import ValidationError

from . import schemas
from .app import BRIDGE
from .principal import principal
from .routes import _expect, _json, _read_json_body, _run_id

MAX_NAME_CHARS = 200
"""A name in a path longer than this is cut before it is checked (ids are at most 128)."""


def add_signal_routes(app: web.Application) -> None:
    """Register the signal route on ``app``."""
    app.router.add_post("/runs/{runId}/signals/{name}", post_signal, expect_handler=_expect)


async def post_signal(request: web.Request) -> web.Response:
    """Record SignalReceived: 202 with the run's state."""
    run_id = _run_id(request)
    name = request.match_info["name"][:MAX_NAME_CHARS]
    body = await _read_json_body(request, required=False)
    payload = None
    if body is not None:
        payload = schemas.decode_body(schemas.signal_request_decoder, body).payload
        deep = nesting_error(payload, "$.payload")
        if deep is not None:
            raise ValidationError([deep])
    bridge = request.app[BRIDGE]
    state = await bridge.act(
        bridge.engine.send_signal, run_id, name, payload, by=principal(request)
    )
    return _json(schemas.run_out(state), status=202)
