"""Hostile or odd client input: every case is a 400/413/422 problem, never a 500."""

from __future__ import annotations

import json
import socket
from typing import Any

import aiohttp
import msgspec
import pytest

from flowweaver.api import schemas
from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.domain import spec

from .conftest import LiveServer, run

PROBLEM = "application/problem+json"


async def _answer(response: aiohttp.ClientResponse) -> tuple[int, str, Any]:
    body = await response.read()
    content_type = response.headers.get("Content-Type", "")
    return response.status, content_type, (json.loads(body) if body else None)


def _problem(answer: tuple[int, str, Any], *statuses: int) -> Any:
    status, content_type, body = answer
    assert status in statuses, (status, body)
    assert content_type.startswith(PROBLEM), content_type
    assert body["status"] == status
    return body


def test_the_wire_uses_the_domains_id_type() -> None:
    """The run request's workflowId is checked by the very type the workflow document uses."""
    assert schemas.Ident is spec.Ident
    with pytest.raises(msgspec.ValidationError, match=r"\$\.workflowId"):
        schemas.run_request_decoder.decode(b'{"workflowId": "etl\\n"}')
    assert schemas.run_request_decoder.decode(b'{"workflowId": "etl"}').workflow_id == "etl"


def test_a_workflow_id_with_a_trailing_newline_is_refused(server: LiveServer) -> None:
    """POST /runs with workflowId "x\\n" is a 422 at $.workflowId, as in a workflow document."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=EXAMPLE_WORKFLOW) as r:
                assert r.status == 201
            body = {"workflowId": "example-workflow\n"}
            async with s.post(f"{server.url}/runs", json=body) as r:
                problem = _problem(await _answer(r), 422)
            assert [e["path"] for e in problem["errors"]] == ["$.workflowId"]
        assert (
            server.store.list_runs(workflow_id=None, status=None, limit=10, cursor=None).runs == []
        )

    run(main())


def test_a_cycle_is_reported_with_the_other_errors(server: LiveServer) -> None:
    """A 422 for a workflow lists its cycle beside its other errors."""
    document = {
        "id": "cyclic",
        "tasks": [
            {"id": "a", "handler": "noop", "dependencies": ["b"]},
            {"id": "b", "handler": "noop", "dependencies": ["a", "ghost"]},
        ],
    }

    async def main() -> None:
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{server.url}/workflows", json=document) as r,
        ):
            return _problem(await _answer(r), 422)

    problem: Any = run(main())
    messages = [e["message"] for e in problem["errors"]]
    assert "dependency cycle: a -> b -> a" in messages
    assert "unknown task 'ghost'" in messages


# --- item: nothing a client sends is a 500 ------------------------------------------------------


def _nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def _raw(server: LiveServer, request: bytes, *, read_all: bool = True) -> bytes:
    """Send raw bytes on a fresh connection and return what the server answered."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received or read_all:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
        return received


def _status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def test_inputs_nested_deeply_are_a_422(server: LiveServer) -> None:
    """A workflow whose task inputs nest 500 deep is a 422 naming the path, not a 500."""
    document = {"id": "deep", "tasks": [{"id": "t", "handler": "echo", "inputs": _nested(500)}]}

    async def main() -> Any:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{server.url}/workflows",
                data=json.dumps(document).encode(),
                headers={"Content-Type": "application/json"},
            ) as r,
        ):
            return _problem(await _answer(r), 422)

    problem = run(main())
    [error] = problem["errors"]
    assert error["path"].startswith("$.tasks[0].inputs")
    assert "nested" in error["message"]
    assert server.store.list_workflows() == []


def test_json_nested_a_thousand_deep_is_a_400(server: LiveServer) -> None:
    """JSON nested 1,000 (or 100,000) deep where any value may go is a 400 problem."""

    def deep(depth: int) -> bytes:
        return b'{"a":' * depth + b"1" + b"}" * depth

    cases = []
    for depth in (1000, 100_000):
        cases.append(
            (
                "/workflows",
                b'{"id":"x","tasks":[{"id":"t","handler":"echo","inputs":%b}]}' % deep(depth),
            )
        )
        cases.append(("/runs", b'{"workflowId":"x","parameters":%b}' % deep(depth)))

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            for path, body in cases:
                async with s.post(
                    server.url + path, data=body, headers={"Content-Type": "application/json"}
                ) as r:
                    problem = _problem(await _answer(r), 400)
                    assert "nested too deeply" in problem["detail"]

    run(main())
    assert server.store.list_workflows() == []


def test_deep_parameters_are_refused_before_a_recursive_path_reads_them(
    server: LiveServer,
) -> None:
    """Parameters nested 500 deep are a 422 at $.parameters, even for a `$..` input path."""
    workflow = {
        "id": "descent",
        "tasks": [{"id": "t", "handler": "echo", "inputs": {"all": "$.params..a"}}],
    }

    async def main() -> Any:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=workflow) as r:
                assert r.status == 201
            body = json.dumps({"workflowId": "descent", "parameters": _nested(500)}).encode()
            async with s.post(
                f"{server.url}/runs", data=body, headers={"Content-Type": "application/json"}
            ) as r:
                return _problem(await _answer(r), 422)

    problem = run(main())
    assert problem["errors"][0]["path"].startswith("$.parameters")
    assert server.store.list_runs(workflow_id=None, status=None, limit=10, cursor=None).runs == []


def test_a_version_beyond_any_integer_column_is_refused(server: LiveServer) -> None:
    """`"version": 2**63` in POST /runs is a 422 and `?version=2**63` a 400, never a 500."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=EXAMPLE_WORKFLOW) as r:
                assert r.status == 201
            for version in (2**31 + 1, 2**63, 2**64, 10**30):
                body = b'{"workflowId": "example-workflow", "version": %d}' % version
                async with s.post(
                    f"{server.url}/runs", data=body, headers={"Content-Type": "application/json"}
                ) as r:
                    _problem(await _answer(r), 422)
                url = f"{server.url}/workflows/example-workflow?version={version}"
                async with s.get(url) as r:
                    _problem(await _answer(r), 400)

    run(main())


def test_an_idempotency_key_that_is_not_utf8_is_a_400(server: LiveServer) -> None:
    """A non-UTF-8 byte in the Idempotency-Key header is a 400 problem, and stores nothing."""
    body = json.dumps({"workflowId": "example-workflow"}).encode()
    server_store = server.store
    server.engine.register_workflow(EXAMPLE_WORKFLOW)
    # (A control character is refused by aiohttp's own parser, a plain 400 before the app.)
    for key in (b"k\xff\xfe", b"\xc3(", "clé".encode("latin-1")):
        raw = _raw(
            server,
            b"POST /runs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nIdempotency-Key: " + key + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body,
        )
        assert _status_of(raw) == 400, raw[:300]
        assert b"application/problem+json" in raw
    assert server_store.list_runs(workflow_id=None, status=None, limit=10, cursor=None).runs == []


def test_a_body_that_claims_gzip_but_is_not_is_a_400(server: LiveServer) -> None:
    """`Content-Encoding: gzip` on a body that is not compressed is a 400 problem."""
    body = json.dumps(EXAMPLE_WORKFLOW).encode()
    raw = _raw(
        server,
        b"POST /workflows HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Encoding: gzip\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body,
    )
    assert _status_of(raw) == 400, raw[:300]
    assert b"application/problem+json" in raw
    assert server.store.list_workflows() == []


def test_expect_continue_over_the_limit_gets_413_not_100(servers: Any) -> None:
    """`Expect: 100-continue` with a Content-Length over the limit is answered 413 at once."""
    server = servers(body_limit=2048)
    raw = _raw(
        server,
        b"POST /workflows HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: 1000000\r\n\r\n",
        read_all=False,
    )
    assert raw.startswith(b"HTTP/1.1 413 "), raw[:300]
    assert b"100 Continue" not in raw
    assert b"application/problem+json" in raw


def test_expect_continue_within_the_limit_still_gets_100(server: LiveServer) -> None:
    """A request within the limit gets `100 Continue`, then its answer."""
    body = json.dumps(EXAMPLE_WORKFLOW).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /workflows HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert b"HTTP/1.1 201 " in interim + answer


def test_an_unknown_expectation_is_a_417_problem(server: LiveServer) -> None:
    """An Expect header other than 100-continue is a 417 problem+json."""
    raw = _raw(
        server,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nExpect: teapot\r\nConnection: close\r\n\r\n",
    )
    assert _status_of(raw) == 417, raw[:300]
    assert b"application/problem+json" in raw
