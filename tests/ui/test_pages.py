"""The web UI in a real browser: the runs list live, a run's page, the scrubber, actions."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Server, Watched, screenshot

pytestmark = pytest.mark.timeout(60)

PIPELINE = {
    "id": "pipeline",
    "tasks": [
        {"id": "extract", "handler": "echo", "inputs": {"n": 1}},
        {
            "id": "transform",
            "handler": "ui_flaky",
            "dependencies": ["extract"],
            "inputs": {"failures": "$.params.failures"},
            "retry": {"maxAttempts": 1},
        },
        {"id": "load", "handler": "echo", "dependencies": ["transform"]},
        {"id": "audit", "handler": "echo", "dependencies": ["extract"]},
    ],
}
GATED = {
    "id": "gated",
    "tasks": [
        {"id": "hold", "handler": "ui_gate", "inputs": {"seconds": 30}},
        {"id": "after", "handler": "echo", "dependencies": ["hold"]},
    ],
}


def start_run(
    server: Server, workflow: str, parameters: Any = None, *, wait: bool = False, **extra: Any
) -> dict[str, Any]:
    """Start a run; with ``wait``, answer once it ended (Prefer: wait)."""
    body: dict[str, Any] = {"workflowId": workflow, "parameters": parameters or {}, **extra}
    headers = {"Prefer": "wait=20"} if wait else {}
    status, run = server.request("POST", "/runs", body, headers=headers)
    assert status == 201, run
    return dict(run)


@pytest.fixture
def registered(server: Server) -> Server:
    for workflow in (PIPELINE, GATED):
        status, _ = server.request("POST", "/workflows", workflow)
        assert status == 201
    return server


def test_root_redirects_to_the_ui_and_the_runs_list_updates_live(
    registered: Server, watched: Watched
) -> None:
    """New runs appear and their statuses change without a reload, through /events."""
    server = registered
    page = watched.page
    done = start_run(server, "pipeline", {"failures": 0}, wait=True)
    page.goto(server.url + "/")
    assert page.url.endswith("/ui/")
    page.wait_for_selector(f'tr[data-run="{done["id"]}"][data-status="completed"]')
    page.wait_for_selector('#runs-live[data-state="live"]')
    gated = start_run(server, "gated")
    row = page.locator(f'tr[data-run="{gated["id"]}"]')
    row.wait_for()
    assert row.get_attribute("data-status") == "running"
    status, _ = server.request("POST", f"/runs/{gated['id']}/cancel", {"reason": "test"})
    assert status == 202
    page.wait_for_selector(f'tr[data-run="{gated["id"]}"][data-status="cancelled"]')
    screenshot(page, "runs")
    watched.check()
