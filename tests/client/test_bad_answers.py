"""What a client raises when the server is down, is not Flowweaver, or refuses the token;
and that every route of the OpenAPI document has a method on both clients."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import flowweaver
from flowweaver.client import ROUTES, STREAMS, AsyncClient, Client, calls
from tests.client.support import CHAIN, chain, free_port, serving
from tests.test_cli import fw

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


class _Html(BaseHTTPRequestHandler):
    def _page(self) -> None:
        body = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"
        status = 200 if self.path.startswith("/ok") else 502
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _page  # noqa: N815 - the names http.server calls

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def html_server() -> Iterator[str]:
    """A server that answers every request with an HTML page (a proxy's, say)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_a_server_that_is_down_is_a_typed_error() -> None:
    """Connection refused: ServerUnreachableError, after the retries of an idempotent call."""
    with Client(f"http://127.0.0.1:{free_port()}", retries=1) as client:
        with pytest.raises(flowweaver.ServerUnreachableError, match="connection refused"):
            client.get_run("x")
        with pytest.raises(flowweaver.ServerUnreachableError):
            client.start_run("wf")

    async def drive() -> None:
        async with AsyncClient(f"http://127.0.0.1:{free_port()}", retries=0) as client:
            with pytest.raises(flowweaver.ServerUnreachableError):
                await client.list_runs()

    asyncio.run(drive())


def test_an_html_answer_is_a_typed_error(html_server: str) -> None:
    """An HTML page, as an answer or as an error answer or instead of an event stream, is
    BadResponseError on both clients."""
    with Client(html_server, retries=0) as client:
        with pytest.raises(flowweaver.BadResponseError, match="HTML"):
            client.get_run("x")  # 502 text/html
        with pytest.raises(flowweaver.BadResponseError, match="HTML"):
            client.send(calls.Call("GET", "/ok", calls._decoder(dict)))  # 200 text/html
        with pytest.raises(flowweaver.BadResponseError):
            next(iter(Client(html_server + "/ok", retries=0).events("x")))

    async def drive() -> None:
        async with AsyncClient(html_server, retries=0) as client:
            with pytest.raises(flowweaver.BadResponseError):
                await client.list_workflows()

    asyncio.run(drive())


def test_a_wrong_token_is_an_auth_error(tmp_path: Path) -> None:
    """With `serve --auth token`: an unknown token is AuthError 401, a reader's token starting
    a run AuthError 403, and the reader's own reads work."""
    store = f"sqlite:///{tmp_path / 'auth.db'}"
    made = fw("tokens", "create", "--name", "ro", "--role", "reader", "--store", store,
              cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    with serving(store, tmp_path, "--auth", "token") as server:
        url = f"http://127.0.0.1:{server.port}"
        wrong_token = "fw_" + "0" * 40
        with Client(url, token=wrong_token) as client, pytest.raises(flowweaver.AuthError) as wrong:
            client.list_runs()
        assert wrong.value.status == 401
        with Client(url, token=made.stdout.strip()) as client:
            assert client.list_runs().runs == []
            with pytest.raises(flowweaver.AuthError) as low:
                client.start_run("wf")
            assert low.value.status == 403


BROWSER_ONLY = {("GET", "/"), ("GET", "/ui/{path}")}
"""The web UI's redirect and its static files: pages for a browser, not API answers (no
Struct to return), so no client method reads them, as the SSE routes are read by the
``events`` generators rather than by a ROUTES method."""


def test_every_route_of_the_openapi_document_has_a_client_method(tmp_path: Path) -> None:
    """Walk GET /openapi.json of a real server: each (method, path) but the UI's pages is in
    ROUTES or STREAMS, names a builder in flowweaver.client.calls, and a method of Client and
    AsyncClient."""
    store = f"sqlite:///{tmp_path / 's.db'}"
    with serving(store, tmp_path) as server, Client(f"http://127.0.0.1:{server.port}") as client:
        document = client.openapi()
        # Prefer: wait=N lengthens the call's timeout by N: a 1 s client waits for a 1.5 s run.
        client.register_workflow(chain(1, 1.5))
        with Client(client.url, timeout=1.0, retries=0) as impatient:
            assert impatient.start_run(CHAIN, wait=10).status == "completed"
    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert documented >= BROWSER_ONLY
    documented -= BROWSER_ONLY
    mapped = {**ROUTES, **STREAMS}
    missing = sorted(documented - mapped.keys())
    assert not missing, f"routes without a client method (add them to calls.ROUTES): {missing}"
    assert not mapped.keys() - documented, "ROUTES names a route the server does not document"
    for name in ROUTES.values():
        assert callable(getattr(calls, name)), name
    for name in mapped.values():
        assert callable(getattr(Client, name)), name
        assert callable(getattr(AsyncClient, name)), name
