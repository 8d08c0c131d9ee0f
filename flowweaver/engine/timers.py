"""One timer thread for the whole engine: retry delays and attempt timeouts."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("flowweaver.timers")


class TimerHandle:
    """A scheduled callback; ``cancel()`` keeps it from firing."""

    __slots__ = ("cancelled", "deadline")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.cancelled = False

    def cancel(self) -> None:
        """Keep the callback from running, if it has not run yet."""
        self.cancelled = True


class Timers:
    """Runs callbacks at monotonic deadlines on one daemon thread.

    Callbacks must be quick (they deliver a message); one that raises is logged and dropped.
    """

    def __init__(self, name: str = "flowweaver-timers") -> None:
        self._heap: list[tuple[float, int, TimerHandle, Callable[[], object]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        """Run ``callback`` after ``delay`` seconds (at once when it is <= 0)."""
        handle = TimerHandle(time.monotonic() + max(0.0, delay))
        with self._cond:
            heapq.heappush(self._heap, (handle.deadline, next(self._seq), handle, callback))
            if self._heap[0][2] is handle:
                self._cond.notify()
        return handle

    def close(self) -> None:
        """Stop the thread; callbacks not yet due never run."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    timeout = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(timeout)
                if self._closed:
                    return
                _, _, handle, callback = heapq.heappop(self._heap)
            if handle.cancelled:
                continue
            try:
                callback()
            except Exception:
                log.exception("timer_callback_failed")
