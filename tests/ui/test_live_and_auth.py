"""The web UI across a server restart, signed in with a token, and its other pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import fw

from .conftest import Server, Watched, free_port, screenshot
from .test_pages import GATED, PIPELINE, start_run

pytestmark = pytest.mark.timeout(60)

# While the server is down, the browser's requests fail: these console messages are expected.
# A stream open when the server stops may end in a reset rather than a clean close.
NETWORK_DOWN = (
    "ERR_CONNECTION_REFUSED",
    "ERR_CONNECTION_RESET",
    "ERR_EMPTY_RESPONSE",
    "ERR_INCOMPLETE_CHUNKED_ENCODING",
)


def register(server: Server, headers: dict[str, str] | None = None) -> None:
    for workflow in (PIPELINE, GATED):
        status, _ = server.request("POST", "/workflows", workflow, headers=headers)
        assert status == 201


def test_live_updates_resume_after_a_server_restart_without_gap_or_duplicate(
    server: Server, watched: Watched, browser: Any
) -> None:
    """The runs list and a run's page follow on after the server is killed and started again:
    what happened while it was down shows, once."""
    register(server)
    held = start_run(server, "gated")
    page = watched.page
    page.goto(f"{server.url}/ui/#/runs")
    page.wait_for_selector('#runs-live[data-state="live"]')
    run_page = browser.new_page()
    errors: list[str] = []
    run_page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    run_page.goto(f"{server.url}/ui/#/run/{held['id']}")
    run_page.wait_for_selector('div.dag .node[data-task="hold"].s-running')

    assert server.process is not None
    server.process.kill()
    server.process.close()
    server.process = None
    page.wait_for_selector('#runs-live[data-state="reconnecting"]')
    server.start()  # the same port and store
    _, before = server.request("GET", f"/runs/{held['id']}")
    new = start_run(server, "pipeline", {"failures": 0}, wait=True)
    status, _ = server.request("POST", f"/runs/{held['id']}/cancel", {"reason": "restarted"})
    assert status == 202

    page.wait_for_selector(f'tr[data-run="{new["id"]}"][data-status="completed"]')
    page.wait_for_selector(f'tr[data-run="{held["id"]}"][data-status="cancelled"]')
    assert page.locator(f'tr[data-run="{new["id"]}"]').count() == 1
    run_page.wait_for_selector("#run-status >> text=cancelled")
    _, after = server.request("GET", f"/runs/{held['id']}")
    assert after["version"] > before["version"]
    shown = run_page.eval_on_selector("#scrubber", "s => Number(s.max)")
    assert shown == after["version"]  # every event once: no gap, no duplicate
    assert errors == [] or all(any(n in e for n in NETWORK_DOWN) for e in errors), errors
    run_page.close()
    watched.check(allowed_errors=NETWORK_DOWN)


@pytest.fixture
def auth_server(tmp_path: Path) -> Any:
    store = f"sqlite:///{tmp_path / 'auth.db'}"
    done = fw(
        "tokens", "create", "--name", "admin", "--role", "admin", "--store", store, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    tokens = {"admin": done.stdout.strip()}
    s = Server(store, tmp_path, free_port(), args=("--auth", "token")).start()
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    for name, role in (("ops", "operator"), ("viewer", "reader")):
        status, made = s.request(
            "POST", "/auth/tokens", {"name": name, "role": role}, headers=admin
        )
        assert status == 201, made
        tokens[name] = made["token"]
    yield s, tokens
    if s.process is not None:
        s.process.close()


def test_sign_in_with_a_token_sets_an_http_only_cookie_and_the_role_decides_the_actions(
    auth_server: Any, watched: Watched, browser: Any
) -> None:
    """With --auth token the page asks for a token; the cookie is HttpOnly and SameSite=Strict;
    live updates flow through it; a reader is offered no action, an operator is."""
    server, tokens = auth_server
    bearer = {"Authorization": f"Bearer {tokens['ops']}"}
    register(server, bearer)
    page = watched.page
    page.goto(f"{server.url}/ui/")
    page.wait_for_selector("#token")
    screenshot(page, "sign-in")
    page.fill("#token", "fw_not-a-token")
    page.click("form.signin button")
    page.wait_for_selector("form.signin .error >> text=unknown")
    page.fill("#token", tokens["viewer"])
    page.click("form.signin button")
    page.wait_for_selector('#runs-live[data-state="live"]')
    assert page.locator("#who").inner_text() == "viewer (reader)"
    (cookie,) = page.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
        "fw_session",
        True,
        "Strict",
    )
    assert page.evaluate("document.cookie") == ""  # the page's scripts never see the token
    status, run = server.request(
        "POST", "/runs", {"workflowId": "gated"}, headers={**bearer, "Prefer": "wait=0"}
    )
    assert status == 201
    page.wait_for_selector(f'tr[data-run="{run["id"]}"]')
    page.click(f'tr[data-run="{run["id"]}"] a')
    page.wait_for_selector('div.dag .node[data-task="hold"]')
    assert page.locator('button[data-action="cancel"]').count() == 0

    operator = browser.new_context()
    ops_page = operator.new_page()
    ops_page.goto(f"{server.url}/ui/")
    ops_page.fill("#token", tokens["ops"])
    ops_page.click("form.signin button")
    ops_page.wait_for_selector('#runs-live[data-state="live"]')
    ops_page.goto(f"{server.url}/ui/#/run/{run['id']}")
    ops_page.click('button[data-action="cancel"]')
    ops_page.fill("#dialog-reason", "signed in by cookie")
    ops_page.click("#dialog-ok")
    ops_page.wait_for_selector("#run-status >> text=cancelled")
    page.wait_for_selector("#run-status >> text=cancelled")  # the reader's page, live
    _, events = server.request(
        "GET", f"/runs/{run['id']}/events?types=RunCancelRequested", headers=bearer
    )
    assert [(e["by"], e["reason"]) for e in events["events"]] == [("ops", "signed in by cookie")]
    ops_page.click("#signout")
    ops_page.wait_for_selector("#token")
    operator.close()
    watched.check(allowed_errors=("401 (Unauthorized)",))


def test_the_workflows_and_schedules_pages(server: Server, watched: Watched) -> None:
    """Workflows list their versions and draw their definitions; schedules say when none exist."""
    register(server)
    changed = {
        **PIPELINE,
        "tasks": [
            *PIPELINE["tasks"],
            {"id": "notify", "handler": "echo", "dependencies": ["load", "audit"]},
        ],
    }
    status, _ = server.request("POST", "/workflows", changed)
    assert status == 201
    page = watched.page
    page.goto(f"{server.url}/ui/#/workflows")
    page.click('a >> text="pipeline"')
    page.wait_for_selector('div.dag .node[data-task="notify"]')
    assert page.locator("div.dag .node").count() == 5
    assert page.locator("#wf-version option").count() == 2
    screenshot(page, "workflow")
    page.select_option("#wf-version", "1")
    page.wait_for_selector('div.dag .node[data-task="notify"]', state="detached")
    page.wait_for_selector('div.dag .node[data-task="audit"]')
    assert page.locator("div.dag .node").count() == 4
    page.goto(f"{server.url}/ui/#/schedules")
    page.wait_for_selector("#schedules-empty, #schedules")
    screenshot(page, "schedules")
    watched.check()
