"""Tamper evidence over HTTP: verify a run's hash chain, export its stored events as NDJSON."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from flowweaver.domain.ids import canonical_run_id
from flowweaver.errors import NotFoundError

from .app import BRIDGE

NDJSON = "application/x-ndjson"
JSON = "application/json"
PROBLEM = "application/problem+json"


def add_chain_routes(app: web.Application) -> None:
    """Register GET /runs/{runId}/verify and GET /runs/{runId}/export."""
    app.router.add_get("/runs/{runId}/verify", get_run_verify)
    app.router.add_get("/runs/{runId}/export", get_run_export)


async def get_run_verify(request: web.Request) -> web.Response:
    """Walk the run's hash chain: {ok, version, head} or {ok: false, firstBadVersion, reason}."""
    run_id = _run_id(request)
    check = await request.app[BRIDGE].verify_run(run_id)
    return web.Response(body=msgspec.json.encode(check), content_type=JSON)


async def get_run_export(request: web.Request) -> web.StreamResponse:
    """Stream the run's stored events, one JSON object a line; 409 when its chain is broken."""
    run_id = _run_id(request)
    pages = await request.app[BRIDGE].export_run(run_id)  # verified before the first byte
    response = web.StreamResponse(
        headers={
            "Content-Type": NDJSON,
            "Content-Disposition": f'attachment; filename="{run_id}.ndjson"',
        }
    )
    await response.prepare(request)
    async for page in pages:
        await response.write(page)
    await response.write_eof()
    return response


def _run_id(request: web.Request) -> str:
    raw = request.match_info["runId"]
    run_id = canonical_run_id(raw)
    if run_id is None:
        raise NotFoundError("run", raw[:80])
    return run_id


def _problem(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Problem"}
    return {"description": description, "content": {PROBLEM: {"schema": schema}}}


_RUN_ID = {
    "name": "runId",
    "in": "path",
    "required": True,
    "description": "The run's id (a UUID; a longer string names no run: 404).",
    "schema": {"type": "string", "maxLength": 64},
}
_CHAIN_CHECK = {
    "title": "ChainCheck",
    "type": "object",
    "description": (
        "ok true: every stored event of the run chains (version: the last one, head: its "
        "hash). ok false: firstBadVersion is the first event that does not, reason says why."
    ),
    "properties": {
        "ok": {"type": "boolean"},
        "version": {"type": "integer", "minimum": 1},
        "head": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "firstBadVersion": {"type": "integer", "minimum": 1},
        "reason": {"type": "string"},
    },
    "required": ["ok"],
}


def chain_paths() -> dict[str, Any]:
    """Return the OpenAPI paths of these routes."""
    return {
        "/runs/{runId}/verify": {
            "get": {
                "operationId": "verifyRun",
                "summary": "Check the run's stored events against their hash chain",
                "parameters": [_RUN_ID],
                "responses": {
                    "200": {
                        "description": "The verdict (a broken chain is a 200 with ok false)",
                        "content": {JSON: {"schema": _CHAIN_CHECK}},
                    },
                    "404": _problem("No such run"),
                },
            }
        },
        "/runs/{runId}/export": {
            "get": {
                "operationId": "exportRun",
                "summary": "The run's stored events as NDJSON, hashes included",
                "parameters": [_RUN_ID],
                "responses": {
                    "200": {
                        "description": (
                            "One JSON object a line, versions in order: "
                            '{"runId", "version", "topic", "event"}, where event is the '
                            "stored JSON byte for byte (its last member is hash). "
                            "`flowweaver import` reads it."
                        ),
                        "content": {
                            NDJSON: {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "runId": {"type": "string"},
                                        "version": {"type": "integer", "minimum": 1},
                                        "topic": {"type": "string"},
                                        "event": {"type": "object"},
                                    },
                                    "required": ["runId", "version", "topic", "event"],
                                }
                            }
                        },
                    },
                    "404": _problem("No such run"),
                    "409": _problem("The run's hash chain is broken: nothing is exported"),
                },
            }
        },
    }


__all__ = ["NDJSON", "add_chain_routes", "chain_paths", "get_run_export", "get_run_verify"]
