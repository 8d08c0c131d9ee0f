"""Group commit: appends from many run actors that arrive together share one transaction.

There is no writer thread. The first caller becomes the leader and appends its own events
together with whatever other callers queued meanwhile; followers wait for the leader to tell
them how their part went. A leader serves at most ``max_rounds`` rounds, then hands the
role to the oldest waiting follower, so no actor is held up for long by others' work. When
a combined append fails, each part is retried alone, so one run's conflict never fails
another run's append.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from flowweaver.errors import ConcurrencyError, StoreError
from flowweaver.ports import Append, EventStore


class _Request:
    """One caller's append; ``wait`` returns once it is stored or the caller must lead.

    A bare lock, held from creation and released once, is the cheapest one-shot signal
    between threads (an Event carries a Condition and a second lock).
    """

    __slots__ = ("_signal", "append", "error", "lead")

    def __init__(self, append: Append) -> None:
        self.append = append
        self.error: ConcurrencyError | StoreError | None = None
        self.lead = False
        self._signal = threading.Lock()
        self._signal.acquire()

    def wake(self) -> None:
        self._signal.release()

    def wait(self) -> None:
        self._signal.acquire()


class GroupCommitter:
    """Funnels appends into as few store transactions as the load allows."""

    def __init__(self, store: EventStore, *, max_batch: int = 256, max_rounds: int = 4) -> None:
        self.store = store
        self.max_batch = max_batch
        self.max_rounds = max_rounds
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._busy = False

    def append(self, append: Append) -> None:
        """Store one run's events; return once they are durable.

        Raises:
            ConcurrencyError: the run already has an event at one of these versions.
            StoreError: the store failed; nothing of this append was stored.
        """
        request = _Request(append)
        with self._lock:
            self._queue.append(request)
            request.lead = not self._busy
            self._busy = True
        if not request.lead:
            request.wait()  # stored by a leader, or promoted to lead
        if request.lead:
            self._lead()
        if request.error is not None:
            raise request.error

    def _lead(self) -> None:
        for _ in range(self.max_rounds):
            with self._lock:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                if not batch:
                    self._busy = False
                    return
            self._commit(batch)
        with self._lock:
            if not self._queue:
                self._busy = False
                return
            successor = self._queue[0]
            successor.lead = True
        successor.wake()

    def _commit(self, batch: Sequence[_Request]) -> None:
        try:
            self.store.append([r.append for r in batch])
        except (ConcurrencyError, StoreError) as e:
            if len(batch) == 1:
                batch[0].error = e
            else:
                for request in batch:
                    try:
                        self.store.append([request.append])
                    except (ConcurrencyError, StoreError) as single:
                        request.error = single
        for request in batch:
            if not request.lead:
                request.wake()
