"""Named fault-injection points for crash tests and in-process fault tests.

Arm them with ``FLOWWEAVER_FAULTS="after_append=3,before_append=1"``: the process kills
itself with SIGKILL the Nth time it reaches that point. In-process tests arm a point with
:func:`arm_raise` instead: the next passes raise :class:`InjectedFaultError`, and :func:`fired`
says how many did. Unarmed points cost a dict lookup.

Points:
- ``before_append``: a run actor decided events and has not stored them.
- ``after_append``: a run actor stored events and has not acted on them (dispatch, timers).
  A completion and the scheduling of what it made ready are one append, so this is also
  the point "between a completion and the next schedule".
- ``child_started``: a sub-workflow task's child run is stored and its parent has not heard
  of it (no ChildRunStarted yet): a restart must find that child, never start a second one.
- ``actor_start``: a run actor is starting, its lease checked, its state not yet settled
  (a bug or a failure while starting must end in a replaced actor, never a stuck run).
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

ENV = "FLOWWEAVER_FAULTS"
_lock = threading.Lock()


def _parse(spec: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition("=")
        armed[name.strip()] = int(count or "1")
    return armed


_armed = _parse(os.environ.get(ENV, ""))
_raising: dict[str, int] = {}
_fired: Counter[str] = Counter()


class InjectedFaultError(RuntimeError):
    """Raised at a point armed with :func:`arm_raise`; stands for a bug or a failure there."""


def hit(point: str) -> None:
    """Count a pass through ``point``; kill the process when its count runs out.

    Raises:
        InjectedFaultError: the point was armed with :func:`arm_raise` and has raises left.
    """
    if _raising and point in _raising:
        with _lock:
            due = _raising.get(point, 0) > 0
            if due:
                _raising[point] -= 1
                _fired[point] += 1
        if due:
            raise InjectedFaultError(f"fault injected at {point}")
    if not _armed or point not in _armed:
        return
    with _lock:
        _armed[point] -= 1
        due = _armed[point] <= 0
    if due:
        os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str, count: int = 1) -> None:
    """Arm ``point`` in this process (tests of the mechanism itself)."""
    with _lock:
        _armed[point] = count


def arm_raise(point: str, times: int = 1) -> None:
    """Make the next ``times`` passes through ``point`` raise :class:`InjectedFaultError`."""
    with _lock:
        _raising[point] = times
        _fired[point] = 0


def fired(point: str) -> int:
    """Return how many times ``point`` raised since it was armed with :func:`arm_raise`."""
    with _lock:
        return _fired[point]


def disarm() -> None:
    """Forget every point armed with :func:`arm_raise` (a test's clean-up)."""
    with _lock:
        _raising.clear()
        _fired.clear()
