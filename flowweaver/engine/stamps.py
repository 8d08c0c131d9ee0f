"""The time a run's events are stamped with: never before the run's last event.

Time travel by instant (``GET /runs/{id}?asOf=``) finds a version by binary search over a
run's event timestamps, which is right only if they never go backwards. A wall clock can
(NTP steps it back, a run moves to a node whose clock is behind), so every decision of a run
is stamped with the later of the clock's time and the run's last event's.
"""

from __future__ import annotations

from datetime import datetime

from flowweaver.domain.run import RunState
from flowweaver.ports import Clock


def stamp_time(clock: Clock, state: RunState | None) -> datetime:
    """Return the time for a run's next events: ``clock.now()``, or the run's last event's
    timestamp when the clock is behind it."""
    now = clock.now()
    last = state.updated_at if state is not None else None
    return last if last is not None and last > now else now
