"""`flowweaver pause|resume|retry|skip|complete` on a SQLite store, run as a user runs them.

The runs are made by an engine in this process, which then closes: the store is one that no
server drives. The commands record their events and run nothing; the run goes on when a
`flowweaver serve` opens the store later, whose handlers (tests/adapters/postgres/
cluster_handlers.py, which the commands never load) write down every invocation with its pid.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flowweaver import cli_actions
from flowweaver.domain.events import RunPaused
from flowweaver.domain.run import RunState
from flowweaver.engine import Engine
from flowweaver.engine.operator import OperatorAction
from flowweaver.errors import InvalidCommandError
from flowweaver.handlers import builtin_registry
from flowweaver.ports import Append
from flowweaver.store import MemoryEventStore, SQLiteEventStore
from tests.cli_in_process import fw_in_process
from tests.serve_process import DEADLINE, ServeProcess

ROOT = Path(__file__).resolve().parents[1]
FLOWWEAVER = str(Path(sys.executable).parent / "flowweaver")
HANDLERS = ROOT / "tests" / "adapters" / "postgres" / "cluster_handlers.py"
USER = "ops-alice"

# `extract` fails its first attempt and waits an hour for its retry: the run stays running
# with nothing to do, until an operator acts.
WORKFLOW = {
    "id": "ops",
    "tasks": [
        {
            "id": "extract",
            "handler": "step",
            "retry": {"maxAttempts": 3, "initialDelay": 3600, "maxDelay": 3600},
        },
        {"id": "load", "handler": "step", "dependencies": ["extract"]},
        {"id": "audit", "handler": "step", "dependencies": ["extract"]},
    ],
}


class SourceDownError(Exception):
    """What the engine of this process makes the first attempt of ``extract`` raise."""


def _failing_step(inputs: dict[str, Any]) -> dict[str, Any]:
    raise SourceDownError("the source is down")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")}
    env["LOGNAME"] = USER  # the first place getpass.getuser() looks
    return env


def fw(*args: str, store: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``flowweaver ARGS --store sqlite:///STORE`` to the end."""
    done = subprocess.run(
        [FLOWWEAVER, *args, "--store", f"sqlite:///{store}"],
        cwd=cwd or store.parent,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def fw_here(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    """Run ``flowweaver ARGS --store sqlite:///STORE`` to the end in this process (see
    tests/cli_in_process.py), as :func:`fw` runs it in a new one."""
    done = fw_in_process(*args, "--store", f"sqlite:///{store}", cwd=store.parent, env=_env())
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _read(store: Path, call: Callable[[SQLiteEventStore], Any]) -> Any:
    reader = SQLiteEventStore(str(store))
    try:
        return call(reader)
    finally:
        reader.close()


def log_length(store: Path) -> int:
    """Return the position of the store's last event."""
    return int(_read(store, lambda reader: reader.max_position()))


def events(store: Path, run_id: str) -> list[tuple[str, Any, Any]]:
    """Return the run's events as (type, by, reason)."""
    return [
        (rec.name, getattr(rec.event, "by", None), getattr(rec.event, "reason", None))
        for rec in _read(store, lambda reader: reader.read_run(run_id))
    ]


def state_of(store: Path, run_id: str) -> RunState:
    state = _read(store, lambda reader: reader.run_state(run_id))
    assert state is not None
    return state


def wait_state(engine: Engine, run_id: str, done: Callable[[RunState], bool]) -> RunState:
    """Block until the run's stored state satisfies ``done``."""
    store = engine.store
    while True:
        top = store.max_position()
        state = store.run_state(run_id)
        assert state is not None
        if done(state):
            return state
        assert store.wait_for_log(top, DEADLINE), "the run did not get there in time"


def make_waiting_run(store: Path) -> str:
    """Start a run of WORKFLOW whose ``extract`` failed once and waits an hour for its retry,
    on an engine that then closes; return the run's id."""
    registry = builtin_registry()
    registry.register("step", _failing_step)
    engine = Engine.open(f"sqlite:///{store}", handlers=registry, workers=1)
    try:
        engine.register_workflow(WORKFLOW)
        run_id = engine.start_run("ops").run_id
        wait_state(engine, run_id, lambda s: s.tasks["extract"].status == "waiting_retry")
    finally:
        engine.close(grace=1)
    return run_id


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "ops.db"


@pytest.fixture
def run_id(store: Path) -> str:
    return make_waiting_run(store)


class Server:
    """`flowweaver serve` on the store with the invocation-logging handlers, once started."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.invocations = store.parent / "invocations.txt"
        self.process: ServeProcess | None = None

    def start(self) -> ServeProcess:
        """Start the server and wait until it listens."""
        self.process = ServeProcess(
            f"sqlite:///{self.store}",
            self.store.parent,
            args=["--handlers", str(HANDLERS), "--workers", "2"],
            env={"FWTEST_INVOCATIONS": str(self.invocations)},
        )
        self.process.wait_started()
        return self.process

    def invoked(self) -> list[tuple[str, int, int]]:
        """Return every (task, attempt, pid) a handler ran, in order."""
        if not self.invocations.exists():
            return []
        rows = [line.split() for line in self.invocations.read_text().splitlines()]
        return [(task, int(attempt), int(pid)) for _, task, attempt, pid in rows]


@pytest.fixture
def server(store: Path) -> Iterator[Server]:
    made = Server(store)
    yield made
    if made.process is not None:
        made.process.close()


def wait_finished(store: Path, run_id: str) -> RunState:
    """Block until the run has ended in the store (a server drives it); return its state."""
    reader = SQLiteEventStore(str(store))
    try:
        while True:
            top = reader.max_position()
            state = reader.run_state(run_id)
            assert state is not None
            if state.is_terminal:
                return state
            assert reader.wait_for_log(top, DEADLINE), "the run did not end in time"
    finally:
        reader.close()


def test_pause_retry_resume_are_recorded_and_a_later_server_finishes_the_run(
    store: Path, run_id: str, server: Server
) -> None:
    """pause, retry and resume each store their event by the OS user and run nothing; the
    server that opens the store next runs extract's second attempt, then load and audit."""
    before = log_length(store)
    paused = fw("pause", run_id, "--reason", "warehouse maintenance", store=store)
    assert (paused.returncode, paused.stdout, paused.stderr) == (0, f"run {run_id} paused\n", "")
    retried = fw("retry", run_id, "extract", "--reason", "source is back", store=store)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout == f"run {run_id} paused; task extract scheduled\n"
    resumed = fw("resume", run_id, store=store)
    assert resumed.stdout == f"run {run_id} running\n"
    assert events(store, run_id)[-3:] == [
        ("RunPaused", USER, "warehouse maintenance"),
        ("TaskRetried", USER, "source is back"),
        ("RunResumed", USER, ""),
    ]
    assert log_length(store) == before + 3  # those three and nothing else: no attempt began

    pid = server.start().pid
    assert wait_finished(store, run_id).status == "completed"
    assert sorted(server.invoked()) == [("audit", 1, pid), ("extract", 2, pid), ("load", 1, pid)]


def test_complete_and_skip_by_hand_then_the_server_runs_only_what_is_left(
    store: Path, run_id: str, server: Server
) -> None:
    """complete publishes the given output and schedules what it made ready; skip skips a
    scheduled task; the server then runs load alone, with extract's hand-given output."""
    done = fw(
        "complete", run_id, "extract", "--output", '{"rows": 3}', "--reason", "by hand",
        store=store,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"run {run_id} running; task extract completed\n"
    skipped = fw("skip", run_id, "audit", "--reason", "not today", store=store)
    assert skipped.stdout == f"run {run_id} running; task audit skipped\n"
    recorded = events(store, run_id)
    assert ("TaskCompleted", USER, "by hand") in recorded
    assert recorded[-1] == ("TaskSkipped", USER, "not today")
    state = state_of(store, run_id)
    assert state.tasks["extract"].output == {"rows": 3}
    assert state.tasks["load"].status == "scheduled"
    assert state.tasks["load"].attempts == 1

    pid = server.start().pid
    assert wait_finished(store, run_id).status == "completed"
    assert server.invoked() == [("load", 1, pid)]


def test_json_prints_the_apis_run_json(store: Path, run_id: str) -> None:
    """--json prints the run as `status --json` (GET /runs/{id}) shows it after the action."""
    paused = fw("pause", run_id, "--json", store=store)
    assert paused.returncode == 0, paused.stderr
    shown = fw("status", run_id, "--json", store=store)
    assert json.loads(paused.stdout) == json.loads(shown.stdout)
    assert json.loads(paused.stdout)["status"] == "paused"


def test_every_refusal_is_one_line_exits_non_zero_and_stores_nothing(
    store: Path, run_id: str
) -> None:
    """What the run's state does not allow exits 1 with the API's 409 reason; an unknown run or
    task exits 1; a malformed argument exits 2. None stores anything. (Completing ``load`` by
    hand before ``extract`` is allowed: it has not completed and is not running.) The refusals
    but one run in this process."""
    assert fw("complete", run_id, "load", "--output", "1", store=store).returncode == 0
    ghost = "00000000-0000-0000-0000-000000000000"
    cases: list[tuple[list[str], int, str]] = [
        (["resume", run_id], 1, f"run {run_id}: is running, not paused"),
        (
            ["retry", run_id, "audit"],
            1,
            f"run {run_id}: task audit is pending: only a task waiting for a retry, or failed "
            "in a paused run, is retried",
        ),
        (
            ["complete", run_id, "load", "--output", "2"],
            1,
            f"run {run_id}: task load is completed: only a task that has not completed and is "
            "not running can be completed by hand",
        ),
        (
            ["skip", run_id, "load"],
            1,
            f"run {run_id}: task load is completed: only a task that has not completed, is not "
            "running and was not skipped can be skipped",
        ),
        (["skip", run_id, "nope"], 1, f"task 'nope of run {run_id}' not found"),
        (["pause", ghost], 1, f"no run {ghost} in sqlite:///{store}"),
        (["pause", "not-a-run"], 1, f"no run not-a-run in sqlite:///{store}"),
        (["complete", run_id, "extract", "--output", "{bad"], 2, "--output is not JSON"),
        (["complete", run_id, "extract"], 2, "the following arguments are required: --output"),
        (["retry", run_id], 2, "the following arguments are required: TASK_ID"),
        (["pause", run_id, "--reason", "x" * 4097], 2, "--reason: at most 4096 characters"),
        (
            ["complete", run_id, "extract", "--output", json.dumps("x" * 2000),
             "--max-task-data", "1KiB"],
            1,
            "$.output: takes 2002 bytes as JSON, over the limit of 1024",
        ),
    ]  # fmt: skip
    before = log_length(store)
    for args, code, message in cases:
        done = fw_here(*args, store=store)
        assert done.returncode == code, (args, done.stderr)
        assert done.stdout == ""
        last = done.stderr.splitlines()[-1]
        assert last.startswith("flowweaver: error: "), (args, done.stderr)
        assert message in last, (args, last)
        if code == 1:
            assert done.stderr.count("\n") == 1, (args, done.stderr)
    assert log_length(store) == before

    paused = fw_here("pause", run_id, store=store)
    assert paused.returncode == 0
    before = log_length(store)
    again = fw("pause", run_id, store=store)
    assert (again.returncode, again.stderr) == (
        1,
        f"flowweaver: error: run {run_id}: is paused: only a running run pauses\n",
    )
    cancelled = fw_here("cancel", run_id, store=store)
    assert cancelled.stdout == f"run {run_id} cancelled\n"
    assert events(store, run_id)[-2][:2] == ("RunCancelRequested", USER)
    before = log_length(store)
    for args in (["resume", run_id], ["skip", run_id, "load"], ["retry", run_id, "extract"]):
        ended = fw_here(*args, store=store)
        assert (ended.returncode, ended.stderr) == (
            1,
            f"flowweaver: error: run {run_id}: has ended (cancelled)\n",
        )
    assert log_length(store) == before
    missing = fw_here("pause", run_id, store=store.with_name("nowhere.db"))
    assert missing.returncode == 1
    assert "no store at" in missing.stderr
    assert not store.with_name("nowhere.db").exists()


def test_beside_a_live_server_the_command_says_to_use_its_route(
    store: Path, run_id: str, server: Server
) -> None:
    """A server drives the store: the command stores nothing and names the server's route,
    which then takes the action."""
    process = server.start()
    before = log_length(store)
    for args, route in [
        (["pause", run_id], f"/runs/{run_id}/pause"),
        (["retry", run_id, "extract"], f"/runs/{run_id}/tasks/extract/retry"),
    ]:
        refused = fw(*args, store=store)
        assert refused.returncode == 1
        assert refused.stderr == (
            f"flowweaver: error: run {run_id} is driven by another engine on this store "
            f"(pid {process.pid}); {args[0]} it through that server: POST {route}\n"
        )
    assert log_length(store) == before
    status, run = process.request("POST", f"/runs/{run_id}/pause")
    assert (status, run["status"]) == (202, "paused")


def test_the_principal_is_the_os_user_or_anonymous(monkeypatch: pytest.MonkeyPatch) -> None:
    """by is getpass's user, cut to 256 characters; anonymous when the OS names nobody."""
    monkeypatch.setattr(getpass, "getuser", lambda: "carol")
    assert cli_actions.principal() == "carol"
    monkeypatch.setattr(getpass, "getuser", lambda: "x" * 300)
    assert cli_actions.principal() == "x" * 256

    def nobody() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(getpass, "getuser", nobody)
    assert cli_actions.principal() == "anonymous"


def test_act_on_a_memory_store_decides_on_the_stored_state_and_runs_nothing() -> None:
    """act() appends the action's events to an in-memory store and starts no handler."""
    calls: list[str] = []
    registry = builtin_registry()
    registry.register("step", lambda inputs: calls.append("step") or _failing_step(inputs))
    store = MemoryEventStore()
    engine = Engine(store, handlers=registry, workers=1)
    try:
        engine.register_workflow(WORKFLOW)
        run_id = engine.start_run("ops").run_id
        wait_state(engine, run_id, lambda s: s.tasks["extract"].status == "waiting_retry")
    finally:
        engine.close(grace=1)
    assert calls == ["step"]
    action = OperatorAction(kind="retry", run_id=run_id, by="dave", task_id="extract")
    state = cli_actions.act(store, action, max_io_bytes=1024)
    assert (state.status, state.tasks["extract"].status) == ("running", "scheduled")
    assert calls == ["step"]
    assert [rec.name for rec in store.read_run(run_id)][-1] == "TaskRetried"


def test_the_operations_example_runs_as_written(tmp_path: Path) -> None:
    """The session of operations.md's "Operator actions from the command line" does what the
    page says, from the repository's root with the default store."""
    text = (ROOT / "docs" / "operations.md").read_text()
    begin = text.index("## Operator actions from the command line\n")
    end = text.find("\n## ", begin + 10)
    [script] = re.findall(r"```sh\n(.*?)```", text[begin : end if end != -1 else None], re.DOTALL)
    env = _env()
    env["PATH"] = f"{Path(FLOWWEAVER).parent}{os.pathsep}{env['PATH']}"
    env["FLOWWEAVER_STORE"] = f"sqlite:///{tmp_path / 'flowweaver.db'}"
    done = subprocess.run(
        ["bash", "-c", "set -e\n" + script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    run_id = lines[0].split()[1]
    assert lines[0] == f"run {run_id}  paused"
    assert lines[-4:] == [
        f"run {run_id} paused; task extract scheduled",
        f"run {run_id} running",
        f"run {run_id} (pause-on-failure v1)",
        lines[-1],
    ]
    assert re.fullmatch(rf"run {run_id} completed in \d+ ms", lines[-1])


class RacedStore(MemoryEventStore):
    """A memory store where another writer appends ``first`` just before the next append."""

    def __init__(self) -> None:
        super().__init__()
        self.first: list[Any] = []

    def append(self, appends: Any) -> list[int]:
        if self.first:
            run_id, event = self.first.pop()
            state = self.run_state(run_id)
            assert state is not None
            super().append([Append(run_id, state.version, [event])])
        return super().append(appends)


def test_an_action_that_loses_a_race_is_decided_again_on_what_won() -> None:
    """Another writer's event first: the retry is decided again after it and stored; a pause
    that meets another pause is refused and adds nothing."""
    store = RacedStore()
    registry = builtin_registry()
    registry.register("step", _failing_step)
    engine = Engine(store, handlers=registry, workers=1)
    try:
        engine.register_workflow(WORKFLOW)
        run_id = engine.start_run("ops").run_id
        state = wait_state(engine, run_id, lambda s: s.tasks["extract"].status == "waiting_retry")
    finally:
        engine.close(grace=1)
    now = state.updated_at
    assert now is not None
    store.first.append((run_id, RunPaused(timestamp=now, by="erin", reason="first")))
    retry = OperatorAction(kind="retry", run_id=run_id, by="dave", task_id="extract")
    state = cli_actions.act(store, retry, max_io_bytes=1024)
    assert (state.status, state.tasks["extract"].status) == ("paused", "scheduled")
    assert [rec.name for rec in store.read_run(run_id)][-2:] == ["RunPaused", "TaskRetried"]

    resumed = cli_actions.act(
        store,
        OperatorAction(kind="resume", run_id=run_id, by="dave"),
        max_io_bytes=1024,
    )
    assert resumed.status == "running"
    store.first.append((run_id, RunPaused(timestamp=now, by="erin", reason="second")))
    before = store.max_position()
    pause = OperatorAction(kind="pause", run_id=run_id, by="dave")
    with pytest.raises(InvalidCommandError, match="is paused: only a running run pauses"):
        cli_actions.act(store, pause, max_io_bytes=1024)
    assert store.max_position() == before + 1  # erin's pause only
