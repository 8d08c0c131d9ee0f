"""Attacks from a browser page on a real server on loopback: cross-site simple requests and DNS
rebinding are refused before anything is stored; CORS only for listed origins; no versions.

Each attack below took effect before this module's checks existed (the issue's probe): a page
on another origin registered a workflow, started a run and cancelled it with "simple" requests
(no Content-Type, ``text/plain`` or a form's type, which a browser sends without a preflight),
and a page whose DNS name was re-pointed at 127.0.0.1 read and wrote everything.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from flowweaver.api.errors import PROBLEM_CONTENT_TYPE
from flowweaver.api.exposure import Exposure, is_loopback, origin, split_host

from .conftest import LiveServer, run
from .raw_http import connect, read_to_end

WORKFLOW = {"id": "w", "tasks": [{"id": "t", "handler": "noop"}]}
GATED = {"id": "gated", "tasks": [{"id": "a", "handler": "gate", "inputs": {"gate": "a"}}]}
JSON_TYPE = {"Content-Type": "application/json"}
SIMPLE_TYPES = (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data")


async def _answer(response: aiohttp.ClientResponse) -> tuple[int, dict[str, str], Any]:
    return response.status, dict(response.headers), await response.json(content_type=None)


def _problem(answer: tuple[int, dict[str, str], Any], status: int, slug: str) -> dict[str, Any]:
    code, headers, body = answer
    assert code == status, body
    assert headers["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert body["status"] == status
    assert body["type"] == f"urn:flowweaver:problem:{slug}"
    return dict(body)


def _headers(content_type: str | None) -> dict[str, str]:
    return {} if content_type is None else {"Content-Type": content_type}


def _start_gated(server: LiveServer) -> str:
    """Register GATED and start a run of it through the API; return its id."""

    async def main() -> str:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=GATED) as r:
                assert r.status == 201
            async with s.post(f"{server.url}/runs", json={"workflowId": "gated"}) as r:
                assert r.status == 201
                return str((await r.json())["id"])

    return str(run(main()))


@pytest.mark.parametrize("content_type", SIMPLE_TYPES)
def test_cross_site_simple_posts_store_nothing(
    server: LiveServer, gates: Any, content_type: str | None
) -> None:
    """POST /workflows, /runs and /runs/{id}/cancel with a simple request's type are 415."""
    run_id = _start_gated(server)
    gates.wait_entered("a")
    before = server.store.max_position()
    body = b'{"id": "evil", "tasks": [{"id": "t", "handler": "noop"}]}'
    headers = _headers(content_type)

    async def main() -> None:
        async with aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as s:
            async with s.post(f"{server.url}/workflows", data=body, headers=headers) as r:
                problem = _problem(await _answer(r), 415, "unsupported-media-type")
                assert r.headers["Accept-Post"] == "application/json"
                assert "application/json" in problem["detail"]
            start = b'{"workflowId": "gated"}'
            async with s.post(f"{server.url}/runs", data=start, headers=headers) as r:
                _problem(await _answer(r), 415, "unsupported-media-type")
            for action in ("cancel", "pause"):  # with no body, as a form or fetch sends it
                async with s.post(f"{server.url}/runs/{run_id}/{action}", headers=headers) as r:
                    _problem(await _answer(r), 415, "unsupported-media-type")

    run(main())
    assert server.store.max_position() == before
    assert [w.workflow_id for w in server.store.list_workflows()] == ["gated"]
    state = server.store.run_state(run_id)
    assert state is not None
    assert state.status == "running"
    assert not state.cancel_requested


def test_json_content_type_is_accepted_with_and_without_a_body(
    server: LiveServer, gates: Any
) -> None:
    """application/json (charset utf-8 or none) works, bodies or not; other charsets are 415."""
    run_id = _start_gated(server)
    gates.wait_entered("a")

    async def main() -> None:
        url = server.url
        async with aiohttp.ClientSession() as s:
            latin = {"Content-Type": "application/json; charset=iso-8859-1"}
            async with s.post(f"{url}/workflows", data=b"{}", headers=latin) as r:
                problem = _problem(await _answer(r), 415, "unsupported-media-type")
                assert "iso-8859-1" in problem["detail"]
            utf8 = {"Content-Type": "application/json; charset=UTF-8"}
            async with s.post(f"{url}/workflows", data=msgspec_json(WORKFLOW), headers=utf8) as r:
                assert r.status == 201
            async with s.post(f"{url}/runs/{run_id}/pause", headers=JSON_TYPE) as r:
                assert r.status == 202, await r.text()
            async with s.post(
                f"{url}/runs/{run_id}/resume", json={"reason": "back"}, headers=JSON_TYPE
            ) as r:
                assert r.status == 202

    run(main())


def msgspec_json(value: Any) -> bytes:
    import msgspec  # noqa: PLC0415 - only this helper needs it

    return msgspec.json.encode(value)


def test_unknown_routes_and_methods_are_still_404_and_405(server: LiveServer) -> None:
    """The media type is checked only on a route that exists: else 404 or 405 as before."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/nowhere", data=b"x") as r:
                assert r.status == 404
            async with s.post(f"{server.url}/healthz", data=b"x") as r:
                assert r.status == 405
            async with s.delete(f"{server.url}/runs") as r:
                assert r.status == 405

    run(main())


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:3000", "localhost.evil.example", "127.0.0.1.nip.io", "x"],
)
def test_dns_rebinding_host_is_421_and_stores_nothing(server: LiveServer, host: str) -> None:
    """A request whose Host is a DNS name not listed is 421, reads nothing and writes nothing."""

    async def main() -> None:
        headers = {"Host": host}
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=WORKFLOW, headers=headers) as r:
                problem = _problem(await _answer(r), 421, "misdirected-request")
                assert host in problem["detail"]
                assert "--allowed-host" in problem["detail"]
            async with s.get(f"{server.url}/runs", headers=headers) as r:
                _problem(await _answer(r), 421, "misdirected-request")
            async with s.get(
                f"{server.url}/events/00000000-0000-4000-8000-000000000001", headers=headers
            ) as r:
                _problem(await _answer(r), 421, "misdirected-request")

    run(main())
    assert server.store.list_workflows() == []


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST:3000", "localhost.", "127.0.0.1", "[::1]:80", "10.1.2.3"]
)
def test_loopback_names_and_addresses_are_answered(server: LiveServer, host: str) -> None:
    """localhost and IP addresses, with any port, are answered without --allowed-host."""

    async def main() -> None:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{server.url}/runs", headers={"Host": host}) as r,
        ):
            assert r.status == 200

    run(main())


def test_listed_hosts_are_answered(servers: Any) -> None:
    """--allowed-host names are answered (any port, or the port given); '*' answers any."""
    server = servers(allowed_host=("api.example.com", "Other.Example:8443"))
    open_server = servers(allowed_host=("*",))

    async def status(url: str, host: str) -> int:
        async with aiohttp.ClientSession() as s, s.get(f"{url}/runs", headers={"Host": host}) as r:
            return r.status

    async def main() -> None:
        assert await status(server.url, "api.example.com") == 200
        assert await status(server.url, "API.example.com.:3000") == 200
        assert await status(server.url, "other.example:8443") == 200
        assert await status(server.url, "other.example:3000") == 421
        assert await status(server.url, "evil.example") == 421
        assert await status(open_server.url, "evil.example") == 200

    run(main())


def test_two_host_headers_and_bad_host_text(server: LiveServer) -> None:
    """Two Host headers are 400; a Host that is no host name is 421."""
    for head in (b"Host: localhost\r\nHost: evil.example\r\n", b"Host: a b\r\n"):
        sock = connect(server)
        sock.sendall(b"GET /runs HTTP/1.1\r\n" + head + b"Connection: close\r\n\r\n")
        answer = read_to_end(sock)
        sock.close()
        status = int(answer.split(b" ", 2)[1])
        assert status in (400, 421), answer
        assert b"application/problem+json" in answer or status == 400


def test_no_versions_in_the_server_header(server: LiveServer) -> None:
    """Every answer, aiohttp's own 400 for a request it cannot parse included, says flowweaver."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s, s.get(f"{server.url}/healthz") as r:
            assert r.headers["Server"] == "flowweaver"
        async with aiohttp.ClientSession() as s, s.get(f"{server.url}/nowhere") as r:
            assert r.headers["Server"] == "flowweaver"

    run(main())
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Odd: a\x01b\r\n\r\n")
    answer = read_to_end(sock)
    sock.close()
    assert answer.split(b" ", 2)[1] == b"400"
    assert b"\r\nServer: flowweaver\r\n" in answer
    assert b"aiohttp" not in answer
    assert b"Python" not in answer


def test_exposure_values() -> None:
    """Host and origin values are parsed strictly; bad ones are refused with the reason."""
    assert split_host("Example.COM.:8080") == ("example.com", 8080)
    assert split_host("[::1]") == ("[::1]", None)
    for bad in ("[::1", "[zz]", "a:b:c", "a b", "", "host:99999999", "[::1]x"):
        assert split_host(bad) is None, bad
    assert origin("HTTPS://App.Example.com/") == "https://app.example.com"
    assert origin("https://app.example.com:443") == "https://app.example.com"
    assert origin("http://localhost:8080") == "http://localhost:8080"
    for bad in ("*", "app.example.com", "https://a/b", "ftp://a", "null"):
        with pytest.raises(ValueError, match="not an origin"):
            origin(bad)
    with pytest.raises(ValueError, match="not a host name"):
        Exposure.build(allowed_hosts=["http://x"])
    assert is_loopback("127.0.0.1")
    assert is_loopback("127.1.2.3")
    assert is_loopback("::1")
    assert is_loopback("[::1]")
    assert is_loopback("localhost")
    for public in ("0.0.0.0", "::", "", "10.0.0.5", "example.com"):  # noqa: S104
        assert not is_loopback(public), public


# --- CORS -------------------------------------------------------------------------------------

ALLOWED = "https://app.example.com"
OTHER = "https://evil.example"


def _preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


def test_a_preflight_from_a_listed_origin_is_answered(servers: Any) -> None:
    """OPTIONS from a --cors-origin origin: 204 with the route's methods, our headers, max-age."""
    server = servers(cors_origin=(ALLOWED,))

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.options(f"{server.url}/runs", headers=_preflight(ALLOWED)) as r:
                assert r.status == 204
                assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
                assert set(r.headers["Access-Control-Allow-Methods"].split(", ")) >= {
                    "GET",
                    "POST",
                }
                allowed = r.headers["Access-Control-Allow-Headers"].split(", ")
                assert set(allowed) == {
                    "Authorization",
                    "Content-Type",
                    "Idempotency-Key",
                    "Last-Event-ID",
                    "Prefer",
                }
                assert r.headers["Access-Control-Max-Age"] == "3600"
                assert "Origin" in r.headers["Vary"]
                assert "Access-Control-Allow-Credentials" not in r.headers
            url = f"{server.url}/runs/00000000-0000-4000-8000-000000000001/cancel"
            async with s.options(url, headers=_preflight(ALLOWED)) as r:
                assert r.status == 204
                assert r.headers["Access-Control-Allow-Methods"] == "POST"
            async with s.options(f"{server.url}/nowhere", headers=_preflight(ALLOWED)) as r:
                assert r.status == 404

    run(main())


@pytest.mark.parametrize("listed", [(), (ALLOWED,)])
def test_other_origins_get_a_403_preflight_and_no_cors_headers(
    servers: Any, listed: tuple[str, ...]
) -> None:
    """A preflight from an unlisted origin is 403 problem+json; its requests get no CORS headers."""
    server = servers(cors_origin=listed)

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            for origin_sent in (OTHER, "null", ALLOWED + ":8443", "http://app.example.com"):
                async with s.options(f"{server.url}/runs", headers=_preflight(origin_sent)) as r:
                    problem = _problem(await _answer(r), 403, "origin-not-allowed")
                    assert "--cors-origin" in problem["detail"]
                    assert "Access-Control-Allow-Origin" not in r.headers
                    assert "Access-Control-Allow-Methods" not in r.headers
                async with s.get(f"{server.url}/runs", headers={"Origin": origin_sent}) as r:
                    assert r.status == 200
                    assert not any(h.startswith("Access-Control-") for h in r.headers)
                    assert ("Vary" in r.headers) == bool(listed)

    run(main())
    assert server.store.max_position() == 0


def test_a_listed_origin_reads_answers_problems_and_sse(servers: Any) -> None:
    """A listed origin's answers carry its origin (problems and the SSE stream included)."""
    server = servers(cors_origin=(ALLOWED, "http://localhost:8080"))
    origin_header = {"Origin": ALLOWED}

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=WORKFLOW, headers=origin_header) as r:
                assert r.status == 201
                assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
                exposed = r.headers["Access-Control-Expose-Headers"]
                assert "Location" in exposed
                assert "Retry-After" in exposed
            async with s.post(
                f"{server.url}/runs", json={"workflowId": "w"}, headers=origin_header
            ) as r:
                assert r.status == 201
                run_id = (await r.json())["id"]
            text = {**origin_header, "Content-Type": "text/plain"}
            async with s.post(f"{server.url}/runs", data=b"{}", headers=text) as r:
                _problem(await _answer(r), 415, "unsupported-media-type")
                assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
            stream = {"Origin": "http://localhost:8080", "Accept": "text/event-stream"}
            async with s.get(f"{server.url}/events/{run_id}", headers=stream) as r:
                assert r.status == 200
                assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:8080"
                assert r.headers["Vary"] == "Origin"
                names = [
                    line.decode().removeprefix("event: ").strip()
                    async for line in r.content
                    if line.startswith(b"event: ")
                ]
                assert names[0] == "RunStarted"
                assert names[-1] == "RunCompleted"

    run(main())


def test_cors_origins_are_checked_at_start() -> None:
    """An origin that is no scheme://host[:port] is refused when the app is built."""
    with pytest.raises(ValueError, match="not an origin"):
        Exposure.build(cors_origins=["https://app.example.com/path"])


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"Host: localhost\r\nContent-Type: text/plain\r\n", b"415"),
        (b"Host: evil.example\r\nContent-Type: application/json\r\n", b"421"),
    ],
)
def test_a_refused_upload_is_answered_before_100_continue(
    server: LiveServer, head: bytes, status: bytes
) -> None:
    """With Expect: 100-continue the 415 or 421 comes at once: the body is never asked for."""
    sock = connect(server)
    sock.sendall(
        b"POST /workflows HTTP/1.1\r\n" + head + b"Content-Length: 100000\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    answer = read_to_end(sock)  # the server closes: the body was never asked for
    sock.close()
    assert answer.split(b" ", 2)[1] == status, answer
    assert b"100 Continue" not in answer
    assert b"application/problem+json" in answer
    assert server.store.list_workflows() == []
