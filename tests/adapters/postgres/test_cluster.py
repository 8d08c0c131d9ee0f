"""Cluster mode with real processes: `flowweaver serve` nodes sharing one PostgreSQL schema.

Each test starts two or three nodes on loopback ports, on a schema of its own (dropped
afterwards), with the ``step`` handler of cluster_handlers.py, which logs every invocation to
a file. Events say which node did what: a TaskStarted names its worker, ``<host>:<pid>/wN``,
and only the node that ran an attempt records its outcome.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flowweaver_postgres import PostgresEventStore, open_store

from flowweaver.domain.events import TaskFailed, TaskStarted
from flowweaver.ports import RecordedEvent
from tests.adapters.postgres.support import SERVER_URL, drop_schema, new_schema_name, store_url
from tests.serve_process import DEADLINE, ServeProcess
from tests.sse_client import read_sse

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

HANDLERS = Path(__file__).with_name("cluster_handlers.py")
TAKEOVER_BOUND_S = 5.0
TERMINAL = ("completed", "failed", "cancelled")


def chain(workflow_id: str, steps: int, seconds: float) -> dict[str, Any]:
    """Return a workflow of ``steps`` ``step`` tasks one after another."""
    return {
        "id": workflow_id,
        "tasks": [
            {
                "id": f"s{i}",
                "handler": "step",
                "inputs": {"seconds": seconds},
                **({"dependencies": [f"s{i - 1}"]} if i else {}),
            }
            for i in range(steps)
        ],
    }


def wait_until(
    condition: Callable[[], bool], timeout: float = DEADLINE, every: float = 0.05
) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()


class Node(ServeProcess):
    """One `flowweaver serve` process of the cluster."""

    def __init__(self, url: str, invocations: Path, cwd: Path) -> None:
        super().__init__(
            url,
            cwd,
            args=["--grace", "2", "--workers", "4", "--handlers", str(HANDLERS)],
            env={"FWTEST_INVOCATIONS": str(invocations)},
        )
        # The engine's node name, which starts every worker name of this process.
        self.name = f"{socket.gethostname()}:{self.pid}"

    def start_run(self, workflow_id: str, key: str | None = None) -> tuple[int, str]:
        """POST /runs; return the status and the run id."""
        body: dict[str, Any] = {"workflowId": workflow_id}
        if key is not None:
            body["idempotencyKey"] = key
        status, answer = self.request("POST", "/runs", body)
        assert status in (200, 201), (status, answer)
        return status, str(answer["id"])


class Cluster:
    """Nodes on one schema, the invocation log of their handlers, and a store to check with."""

    def __init__(self, schema: str, directory: Path) -> None:
        self.schema = schema
        self.directory = directory
        self.url = store_url(schema, pool_size=2)
        self.invocations = directory / "invocations.log"
        self.invocations.touch()
        self.nodes: list[Node] = []
        self._store: PostgresEventStore | None = None

    def start(self, count: int) -> list[Node]:
        """Start ``count`` nodes together and wait until each one listens."""
        nodes = [Node(self.url, self.invocations, self.directory) for _ in range(count)]
        self.nodes.extend(nodes)
        for node in nodes:
            node.wait_started()
        return nodes

    @property
    def store(self) -> PostgresEventStore:
        """A store on the cluster's schema, for the test's own reads."""
        if self._store is None:
            self._store = open_store(store_url(self.schema, pool_size=1))
        return self._store

    def events(self, run_id: str) -> list[RecordedEvent]:
        """Return every stored event of a run."""
        return self.store.read_run(run_id)

    def status(self, run_id: str) -> str:
        """Return the run's status as stored."""
        state = self.store.run_state(run_id)
        return state.status if state is not None else "unknown"

    def wait_finished(self, run_ids: list[str], timeout: float = DEADLINE) -> None:
        """Block until every run is terminal."""
        pending = set(run_ids)

        def finished() -> bool:
            pending.difference_update([r for r in list(pending) if self.status(r) in TERMINAL])
            return not pending

        assert wait_until(finished, timeout, every=0.1), f"unfinished runs: {pending}"

    def invoked(self) -> list[tuple[str, str, int, int]]:
        """Return every handler invocation: (run id, task id, attempt, pid)."""
        rows = []
        for line in self.invocations.read_text().splitlines():
            run_id, task_id, attempt, pid = line.split()
            rows.append((run_id, task_id, int(attempt), int(pid)))
        return rows

    def close(self) -> None:
        """Stop every node and the test's store."""
        for node in self.nodes:
            node.close()
        if self._store is not None:
            self._store.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster on a schema of its own, dropped with everything in it afterwards."""
    schema = new_schema_name()
    started = Cluster(schema, tmp_path)
    try:
        yield started
    finally:
        started.close()
        drop_schema(schema)


def node_of(worker: str) -> str:
    """Return the node name a worker name starts with."""
    return worker.rpartition("/")[0]


def writers(events: list[RecordedEvent]) -> list[tuple[int, str]]:
    """Return (version, node) of every event whose writer is known from the events alone.

    A TaskStarted names its worker; the outcome of an attempt is recorded by the node that
    ran it; an Interrupted failure is recorded by the node that resumed the run, which is
    never the one that was running the attempt.
    """
    ran_by: dict[tuple[str, int], str] = {}
    known: list[tuple[int, str]] = []
    for recorded in events:
        event = recorded.event
        if isinstance(event, TaskStarted):
            node = node_of(event.worker)
            ran_by[event.task_id, event.attempt] = node
            known.append((recorded.version, node))
        elif recorded.name in ("TaskCompleted", "TaskFailed"):
            owner = ran_by.get((event.task_id, event.attempt))  # type: ignore[union-attr]
            if isinstance(event, TaskFailed) and event.error.type == "Interrupted":
                known.append((recorded.version, f"not {owner}"))
            elif owner is not None:
                known.append((recorded.version, owner))
    return known


def assert_each_task_completed_once(cluster: Cluster, run_ids: list[str]) -> None:
    """Every run completed, each task exactly once, and no handler ran unrecorded or twice."""
    started_by: dict[tuple[str, str, int], str] = {}
    for run_id in run_ids:
        events = cluster.events(run_id)
        assert [e.version for e in events] == list(range(1, len(events) + 1))
        names = [e.name for e in events]
        assert names.count("RunCompleted") == 1, names
        completed = Counter(e.event.task_id for e in events if e.name == "TaskCompleted")  # type: ignore[union-attr]
        assert set(completed.values()) == {1}, completed
        for e in events:
            if isinstance(e.event, TaskStarted):
                started_by[run_id, e.event.task_id, e.event.attempt] = node_of(e.event.worker)
    invocations = [i for i in cluster.invoked() if i[0] in run_ids]
    attempts = Counter((run_id, task_id, attempt) for run_id, task_id, attempt, _ in invocations)
    assert set(attempts.values()) <= {1}, "an attempt's handler ran twice"
    hostname = socket.gethostname()
    for run_id, task_id, attempt, pid in invocations:
        # A handler runs only after its node recorded the attempt's TaskStarted.
        assert started_by.get((run_id, task_id, attempt)) == f"{hostname}:{pid}"


def first_event_after(events: list[RecordedEvent], moment: float) -> datetime | None:
    """Return the timestamp of the first event recorded after ``moment`` (epoch seconds)."""
    after = datetime.fromtimestamp(moment, UTC)
    stamps = [e.event.timestamp for e in events if e.event.timestamp > after]
    return min(stamps, default=None)


# --- fail-over --------------------------------------------------------------------------------


def test_runs_of_a_killed_node_finish_on_the_others_within_five_seconds(
    cluster: Cluster,
) -> None:
    """kill -9 a node mid-run: the others resume every run of it within 5 s; none runs twice."""
    a, b, c = cluster.start(3)
    status, _ = a.request("POST", "/workflows", chain("killed", 3, 0.4))
    assert status == 201
    runs = [a.start_run("killed")[1] for _ in range(8)]
    # Mid-run: A's four workers are in handlers of the first tasks.
    assert wait_until(lambda: len(cluster.invoked()) >= 4)
    killed_at = time.time()
    a.kill()
    cluster.wait_finished(runs)
    assert all(cluster.status(r) == "completed" for r in runs)
    assert_each_task_completed_once(cluster, runs)

    resumed_after = []
    took_over: set[str] = set()
    for run_id in runs:
        events = cluster.events(run_id)
        first = first_event_after(events, killed_at)
        assert first is not None  # every run had work left at the kill
        resumed_after.append(first.timestamp() - killed_at)
        for e in events:
            if isinstance(e.event, TaskStarted) and e.event.timestamp.timestamp() > killed_at:
                assert node_of(e.event.worker) in (b.name, c.name)
                took_over.add(node_of(e.event.worker))
    assert max(resumed_after) < TAKEOVER_BOUND_S, resumed_after
    assert took_over  # B and C shared A's runs (usually both)


def test_a_paused_node_writes_nothing_after_its_runs_were_taken_over(cluster: Cluster) -> None:
    """SIGSTOP a node past its lease, SIGCONT it: none of its events follows the takeover."""
    a, b = cluster.start(2)
    status, _ = a.request("POST", "/workflows", chain("paused", 2, 1.0))
    assert status == 201
    runs = [a.start_run("paused")[1] for _ in range(4)]
    # Every run's first task is in a handler on A when it stops.
    assert wait_until(lambda: len({i[0] for i in cluster.invoked()}) == 4)
    paused_at = time.time()
    os.kill(a.pid, signal.SIGSTOP)
    try:
        cluster.wait_finished(runs)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    # A wakes up with handlers that have returned and actors that still think they own runs.
    a.wait_logged("lease_session_lost", timeout=10)
    a.wait_logged("lease_session_opened", timeout=10, where=lambda line: line["session"] == 2)
    assert a.request("GET", "/healthz")[0] == 200  # A serves again, and has had its chance
    assert wait_until(lambda: a.request("GET", "/runs?limit=10")[0] == 200, timeout=10)

    assert_each_task_completed_once(cluster, runs)
    for run_id in runs:
        events = cluster.events(run_id)
        first = first_event_after(events, paused_at)
        assert first is not None
        assert first.timestamp() - paused_at < TAKEOVER_BOUND_S
        known = writers(events)
        from_a = [v for v, node in known if node == a.name]
        from_others = [v for v, node in known if node != a.name]
        assert {node for _, node in known} <= {a.name, b.name, f"not {a.name}"}
        assert from_a, "A had started the first task of every run"
        assert max(from_a) < min(from_others), (run_id, known)  # nothing stale from A
        assert cluster.status(run_id) == "completed"


# --- the database goes away --------------------------------------------------------------------


def dump_warnings(*nodes: Node) -> None:
    """Print what the nodes logged above info, and their lease events (shown on failure)."""
    for node in nodes:
        for line in node.drain():
            if line.get("level") != "info" or "lease" in str(line.get("event")):
                print(node.pid, line)


def restart_postgres() -> None:
    """Restart the shared server (fast shutdown: every session ends at once)."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=60,
    )


def postgres_answers() -> bool:
    """Say whether the server takes a query now."""
    try:
        with psycopg.connect(SERVER_URL, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def ensure_postgres_up() -> None:
    """Start the server if it is down and wait until it answers (other tests need it)."""
    if postgres_answers():
        return
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
        check=False,
        capture_output=True,
        timeout=60,
    )
    assert wait_until(postgres_answers, timeout=60, every=0.2)


@pytest.mark.serial  # every other test on the server would lose its sessions too
@pytest.mark.timeout(120)
def test_runs_survive_a_postgres_restart_and_requests_fail_fast_meanwhile(
    cluster: Cluster,
) -> None:
    """Restart PostgreSQL mid-run: requests answer 2xx or 503 quickly, every run completes once."""
    a, b = cluster.start(2)
    for workflow in (chain("restarted", 3, 0.3), chain("quick", 1, 0.01)):
        assert a.request("POST", "/workflows", workflow)[0] == 201
    runs = [node.start_run("restarted")[1] for node in (a, b) for _ in range(5)]
    assert wait_until(lambda: len(cluster.invoked()) >= 4)

    answers: list[tuple[str, int, float, float]] = []
    acknowledged: list[str] = []
    stop = threading.Event()

    def keep_asking() -> None:
        i = 0
        while not stop.is_set():
            for node in (a, b):
                i += 1
                for method, path, body in (
                    ("GET", f"/runs/{runs[i % len(runs)]}", None),
                    ("POST", "/runs", {"workflowId": "quick", "idempotencyKey": f"k{i}"}),
                ):
                    started = time.monotonic()
                    try:
                        code, answer = node.request(method, path, body, timeout=20)
                    except (OSError, http.client.HTTPException) as e:
                        code, answer = -1, str(e)
                    now = time.monotonic()
                    answers.append((f"{method} {path}", code, now - started, now))
                    if method == "POST" and code in (200, 201):
                        acknowledged.append(answer["id"])
            stop.wait(0.1)

    asker = threading.Thread(target=keep_asking, daemon=True)
    asker.start()
    try:
        restart_postgres()
    finally:
        ensure_postgres_up()
        back = time.monotonic()
        # Both nodes answer again once the server is back.
        served_again = wait_until(
            lambda: sum(1 for _, code, _, at in answers if at > back and code < 300) >= 4
        )
        stop.set()
        asker.join(timeout=30)
    assert served_again

    codes = Counter(code for _, code, _, _ in answers)
    assert set(codes) <= {200, 201, 503}, codes  # never a hang, never a 500
    slowest = max(answers, key=lambda answer: answer[2])
    assert slowest[2] < 12.0, slowest
    everything = runs + acknowledged
    try:
        cluster.wait_finished(everything, timeout=60)
    except AssertionError:
        dump_warnings(a, b)
        raise
    assert all(cluster.status(r) == "completed" for r in everything)
    assert_each_task_completed_once(cluster, everything)


# --- reading and idempotency across nodes ------------------------------------------------------


def test_an_sse_client_on_one_node_sees_events_another_node_writes(cluster: Cluster) -> None:
    """SSE on node A streams, live and to the end, a run that node B owns."""
    a, b = cluster.start(2)
    status, _ = b.request("POST", "/workflows", chain("watched", 3, 0.3))
    assert status == 201
    _, run_id = b.start_run("watched")
    messages = read_sse(a.port, f"/events/{run_id}", DEADLINE)
    names = [event for _, event, _ in messages]
    assert names[0] == "RunStarted"
    assert names[-1] == "RunCompleted"
    assert names.count("TaskCompleted") == 3
    assert [int(offset) for offset, _, _ in messages] == list(range(1, len(messages) + 1))
    workers = {data["worker"] for _, event, data in messages if event == "TaskStarted"}
    assert {node_of(w) for w in workers} == {b.name}  # written by B, streamed by A


def same_moment(call: Callable[[Node], tuple[int, str]], *nodes: Node) -> list[tuple[int, str]]:
    """Call ``call`` on every node from threads released together; return the answers."""
    barrier = threading.Barrier(len(nodes))
    results: list[tuple[int, str] | None] = [None] * len(nodes)

    def one(index: int) -> None:
        barrier.wait(timeout=10)
        results[index] = call(nodes[index])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(nodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE)
    assert all(r is not None for r in results), results
    return [r for r in results if r is not None]


def test_one_idempotency_key_on_two_nodes_at_once_makes_one_run(cluster: Cluster) -> None:
    """The same key POSTed to two nodes at the same moment: one 201, one 200, one run id."""
    a, b = cluster.start(2)
    status, _ = a.request("POST", "/workflows", chain("once", 1, 0.01))
    assert status == 201
    assert wait_until(lambda: b.request("GET", "/workflows/once")[0] == 200)
    for i in range(5):
        results = same_moment(lambda node, key=f"same-{i}": node.start_run("once", key), a, b)
        assert sorted(code for code, _ in results) == [200, 201], results
        assert results[0][1] == results[1][1]
        run_id = results[0][1]
        cluster.wait_finished([run_id])
        assert [e.name for e in cluster.events(run_id)].count("RunStarted") == 1
