"""Group commit: appends from many run actors that arrive together share one transaction.

There is no writer thread. The first caller becomes the leader and appends its own events
together with whatever other callers queued meanwhile; followers wait for the leader to tell
them how their part went. A leader serves at most ``max_rounds`` rounds, then hands the
role to the oldest waiting follower, so no actor is held up for long by others' work. When
a combined append fails, each part is retried alone, so one run's conflict never fails
another run's append. Whatever a commit raises, every waiting caller is woken and told, and
the role of leader passes on: a bug in a store must fail appends, never hang them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from flowweaver.errors import ConcurrencyError, StoreError
from flowweaver.ports import Append, LogWriter


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

    def __init__(self, store: LogWriter, *, max_batch: int = 256, max_rounds: int = 4) -> None:
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
        handed_off = False
        try:
            for _ in range(self.max_rounds):
                with self._lock:
                    batch = self._queue[: self.max_batch]
                    del self._queue[: self.max_batch]
                    if not batch:
                        self._busy = False
                        handed_off = True
                        return
                self._commit(batch)
        finally:
            # Also when a commit raised past its own handling (KeyboardInterrupt in the
            # leader's thread): the next caller in line leads, or nobody is busy.
            if not handed_off:
                self._hand_off()

    def _hand_off(self) -> None:
        with self._lock:
            if not self._queue:
                self._busy = False
                return
            successor = self._queue[0]
            successor.lead = True
        successor.wake()

    def _commit(self, batch: Sequence[_Request]) -> None:
        settled = False
        try:
            try:
                self.store.append([r.append for r in batch])
            except (ConcurrencyError, StoreError) as e:
                if len(batch) == 1:
                    batch[0].error = e
                else:
                    for request in batch:
                        request.error = self._append_alone(request.append)
            except Exception as e:  # noqa: BLE001 - a store bug fails these appends, not the committer
                for request in batch:
                    request.error = _unexpected(e)
            settled = True
        finally:
            if not settled:  # the leader's thread was interrupted: nobody knows what was stored
                for request in batch:
                    if request.error is None:
                        request.error = StoreError("the append was interrupted")
            for request in batch:
                if not request.lead:
                    request.wake()

    def _append_alone(self, append: Append) -> ConcurrencyError | StoreError | None:
        try:
            self.store.append([append])
        except (ConcurrencyError, StoreError) as e:
            return e
        except Exception as e:  # noqa: BLE001 - translated once, here, for the caller
            return _unexpected(e)
        return None


def _unexpected(error: Exception) -> StoreError:
    """Translate an error a store should not raise into the StoreError callers handle."""
    wrapped = StoreError(f"the store failed unexpectedly: {type(error).__name__}: {error}")
    wrapped.__cause__ = error
    return wrapped
