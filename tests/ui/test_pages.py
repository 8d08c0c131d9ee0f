"""The web UI in a real browser: the runs list live, a run's page, the scrubber, actions."""

from __future__ import annotations

import re
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


def node_statuses(page: Any) -> dict[str, str]:
    """Each DAG node's status as its text shows it (the first word: the status)."""
    texts: dict[str, str] = page.eval_on_selector_all(
        "div.dag .node",
        "ns => Object.fromEntries(ns.map(n => "
        "[n.dataset.task, n.querySelector('.status').textContent]))",
    )
    return {task: text.split(" ")[0] for task, text in texts.items()}


def test_a_run_page_shows_each_tasks_state_and_its_failure_detail(
    registered: Server, watched: Watched
) -> None:
    """The DAG shows GET /runs/{id}'s states, in text; a failed task its traceback and logs."""
    server = registered
    page = watched.page
    run = start_run(server, "pipeline", {"failures": 5}, wait=True)
    assert run["status"] == "failed"
    page.goto(f"{server.url}/ui/#/run/{run['id']}")
    page.wait_for_selector(f'main[data-shown-at="{run["version"]}"]')
    expected = {t["id"]: t["status"] for t in run["tasks"]}
    assert expected == {
        "extract": "completed",
        "transform": "failed",
        "load": "skipped",
        "audit": "completed",
    }
    assert node_statuses(page) == expected
    assert page.locator("#run-status").inner_text() == "failed"
    page.locator('div.dag .node[data-task="transform"]').focus()
    page.keyboard.press("Enter")
    traceback = page.locator("#traceback")
    traceback.wait_for()
    assert "LookupError: no rows yet (attempt 1)" in traceback.inner_text()
    assert "source not ready" in page.locator("#logs").inner_text()
    page.locator("#timeline .bar.o-failed").wait_for()
    assert page.locator("#timeline .bar.o-failed").count() == 1
    screenshot(page, "run-failed")
    watched.check()


def test_the_scrubber_shows_the_state_at_event_n_as_the_api_does(
    registered: Server, watched: Watched
) -> None:
    """At every event N, stepped by keyboard, the DAG equals GET /runs/{id}?at=N."""
    server = registered
    page = watched.page
    run = start_run(server, "pipeline", {"failures": 1}, wait=True)
    last = run["version"]
    page.goto(f"{server.url}/ui/#/run/{run['id']}")
    page.wait_for_selector(f'main[data-shown-at="{last}"]')
    page.locator("#scrubber").focus()
    page.keyboard.press("Home")
    page.wait_for_selector('main[data-shown-at="1"]')
    assert page.get_attribute("#live", "aria-pressed") == "false"
    for n in range(1, last + 1):
        if n > 1:
            page.keyboard.press("ArrowRight")
            page.wait_for_selector(f'main[data-shown-at="{n}"]')
        _, at = server.request("GET", f"/runs/{run['id']}?at={n}")
        assert node_statuses(page) == {t["id"]: t["status"] for t in at["tasks"]}, n
        assert page.locator("#run-status").inner_text() == at["status"]
        current = page.locator("#events li.current")
        assert current.get_attribute("data-version") == str(n)
    page.keyboard.press("ArrowLeft")
    page.wait_for_selector(f'main[data-shown-at="{last - 1}"]')
    page.fill("#diff-from", "3")
    page.click("text=To = shown")
    page.click("#diff-run")
    page.wait_for_selector("#diff-out table")
    _, diff = server.request("GET", f"/runs/{run['id']}/diff?from=3&to={last - 1}")
    changed = len(diff["run"]) + sum(len(fields) for fields in diff["tasks"].values())
    assert page.locator("#diff-out tbody tr").count() == changed
    screenshot(page, "run-scrubbed")
    page.click("#live")
    page.wait_for_selector(f'main[data-shown-at="{last}"]')
    assert page.get_attribute("#live", "aria-pressed") == "true"
    watched.check()


def test_an_operator_action_is_recorded_with_its_reason_and_the_page_follows(
    registered: Server, watched: Watched
) -> None:
    """Pause from the page asks for a reason; RunPaused carries it; the page shows it live."""
    server = registered
    page = watched.page
    run = start_run(server, "gated")
    page.goto(f"{server.url}/ui/#/run/{run['id']}")
    page.wait_for_selector('div.dag .node[data-task="hold"].s-running')
    page.click('button[data-action="pause"]')
    page.fill("#dialog-reason", "maintenance window")
    screenshot(page, "action-dialog")
    page.click("#dialog-ok")
    page.wait_for_selector("#run-status >> text=paused")
    _, events = server.request("GET", f"/runs/{run['id']}/events?types=RunPaused")
    (paused,) = events["events"]
    assert (paused["by"], paused["reason"]) == ("anonymous", "maintenance window")
    page.wait_for_selector('#events li[data-version]:has-text("by anonymous: maintenance window")')
    page.click('button[data-action="cancel"]')
    page.fill("#dialog-reason", "not needed")
    page.click("#dialog-ok")
    page.wait_for_selector("#run-status >> text=cancelled")
    watched.check()


def test_a_fork_made_from_the_page_carries_the_edits(registered: Server, watched: Watched) -> None:
    """Fork with new parameters from the page: the new run opens, its lineage names the parent."""
    server = registered
    page = watched.page
    failed = start_run(server, "pipeline", {"failures": 5}, wait=True)
    page.goto(f"{server.url}/ui/#/run/{failed['id']}")
    page.wait_for_selector(f'main[data-shown-at="{failed["version"]}"]')
    page.click('button[data-action="fork"]')
    page.fill("#dialog-field-parameters", '{"failures": 0}')
    page.fill("#dialog-reason", "rerun with the source fixed")
    page.click("#dialog-ok")
    page.wait_for_url(re.compile(r"#/run/(?!" + failed["id"] + ")"))
    fork_id = page.url.rsplit("/", 1)[1]
    page.wait_for_selector("#run-status >> text=completed")
    _, fork = server.request("GET", f"/runs/{fork_id}")
    assert fork["parentRunId"] == failed["id"]
    assert fork["parameters"] == {"failures": 0}
    _, events = server.request("GET", f"/runs/{fork_id}/events?limit=1")
    assert events["events"][0]["reason"] == "rerun with the source fixed"
    assert page.locator("#lineage a").first.inner_text() == failed["id"]
    screenshot(page, "run-fork")
    page.goto(f"{server.url}/ui/#/run/{failed['id']}")
    page.wait_for_selector(f'#lineage a >> text="{fork_id}"')
    watched.check()


def test_a_task_completed_by_hand_in_a_paused_run_then_resumed(
    registered: Server, watched: Watched
) -> None:
    """A failure pauses the run; the page completes the task with an output, then resumes."""
    server = registered
    page = watched.page
    run = start_run(server, "pipeline", {"failures": 5}, onTaskFailure="pause")
    page.goto(f"{server.url}/ui/#/run/{run['id']}")
    page.wait_for_selector("#run-status >> text=paused")
    page.click('div.dag .node[data-task="transform"]')
    page.click('#task-detail button[data-action="complete"]')
    page.fill("#dialog-field-output", '{"rows": 7}')
    page.fill("#dialog-reason", "rows counted by hand")
    page.click("#dialog-ok")
    page.wait_for_selector('div.dag .node[data-task="transform"].s-completed')
    page.click('button[data-action="resume"]')
    page.fill("#dialog-reason", "go on")
    page.click("#dialog-ok")
    page.wait_for_selector("#run-status >> text=completed")
    _, events = server.request("GET", f"/runs/{run['id']}/events?types=TaskCompleted,RunResumed")
    by_hand = [e for e in events["events"] if e["type"] == "TaskCompleted" and e["attempt"] == 0]
    assert [(e["taskId"], e["output"], e["reason"]) for e in by_hand] == [
        ("transform", {"rows": 7}, "rows counted by hand")
    ]
    resumed = [e for e in events["events"] if e["type"] == "RunResumed"]
    assert [(e["by"], e["reason"]) for e in resumed] == [("anonymous", "go on")]
    watched.check()
