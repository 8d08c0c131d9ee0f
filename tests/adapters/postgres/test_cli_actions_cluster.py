"""`flowweaver pause|resume|retry|skip|cancel` on a cluster's PostgreSQL store: the action
reaches the `flowweaver serve` that owns the run through the operator relay and takes effect
on the live run; a run no server owns is acted on under its lease, and nothing else is taken
over by the command."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flowweaver_postgres import PostgresEventStore, open_store
from flowweaver_postgres.relay import REQUESTS_TABLE
from psycopg.sql import SQL, Identifier

from flowweaver.domain.run import RunState
from flowweaver.engine import Engine
from flowweaver.handlers import builtin_registry
from tests.adapters.postgres.support import SERVER_URL, new_schema_name
from tests.adapters.postgres.test_cluster import Cluster, chain
from tests.serve_process import DEADLINE

pytestmark = pytest.mark.postgres

FLOWWEAVER = str(Path(sys.executable).parent / "flowweaver")
USER = "ops-bob"
NEVER = 3600.0

# `extract` fails its first attempt (on the engine of this process) and waits an hour for its
# retry; the servers' `step` handler succeeds.
WAITING = {
    "id": "waiting",
    "tasks": [
        {
            "id": "extract",
            "handler": "step",
            "inputs": {"seconds": 0.05},
            "retry": {"maxAttempts": 3, "initialDelay": 3600, "maxDelay": 3600},
        },
        {"id": "load", "handler": "step", "dependencies": ["extract"], "inputs": {"seconds": 0}},
    ],
}


def fw(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    """Run ``flowweaver ARGS --store URL`` to the end, as user ``USER``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")}
    env["LOGNAME"] = USER
    done = subprocess.run(
        [FLOWWEAVER, *args, "--store", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def wait_state(
    store: PostgresEventStore, run_id: str, done: Callable[[RunState], bool]
) -> RunState:
    """Block until the run's stored state satisfies ``done``."""
    while True:
        top = store.max_position()
        state = store.run_state(run_id)
        assert state is not None
        if done(state):
            return state
        assert store.wait_for_log(top, DEADLINE), "the run did not get there in time"


def recorded(store: PostgresEventStore, run_id: str) -> list[tuple[str, Any, Any]]:
    """Return the run's events as (type, by, reason)."""
    return [
        (rec.name, getattr(rec.event, "by", None), getattr(rec.event, "reason", None))
        for rec in store.read_run(run_id)
    ]


def relay_rows(schema: str) -> int:
    """Return how many relayed requests are left in the schema's table."""
    import psycopg  # noqa: PLC0415 - only this helper talks to the server directly

    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        query = SQL("SELECT count(*) FROM {0}.{1}").format(
            Identifier(schema), Identifier(REQUESTS_TABLE)
        )
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Servers on a schema of their own (started by the test), dropped afterwards."""
    from tests.adapters.postgres.support import drop_schema  # noqa: PLC0415

    schema = new_schema_name()
    made = Cluster(schema, tmp_path)
    try:
        yield made
    finally:
        made.close()
        drop_schema(schema)


def test_pause_resume_and_cancel_take_effect_on_the_server_that_owns_the_run(
    cluster: Cluster,
) -> None:
    """The command relays pause and resume to the live owner, which records them with the
    OS user and reason; the run's handlers all run in the server; cancel ends another run."""
    [node] = cluster.start(1)
    slow = chain("slow", 2, 0.1)
    # s0 runs until the test opens its run's gate: the commands act while it runs.
    gate = cluster.directory / "gates"
    gate.mkdir()
    slow["tasks"][0]["inputs"] = {"seconds": DEADLINE, "gate": str(gate)}
    assert node.request("POST", "/workflows", slow)[0] == 201
    _, run_id = node.start_run("slow")
    store = cluster.store
    wait_state(store, run_id, lambda s: s.tasks["s0"].status == "running")

    paused = fw("pause", run_id, "--reason", "maintenance", url=cluster.url)
    assert (paused.returncode, paused.stdout, paused.stderr) == (0, f"run {run_id} paused\n", "")
    assert node.request("GET", f"/runs/{run_id}")[1]["status"] == "paused"
    assert store.run_state(run_id).tasks["s0"].status == "running"  # type: ignore[union-attr]
    # The running attempt finishes; what it makes ready waits for the resume.
    (gate / run_id).touch()
    state = wait_state(store, run_id, lambda s: s.tasks["s0"].status == "completed")
    assert (state.status, state.tasks["s1"].status) == ("paused", "pending")
    again = fw("pause", run_id, url=cluster.url)
    assert (again.returncode, again.stderr) == (
        1,
        f"flowweaver: error: run {run_id}: is paused: only a running run pauses\n",
    )

    resumed = fw("resume", run_id, "--reason", "done", url=cluster.url)
    assert (resumed.returncode, resumed.stdout) == (0, f"run {run_id} running\n"), resumed.stderr
    cluster.wait_finished([run_id])
    assert cluster.status(run_id) == "completed"
    events = recorded(store, run_id)
    assert ("RunPaused", USER, "maintenance") in events
    assert ("RunResumed", USER, "done") in events
    assert {(task, pid) for run, task, _, pid in cluster.invoked() if run == run_id} == {
        ("s0", node.pid),
        ("s1", node.pid),
    }

    _, second = node.start_run("slow")
    wait_state(store, second, lambda s: s.tasks["s0"].status == "running")

    def end_the_attempt_once_cancel_is_asked() -> None:
        wait_state(store, second, lambda s: s.cancel_requested)
        (gate / second).touch()

    # The command waits for the run to end, which waits for the running attempt.
    opener = threading.Thread(target=end_the_attempt_once_cancel_is_asked, daemon=True)
    opener.start()
    cancelled = fw("cancel", second, "--reason", "not needed", url=cluster.url)
    opener.join(DEADLINE)
    assert (cancelled.returncode, cancelled.stdout) == (0, f"run {second} cancelled\n")
    assert ("RunCancelRequested", USER, "not needed") in recorded(store, second)
    assert relay_rows(cluster.schema) == 0


def test_a_run_no_server_owns_is_acted_on_here_and_nothing_is_taken_over(
    cluster: Cluster,
) -> None:
    """With no server up, retry is decided under the run's lease and runs nothing; the other
    orphan is untouched. The server that comes up takes both over, finishes the retried run,
    and a skip relayed to it settles the other."""
    registry = builtin_registry()

    def fails(inputs: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("the source is down")

    registry.register("step", fails)
    store = cluster.store
    gone = Engine(
        open_store(cluster.url),
        handlers=registry,
        node="gone",
        workers=1,
        takeover_interval=NEVER,
        owns_store=True,
    )
    try:
        gone.register_workflow(WAITING)
        first, second = (gone.start_run("waiting").run_id for _ in range(2))
        for run_id in (first, second):
            wait_state(store, run_id, lambda s: s.tasks["extract"].status == "waiting_retry")
    finally:
        gone.close(grace=1)  # its leases end with it: both runs are orphans
    second_before = recorded(store, second)

    retried = fw("retry", first, "extract", "--reason", "source is back", url=cluster.url)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout == f"run {first} running; task extract scheduled\n"
    assert recorded(store, first)[-1] == ("TaskRetried", USER, "source is back")
    assert recorded(store, second) == second_before  # not taken over, not resumed
    assert cluster.invoked() == []

    [node] = cluster.start(1)
    cluster.wait_finished([first])
    assert cluster.status(first) == "completed"
    assert sorted((task, attempt) for run, task, attempt, _ in cluster.invoked()) == [
        ("extract", 2),
        ("load", 1),
    ]
    assert {pid for *_, pid in cluster.invoked()} == {node.pid}

    # The server took the second run over too, as it started: the skip goes to it.
    skipped = fw("skip", second, "extract", "--reason", "not today", url=cluster.url)
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout.startswith(f"run {second} ")
    assert skipped.stdout.endswith("; task extract skipped\n")
    cluster.wait_finished([second])
    assert ("TaskSkipped", USER, "not today") in recorded(store, second)
    assert relay_rows(cluster.schema) == 0
