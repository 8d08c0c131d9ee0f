"""Tests of the reads time-travel debugging and audit rely on, run on every store.

:class:`DebugReadsSuite` is mixed into :class:`~flowweaver.testing.store_suite.EventStoreSuite`,
so memory, SQLite, PostgreSQL and Redis all pass it: a run's version at an instant
(:func:`flowweaver.travel.version_at`, :func:`~flowweaver.travel.state_as_of`), a diff of two
versions (:func:`~flowweaver.travel.diff_run`), the filtered, bounded scans behind
``GET /events?types=&runId=`` (:func:`flowweaver.api.audit_routes.scan` over ``read_log`` and
``read_run``), and the state at any version of a paused, retried, resumed and forked run whose
failure carries a traceback and logs, equal to the fold whether or not snapshots were saved
(snapshots of the first schema never used), and such runs imported from another store with their
status and lineage.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from eventsourcing.persistence import AggregateRecorder, StoredEvent

from flowweaver.api.audit_routes import scan
from flowweaver.api.sse.filters import EventFilter
from flowweaver.domain.diff import diff_states
from flowweaver.domain.events import ErrorInfo, LogLine, RunEvent, TaskStarted
from flowweaver.domain.run import (
    RunState,
    fold,
    fork_run,
    new_state,
    record_completed,
    record_failed,
    record_started,
    resume_run,
    retry_task,
    start_run,
)
from flowweaver.errors import ConcurrencyError, NotFoundError, ValidationError
from flowweaver.ports import Append, EventStore, StoredRuns
from flowweaver.store.audit import export_run, import_runs, verify_run
from flowweaver.store.codec import SNAPSHOT_NAME, encode, snapshot_originator, topic
from flowweaver.store.memory import MemoryEventStore
from flowweaver.testing.runs import T0, task, workflow
from flowweaver.travel import diff_run, state_as_of, version_at

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "handlers.py", line 7, in load\n'
    "    raise KeyError(key)\n"
    "KeyError: 'db_url'\n"
)


def _seconds(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def _log(n: float, message: str, **fields: Any) -> LogLine:
    return LogLine(timestamp=_seconds(n), level="warning", message=message, fields=fields)


def paused_and_retried_run(run_id: str) -> tuple[RunState, list[RunEvent], int]:
    """Decide a run that pauses on a failure, is retried by hand, resumed and completes.

    Task ``a`` fails for good with a traceback and logs; the run (``onTaskFailure: pause``)
    pauses; an operator retries ``a``, which completes with logs while the run is paused; the
    run is resumed and ``b`` completes it. Several events share a timestamp. Returns the
    final state, the events, and the version at which the run stood paused with ``a`` failed.
    """
    spec = workflow(task("a"), task("b", "a"), workflow_id="debugged")
    state, events = start_run(run_id, spec, 1, {"n": 1}, T0, on_task_failure="pause")
    events += record_started(state, "a", 1, "w1", _seconds(1))
    error = ErrorInfo(type="KeyError", message="'db_url'", retryable=False, traceback=TRACEBACK)
    logs = [_log(1.5, "config missing", key="db_url"), _log(1.6, "giving up")]
    events += record_failed(state, "a", 1, error, _seconds(2), logs=logs)
    assert state.is_paused
    paused_at = len(events)
    events += retry_task(state, "a", _seconds(3), by="op", reason="flaky")
    events += record_started(state, "a", 2, "w2", _seconds(3))
    events += record_completed(
        state, "a", 2, {"v": 1}, 5.0, _seconds(4), logs=[_log(3.5, "retried", attempt=2)]
    )
    assert state.is_paused
    events += resume_run(state, _seconds(5), by="op", reason="fixed")
    events += record_started(state, "b", 1, "w1", _seconds(5))
    events += record_completed(state, "b", 1, {"w": 2}, 1.0, _seconds(6))
    assert (state.status, state.is_terminal) == ("completed", True)
    return state, events, paused_at


class DebugReadsSuite:
    """Reads of time travel, diff and the audit feed, the same on every store."""

    def _stored_run(self, store: EventStore) -> tuple[RunState, list[RunEvent], int]:
        state, events, paused_at = paused_and_retried_run(str(uuid.uuid4()))
        store.append([Append(run_id=state.id, expected_version=0, events=events)])
        return state, events, paused_at

    # --- time travel by instant ----------------------------------------------------------------

    def test_version_at_is_the_last_event_stamped_at_or_before_the_instant(
        self, store: EventStore
    ) -> None:
        """At, just before and just after every stamp, version_at and state_as_of give the
        last event stamped at or before the instant (ties included) and its fold."""
        state, events, _ = self._stored_run(store)
        stamps = [e.timestamp for e in events]
        assert stamps == sorted(stamps)
        assert len(set(stamps)) < len(stamps)  # some events share a stamp
        tick = timedelta(microseconds=1)
        instants = sorted({s + d for s in stamps for d in (-tick, timedelta(0), tick)})
        for instant in instants:
            expected = sum(1 for s in stamps if s <= instant)
            assert version_at(store, state.id, instant) == expected, instant
            as_of = state_as_of(store, state.id, instant)
            if expected == 0:
                assert as_of is None
            else:
                assert as_of == fold(events[:expected], new_state(state.id)), instant
        assert version_at(store, state.id, datetime.max.replace(tzinfo=T0.tzinfo)) == len(events)
        with pytest.raises(NotFoundError):
            version_at(store, str(uuid.uuid4()), T0)
        with pytest.raises(NotFoundError):
            state_as_of(store, str(uuid.uuid4()), T0)

    def test_version_at_over_runs_of_every_length_finds_each_boundary(
        self, store: EventStore
    ) -> None:
        """On runs of 1 to 40 events (the gallop's every doubling and the binary search's
        every split), the version at each event's stamp is that event's version."""
        for length in (1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 40):
            run_id = str(uuid.uuid4())
            events: list[RunEvent] = [
                TaskStarted(timestamp=_seconds(n), task_id="t", attempt=n, worker="w")
                for n in range(1, length + 1)
            ]
            store.append([Append(run_id=run_id, expected_version=0, events=events)])
            for version, event in enumerate(events, 1):
                assert version_at(store, run_id, event.timestamp) == version, (length, version)
                before = event.timestamp - timedelta(microseconds=1)
                assert version_at(store, run_id, before) == version - 1, (length, version)

    # --- diff ------------------------------------------------------------------------------------

    def test_diff_of_two_versions_is_the_diff_of_their_folds_with_the_events_between(
        self, store: EventStore
    ) -> None:
        """diff_run compares the folds at both ends and lists the events between, capped by
        limit with where to page on; bad bounds and an unknown run are refused."""
        state, events, paused_at = self._stored_run(store)
        n = len(events)
        folds = [new_state(state.id)] + [
            fold(events[:k], new_state(state.id)) for k in range(1, n + 1)
        ]
        for start, end in [(0, n), (0, 0), (paused_at, paused_at), (1, paused_at), (paused_at, n)]:
            found = diff_run(store, state.id, start, end)
            assert found.changes == diff_states(folds[start], folds[end]), (start, end)
            assert [r.version for r in found.events] == list(range(start + 1, end + 1))
            assert [r.event for r in found.events] == events[start:end]
            assert (found.truncated, found.next_after) == (False, None)
        paused = diff_run(store, state.id, paused_at - 1, paused_at).changes
        assert list(paused.run["status"]) == ["running", "paused"]
        failed = diff_run(store, state.id, 0, paused_at).changes.tasks["a"]
        assert failed["lastError"][1]["traceback"] == TRACEBACK
        assert [line["message"] for line in failed["logs"][1]] == ["config missing", "giving up"]
        capped = diff_run(store, state.id, 1, n, limit=3)
        assert [r.version for r in capped.events] == [2, 3, 4]
        assert (capped.truncated, capped.next_after) == (True, 4)
        assert capped.changes == diff_states(folds[1], folds[n])
        for start, end in [(-1, 2), (3, 2), (0, n + 1)]:
            with pytest.raises(ValidationError):
                diff_run(store, state.id, start, end)
        with pytest.raises(NotFoundError):
            diff_run(store, str(uuid.uuid4()), 0, 1)

    # --- the audit feed's reads ----------------------------------------------------------------

    def _runs_and_noise(self, store: EventStore) -> list[RunState]:
        """Store three debugged runs, interleaved, with a refused append between them."""
        runs: list[tuple[RunState, list[RunEvent]]] = []
        for _ in range(3):
            state, events, _ = paused_and_retried_run(str(uuid.uuid4()))
            runs.append((state, events))
        for step in range(0, max(len(e) for _, e in runs), 4):
            for state, events in runs:
                batch = events[step : step + 4]
                if batch:
                    store.append([Append(run_id=state.id, expected_version=step, events=batch)])
            if step == 4:
                first, first_events = runs[0]
                refused = Append(run_id=first.id, expected_version=0, events=first_events)
                with pytest.raises(ConcurrencyError):
                    store.append([refused])
        return [state for state, _ in runs]

    def test_filtered_scans_of_the_log_page_by_types_and_run(self, store: EventStore) -> None:
        """The bounded scan over read_log finds exactly the events a filter matches, in log
        order, whatever the page size and scan budget; the cursor continues where it stopped."""
        runs = self._runs_and_noise(store)
        every = store.read_log(after=0, limit=10_000)
        positions = [r.position or 0 for r in every]
        assert positions == sorted(set(positions))
        assert all(positions)
        # From any position, a number the log skipped included, the log reads on after it.
        for after in sorted({0} | {p + d for p in positions for d in (-1, 0, 1)}):
            tail = store.read_log(after=after, limit=5)
            assert [r.position for r in tail] == [p for p in positions if p > after][:5], after
        filters = [
            EventFilter(types=frozenset({"RunPaused", "TaskRetried"})),
            EventFilter(run_id=runs[1].id),
            EventFilter(types=frozenset({"TaskFailed", "RunResumed"}), run_id=runs[2].id),
            EventFilter(types=frozenset({"RunForked"})),
        ]
        for wanted in filters:
            expected = [(r.run_id, r.version) for r in every if wanted.matches(r)]
            for limit, budget in [(1000, None), (2, 5), (3, 1), (1, 1000)]:
                found: list[tuple[str, int]] = []
                after, pages = 0, 0
                while True:
                    page, cursor = scan(
                        lambda position, n: store.read_log(after=position, limit=n),
                        lambda rec: rec.position or 0,
                        after,
                        limit,
                        wanted,
                        budget=budget,
                    )
                    assert len(page) <= limit
                    found += [(r.run_id, r.version) for r in page]
                    pages += 1
                    assert pages <= len(every) + 1, "the cursor does not move on"
                    if cursor is None:
                        break
                    assert cursor > after
                    after = cursor
                assert found == expected, (wanted, limit, budget)
        paused = [r for r in every if r.name == "RunPaused"]
        assert {r.run_id for r in paused} == {s.id for s in runs}
        assert all(r.event.by == "engine" for r in paused)  # type: ignore[union-attr]

    def test_filtered_scans_of_a_runs_history_page_by_version(self, store: EventStore) -> None:
        """The same scan over read_run pages one run's history by version, filtered by type."""
        runs = self._runs_and_noise(store)
        run_id = runs[0].id
        history = store.read_run(run_id)
        wanted = EventFilter(types=frozenset({"TaskStarted", "TaskCompleted"}))
        expected = [r.version for r in history if wanted.matches(r)]
        assert expected
        for limit, budget in [(1000, None), (1, 2), (2, 3)]:
            found: list[int] = []
            after = 0
            while True:
                page, cursor = scan(
                    lambda version, n: store.read_run(run_id, after=version, limit=n),
                    lambda rec: rec.version,
                    after,
                    limit,
                    wanted,
                    budget=budget,
                )
                found += [r.version for r in page]
                if cursor is None:
                    break
                assert cursor > after
                after = cursor
            assert found == expected, (limit, budget)

    # --- states through snapshots ----------------------------------------------------------------

    def _snapshot_every_version(
        self, store: EventStore, run_id: str, events: list[RunEvent]
    ) -> None:
        for k in range(1, len(events) + 1):
            store.save_snapshot(fold(events[:k], new_state(run_id)))

    def test_states_of_a_paused_and_retried_run_equal_the_fold_through_snapshots(
        self, store: EventStore
    ) -> None:
        """The state at every version (paused, pausedBy, onTaskFailure, the traceback, each
        attempt's logs, the ordered retry) equals the fold, before and after a snapshot is
        saved at every version."""
        state, events, paused_at = self._stored_run(store)

        def check() -> None:
            assert store.run_state(state.id) == state
            for k in range(1, len(events) + 1):
                assert store.run_state(state.id, at=k) == fold(events[:k], new_state(state.id)), k

        check()
        paused = store.run_state(state.id, at=paused_at)
        assert paused is not None
        assert (paused.status, paused.paused_by, paused.on_task_failure) == (
            "paused",
            "engine",
            "pause",
        )
        failed = paused.tasks["a"]
        assert failed.last_error is not None
        assert failed.last_error.traceback == TRACEBACK
        assert [line.message for line in failed.logs] == ["config missing", "giving up"]
        self._snapshot_every_version(store, state.id, events)
        check()
        assert store.run_state(state.id, at=paused_at) == paused
        # Snapshots of the latest state taken before reading: the read starts from one.
        other, more, _ = paused_and_retried_run(str(uuid.uuid4()))
        self._snapshot_every_version(store, other.id, more)
        store.append([Append(run_id=other.id, expected_version=0, events=more)])
        assert store.run_state(other.id) == other
        for k in range(1, len(more) + 1):
            assert store.run_state(other.id, at=k) == fold(more[:k], new_state(other.id)), k

    def test_states_of_a_paused_and_forked_run_with_automatic_snapshots(
        self, store: EventStore
    ) -> None:
        """With a snapshot every two events folded, the paused run and a fork of it read the
        fold at every version, whether the latest state or an early one is read first."""
        configure = getattr(self, "configure_snapshots", None)
        if configure is None:  # pragma: no cover - EventStoreSuite has it
            pytest.skip("no configure_snapshots hook")
        configure(store, 2)
        for latest_first in (True, False):
            state, events, paused_at = self._stored_run(store)
            at_pause = fold(events[:paused_at], new_state(state.id))
            fork, fork_events = fork_run(str(uuid.uuid4()), at_pause, _seconds(7), by="op")
            store.append([Append(run_id=fork.id, expected_version=0, events=fork_events)])
            for run_id, evs, live in [(state.id, events, state), (fork.id, fork_events, fork)]:
                if latest_first:
                    assert store.run_state(run_id) == live
                for k in range(1, len(evs) + 1):
                    assert store.run_state(run_id, at=k) == fold(evs[:k], new_state(run_id)), k
                assert store.run_state(run_id) == live

    def test_hostile_text_in_tracebacks_and_logs_round_trips_and_verifies(
        self, store: EventStore
    ) -> None:
        """NUL, line separators, non-BMP characters, quotes and backslashes in an error, its
        traceback and log lines read back equal, fold equal, verify, and import from another
        store byte for byte."""
        text = 'nul\x00 sep\u2028 emoji\U0001f600 caf\u00e9 "quoted" back\\slash </script>'
        run_id = str(uuid.uuid4())
        spec = workflow(task("a"), workflow_id="hostile")
        state, events = start_run(run_id, spec, 1, {"text": text}, T0, on_task_failure="pause")
        events += record_started(state, "a", 1, "w", _seconds(1))
        error = ErrorInfo(type="ValueError", message=text, retryable=False, traceback=text * 20)
        logs = [_log(1.5, text, **{text: text, "count": 1})]
        events += record_failed(state, "a", 1, error, _seconds(2), logs=logs)
        source = MemoryEventStore()
        source.append([Append(run_id=run_id, expected_version=0, events=events)])
        lines = b"".join(export_run(source, run_id))
        assert isinstance(store, StoredRuns)
        import_runs(store, lines.splitlines)
        assert [r.event for r in store.read_run(run_id)] == events
        assert store.read_stored(run_id) == source.read_stored(run_id)
        assert verify_run(store, run_id).ok
        stored = store.run_state(run_id)
        assert stored == state
        assert stored is not None
        failed = stored.tasks["a"]
        assert failed.last_error == error
        assert failed.logs[0].fields[text] == text
        assert [r.name for r in store.read_log(after=0, limit=100)] == [
            type(e).__name__ for e in events
        ]

    def test_snapshots_of_the_first_schema_are_passed_over(self, store: EventStore) -> None:
        """Snapshots stored before schema 2 (under the run's own id, without logs or pause)
        do not shape any state: every version still reads as the fold, and new snapshots are
        saved beside the old ones."""
        recorder = getattr(store, "_snapshots", None)
        if not isinstance(recorder, AggregateRecorder):
            pytest.skip(f"{type(store).__name__} has no snapshot recorder to write old ones with")
        state, events, paused_at = self._stored_run(store)
        old_id = snapshot_originator(uuid.UUID(state.id), 1)
        rows = []
        for k in (2, paused_at, len(events)):
            stale = fold(events[:k], new_state(state.id))
            stale.status = "running"  # what schema 1 knew: no pause, no logs
            for task_state in stale.tasks.values():
                task_state.logs = ()
            rows.append(StoredEvent(old_id, k, topic(SNAPSHOT_NAME, 1), encode(stale)))
        recorder.insert_events(rows)
        for _ in range(2):  # the second pass reads the snapshots the first one saved
            assert store.run_state(state.id) == state
            for k in range(1, len(events) + 1):
                assert store.run_state(state.id, at=k) == fold(events[:k], new_state(state.id))
            store.save_snapshot(fold(events[:paused_at], new_state(state.id)))

    def test_imported_forks_keep_their_lineage_and_pause(self, store: EventStore) -> None:
        """A paused run and a fork of it, exported from another store and imported here, list
        with their status and parent, the fork among the parent's children."""
        source = MemoryEventStore()
        parent, events, paused_at = self._stored_run(source)
        at_pause = fold(events[:paused_at], new_state(parent.id))
        fork, fork_events = fork_run(str(uuid.uuid4()), at_pause, _seconds(7), by="op")
        source.append([Append(run_id=fork.id, expected_version=0, events=fork_events)])
        still_paused, paused_events, _ = paused_and_retried_run(str(uuid.uuid4()))
        paused_events = paused_events[:paused_at]
        source.append([Append(run_id=still_paused.id, expected_version=0, events=paused_events)])
        lines = b"".join(
            b"".join(export_run(source, run_id)) for run_id in (parent.id, fork.id, still_paused.id)
        )
        assert isinstance(store, StoredRuns)
        import_runs(store, lines.splitlines)
        rows = {row.id: row for row in store.list_runs().runs}
        assert (rows[fork.id].parent_run_id, rows[fork.id].parent_version) == (
            parent.id,
            paused_at,
        )
        assert rows[parent.id].status == "completed"
        assert rows[still_paused.id].status == "paused"
        assert [row.id for row in store.list_runs(status="paused").runs] == [still_paused.id]
        assert set(store.active_run_ids()) == {fork.id, still_paused.id}
        assert [row.id for row in store.child_runs(parent.id).runs] == [fork.id]

    def test_a_forked_run_state_round_trips_through_snapshots(self, store: EventStore) -> None:
        """A fork of the paused run, with new parameters, and a fork of the fork: their states
        (parent, parentVersion, carried outputs, parameters) equal the fold with and without
        snapshots, and the fork's first event replays on its own."""
        parent, events, paused_at = self._stored_run(store)
        at_pause = fold(events[:paused_at], new_state(parent.id))
        fork, fork_events = fork_run(
            str(uuid.uuid4()), at_pause, _seconds(7), parameters={"n": 2}, by="op", reason="again"
        )
        store.append([Append(run_id=fork.id, expected_version=0, events=fork_events)])
        fork_events += record_started(fork, "a", 1, "w1", _seconds(8))
        fork_events += record_completed(
            fork, "a", 1, {"v": 2}, 1.0, _seconds(9), logs=[_log(8.5, "second time")]
        )
        store.append([Append(run_id=fork.id, expected_version=2, events=fork_events[2:])])
        done = fold(events, new_state(parent.id))
        grandchild, grand_events = fork_run(
            str(uuid.uuid4()), fork, _seconds(10), reset=["b"], by="op"
        )
        store.append([Append(run_id=grandchild.id, expected_version=0, events=grand_events)])
        for run_id, evs, live in [
            (fork.id, fork_events, fork),
            (grandchild.id, grand_events, grandchild),
            (parent.id, events, done),
        ]:
            for _ in range(2):  # the second pass after a snapshot at every version
                assert store.run_state(run_id) == live
                for k in range(1, len(evs) + 1):
                    assert store.run_state(run_id, at=k) == fold(evs[:k], new_state(run_id)), k
                self._snapshot_every_version(store, run_id, evs)
        stored = store.run_state(fork.id)
        assert stored is not None
        assert (stored.parent_run_id, stored.parent_version) == (parent.id, paused_at)
        assert stored.parameters == {"n": 2}
        assert stored.tasks["a"].logs[0].message == "second time"
        grand = store.run_state(grandchild.id)
        assert grand is not None
        assert (grand.parent_run_id, grand.parent_version) == (fork.id, len(fork_events))
        assert grand.tasks["a"].output == {"result": {"v": 2}}
        assert grand.tasks["a"].status == "completed"


__all__ = ["TRACEBACK", "DebugReadsSuite", "paused_and_retried_run"]
