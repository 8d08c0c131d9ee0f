"""The runs list in a real browser: its pages, its filters together, and its row links."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from .conftest import Server, Watched
from .test_pages import start_run

pytestmark = pytest.mark.timeout(60)

PAGE = 25  # runs.js shows this many runs a page
FLAKY: dict[str, Any] = {
    "handler": "ui_flaky",
    "inputs": {"failures": "$.params.failures"},
    "retry": {"maxAttempts": 1},
}
QUICK = {"id": "quick", "tasks": [{"id": "only", **FLAKY}]}
OTHER = {"id": "other", "tasks": [{"id": "step", **FLAKY}]}


def api_ids(server: Server, **query: str) -> list[str]:
    """The ids of every run GET /runs answers for the filters, newest first, all pages."""
    ids: list[str] = []
    cursor = ""
    while True:
        params = {**query, "limit": str(PAGE), **({"cursor": cursor} if cursor else {})}
        status, page = server.request("GET", f"/runs?{urlencode(params)}")
        assert status == 200, page
        ids += [run["id"] for run in page["runs"]]
        if page["nextCursor"] is None:
            return ids
        cursor = page["nextCursor"]


def shown(page: Any) -> list[str]:
    ids: list[str] = page.eval_on_selector_all("#runs-body tr", "rs => rs.map(r => r.dataset.run)")
    return ids


def wait_shown(page: Any, ids: list[str]) -> None:
    """Wait until the table shows exactly these runs, in this order."""
    try:
        page.wait_for_function(
            "ids => JSON.stringify([...document.querySelectorAll('#runs-body tr')]"
            ".map(r => r.dataset.run)) === JSON.stringify(ids)",
            arg=ids,
            timeout=5_000,
        )
    except Exception:  # the assertion says what differs
        assert shown(page) == ids
        raise


@pytest.fixture
def many_runs(server: Server) -> Server:
    """30 runs of ``quick`` (3 failed) and 4 of ``other`` (2 failed), all ended, interleaved."""
    for definition in (QUICK, OTHER):
        status, _ = server.request("POST", "/workflows", definition)
        assert status == 201
    for n in range(34):
        workflow, failures = ("other", n % 2) if n % 9 == 4 else ("quick", int(n % 10 == 7))
        run = start_run(server, workflow, {"failures": failures}, wait=True)
        assert run["status"] == ("failed" if failures else "completed"), run
    return server


def test_the_runs_list_pages_and_filters_as_get_runs_does(
    many_runs: Server, watched: Watched
) -> None:
    """25 a page, "Older runs" for the rest, back and "Newest" return; each filter and their
    combination show exactly GET /runs?workflowId=&status='s runs; a row opens its run."""
    server = many_runs
    page = watched.page
    everything = api_ids(server)
    assert len(everything) == 34

    page.goto(f"{server.url}/ui/#/runs")
    wait_shown(page, everything[:PAGE])
    older = page.get_by_role("link", name="Older runs")
    assert page.get_by_role("link", name="Newest").count() == 0
    older.click()
    wait_shown(page, everything[PAGE:])
    assert "cursor=" in page.url
    assert older.count() == 0  # the last page
    page.go_back()
    wait_shown(page, everything[:PAGE])
    page.go_forward()
    wait_shown(page, everything[PAGE:])
    page.get_by_role("link", name="Newest").click()
    wait_shown(page, everything[:PAGE])

    # One workflow: two pages of it; then a status too, from the second page (back to the first).
    quick = api_ids(server, workflowId="quick")
    assert len(quick) == 30
    page.select_option("#f-workflow", "quick")
    wait_shown(page, quick[:PAGE])
    older.click()
    wait_shown(page, quick[PAGE:])
    assert older.count() == 0
    # "Newest" keeps the filters: the first page of the same list.
    page.get_by_role("link", name="Newest").click()
    wait_shown(page, quick[:PAGE])
    assert "workflowId=quick" in page.url
    older.click()
    wait_shown(page, quick[PAGE:])
    page.select_option("#f-status", "failed")
    quick_failed = api_ids(server, workflowId="quick", status="failed")
    assert len(quick_failed) == 3
    wait_shown(page, quick_failed)
    assert "cursor=" not in page.url
    assert page.locator("#f-workflow").input_value() == "quick"
    assert older.count() == 0

    # The status alone, across workflows; then the other workflow with it; then nothing matches.
    page.select_option("#f-workflow", "")
    failed = api_ids(server, status="failed")
    assert len(failed) == 5
    wait_shown(page, failed)
    page.select_option("#f-workflow", "other")
    wait_shown(page, api_ids(server, workflowId="other", status="failed"))
    page.select_option("#f-status", "cancelled")
    page.get_by_text("No runs match.").wait_for()  # (an empty list also matches while loading)
    assert shown(page) == []
    page.select_option("#f-status", "completed")
    other_completed = api_ids(server, workflowId="other", status="completed")
    assert len(other_completed) == 2
    wait_shown(page, other_completed)
    assert page.locator("#f-status").input_value() == "completed"

    # A row's link opens the run's page.
    target = other_completed[-1]
    page.get_by_role("link", name=target, exact=True).click()
    page.wait_for_url(f"**/ui/#/run/{target}")
    page.wait_for_selector("#run-status >> text=completed")
    watched.check()
