"""Browser tests of the web UI: Debian's chromium driven by Playwright against real servers.

The browser is the system's (``/usr/bin/chromium``, or ``FLOWWEAVER_CHROMIUM``); Playwright
never downloads one. Without a browser the tests skip, except under CI (``CI=true``), where a
browser that cannot start fails the suite.

Every page records the URL of each request it makes (route interception) and every console
error; :func:`check_page` asserts that none left loopback and none was an error.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.serve_process import ServeProcess

CHROMIUM = os.environ.get("FLOWWEAVER_CHROMIUM", "/usr/bin/chromium")
HANDLERS = str(Path(__file__).with_name("ui_handlers.py"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "ui"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium per module (Playwright's loop must be gone before other tests
    call asyncio.run, so it does not outlive the module)."""
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 - optional dev extra
    except ImportError:
        if IN_CI:
            pytest.fail("playwright is not installed (pip install -e .[dev])")
        pytest.skip("playwright is not installed")
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"no browser at {CHROMIUM} (apt-get install chromium)")
        pytest.skip(f"no browser at {CHROMIUM}")
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
        except Exception as e:
            if IN_CI:
                pytest.fail(f"the browser did not start: {e}")
            pytest.skip(f"the browser did not start: {e}")
        yield browser
        browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A `flowweaver serve` subprocess on a fixed port (so a restart keeps the page's origin)."""

    store: str
    cwd: Path
    port: int
    args: tuple[str, ...] = ()
    process: ServeProcess | None = None

    def start(self) -> Server:
        args = ("--port", str(self.port), "--handlers", HANDLERS, *self.args)
        self.process = ServeProcess(self.store, self.cwd, args=args)
        self.process.wait_started()
        return self

    def stop(self) -> None:
        assert self.process is not None
        self.process.stop()
        self.process.close()
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """Send one JSON request (a POST says JSON); return the status and the decoded answer."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            sent = dict(headers or {})
            if method != "GET":
                sent["Content-Type"] = "application/json"
            payload = None if body is None else json.dumps(body)
            connection.request(method, path, body=payload, headers=sent)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            connection.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A server on a SQLite store (it survives a restart), without auth."""
    s = Server(f"sqlite:///{tmp_path / 'ui.db'}", tmp_path, free_port()).start()
    yield s
    if s.process is not None:
        s.process.close()


@dataclass
class Watched:
    """A page and what it did: each request's URL and each console error."""

    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def check(self, allowed_errors: tuple[str, ...] = ()) -> None:
        """No request left loopback; no console error but those containing an allowed text."""
        outside = [u for u in self.requests if urlsplit(u).hostname not in LOOPBACK]
        assert not outside, outside
        errors = [e for e in self.errors if not any(a in e for a in allowed_errors)]
        assert not errors, errors


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    """A fresh browser context and page that records requests and console errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    w = Watched(page)

    def record(route: Any) -> None:
        w.requests.append(route.request.url)
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            route.abort()

    context.route("**/*", record)
    page.on("console", lambda m: w.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: w.errors.append(f"pageerror: {e}"))
    yield w
    context.close()


def screenshot(page: Any, name: str) -> None:
    """Save the page as docs/ui/<name>.png (the docs show what the tests saw)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
