"""Named fault-injection points for crash tests.

Arm them with ``FLOWWEAVER_FAULTS="after_append=3,before_append=1"``: the process kills
itself with SIGKILL the Nth time it reaches that point. Unarmed points cost a dict lookup.

Points:
- ``before_append``: a run actor decided events and has not stored them.
- ``after_append``: a run actor stored events and has not acted on them (dispatch, timers).
  A completion and the scheduling of what it made ready are one append, so this is also
  the point "between a completion and the next schedule".
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "FLOWWEAVER_FAULTS"
_lock = threading.Lock()


def _parse(spec: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition("=")
        armed[name.strip()] = int(count or "1")
    return armed


_armed = _parse(os.environ.get(ENV, ""))


def hit(point: str) -> None:
    """Count a pass through ``point``; kill the process when its count runs out."""
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
