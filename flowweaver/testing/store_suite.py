"""The conformance suite every :class:`flowweaver.ports.EventStore` passes.

Subclass :class:`EventStoreSuite` in a pytest module, name the subclass ``Test...`` and give it
``create_store``; every test below then runs against that store::

    class TestSQLiteStore(EventStoreSuite):
        @pytest.fixture(autouse=True)
        def _directory(self, tmp_path: Path) -> None:
            self.directory = tmp_path

        def create_store(self) -> EventStore:
            return SQLiteEventStore(str(self.directory / "events.db"))

A store is done when the suite passes on it. Tests that need a store get a fresh one from
``create_store`` (through the ``store`` fixture) and give it back to ``dispose_store``;
nothing in the suite assumes the store starts empty beyond what ``create_store`` promises
(a fresh, empty store), and every run id is a new UUID.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgspec
import pytest
from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowweaver.domain.concurrency import dequeue_run, queue_run
from flowweaver.domain.events import ErrorInfo, RunEvent, RunStarted, TaskStarted, event_name
from flowweaver.domain.run import (
    RunState,
    fold,
    fork_run,
    new_state,
    pause_run,
    record_completed,
    record_failed,
    record_started,
    request_cancel,
    resume_run,
    start_run,
)
from flowweaver.domain.spec import WorkflowSpec
from flowweaver.errors import ConcurrencyError, NotFoundError, ValidationError
from flowweaver.ports import Append, EventStore, RecordedEvent, RunRow
from flowweaver.store.codec import UPCASTERS
from flowweaver.testing.chain_suite import ChainSuite
from flowweaver.testing.debug_suite import DebugReadsSuite
from flowweaver.testing.runs import T0, command_steps, simulate, task, workflow, workflow_specs

_T = TypeVar("_T")
WAIT = 30.0
"""Seconds any thread handshake may take before the test fails instead of hanging."""


def new_run_id() -> str:
    """Return a fresh run id."""
    return str(uuid.uuid4())


def marker_event(n: int, worker: str = "w") -> TaskStarted:
    """Return a small event for tests that look at positions and versions, not at meaning."""
    return TaskStarted(
        timestamp=T0 + timedelta(microseconds=n), task_id="t", attempt=n, worker=worker
    )


def wide_workflow(width: int = 3, workflow_id: str = "wf") -> WorkflowSpec:
    """Return a workflow of ``width`` independent tasks."""
    return workflow(*(task(f"t{i}") for i in range(width)), workflow_id=workflow_id)


def completed_run(
    run_id: str, width: int = 3, workflow_id: str = "wf"
) -> tuple[RunState, list[RunEvent]]:
    """Decide a whole run that completes: RunStarted, each task scheduled, started, completed."""
    state, events = start_run(run_id, wide_workflow(width, workflow_id), 1, {"n": width}, T0)
    for i in range(width):
        now = T0 + timedelta(seconds=i + 1)
        events += record_started(state, f"t{i}", 1, f"w{i}", now)
        events += record_completed(state, f"t{i}", 1, {"i": i}, 1.5, now)
    assert state.status == "completed"
    return state, events


@runtime_checkable
class SnapshotInterval(Protocol):
    """A store that snapshots a run every ``snapshot_interval`` events it folds (0: never)."""

    snapshot_interval: int


class EventStoreSuite(ChainSuite, DebugReadsSuite, ABC):
    """Reusable tests of the :class:`~flowweaver.ports.EventStore` contract.

    Hooks: :meth:`create_store` (required), :meth:`dispose_store`, and
    :meth:`configure_snapshots` for stores whose automatic snapshot interval is set another way.
    """

    property_examples = 40
    """How many random runs each property test tries."""

    @abstractmethod
    def create_store(self) -> EventStore:
        """Return a new, empty store."""

    def dispose_store(self, store: EventStore) -> None:
        """Release a store made by :meth:`create_store`."""
        store.close()

    def configure_snapshots(self, store: EventStore, interval: int) -> None:
        """Make ``store`` save a snapshot every ``interval`` events it folds, or skip the test."""
        if not isinstance(store, SnapshotInterval):
            pytest.skip(f"{type(store).__name__} has no snapshot_interval to configure")
        store.snapshot_interval = interval

    @pytest.fixture
    def store(self) -> Iterator[EventStore]:
        """Yield a fresh store and dispose of it afterwards."""
        store = self.create_store()
        try:
            yield store
        finally:
            self.dispose_store(store)

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def record(store: EventStore, state: RunState, events: Sequence[RunEvent]) -> list[int]:
        """Append ``events``, which ``state`` already folded, as the run's next events."""
        return store.append(
            [Append(run_id=state.id, expected_version=state.version - len(events), events=events)]
        )

    @staticmethod
    def in_threads(count: int, work: Callable[[int], _T]) -> list[_T]:
        """Run ``work(0..count-1)`` on ``count`` threads at once and return the results."""
        with ThreadPoolExecutor(count) as pool:
            futures: list[Future[_T]] = [pool.submit(work, i) for i in range(count)]
            return [f.result(timeout=WAIT) for f in futures]

    # --- appending -------------------------------------------------------------------------

    def test_append_numbers_versions_from_the_expected_version(self, store: EventStore) -> None:
        """Appended events get versions expected+1, expected+2, ... and read back in order."""
        state, events = completed_run(new_run_id())
        store.append([Append(run_id=state.id, expected_version=0, events=events[:4])])
        store.append([Append(run_id=state.id, expected_version=4, events=events[4:])])
        stored = store.read_run(state.id)
        assert [r.version for r in stored] == list(range(1, len(events) + 1))
        assert [r.event for r in stored] == events
        assert [r.name for r in stored] == [event_name(e) for e in events]
        assert {r.run_id for r in stored} == {state.id}

    def test_append_returns_one_increasing_position_per_event(self, store: EventStore) -> None:
        """append returns a global position per event, increasing across calls."""
        first = store.append(
            [
                Append(
                    run_id=new_run_id(),
                    expected_version=0,
                    events=[marker_event(1), marker_event(2)],
                )
            ]
        )
        second = store.append(
            [Append(run_id=new_run_id(), expected_version=0, events=[marker_event(3)])]
        )
        positions = first + second
        assert len(positions) == 3
        assert positions == sorted(positions)
        assert len(set(positions)) == 3
        assert positions[0] >= 1

    def test_append_of_nothing_stores_nothing(self, store: EventStore) -> None:
        """An empty batch, or an append without events, returns no positions."""
        assert store.append([]) == []
        assert store.append([Append(run_id=new_run_id(), expected_version=0, events=[])]) == []
        assert store.max_position() == 0

    def test_stored_json_is_the_camel_case_event_with_its_type(self, store: EventStore) -> None:
        """The raw JSON of a stored event carries ``type``, ``timestamp`` and camelCase fields."""
        state, events = completed_run(new_run_id())
        self.record(store, state, events)
        started = store.read_run(state.id, upto=1)[0]
        document = msgspec.json.decode(started.raw)
        assert document["type"] == "RunStarted"
        assert document["workflowId"] == "wf"
        assert document["timestamp"].startswith("2024-05-01T12:00:00")
        assert document["definition"]["tasks"][0]["id"] == "t0"

    def test_conflicting_version_raises_and_stores_nothing(self, store: EventStore) -> None:
        """Appending at a version that exists raises ConcurrencyError and stores no event."""
        run_id = new_run_id()
        store.append(
            [Append(run_id=run_id, expected_version=0, events=[marker_event(1), marker_event(2)])]
        )
        top = store.max_position()
        with pytest.raises(ConcurrencyError) as info:
            store.append(
                [
                    Append(
                        run_id=run_id, expected_version=1, events=[marker_event(3), marker_event(4)]
                    )
                ]
            )
        assert run_id in info.value.aggregate_ids
        assert info.value.retryable
        assert [r.version for r in store.read_run(run_id)] == [1, 2]
        assert [r.event for r in store.read_run(run_id)] == [marker_event(1), marker_event(2)]
        assert store.max_position() == top

    def test_batch_over_several_runs_is_atomic(self, store: EventStore) -> None:
        """A conflict in one run of a batch stores nothing of any run in the batch."""
        busy, fresh, other = new_run_id(), new_run_id(), new_run_id()
        store.append([Append(run_id=busy, expected_version=0, events=[marker_event(1)])])
        top = store.max_position()
        batch = [
            Append(run_id=fresh, expected_version=0, events=[marker_event(1), marker_event(2)]),
            Append(run_id=busy, expected_version=0, events=[marker_event(9)]),
            Append(run_id=other, expected_version=0, events=[marker_event(1)]),
        ]
        with pytest.raises(ConcurrencyError):
            store.append(batch)
        assert store.read_run(fresh) == []
        assert store.read_run(other) == []
        assert [r.event for r in store.read_run(busy)] == [marker_event(1)]
        assert store.max_position() == top
        assert [r.run_id for r in store.read_log(after=0)] == [busy]

    def test_batch_over_several_runs_stores_all_of_them(self, store: EventStore) -> None:
        """A batch without conflicts stores every run's events, in batch order in the log."""
        one, two = new_run_id(), new_run_id()
        store.append([Append(run_id=one, expected_version=0, events=[marker_event(1)])])
        positions = store.append(
            [
                Append(run_id=two, expected_version=0, events=[marker_event(1), marker_event(2)]),
                Append(run_id=one, expected_version=1, events=[marker_event(2)]),
            ]
        )
        log = store.read_log(after=0)
        assert [(r.run_id, r.version) for r in log] == [(one, 1), (two, 1), (two, 2), (one, 2)]
        assert [r.position for r in log[1:]] == positions

    def test_two_appends_of_one_run_at_the_same_version_in_a_batch_conflict(
        self, store: EventStore
    ) -> None:
        """One batch that claims the same version of a run twice is refused whole."""
        run_id = new_run_id()
        with pytest.raises(ConcurrencyError):
            store.append(
                [
                    Append(run_id=run_id, expected_version=0, events=[marker_event(1)]),
                    Append(run_id=run_id, expected_version=0, events=[marker_event(2)]),
                ]
            )
        assert store.read_run(run_id) == []

    def test_racing_appends_of_the_same_version_let_exactly_one_win(
        self, store: EventStore
    ) -> None:
        """Two threads appending version N of one run: one wins, one conflicts, none is lost."""
        run_id = new_run_id()
        store.append([Append(run_id=run_id, expected_version=0, events=[marker_event(0)])])
        version = 1
        for round_number in range(10):
            barrier = threading.Barrier(2, timeout=WAIT)

            def attempt(
                writer: int,
                expected: int = version,
                n: int = round_number,
                gate: threading.Barrier = barrier,
            ) -> bool:
                event = marker_event(n, worker=f"writer-{writer}")
                gate.wait()
                try:
                    store.append([Append(run_id=run_id, expected_version=expected, events=[event])])
                except ConcurrencyError:
                    return False
                return True

            outcomes = self.in_threads(2, attempt)
            assert sorted(outcomes) == [False, True]
            loser = outcomes.index(False)
            # The loser re-reads, decides again and gets the next version: nothing is lost.
            current = store.read_run(run_id)[-1].version
            assert current == version + 1
            store.append(
                [
                    Append(
                        run_id=run_id,
                        expected_version=current,
                        events=[marker_event(round_number, worker=f"writer-{loser}")],
                    )
                ]
            )
            version = current + 1
        stored = store.read_run(run_id)
        assert [r.version for r in stored] == list(range(1, 22))
        for round_number in range(10):
            workers = sorted(
                r.event.worker
                for r in stored[1:]
                if isinstance(r.event, TaskStarted) and r.event.attempt == round_number
            )
            assert workers == ["writer-0", "writer-1"]

    def test_writers_that_retry_on_conflict_lose_nothing(self, store: EventStore) -> None:
        """Several threads appending to one run, re-reading on conflict, all get stored once."""
        run_id = new_run_id()
        writers, per_writer = 4, 10
        barrier = threading.Barrier(writers, timeout=WAIT)

        def write(writer: int) -> int:
            conflicts = 0
            barrier.wait()
            for n in range(per_writer):
                while True:
                    stored = store.read_run(run_id)
                    version = stored[-1].version if stored else 0
                    event = marker_event(n, worker=f"writer-{writer}")
                    try:
                        store.append(
                            [Append(run_id=run_id, expected_version=version, events=[event])]
                        )
                    except ConcurrencyError:
                        conflicts += 1
                        continue
                    break
            return conflicts

        self.in_threads(writers, write)
        stored = store.read_run(run_id)
        assert [r.version for r in stored] == list(range(1, writers * per_writer + 1))
        seen = sorted(
            (r.event.worker, r.event.attempt) for r in stored if isinstance(r.event, TaskStarted)
        )
        assert seen == sorted((f"writer-{w}", n) for w in range(writers) for n in range(per_writer))

    # --- reading one run -------------------------------------------------------------------

    def test_read_run_pages_by_after_upto_and_limit(self, store: EventStore) -> None:
        """read_run returns versions in (after, upto], at most ``limit`` of them, oldest first."""
        run_id = new_run_id()
        store.append(
            [
                Append(
                    run_id=run_id,
                    expected_version=0,
                    events=[marker_event(n) for n in range(1, 11)],
                )
            ]
        )

        def versions(**kwargs: Any) -> list[int]:
            return [r.version for r in store.read_run(run_id, **kwargs)]

        assert versions() == list(range(1, 11))
        assert versions(after=3) == list(range(4, 11))
        assert versions(upto=5) == [1, 2, 3, 4, 5]
        assert versions(after=3, upto=5) == [4, 5]
        assert versions(limit=2) == [1, 2]
        assert versions(after=3, limit=2) == [4, 5]
        assert versions(after=8, limit=5) == [9, 10]
        assert versions(after=10) == []
        assert versions(upto=0) == []
        assert versions(after=5, upto=3) == []
        assert versions(upto=100) == list(range(1, 11))

    def test_unknown_run_reads_as_nothing(self, store: EventStore) -> None:
        """A run id never appended reads as no events and no state, whatever its form."""
        for run_id in (new_run_id(), "not-a-uuid", ""):
            assert store.read_run(run_id) == []
            assert store.run_state(run_id) is None
            assert store.run_state(run_id, at=3) is None

    def test_runs_do_not_see_each_others_events(self, store: EventStore) -> None:
        """Each run reads back only its own events."""
        one, two = new_run_id(), new_run_id()
        store.append([Append(run_id=one, expected_version=0, events=[marker_event(1)])])
        store.append(
            [Append(run_id=two, expected_version=0, events=[marker_event(2), marker_event(3)])]
        )
        assert [r.event for r in store.read_run(one)] == [marker_event(1)]
        assert [r.event for r in store.read_run(two)] == [marker_event(2), marker_event(3)]

    # --- the global log --------------------------------------------------------------------

    def test_empty_store_has_position_zero_and_an_empty_log(self, store: EventStore) -> None:
        """A new store's log is empty and its highest position is 0."""
        assert store.max_position() == 0
        assert store.read_log(after=0) == []

    def test_read_log_pages_through_every_run_event_once_in_order(self, store: EventStore) -> None:
        """Paging read_log by the last position seen yields every event once, in order."""
        appended: list[tuple[str, int, int]] = []
        for i in range(7):
            run_id = new_run_id()
            count = i % 3 + 1
            positions = store.append(
                [
                    Append(
                        run_id=run_id,
                        expected_version=0,
                        events=[marker_event(n) for n in range(count)],
                    )
                ]
            )
            appended += [(run_id, v + 1, p) for v, p in enumerate(positions)]
        assert store.max_position() == appended[-1][2]
        for page_size in (1, 3, 5, 100):
            seen: list[RecordedEvent] = []
            after = 0
            while page := store.read_log(after=after, limit=page_size):
                assert len(page) <= page_size
                seen += page
                after = page[-1].position or 0
            assert [(r.run_id, r.version, r.position) for r in seen] == appended
        middle = appended[5][2]
        assert [r.position for r in store.read_log(after=middle)] == [p for _, _, p in appended[6:]]

    def test_read_log_returns_decodable_events_with_their_run(self, store: EventStore) -> None:
        """Log entries carry run id, version, position, event name and the event itself."""
        state, events = completed_run(new_run_id())
        positions = self.record(store, state, events)
        log = store.read_log(after=0)
        assert [r.event for r in log] == events
        assert [r.position for r in log] == positions
        assert [r.version for r in log] == list(range(1, len(events) + 1))
        assert {r.run_id for r in log} == {state.id}

    def test_an_event_stored_at_an_old_schema_version_reads_upcast(
        self, store: EventStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The store keeps a versioned topic (``TaskStarted@0``): runs and the log read it back,
        upcast to the current shape; the log's topic filter lets it through."""
        recorder = getattr(store, "_events", None)
        if not isinstance(recorder, ApplicationRecorder):
            pytest.skip(f"{type(store).__name__} has no recorder to write an old event with")

        def worker_was_by(document: dict[str, Any]) -> dict[str, Any]:
            return {**{k: v for k, v in document.items() if k != "by"}, "worker": document["by"]}

        monkeypatch.setitem(UPCASTERS, ("TaskStarted", 0), worker_was_by)
        run_id = new_run_id()
        old: dict[str, Any] = {"type": "TaskStarted", "timestamp": "2024-05-01T12:00:00Z"}
        old |= {"taskId": "t", "attempt": 1, "by": "w-old"}
        recorder.insert_events(
            [StoredEvent(uuid.UUID(run_id), 1, "TaskStarted@0", msgspec.json.encode(old))]
        )
        store.append([Append(run_id=run_id, expected_version=1, events=[marker_event(2)])])
        expected = [
            TaskStarted(timestamp=T0, task_id="t", attempt=1, worker="w-old"),
            marker_event(2),
        ]
        recorded = store.read_run(run_id)
        assert [(r.name, r.schema) for r in recorded] == [("TaskStarted", 0), ("TaskStarted", 1)]
        assert [r.event for r in recorded] == expected
        assert msgspec.json.decode(recorded[0].current_raw)["worker"] == "w-old"
        assert [r.event for r in store.read_log(after=0)] == expected

    def test_read_log_leaves_out_workflow_registrations(self, store: EventStore) -> None:
        """The run log holds run events only; registering a workflow adds nothing to it."""
        store.register_workflow(wide_workflow(), T0)
        run_id = new_run_id()
        store.append([Append(run_id=run_id, expected_version=0, events=[marker_event(1)])])
        store.register_workflow(wide_workflow(2), T0)
        assert [r.run_id for r in store.read_log(after=0)] == [run_id]

    def test_positions_increase_past_a_rejected_append(self, store: EventStore) -> None:
        """A rejected append stores nothing; later positions still increase (they may skip)."""
        run_id = new_run_id()
        first = store.append([Append(run_id=run_id, expected_version=0, events=[marker_event(1)])])
        with pytest.raises(ConcurrencyError):
            store.append([Append(run_id=run_id, expected_version=0, events=[marker_event(2)])])
        second = store.append(
            [Append(run_id=new_run_id(), expected_version=0, events=[marker_event(3)])]
        )
        assert second[0] > first[0]
        assert [r.position for r in store.read_log(after=0)] == first + second
        assert store.max_position() == second[0]

    def test_log_order_holds_while_threads_append_and_one_reads(self, store: EventStore) -> None:
        """A reader tailing the log during concurrent appends, rejected ones among them, sees
        every event once, in order: no position ever appears below one it has already read."""
        writers, batches, per_batch = 4, 12, 3
        barrier = threading.Barrier(writers + 2, timeout=WAIT)
        writers_done = threading.Event()
        rejecting = threading.Event()  # writers go past their first batch only once it is set
        taken = new_run_id()
        store.append([Append(run_id=taken, expected_version=0, events=[marker_event(0)])])
        start = store.max_position()

        def write(writer: int) -> list[tuple[str, int, int]]:
            run_id = new_run_id()
            written: list[tuple[str, int, int]] = []
            barrier.wait()
            for b in range(batches):
                events = [marker_event(b * per_batch + n, f"w{writer}") for n in range(per_batch)]
                positions = store.append(
                    [Append(run_id=run_id, expected_version=b * per_batch, events=events)]
                )
                written += [(run_id, b * per_batch + n + 1, p) for n, p in enumerate(positions)]
                if b == 0:  # so that rejected appends really interleave with the rest
                    assert rejecting.wait(WAIT)
            return written

        def read() -> list[tuple[str, int, int]]:
            seen: list[tuple[str, int, int]] = []
            after = start
            barrier.wait()
            while True:
                page = store.read_log(after=after, limit=5)
                if page:
                    for recorded in page:
                        assert recorded.position is not None
                        assert recorded.position > after, "a lower position after a higher one"
                        after = recorded.position
                        seen.append((recorded.run_id, recorded.version, recorded.position))
                elif writers_done.is_set() and after >= store.max_position():
                    return seen
                else:
                    store.wait_for_log(after, timeout=0.05)

        with ThreadPoolExecutor(writers + 2) as pool:
            reader = pool.submit(read)
            conflicting = pool.submit(_reject_until, store, taken, barrier, rejecting, writers_done)
            writing = [pool.submit(write, w) for w in range(writers)]
            written = [entry for future in writing for entry in future.result(timeout=WAIT)]
            writers_done.set()
            seen = reader.result(timeout=WAIT)
            assert conflicting.result(timeout=WAIT) > 0, "no append was rejected meanwhile"
        assert sorted(seen, key=lambda entry: entry[2]) == seen
        assert sorted(seen) == sorted(written)
        assert len({p for _, _, p in seen}) == writers * batches * per_batch
        # Read again from the start: nothing was committed below a position the tail passed.
        assert [(r.run_id, r.version, r.position) for r in store.read_log(after=start)] == seen

    def test_wait_for_log_returns_at_once_when_the_log_is_already_past(
        self, store: EventStore
    ) -> None:
        """wait_for_log is True without waiting when a position above ``after`` exists."""
        store.append([Append(run_id=new_run_id(), expected_version=0, events=[marker_event(1)])])
        assert store.wait_for_log(0, timeout=WAIT) is True

    def test_wait_for_log_times_out_when_nothing_comes(self, store: EventStore) -> None:
        """wait_for_log is False when no event arrives before the timeout."""
        store.append([Append(run_id=new_run_id(), expected_version=0, events=[marker_event(1)])])
        assert store.wait_for_log(store.max_position(), timeout=0.05) is False

    def test_wait_for_log_wakes_on_an_append_from_another_thread(self, store: EventStore) -> None:
        """A thread blocked in wait_for_log returns True once another thread appends."""
        top = store.max_position()
        waiting = threading.Event()

        def wait() -> bool:
            waiting.set()
            return store.wait_for_log(top, timeout=WAIT)

        with ThreadPoolExecutor(1) as pool:
            woken = pool.submit(wait)
            assert waiting.wait(WAIT)
            store.append(
                [Append(run_id=new_run_id(), expected_version=0, events=[marker_event(1)])]
            )
            assert woken.result(timeout=WAIT) is True

    # --- state and time travel -------------------------------------------------------------

    def test_run_state_is_the_fold_of_the_stored_events(self, store: EventStore) -> None:
        """The latest state equals the live state that decided the events."""
        state, events = completed_run(new_run_id())
        self.record(store, state, events)
        assert store.run_state(state.id) == state

    def test_run_state_at_version_is_the_fold_of_that_prefix(self, store: EventStore) -> None:
        """run_state(at=N) equals folding the first N events; at=0 is no state; beyond is latest."""
        state, events = completed_run(new_run_id())
        self.record(store, state, events)
        for n in range(1, len(events) + 1):
            at_n = store.run_state(state.id, at=n)
            assert at_n == fold(events[:n], new_state(state.id))
            assert at_n is not None
            assert at_n.version == n
        assert store.run_state(state.id, at=0) is None
        assert store.run_state(state.id, at=len(events) + 5) == state

    def test_saved_snapshot_gives_the_same_states(self, store: EventStore) -> None:
        """After save_snapshot, states before, at and after the snapshot still equal the fold."""
        state, events = completed_run(new_run_id(), width=4)
        cut = 7
        at_cut = fold(events[:cut], new_state(state.id))
        self.record(store, state, events)
        store.save_snapshot(at_cut)
        store.save_snapshot(at_cut)  # the same snapshot twice is harmless
        assert store.run_state(state.id) == state
        for n in range(1, len(events) + 1):
            assert store.run_state(state.id, at=n) == fold(events[:n], new_state(state.id))

    def test_snapshot_before_more_events_is_extended_by_them(self, store: EventStore) -> None:
        """A snapshot of an early state plus the events after it gives the latest state."""
        state, events = completed_run(new_run_id(), width=4)
        early = fold(events[:5], new_state(state.id))
        store.append([Append(run_id=state.id, expected_version=0, events=events[:5])])
        store.save_snapshot(early)
        store.append([Append(run_id=state.id, expected_version=5, events=events[5:])])
        assert store.run_state(state.id) == state

    def test_automatic_snapshots_give_the_same_states(self, store: EventStore) -> None:
        """With a snapshot every few events, latest and every past state still equal the fold."""
        self.configure_snapshots(store, 3)
        state, events = completed_run(new_run_id(), width=5)
        self.record(store, state, events)
        for _ in range(2):  # the first read saves snapshots, the second starts from them
            assert store.run_state(state.id) == state
            for n in range(1, len(events) + 1):
                assert store.run_state(state.id, at=n) == fold(events[:n], new_state(state.id))

    def test_stored_runs_replay_to_the_live_state_at_every_prefix(self, store: EventStore) -> None:
        """For random runs, run_state(at=N) equals folding the first N events and the live state."""

        @settings(
            max_examples=self.property_examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(workflow_specs(max_tasks=5), command_steps)
        def check(spec: WorkflowSpec, steps: list[tuple[int, int]]) -> None:
            self._check_replay(store, spec, steps)

        check()

    def test_stored_runs_replay_the_same_with_automatic_snapshots(self, store: EventStore) -> None:
        """With snapshots every few events, random runs still replay to the fold of each prefix."""
        self.configure_snapshots(store, 4)

        @settings(
            max_examples=self.property_examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(workflow_specs(max_tasks=5), command_steps, st.booleans())
        def check(spec: WorkflowSpec, steps: list[tuple[int, int]], latest_first: bool) -> None:
            self._check_replay(store, spec, steps, latest_first=latest_first)

        check()

    def _check_replay(
        self,
        store: EventStore,
        spec: WorkflowSpec,
        steps: list[tuple[int, int]],
        *,
        latest_first: bool = False,
    ) -> None:
        run = simulate(spec, steps, run_id=new_run_id())
        run_id = run.state.id
        version = 0
        for batch in run.batches:
            if batch:
                store.append([Append(run_id=run_id, expected_version=version, events=batch)])
                version += len(batch)
        events = run.events
        if latest_first:
            assert store.run_state(run_id) == run.state
        for count, live in run.checkpoints:
            assert store.run_state(run_id, at=count) == live
        for n in range(1, len(events) + 1):
            assert store.run_state(run_id, at=n) == fold(events[:n], new_state(run_id))
        assert store.run_state(run_id) == run.state
        assert [r.event for r in store.read_run(run_id)] == events

    # --- workflows -------------------------------------------------------------------------

    def test_register_workflow_records_versions_and_skips_identical_ones(
        self, store: EventStore
    ) -> None:
        """A new definition is version 1; the same again changes nothing; a change is version 2."""
        first, second = wide_workflow(1), wide_workflow(2)
        assert store.register_workflow(first, T0) == (1, True)
        assert store.register_workflow(first, T0 + timedelta(seconds=1)) == (1, False)
        assert store.register_workflow(second, T0 + timedelta(seconds=2)) == (2, True)
        assert store.register_workflow(second, T0 + timedelta(seconds=3)) == (2, False)
        assert store.register_workflow(first, T0 + timedelta(seconds=4)) == (3, True)
        versions = store.workflow_versions("wf")
        assert [(v.version, v.definition, v.timestamp) for v in versions] == [
            (1, first, T0),
            (2, second, T0 + timedelta(seconds=2)),
            (3, first, T0 + timedelta(seconds=4)),
        ]

    def test_get_workflow_by_version_and_latest(self, store: EventStore) -> None:
        """get_workflow returns the latest version, or the one asked for."""
        first, second = wide_workflow(1), wide_workflow(2)
        store.register_workflow(first, T0)
        store.register_workflow(second, T0)
        latest = store.get_workflow("wf")
        assert (latest.workflow_id, latest.version, latest.definition) == ("wf", 2, second)
        assert store.get_workflow("wf", 1).definition == first
        assert store.get_workflow("wf", 2).definition == second

    @pytest.mark.parametrize(
        ("workflow_id", "version"), [("nope", None), ("nope", 1), ("wf", 2), ("wf", 0), ("wf", -1)]
    )
    def test_get_workflow_that_does_not_exist_raises_not_found(
        self, store: EventStore, workflow_id: str, version: int | None
    ) -> None:
        """An unknown workflow, or a version it does not have, raises NotFoundError."""
        store.register_workflow(wide_workflow(1), T0)
        with pytest.raises(NotFoundError):
            store.get_workflow(workflow_id, version)
        if version is None:
            assert store.workflow_versions(workflow_id) == []

    def test_list_workflows_gives_the_latest_version_of_each_by_id(self, store: EventStore) -> None:
        """list_workflows returns each workflow once, at its latest version, sorted by id."""
        assert store.list_workflows() == []
        store.register_workflow(wide_workflow(1, "zeta"), T0)
        store.register_workflow(wide_workflow(1, "alpha"), T0)
        store.register_workflow(wide_workflow(2, "zeta"), T0)
        listed = store.list_workflows()
        assert [(w.workflow_id, w.version) for w in listed] == [("alpha", 1), ("zeta", 2)]
        assert listed[1].definition == wide_workflow(2, "zeta")

    def test_racing_registrations_of_one_definition_record_one_version(
        self, store: EventStore
    ) -> None:
        """Threads registering the same new definition at once record exactly one version."""
        spec = wide_workflow(3, "raced")
        barrier = threading.Barrier(4, timeout=WAIT)

        def register(_: int) -> tuple[int, bool]:
            barrier.wait()
            return store.register_workflow(spec, T0)

        outcomes = self.in_threads(4, register)
        assert sorted(outcomes) == [(1, False), (1, False), (1, False), (1, True)]
        assert len(store.workflow_versions("raced")) == 1

    # --- the run list ----------------------------------------------------------------------

    def _populate(self, store: EventStore) -> list[RunRow]:
        """Record seven runs of two workflows in known statuses; return them newest first."""
        rows: list[RunRow] = []
        plans = ["completed", "running", "cancelled", "failed", "running", "completed", "running"]
        for i, plan in enumerate(plans):
            workflow_id = "wa" if i % 2 == 0 else "wb"
            run_id = new_run_id()
            created = T0 + timedelta(minutes=i)
            ended = created + timedelta(seconds=30)
            state, events = start_run(run_id, wide_workflow(1, workflow_id), 1 + i % 2, {}, created)
            if plan == "completed":
                events += record_started(state, "t0", 1, "w", ended)
                events += record_completed(state, "t0", 1, None, 1.0, ended)
            elif plan == "failed":
                error = ErrorInfo(type="Boom", message="no", retryable=False)
                events += record_failed(state, "t0", 1, error, ended)
            elif plan == "cancelled":
                events += request_cancel(state, "stop", ended)
            assert state.status == plan
            # Half the runs arrive as one batch, half as a start and then the rest.
            if i % 2:
                self.record(store, state, events)
            else:
                store.append([Append(run_id=run_id, expected_version=0, events=events[:2])])
                store.append([Append(run_id=run_id, expected_version=2, events=events[2:])])
            rows.append(
                RunRow(
                    id=run_id,
                    workflow_id=workflow_id,
                    workflow_version=1 + i % 2,
                    status=plan,
                    created_at=created,
                    updated_at=created if plan == "running" else ended,
                )
            )
        return rows[::-1]

    def test_list_runs_lists_newest_first_with_status_and_times(self, store: EventStore) -> None:
        """list_runs returns every run, newest first, with workflow, status and timestamps."""
        expected = self._populate(store)
        page = store.list_runs()
        assert page.runs == expected
        assert page.next_cursor is None

    def test_list_runs_pages_without_duplicates_or_holes(self, store: EventStore) -> None:
        """Following next_cursor visits every run exactly once, in order, for any page size."""
        expected = self._populate(store)
        for limit in (1, 2, 3, 6, 7, 8):
            seen: list[RunRow] = []
            cursor: str | None = None
            pages = 0
            while True:
                page = store.list_runs(limit=limit, cursor=cursor)
                pages += 1
                assert len(page.runs) <= limit
                seen += page.runs
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert seen == expected
            assert pages == max(1, -(-len(expected) // limit))

    @pytest.mark.parametrize(
        ("workflow_id", "status"),
        [
            ("wa", None),
            ("wb", None),
            (None, "running"),
            (None, "completed"),
            ("wa", "running"),
            ("wb", "failed"),
            ("none", None),
            (None, "pending"),
        ],
    )
    def test_list_runs_filters_by_workflow_and_status_and_pages_within(
        self, store: EventStore, workflow_id: str | None, status: str | None
    ) -> None:
        """Filters narrow the list; paging a filtered list keeps the filter and the order."""
        everything = self._populate(store)
        expected = [
            r
            for r in everything
            if (workflow_id is None or r.workflow_id == workflow_id)
            and (status is None or r.status == status)
        ]
        assert store.list_runs(workflow_id=workflow_id, status=status).runs == expected
        seen: list[RunRow] = []
        cursor: str | None = None
        while True:
            page = store.list_runs(workflow_id=workflow_id, status=status, limit=2, cursor=cursor)
            seen += page.runs
            if (cursor := page.next_cursor) is None:
                break
        assert seen == expected

    @pytest.mark.parametrize("cursor", ["", "abc", "-1", "1.5", " 1", "²", "1" * 25, "0x10"])
    def test_list_runs_rejects_a_cursor_it_did_not_issue(
        self, store: EventStore, cursor: str
    ) -> None:
        """A malformed cursor raises ValidationError, not another error."""
        with pytest.raises(ValidationError):
            store.list_runs(cursor=cursor)

    @pytest.mark.parametrize("limit", [0, -1])
    def test_list_runs_rejects_a_limit_below_one(self, store: EventStore, limit: int) -> None:
        """A page size below 1 raises ValidationError."""
        with pytest.raises(ValidationError):
            store.list_runs(limit=limit)

    def test_list_runs_sees_runs_end(self, store: EventStore) -> None:
        """A run listed as running is listed with its terminal status once it ends."""
        run_id = new_run_id()
        state, events = start_run(run_id, wide_workflow(1), 1, {}, T0)
        self.record(store, state, events)
        assert [r.status for r in store.list_runs().runs] == ["running"]
        assert store.active_run_ids() == [run_id]
        later = T0 + timedelta(seconds=5)
        self.record(store, state, request_cancel(state, "", later))
        [row] = store.list_runs().runs
        assert (row.status, row.updated_at) == ("cancelled", later)
        assert store.active_run_ids() == []

    def test_run_list_catches_up_over_a_long_log(self, store: EventStore) -> None:
        """Thousands of runs started in one batch all reach the run list, newest first."""
        spec = wide_workflow(1, "many")
        started = RunStarted(timestamp=T0, workflow_id="many", workflow_version=1, definition=spec)
        run_ids = [new_run_id() for _ in range(2500)]
        store.append([Append(run_id=r, expected_version=0, events=[started]) for r in run_ids])
        seen: list[str] = []
        cursor: str | None = None
        while True:
            page = store.list_runs(workflow_id="many", limit=1000, cursor=cursor)
            seen += [row.id for row in page.runs]
            if (cursor := page.next_cursor) is None:
                break
        assert seen == run_ids[::-1]
        assert sorted(store.active_run_ids()) == sorted(run_ids)

    def test_active_run_ids_are_the_runs_without_a_terminal_event(self, store: EventStore) -> None:
        """active_run_ids lists every running run and no completed, failed or cancelled one."""
        rows = self._populate(store)
        running = {r.id for r in rows if r.status == "running"}
        assert set(store.active_run_ids()) == running
        assert len(store.active_run_ids()) == len(running)

    # --- forks and pauses in the run list ----------------------------------------------------

    def _fork(self, store: EventStore, parent: RunState, minutes: int) -> RunState:
        """Record a fork of ``parent`` (as it stands) created ``minutes`` after T0."""
        state, events = fork_run(new_run_id(), parent, T0 + timedelta(minutes=minutes))
        self.record(store, state, events)
        return state

    def test_a_fork_is_listed_with_its_parent_and_among_the_parents_children(
        self, store: EventStore
    ) -> None:
        """RunForked starts a run list row that names its parent; child_runs lists the forks."""
        parent, events = completed_run(new_run_id())
        self.record(store, parent, events)
        at_two = fold(events[:2], new_state(parent.id))
        forks = [self._fork(store, parent, 1), self._fork(store, at_two, 2)]
        grandchild = self._fork(store, forks[0], 3)
        rows = store.list_runs().runs
        assert [r.id for r in rows] == [grandchild.id, forks[1].id, forks[0].id, parent.id]
        assert (rows[-1].parent_run_id, rows[-1].parent_version) == (None, None)
        assert (rows[2].parent_run_id, rows[2].parent_version) == (parent.id, parent.version)
        assert (rows[1].parent_run_id, rows[1].parent_version) == (parent.id, 2)
        assert rows[1].workflow_id == "wf"
        assert rows[1].created_at == T0 + timedelta(minutes=2)
        children = store.child_runs(parent.id)
        assert [r.id for r in children.runs] == [forks[1].id, forks[0].id]
        assert children.next_cursor is None
        assert [r.id for r in store.child_runs(forks[0].id).runs] == [grandchild.id]
        assert store.child_runs(grandchild.id).runs == []
        assert store.child_runs(new_run_id()).runs == []

    def test_list_runs_filters_by_who_started_or_forked_each_run(self, store: EventStore) -> None:
        """submitted_by keeps the runs a principal started (submittedBy) or forked (by),
        with the other filters and through pages."""
        mine: list[str] = []
        for i, who in enumerate(["alice", "bob", "alice", None, "alice", "bob"]):
            run_id = new_run_id()
            workflow_id = "wa" if i < 3 else "wb"
            state, events = start_run(
                run_id, wide_workflow(1, workflow_id), 1, {}, T0 + timedelta(minutes=i),
                submitted_by=who,
            )  # fmt: skip
            self.record(store, state, events)
            if who == "alice":
                mine.append(run_id)
        parent = store.run_state(mine[0])
        assert parent is not None
        fork, events = fork_run(new_run_id(), parent, T0 + timedelta(minutes=9), by="alice")
        self.record(store, fork, events)
        mine.append(fork.id)
        rows = store.list_runs(submitted_by="alice").runs
        assert [r.id for r in rows] == mine[::-1]
        assert all(r.submitted_by == "alice" for r in rows)
        assert len(store.list_runs(submitted_by="bob").runs) == 2
        assert store.list_runs(submitted_by="nobody").runs == []
        of_wa = store.list_runs(submitted_by="alice", workflow_id="wa").runs
        assert [r.id for r in of_wa] == [fork.id, mine[1], mine[0]]
        assert store.list_runs(submitted_by="alice", status="failed").runs == []
        seen: list[str] = []
        cursor: str | None = None
        while True:
            page = store.list_runs(submitted_by="alice", limit=1, cursor=cursor)
            seen += [r.id for r in page.runs]
            if (cursor := page.next_cursor) is None:
                break
        assert seen == mine[::-1]

    def test_child_runs_page_newest_first_and_show_each_childs_status(
        self, store: EventStore
    ) -> None:
        """Children page by cursor without duplicates or holes, with their current status."""
        parent, events = completed_run(new_run_id())
        self.record(store, parent, events)
        forks = [self._fork(store, parent, i) for i in range(5)]
        # Forked at its last version, a completed run has nothing to run again: it completes.
        assert all(f.status == "completed" for f in forks)
        at_one = fold(events[:1], new_state(parent.id))
        open_fork = self._fork(store, at_one, 9)
        assert open_fork.status == "running"
        seen: list[RunRow] = []
        cursor: str | None = None
        while True:
            page = store.child_runs(parent.id, limit=2, cursor=cursor)
            assert len(page.runs) <= 2
            seen += page.runs
            if (cursor := page.next_cursor) is None:
                break
        assert [r.id for r in seen] == [open_fork.id] + [f.id for f in forks[::-1]]
        assert [r.status for r in seen] == ["running"] + ["completed"] * 5
        assert open_fork.id in store.active_run_ids()
        with pytest.raises(ValidationError):
            store.child_runs(parent.id, limit=0)
        with pytest.raises(ValidationError):
            store.child_runs(parent.id, cursor="x")

    def test_paused_runs_are_listed_as_paused_and_stay_active(self, store: EventStore) -> None:
        """RunPaused makes the row paused (a status filter finds it) and RunResumed running
        again; a paused run is still among the active runs that recovery resumes."""
        run_id = new_run_id()
        state, events = start_run(run_id, wide_workflow(1), 1, {}, T0)
        self.record(store, state, events)
        paused_at = T0 + timedelta(seconds=5)
        self.record(store, state, pause_run(state, paused_at, by="op"))
        [row] = store.list_runs(status="paused").runs
        assert (row.id, row.status, row.updated_at) == (run_id, "paused", paused_at)
        assert store.list_runs(status="running").runs == []
        assert store.active_run_ids() == [run_id]
        resumed_at = T0 + timedelta(seconds=9)
        self.record(store, state, resume_run(state, resumed_at, by="op"))
        [row] = store.list_runs(status="running").runs
        assert (row.id, row.updated_at) == (run_id, resumed_at)
        assert store.list_runs(status="paused").runs == []
        assert store.active_run_ids() == [run_id]

    def test_queued_runs_are_listed_as_queued_and_are_not_active(self, store: EventStore) -> None:
        """RunQueued makes the row queued, and recovery leaves it alone (it has nothing to
        resume); RunDequeued makes it running and active (concurrency limits, issue 13)."""
        run_id = new_run_id()
        _, started = start_run(run_id, wide_workflow(1), 1, {}, T0, priority=3)
        first = started[0]
        assert isinstance(first, RunStarted)
        state, events = queue_run(run_id, first)
        self.record(store, state, events)
        [row] = store.list_runs(status="queued").runs
        assert (row.id, row.status) == (run_id, "queued")
        assert store.active_run_ids() == []
        begun_at = T0 + timedelta(seconds=4)
        self.record(store, state, dequeue_run(state, begun_at))
        [row] = store.list_runs(status="running").runs
        assert (row.id, row.updated_at) == (run_id, begun_at)
        assert store.list_runs(status="queued").runs == []
        assert store.active_run_ids() == [run_id]
        assert store.run_state(run_id) == state

    def test_pause_resume_and_end_in_one_stretch_of_log_end_with_the_last(
        self, store: EventStore
    ) -> None:
        """Status changes the index reads together apply in log order: the last one stands."""
        run_id, other = new_run_id(), new_run_id()
        state, events = start_run(run_id, wide_workflow(1), 1, {}, T0)
        events += pause_run(state, T0 + timedelta(seconds=1), by="op")
        events += resume_run(state, T0 + timedelta(seconds=2), by="op")
        events += pause_run(state, T0 + timedelta(seconds=3), by="op")
        second, more = start_run(other, wide_workflow(1), 1, {}, T0)
        more += pause_run(second, T0 + timedelta(seconds=4), by="op")
        more += resume_run(second, T0 + timedelta(seconds=5), by="op")
        more += request_cancel(second, "stop", T0 + timedelta(seconds=6))
        assert (state.status, second.status) == ("paused", "cancelled")
        store.append(
            [
                Append(run_id=run_id, expected_version=0, events=events),
                Append(run_id=other, expected_version=0, events=more),
            ]
        )
        statuses = {r.id: (r.status, r.updated_at) for r in store.list_runs().runs}
        assert statuses == {
            run_id: ("paused", T0 + timedelta(seconds=3)),
            other: ("cancelled", T0 + timedelta(seconds=6)),
        }
        assert store.active_run_ids() == [run_id]

    def test_ping_answers(self, store: EventStore) -> None:
        """ping returns when the store is reachable."""
        store.ping()


__all__ = [
    "WAIT",
    "EventStoreSuite",
    "completed_run",
    "marker_event",
    "new_run_id",
    "wide_workflow",
]


def _reject_until(
    store: EventStore,
    taken: str,
    barrier: threading.Barrier,
    rejecting: threading.Event,
    done: threading.Event,
) -> int:
    """Append version 1 of ``taken`` again and again until ``done``; return how often it lost.

    These appends lose on a version already stored, as a repeated idempotency key does: in
    PostgreSQL each one uses up a position number. ``rejecting`` is set after the first.
    """
    rejected = 0
    barrier.wait()
    while not done.is_set():
        with contextlib.suppress(ConcurrencyError):
            store.append([Append(run_id=taken, expected_version=0, events=[marker_event(1)])])
            raise AssertionError("a second version 1 was stored")
        rejected += 1
        rejecting.set()
    return rejected
