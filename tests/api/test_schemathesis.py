"""Schemathesis against a live server: no 5xx, and no answer that contradicts /openapi.json.

Every operation is fuzzed with valid (positive) and invalid (negative) requests. The schema is
the one the server serves (checked equal below); it is loaded at collection time from the same
builder so that each operation is its own test. GET /events is left out: the global feed never
ends by design.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.api.openapi import build_document

from .conftest import Servers, example_registry

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
SCHEMA = schemathesis.openapi.from_dict(build_document())
OPERATIONS = [
    (op.path, op.method.upper(), bool(op.body or len(op.query) or len(op.path_parameters)))
    for op in (result.ok() for result in SCHEMA.get_all_operations())
    if op.path != "/events"
]


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    """A live server with the example workflow registered and one run of it."""
    servers = Servers()
    try:
        server = servers(handlers=example_registry())
        server.engine.register_workflow(EXAMPLE_WORKFLOW)
        handle = server.engine.start_run("example-workflow", idempotency_key="fuzz")
        server.engine.wait_run_finished(handle.run_id, timeout=10)
        with urllib.request.urlopen(f"{server.url}/openapi.json", timeout=10) as response:  # noqa: S310
            assert msgspec.json.decode(response.read()) == msgspec.json.decode(
                msgspec.json.encode(build_document())
            )
        yield server.url
    finally:
        servers.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("path", "method", "has_inputs"), OPERATIONS)
def test_operation_conforms(
    live_url: str, path: str, method: str, has_inputs: bool, mode: GenerationMode
) -> None:
    """Generated requests get documented statuses and bodies that match the schema."""
    if mode is GenerationMode.NEGATIVE and not has_inputs:
        pytest.skip("nothing to make invalid")
    operation = SCHEMA[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=20,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(base_url=live_url, checks=CHECKS, timeout=10)

    check()
