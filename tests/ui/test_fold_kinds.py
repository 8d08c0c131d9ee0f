"""The page's fold of waits, signals, map elements and sub-workflows equals the server's."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Server, Watched
from .test_pages import PIPELINE, start_run

pytestmark = pytest.mark.timeout(60)

MIXED = {
    "id": "mixed",
    "tasks": [
        {
            "id": "each",
            "handler": "ui_element",
            "inputs": {"items": "$.params.items", "failIndex": 1},
            "map": "$.items",
            "retry": {"maxAttempts": 2, "initialDelay": 0.05},
        },
        {"id": "approve", "wait": {"signal": "go"}},
        {
            "id": "sub",
            "workflow": "pipeline",
            "dependencies": ["approve"],
            "inputs": {"failures": 0},
        },
        {"id": "done", "handler": "echo", "dependencies": ["each", "sub"]},
    ],
}


def node_texts(page: Any) -> dict[str, str]:
    texts: dict[str, str] = page.eval_on_selector_all(
        "div.dag .node",
        "ns => Object.fromEntries(ns.map(n => "
        "[n.dataset.task, n.querySelector('.status').textContent]))",
    )
    return texts


def expected_text(task: dict[str, Any]) -> str:
    """What a node shows for a task of GET /runs/{id}: status, attempt, a map's progress."""
    text = str(task["status"])
    if task["attempts"] > 1:
        text += f" · attempt {task['attempts']}"
    if "elements" in task:
        text += f" · {task['elements']['completed']}/{task['elements']['total']} done"
    return text


def step_through(server: Server, page: Any, run_id: str, last: int) -> set[str]:
    """Step the scrubber from event 1 to ``last``: at each, the graph and the run's status
    equal GET /runs/{id}?at=N, folded in the page; return the task statuses seen."""
    page.locator("#scrubber").focus()
    page.keyboard.press("Home")
    page.wait_for_selector('main[data-shown-at="1"]')
    seen: set[str] = set()
    for n in range(1, last + 1):
        if n > 1:
            page.keyboard.press("ArrowRight")
            page.wait_for_selector(f'main[data-shown-at="{n}"]')
        _, at = server.request("GET", f"/runs/{run_id}?at={n}")
        assert page.get_attribute("main", "data-folded") == "true", n
        assert node_texts(page) == {t["id"]: expected_text(t) for t in at["tasks"]}, n
        assert page.locator("#run-status").inner_text() == at["status"], n
        seen.update(t["status"] for t in at["tasks"])
    return seen


def test_waits_maps_and_sub_workflows_fold_in_the_page_as_on_the_server(
    server: Server, watched: Watched
) -> None:
    """At every event N the graph (statuses, attempts, map progress) and the run's status
    equal GET /runs/{id}?at=N, folded in the page without falling back to ?at=N."""
    for workflow in (PIPELINE, MIXED):
        status, _ = server.request("POST", "/workflows", workflow)
        assert status == 201
    page = watched.page
    run = start_run(server, "mixed", {"items": [1, 2, 3]})
    page.goto(f"{server.url}/ui/#/run/{run['id']}")
    page.wait_for_selector('div.dag .node[data-task="approve"] .status:text-is("waiting")')
    status, _ = server.request("POST", f"/runs/{run['id']}/signals/go", {"payload": {"ok": True}})
    assert status < 300
    ended = ", ".join(f'#run-status:has-text("{s}")' for s in ("completed", "failed", "cancelled"))
    page.wait_for_selector(ended, timeout=30_000)
    _, final = server.request("GET", f"/runs/{run['id']}")
    assert final["status"] == "completed", final
    last = final["version"]
    page.wait_for_selector(f'main[data-shown-at="{last}"]')
    types = {e["type"] for e in server.request("GET", f"/runs/{run['id']}/events")[1]["events"]}
    for kind in ("SignalReceived", "ChildRunStarted", "MapElementFailed", "MapElementRetried"):
        assert kind in types, types
    assert node_texts(page)["each"] == "completed · 3/3 done"

    seen = step_through(server, page, run["id"], last)
    assert {"waiting", "running", "completed"} <= seen

    # The sub-workflow task's detail links its child run; the map task's its element counts.
    page.locator('div.dag .node[data-task="each"]').focus()
    page.keyboard.press("Enter")
    page.wait_for_selector('#task-detail dd:has-text("3 of 3 completed")')
    page.locator('div.dag .node[data-task="sub"]').focus()
    page.keyboard.press("Enter")
    child = next(t for t in final["tasks"] if t["id"] == "sub")["childRunId"]
    link = page.locator("#child-run")
    assert link.inner_text() == child
    link.click()
    page.wait_for_selector(f'#run-title:has-text("{child}")')
    watched.check()


LIMITED = {
    "id": "limited",
    "concurrency": {"limit": 1},
    "tasks": [
        {
            "id": "hold",
            "handler": "ui_gate",
            "inputs": {"items": [1, 2, 3], "seconds": 30},
            "map": "$.items",
        },
        {"id": "after", "handler": "echo", "dependencies": ["hold"]},
    ],
}


def test_a_queued_run_and_a_map_cancelled_while_running_fold_as_on_the_server(
    server: Server, watched: Watched
) -> None:
    """RunQueued and RunDequeued, and a cancel that waits for a map's running elements."""
    status, _ = server.request("POST", "/workflows", LIMITED)
    assert status == 201
    page = watched.page
    first = start_run(server, "limited")
    second = start_run(server, "limited")
    page.goto(f"{server.url}/ui/#/run/{second['id']}")
    page.wait_for_selector('#run-status:has-text("queued")')
    status, _ = server.request("POST", f"/runs/{first['id']}/cancel", {"reason": "test"})
    assert status == 202
    page.wait_for_selector('#run-status:has-text("running")')
    page.wait_for_selector('div.dag .node[data-task="hold"] .status:has-text("running")')
    status, _ = server.request("POST", f"/runs/{second['id']}/cancel", {"reason": "test"})
    assert status == 202
    page.wait_for_selector('#run-status:has-text("cancelled")')
    for run in (second, first):
        _, final = server.request("GET", f"/runs/{run['id']}")
        assert final["status"] == "cancelled"
        if run is first:
            page.goto(f"{server.url}/ui/#/run/{run['id']}")
        page.wait_for_selector(f'main[data-shown-at="{final["version"]}"]')
        seen = step_through(server, page, run["id"], final["version"])
        assert {"running", "cancelled"} <= seen
    _, events = server.request("GET", f"/runs/{second['id']}/events")
    types = [e["type"] for e in events["events"]]
    assert "RunQueued" in types and "RunDequeued" in types, types
    watched.check()
