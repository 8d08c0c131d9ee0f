"""`serve --auth token` on a real server: roles on every route, 401/403, principals in history,
tickets for EventSource and the UI's cookie. Every refusal is problem+json and stores nothing."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from flowweaver.api.auth import ROUTE_ROLES, SESSION_COOKIE, STALE_AFTER, TICKETS, TOKENS
from flowweaver.api.auth_routes import set_session_cookie
from flowweaver.api.errors import PROBLEM_CONTENT_TYPE
from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.api.openapi import build_document
from flowweaver.domain.tokens import ROLES, role_allows
from flowweaver.errors import StoreError
from flowweaver.store.memory import MemoryEventStore

from .conftest import Gates, LiveServer, Servers, collect, events_of, example_registry, run

GATED = {
    "id": "gated",
    "tasks": [
        {"id": "a", "handler": "gate", "inputs": {"gate": "a"}},
        {"id": "b", "handler": "echo", "dependencies": ["a"]},
    ],
}
SSE = "text/event-stream"


@dataclass
class AuthServer:
    """A live `--auth token` server, a token per role, a finished run and a paused one."""

    server: LiveServer
    tokens: dict[str, str]
    done_run: str
    held_run: str

    @property
    def url(self) -> str:
        return self.server.url

    def headers(self, role: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}

    def stored(self) -> tuple[int, int]:
        """What the store holds: the log's end and the token registry's events."""
        store = self.server.store
        return store.max_position(), len(store.token_events())  # type: ignore[attr-defined]


@pytest.fixture
def auth(servers: Servers, gates: Gates) -> AuthServer:
    server = servers(handlers=example_registry(gates), auth="token")
    assert server.app is not None
    registry = server.app[TOKENS]
    tokens = {role: registry.create(f"{role}-1", role, by="test")[0] for role in ROLES}
    made = AuthServer(server, tokens, "", "")

    async def setup() -> None:
        admin = made.headers("admin")
        async with aiohttp.ClientSession(headers=admin) as s:
            for spec in (EXAMPLE_WORKFLOW, GATED):
                async with s.post(f"{made.url}/workflows", json=spec) as r:
                    assert r.status == 201
            async with s.post(
                f"{made.url}/runs",
                json={"workflowId": "example-workflow"},
                headers={"Prefer": "wait=10"},
            ) as r:
                made.done_run = (await r.json())["id"]
            async with s.post(f"{made.url}/runs", json={"workflowId": "gated"}) as r:
                made.held_run = (await r.json())["id"]

    run(setup())
    gates.wait_entered("a")
    return made


def fill(path: str, auth: AuthServer) -> str:
    return (
        path.replace("{runId}", auth.held_run)
        .replace("{taskId}", "b")
        .replace("{workflowId}", "gated")
        .replace("{name}", "nobody")
        .replace("{scheduleId}", "nobody")
    )


def operations() -> list[tuple[str, str]]:
    """Every (method, path) the OpenAPI document describes."""
    return [
        (method.upper(), path) for path, ops in build_document()["paths"].items() for method in ops
    ]


async def send(
    s: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], body: Any = None
) -> tuple[int, dict[str, str], bytes]:
    """Send one request; read the body only of a refusal (a stream never ends by itself)."""
    kw: dict[str, Any] = {"headers": headers}
    if method == "POST":
        kw["json"] = body if body is not None else {}
    async with s.request(method, url, **kw) as r:
        raw = await r.read() if r.status in (401, 403) else b""
        return r.status, dict(r.headers), raw


def test_every_routed_operation_has_a_role_and_the_document_says_it(auth: AuthServer) -> None:
    """The role table covers each route the app serves; the OpenAPI document states each role."""
    app = auth.server.app
    assert app is not None
    routed = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert routed == set(ROUTE_ROLES)
    doc = build_document()
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for method, path in operations():
        operation = doc["paths"][path][method.lower()]
        role = ROUTE_ROLES[(method, path)]
        assert operation.get("x-required-role") == role, (method, path)
        assert (operation["security"] == []) == (role is None)


def design_role(method: str, path: str) -> str | None:
    """The role DESIGN.md's table gives an operation, from its rules rather than our table."""
    if path in ("/healthz", "/readyz", "/", "/ui/{path}") or path == "/auth/session":
        return None  # the web UI's files hold no data: its sign-in page must load
    if path.startswith("/auth/tokens"):
        return "admin"
    if method == "GET" or path == "/auth/tickets":
        return "reader"
    if path in ("/workflows", "/runs", "/schedules"):
        return "submitter"
    return "operator"  # cancel, pause, resume, fork, task actions


def test_the_role_table_is_the_designs() -> None:
    """Every operation needs exactly the role DESIGN.md's table says."""
    for method, path in operations():
        assert ROUTE_ROLES[(method, path)] == design_role(method, path), (method, path)


def test_every_operation_refuses_too_low_roles_and_no_token_storing_nothing(
    auth: AuthServer,
) -> None:
    """Per operation of the OpenAPI document: no token 401, each role below it 403, nothing kept."""
    before = auth.stored()
    checked = 0

    async def main() -> None:
        nonlocal checked
        async with aiohttp.ClientSession() as s:
            for method, path in operations():
                needed = ROUTE_ROLES[(method, path)]
                if needed is None:
                    continue
                url = auth.url + fill(path, auth)
                status, headers, raw = await send(s, method, url, {})
                assert status == 401, (method, path)
                assert headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
                assert headers["Content-Type"].startswith(PROBLEM_CONTENT_TYPE)
                for role in ROLES:
                    if role_allows(role, needed):
                        continue
                    status, headers, raw = await send(s, method, url, auth.headers(role))
                    assert status == 403, (method, path, role)
                    assert headers["Content-Type"].startswith(PROBLEM_CONTENT_TYPE)
                    assert f"needs {needed}".encode() in raw
                    checked += 1

    run(main())
    assert checked >= 20
    assert auth.stored() == before


def test_every_operation_lets_each_role_at_or_above_its_own_through(auth: AuthServer) -> None:
    """Per operation and role allowed: the answer is the route's own, never 401 or 403."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            for method, path in operations():
                needed = ROUTE_ROLES[(method, path)]
                for role in ROLES:
                    if needed is not None and not role_allows(role, needed):
                        continue
                    headers = auth.headers(role)
                    if method == "GET" and path in ("/events", "/events/{runId}"):
                        headers = {**headers, "Accept": SSE}
                    url = auth.url + fill(path, auth)
                    status, _, _ = await send(s, method, url, headers)
                    assert status not in (401, 403), (method, path, role, status)

    run(main())


def test_health_stays_open_and_metrics_needs_a_reader(auth: AuthServer) -> None:
    """/healthz and /readyz answer anyone; /metrics and /openapi.json need a token."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            for path in ("/healthz", "/readyz"):
                assert (await send(s, "GET", auth.url + path, {}))[0] == 200
            for path in ("/metrics", "/openapi.json"):
                assert (await send(s, "GET", auth.url + path, {}))[0] == 401
                assert (await send(s, "GET", auth.url + path, auth.headers("reader")))[0] == 200

    run(main())


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (None, "needs a token"),
        ("Bearer", "send Authorization: Bearer <token>"),
        ("Basic dXNlcjpwYXNz", "send Authorization: Bearer <token>"),
        ("Bearer not-a-token", "malformed"),
        ("Bearer fw_" + "x" * 43, "unknown"),
        ("revoked", "revoked"),
    ],
)
def test_bad_tokens_are_401_with_a_bearer_challenge_and_store_nothing(
    auth: AuthServer, header: str | None, detail: str
) -> None:
    """Missing, malformed, other scheme, unknown, revoked: 401 problem+json, nothing stored."""
    if header == "revoked":
        assert auth.server.app is not None
        registry = auth.server.app[TOKENS]
        secret, _ = registry.create("soon-gone", "admin", by="test")
        registry.revoke("soon-gone", by="test")
        header = f"Bearer {secret}"
    before = auth.stored()

    async def main() -> None:
        headers = {"Authorization": header} if header else {}
        async with aiohttp.ClientSession() as s:
            for method, path, body in (
                ("POST", "/workflows", {**EXAMPLE_WORKFLOW, "id": "other"}),
                ("POST", "/runs", {"workflowId": "gated"}),
                ("POST", f"/runs/{auth.held_run}/cancel", {}),
                ("POST", "/auth/tokens", {"name": "sneaky", "role": "admin"}),
            ):
                status, answer, raw = await send(s, method, auth.url + path, headers, body)
                assert status == 401
                assert answer["WWW-Authenticate"].startswith('Bearer realm="flowweaver"')
                assert answer["Content-Type"].startswith(PROBLEM_CONTENT_TYPE)
                assert detail.encode() in raw

    run(main())
    assert auth.stored() == before


def test_history_names_the_token_that_did_each_thing(auth: AuthServer) -> None:
    """submittedBy on RunStarted, by on operator events and forks: the token's name."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            url = auth.url
            async with s.post(
                f"{url}/runs", json={"workflowId": "gated"}, headers=auth.headers("submitter")
            ) as r:
                started = await r.json()
            assert started["submittedBy"] == "submitter-1"
            async with s.post(
                f"{url}/runs/{started['id']}/cancel",
                json={"reason": "test"},
                headers=auth.headers("operator"),
            ) as r:
                assert r.status == 202
            async with s.post(
                f"{url}/runs/{auth.done_run}/fork", json={}, headers=auth.headers("admin")
            ) as r:
                assert r.status == 201, await r.text()
                forked = await r.json()
            async with s.get(
                f"{url}/runs/{started['id']}/events", headers=auth.headers("reader")
            ) as r:
                events = (await r.json())["events"]
            async with s.get(
                f"{url}/runs/{forked['id']}/events", headers=auth.headers("reader")
            ) as r:
                fork_events = (await r.json())["events"]
            return events, fork_events

    events, fork_events = run(main())
    by_type = {e["type"]: e for e in events}
    assert by_type["RunStarted"]["submittedBy"] == "submitter-1"
    assert by_type["RunCancelRequested"]["by"] == "operator-1"
    assert fork_events[0]["type"] == "RunForked" and fork_events[0]["by"] == "admin-1"


# --- admin token routes -----------------------------------------------------------------------


def test_an_admin_makes_lists_and_revokes_tokens_over_http(auth: AuthServer) -> None:
    """POST /auth/tokens shows the token once; GET lists without hashes; revoke takes effect."""

    async def main() -> None:
        admin = auth.headers("admin")
        async with aiohttp.ClientSession() as s:
            url = f"{auth.url}/auth/tokens"
            async with s.post(url, json={"name": "ci", "role": "submitter"}, headers=admin) as r:
                assert r.status == 201
                made = await r.json()
            assert made["name"] == "ci" and made["token"].startswith("fw_")
            ci = {"Authorization": f"Bearer {made['token']}"}
            async with s.post(url, json={"name": "ci", "role": "reader"}, headers=admin) as r:
                assert r.status == 409
            async with s.post(url, json={"name": "a b", "role": "root"}, headers=admin) as r:
                assert r.status == 422
            async with s.get(url, headers=admin) as r:
                listed = await r.json()
            row = next(t for t in listed["tokens"] if t["name"] == "ci")
            assert row["createdBy"] == "admin-1" and row["revokedAt"] is None
            assert made["token"] not in str(listed) and "hash" not in row
            async with s.get(f"{auth.url}/runs", headers=ci) as r:
                assert r.status == 200
            json_admin = {**admin, "Content-Type": "application/json"}
            async with s.post(f"{url}/ci/revoke", headers=json_admin) as r:
                assert r.status == 200
                assert (await r.json())["revokedBy"] == "admin-1"
            async with s.get(f"{auth.url}/runs", headers=ci) as r:
                assert r.status == 401  # this node knew at once
            async with s.post(f"{url}/nobody/revoke", headers=json_admin) as r:
                assert r.status == 404

    run(main())


def test_auth_routes_are_404_without_auth(server: LiveServer) -> None:
    """With --auth none there is nothing to sign in to, and no token to make."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            for method, path, body in (
                ("POST", "/auth/tokens", {"name": "x", "role": "admin"}),
                ("GET", "/auth/tokens", None),
                ("POST", "/auth/tickets", {"path": "/events"}),
                ("POST", "/auth/session", {"token": "fw_" + "a" * 43}),
            ):
                async with s.request(method, server.url + path, json=body) as r:
                    assert r.status == 404
                    assert (await r.json())["type"].endswith("auth-off")

    run(main())
    assert server.store.token_events() == []  # type: ignore[attr-defined]


# --- tickets ----------------------------------------------------------------------------------


async def ticket(
    s: aiohttp.ClientSession, auth: AuthServer, path: str, role: str = "reader"
) -> str:
    async with s.post(
        f"{auth.url}/auth/tickets", json={"path": path}, headers=auth.headers(role)
    ) as r:
        assert r.status == 201, await r.text()
        body = await r.json()
    assert "expiresAt" in body
    return str(body["ticket"])


def test_a_ticket_opens_its_stream_once(auth: AuthServer) -> None:
    """A ticket opens the stream it was asked for; the same ticket again is 401."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            path = f"/events/{auth.done_run}"
            issued = await ticket(s, auth, path)
            async with s.get(f"{auth.url}{path}?ticket={issued}", headers={"Accept": SSE}) as r:
                assert r.status == 200
                assert events_of(await collect(r))[-1].event == "RunCompleted"
            async with s.get(f"{auth.url}{path}?ticket={issued}", headers={"Accept": SSE}) as r:
                assert r.status == 401
                assert "used already" in (await r.json())["detail"]
            # The run's other event route streams the same run: the ticket is for the run.
            other = await ticket(s, auth, path)
            url = f"{auth.url}/runs/{auth.done_run}/events?ticket={other}"
            async with s.get(url, headers={"Accept": SSE}) as r:
                assert r.status == 200
                await collect(r)

    run(main())


def test_a_ticket_for_one_stream_opens_no_other(auth: AuthServer) -> None:
    """A ticket of one run on another run's stream or the log, or one of the log on a run: 401."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            for asked, used in (
                (f"/events/{auth.done_run}", f"/events/{auth.held_run}"),
                (f"/events/{auth.done_run}", "/events"),
                ("/events", f"/runs/{auth.done_run}/events"),
                (f"/events/{auth.done_run}", "/runs"),
            ):
                issued = await ticket(s, auth, asked)
                async with s.get(f"{auth.url}{used}?ticket={issued}") as r:
                    assert r.status == 401, (asked, used)
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")

    run(main())


def test_an_expired_ticket_is_refused(auth: AuthServer) -> None:
    """A ticket used after its 60 s is 401 (the server's clock moved on, not the test's)."""
    assert auth.server.app is not None
    book = auth.server.app[TICKETS]
    now = [1000.0]
    book.clock = lambda: now[0]

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            issued = await ticket(s, auth, "/events")
            now[0] += 60.0
            async with s.get(f"{auth.url}/events?ticket={issued}") as r:
                assert r.status == 401
                assert "expired" in (await r.json())["detail"]

    run(main())


def test_a_tickets_token_revoked_meanwhile_opens_nothing(auth: AuthServer) -> None:
    """A ticket acts as its token: once the token is revoked, the ticket is refused."""
    assert auth.server.app is not None
    registry = auth.server.app[TOKENS]

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            issued = await ticket(s, auth, "/events", role="operator")
            registry.revoke("operator-1", by="test")
            async with s.get(f"{auth.url}/events?ticket={issued}") as r:
                assert r.status == 401

    run(main())


def test_bad_ticket_requests(auth: AuthServer) -> None:
    """A path no stream has is 400; without a token 401; a made-up ticket 401."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            url = f"{auth.url}/auth/tickets"
            async with s.post(url, json={"path": "/runs"}, headers=auth.headers("reader")) as r:
                assert r.status == 400
            async with s.post(url, json={"path": "/events"}) as r:
                assert r.status == 401
            async with s.get(f"{auth.url}/events?ticket=fwt_made_up") as r:
                assert r.status == 401

    run(main())


# --- the UI's cookie --------------------------------------------------------------------------


def _cookie(headers: Any) -> str:
    return str(headers.getone("Set-Cookie"))


def test_signing_in_sets_an_httponly_strict_cookie_that_reads_and_writes_same_origin(
    auth: AuthServer,
) -> None:
    """The cookie is HttpOnly, SameSite=Strict, Path=/, not Secure on plain HTTP; writes it
    carries need this server's Origin, reads do not."""

    async def main() -> None:
        jar = aiohttp.CookieJar(unsafe=True)  # keep cookies of an IP-address host
        async with aiohttp.ClientSession(cookie_jar=jar) as s:
            origin = auth.url
            async with s.post(
                f"{auth.url}/auth/session",
                json={"token": auth.tokens["submitter"]},
                headers={"Origin": origin},
            ) as r:
                assert r.status == 204
                raw = _cookie(r.headers)
            attributes = {part.strip().split("=")[0].lower() for part in raw.split(";")}
            assert {"httponly", "path", "samesite"} <= attributes
            assert "secure" not in attributes
            assert re.search(r"SameSite=Strict", raw)
            async with s.get(f"{auth.url}/runs") as r:
                assert r.status == 200
            body = {"workflowId": "gated"}
            async with s.post(f"{auth.url}/runs", json=body) as r:
                assert r.status == 403
                assert "no Origin header" in (await r.json())["detail"]
            async with s.post(
                f"{auth.url}/runs", json=body, headers={"Origin": "https://evil.example"}
            ) as r:
                assert r.status == 403
            async with s.post(f"{auth.url}/runs", json=body, headers={"Origin": origin}) as r:
                assert r.status == 201
                assert (await r.json())["submittedBy"] == "submitter-1"
            async with s.post(
                f"{auth.url}/runs/{auth.held_run}/cancel", json={}, headers={"Origin": origin}
            ) as r:
                assert r.status == 403  # the cookie's token is a submitter
            async with s.delete(f"{auth.url}/auth/session", headers={"Origin": origin}) as r:
                assert r.status == 204
            async with s.get(f"{auth.url}/runs") as r:
                assert r.status == 401

    before = auth.stored()
    run(main())
    assert auth.stored()[0] > before[0]  # only the one same-origin run


def test_signing_in_is_refused_for_a_bad_token_or_another_origin(auth: AuthServer) -> None:
    """A bad token is 401 with no cookie; another site's page cannot sign a browser in."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            url = f"{auth.url}/auth/session"
            async with s.post(url, json={"token": "fw_" + "z" * 43}) as r:
                assert r.status == 401 and "Set-Cookie" not in r.headers
            async with s.post(
                url, json={"token": auth.tokens["admin"]}, headers={"Origin": "http://evil"}
            ) as r:
                assert r.status == 403 and "Set-Cookie" not in r.headers

    run(main())


@pytest.mark.parametrize("secure", [True, False])
def test_the_cookie_is_secure_exactly_under_tls(secure: bool) -> None:
    """set_session_cookie adds Secure when the request came over TLS, and only then."""
    response = web.Response(status=204)
    set_session_cookie(response, "fw_" + "a" * 43, secure=secure)
    morsel = SimpleCookie(response.cookies.output(header=""))[SESSION_COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/"
    assert bool(morsel["secure"]) is secure


def test_the_run_list_filters_by_who_submitted(auth: AuthServer) -> None:
    """GET /runs?submittedBy=NAME lists the runs that token started; each row says who."""

    async def main() -> None:
        async with aiohttp.ClientSession(headers=auth.headers("reader")) as s:
            async with s.post(
                f"{auth.url}/runs", json={"workflowId": "gated"}, headers=auth.headers("submitter")
            ) as r:
                mine = (await r.json())["id"]
            async with s.get(f"{auth.url}/runs", params={"submittedBy": "submitter-1"}) as r:
                assert r.status == 200
                assert [row["id"] for row in (await r.json())["runs"]] == [mine]
            async with s.get(f"{auth.url}/runs", params={"submittedBy": "admin-1"}) as r:
                rows = (await r.json())["runs"]
            assert {row["id"] for row in rows} == {auth.done_run, auth.held_run}
            assert {row["submittedBy"] for row in rows} == {"admin-1"}
            async with s.get(
                f"{auth.url}/runs", params={"submittedBy": "admin-1", "status": "completed"}
            ) as r:
                assert [row["id"] for row in (await r.json())["runs"]] == [auth.done_run]
            async with s.get(f"{auth.url}/runs", params={"submittedBy": "x" * 129}) as r:
                assert r.status == 400

    run(main())


def test_unknown_paths_need_a_token_and_options_needs_none(auth: AuthServer) -> None:
    """A path that does not exist is 401 before 404; OPTIONS (a CORS preflight) is not refused."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            assert (await send(s, "GET", f"{auth.url}/nowhere", {}))[0] == 401
            status, _, _ = await send(s, "GET", f"{auth.url}/nowhere", auth.headers("reader"))
            assert status == 404
            async with s.options(f"{auth.url}/runs") as r:
                assert r.status not in (401, 403)

    run(main())


def test_a_live_stream_ends_when_its_token_is_revoked(auth: AuthServer) -> None:
    """A stream that follows a running run ends once its token is revoked; reopening is 401."""
    assert auth.server.app is not None
    registry = auth.server.app[TOKENS]
    secret, _ = registry.create("watcher", "reader", by="test")
    headers = {"Authorization": f"Bearer {secret}", "Accept": SSE}

    async def main() -> None:
        url = f"{auth.url}/events/{auth.held_run}"
        async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
            assert r.status == 200
            await r.content.readuntil(b"\n\n")  # the stream is live
            await asyncio.to_thread(registry.revoke, "watcher", by="test")
            async with asyncio.timeout(5):
                while await r.content.read(65536):
                    pass  # read to the end: the server ends the stream
        async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
            assert r.status == 401

    run(main())


@pytest.mark.parametrize(("role", "status"), [(None, 401), ("reader", 403), ("submitter", 201)])
def test_expect_continue_is_refused_before_the_body_without_the_role(
    auth: AuthServer, role: str | None, status: int
) -> None:
    """`Expect: 100-continue` without a token or role is answered at once, no 100 asked."""
    body = json.dumps({**EXAMPLE_WORKFLOW, "id": "expected"}).encode()
    bearer = b"Authorization: Bearer %b\r\n" % auth.tokens[role].encode() if role else b""
    with socket.create_connection(("127.0.0.1", auth.server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /workflows HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n%b"
            b"Content-Length: %d\r\n\r\n" % (bearer, len(body))
        )
        first = sock.recv(65536)
        if first.startswith(b"HTTP/1.1 100 Continue"):
            sock.sendall(body)
        answer = first
        while chunk := sock.recv(65536):
            answer += chunk
    assert first.startswith(b"HTTP/1.1 100 Continue") == (status == 201), first
    assert f"HTTP/1.1 {status} ".encode() in answer


def test_a_server_that_cannot_read_its_tokens_answers_503_not_a_guess(servers: Servers) -> None:
    """When the store stops answering token reads for 5 s, requests get 503 tokens-unavailable
    (health stays open); once it answers again, tokens work again."""
    failing, refused = threading.Event(), threading.Event()

    class FlakyStore(MemoryEventStore):
        def token_events(self, *, after: int = 0) -> list[Any]:
            if failing.is_set():
                refused.set()
                raise StoreError("the store is down")
            return super().token_events(after=after)

    server = servers(store=FlakyStore(), auth="token")
    assert server.app is not None
    registry = server.app[TOKENS]
    secret, _ = registry.create("r", "reader", by="test")
    headers = {"Authorization": f"Bearer {secret}"}
    failing.set()
    assert refused.wait(5)  # the refresher's reads fail from now on
    registry.refreshed_at -= STALE_AFTER + 1  # as if the last good read were that long ago

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{server.url}/runs", headers=headers) as r:
                assert r.status == 503
                assert r.headers["Retry-After"] == "1"
                assert (await r.json())["type"].endswith("tokens-unavailable")
            async with s.get(f"{server.url}/healthz") as r:
                assert r.status == 200
            failing.clear()
            async with asyncio.timeout(5):
                while True:
                    async with s.get(f"{server.url}/runs", headers=headers) as r:
                        if r.status == 200:
                            return
                    await asyncio.sleep(0.05)

    run(main())
