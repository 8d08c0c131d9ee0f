"""The group committer on its own, over a real memory store with a fault hook."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from flowweaver.domain.events import RunStarted, TaskScheduled
from flowweaver.domain.spec import TaskSpec, WorkflowSpec
from flowweaver.engine.writer import GroupCommitter
from flowweaver.errors import ConcurrencyError, StoreError
from flowweaver.ports import Append
from flowweaver.store import MemoryEventStore

NOW = datetime(2025, 1, 1, tzinfo=UTC)
SPEC = WorkflowSpec(id="wf", tasks=(TaskSpec(id="t", handler="noop"),))


def rid(name: str) -> str:
    """Return the run id (a UUID) a test calls ``name``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def first_events(name: str) -> Append:
    """The first append of a run: RunStarted and the scheduling of its task."""
    run_id = rid(name)
    started = RunStarted(timestamp=NOW, workflow_id="wf", workflow_version=1, definition=SPEC)
    return Append(run_id, 0, [started, TaskScheduled(timestamp=NOW, task_id="t", attempt=1)])


class HookedStore(MemoryEventStore):
    """A memory store that calls ``hook`` before each append and counts combined appends."""

    def __init__(self) -> None:
        super().__init__()
        self.hook: Callable[[Sequence[Append]], None] = lambda appends: None
        self.calls: list[int] = []

    def append(self, appends: Sequence[Append]) -> list[int]:
        self.calls.append(len(appends))
        self.hook(appends)
        return super().append(appends)


@pytest.fixture
def store() -> HookedStore:
    """A fresh hooked memory store."""
    return HookedStore()


def hold_first_commit(
    store: HookedStore, then: Callable[[], None]
) -> tuple[threading.Event, threading.Event]:
    """Make the first store append wait until released; ``then`` runs before the second."""
    entered, release = threading.Event(), threading.Event()

    def hook(appends: Sequence[Append]) -> None:
        if not entered.is_set():
            entered.set()
            assert release.wait(10)
        elif len(store.calls) == 2:
            then()

    store.hook = hook
    return entered, release


def wait_queued(committer: GroupCommitter, count: int) -> None:
    """Block until ``count`` callers wait behind the leader."""
    for _ in range(1000):
        with committer._lock:
            if len(committer._queue) >= count:
                return
        threading.Event().wait(0.005)
    raise AssertionError("callers never queued")


def test_appends_that_arrive_together_share_one_transaction(store: HookedStore) -> None:
    """Callers queued behind a leader are stored together in the leader's next round."""
    committer = GroupCommitter(store)
    entered, release = hold_first_commit(store, lambda: None)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(committer.append, first_events("r0"))
        assert entered.wait(5)
        rest = [pool.submit(committer.append, first_events(f"r{i}")) for i in range(1, 6)]
        wait_queued(committer, 5)
        release.set()
        for future in [first, *rest]:
            future.result(timeout=10)
    assert store.calls == [1, 5]
    assert {store.run_state(rid(f"r{i}")).version for i in range(6)} == {2}  # type: ignore[union-attr]


def test_one_runs_conflict_fails_only_its_own_append(store: HookedStore) -> None:
    """In a combined batch, a version conflict fails that caller; the others are stored."""
    committer = GroupCommitter(store)
    committer.append(first_events("taken"))
    entered, release = hold_first_commit(store, lambda: None)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(committer.append, first_events("a"))
        assert entered.wait(5)
        clash = pool.submit(committer.append, first_events("taken"))
        other = pool.submit(committer.append, first_events("b"))
        wait_queued(committer, 2)
        release.set()
        first.result(timeout=10)
        other.result(timeout=10)
        with pytest.raises(ConcurrencyError):
            clash.result(timeout=10)
    assert store.run_state(rid("b")) is not None


def test_an_unexpected_store_error_fails_every_waiting_append_and_later_ones_work(
    store: HookedStore,
) -> None:
    """A store raising a non-flowweaver error wakes and fails its followers; no later hang."""
    fired = []

    def boom() -> None:
        fired.append(1)
        raise RuntimeError("a bug in the store")

    committer = GroupCommitter(store)
    entered, release = hold_first_commit(store, boom)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(committer.append, first_events("a"))
        assert entered.wait(5)
        followers = [pool.submit(committer.append, first_events(r)) for r in ("b", "c")]
        wait_queued(committer, 2)
        release.set()
        first.result(timeout=5)
        for future in followers:  # the leader's second round, [b, c], hit the bug
            with pytest.raises(StoreError, match="RuntimeError: a bug in the store") as caught:
                future.result(timeout=5)
            assert isinstance(caught.value.__cause__, RuntimeError)
    assert fired == [1]
    # The committer is usable again: the next appends are stored.
    committer.append(first_events("b"))
    committer.append(first_events("d"))
    assert store.run_state(rid("b")) is not None and store.run_state(rid("d")) is not None


def test_a_store_error_fails_the_caller_and_is_not_translated(store: HookedStore) -> None:
    """A StoreError from the store reaches its caller as it is."""
    committer = GroupCommitter(store)

    def down(appends: Sequence[Append]) -> None:
        raise StoreError("the store is down")

    store.hook = down
    with pytest.raises(StoreError, match="the store is down"):
        committer.append(first_events("a"))
    store.hook = lambda appends: None
    committer.append(first_events("a"))


def test_a_leader_interrupted_mid_commit_fails_its_batch_and_passes_the_role(
    store: HookedStore,
) -> None:
    """A BaseException in the leader's thread fails the batch it held; the next caller leads."""

    def interrupt() -> None:
        raise KeyboardInterrupt

    committer = GroupCommitter(store)
    entered, release = hold_first_commit(store, interrupt)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(committer.append, first_events("a"))
        assert entered.wait(5)
        in_batch = pool.submit(committer.append, first_events("b"))
        wait_queued(committer, 1)
        release.set()
        with pytest.raises(KeyboardInterrupt):
            first.result(timeout=5)
        with pytest.raises(StoreError, match="interrupted"):
            in_batch.result(timeout=5)
    committer.append(first_events("c"))
    assert store.run_state(rid("c")) is not None
    assert not committer._busy


def test_a_leader_hands_over_after_its_rounds(store: HookedStore) -> None:
    """With callers arriving all the time, every append is stored and none waits forever."""
    committer = GroupCommitter(store, max_batch=2, max_rounds=1)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(committer.append, first_events(f"r{i}")) for i in range(40)]
        for future in futures:
            future.result(timeout=10)
    assert sum(store.calls) == 40
    assert not committer._busy
