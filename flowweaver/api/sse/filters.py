"""Which events a stream or page shows: ``?types=A,B`` (event type names) and ``?runId=``.

A filter only hides events: offsets stay what they are (log positions on the global feed, run
versions on a run's stream), so ``Last-Event-ID`` resumes a filtered stream exactly as an
unfiltered one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flowweaver.api.errors import bad_request
from flowweaver.domain.events import RUN_EVENT_NAMES
from flowweaver.domain.ids import canonical_run_id
from flowweaver.ports import RecordedEvent

_KNOWN = frozenset(RUN_EVENT_NAMES)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Events of these types (None: every type) of this run (None: every run)."""

    types: frozenset[str] | None = None
    run_id: str | None = None

    def matches(self, rec: RecordedEvent) -> bool:
        """Say whether ``rec`` passes the filter (its name and run id only; nothing decoded)."""
        return (self.types is None or rec.name in self.types) and (
            self.run_id is None or rec.run_id == self.run_id
        )


def parse_event_filter(query: Mapping[str, str], *, run_id: bool = False) -> EventFilter | None:
    """Return the filter a query string asks for, None when it asks for none.

    ``types`` is a comma-separated list of event type names; ``runId`` (only where ``run_id``
    is True: the global feed) a run's id.

    Raises:
        ApiError: an empty or unknown type name, or a runId that is no UUID (400).
    """
    types: frozenset[str] | None = None
    raw_types = query.get("types")
    if raw_types is not None:
        names = [name.strip() for name in raw_types.split(",") if name.strip()]
        if not names:
            raise bad_request("types names no event type", path="$.query.types")
        unknown = sorted({name for name in names if name not in _KNOWN})
        if unknown:
            raise bad_request(
                f"types names {len(unknown)} unknown event type(s); "
                f"known: {', '.join(RUN_EVENT_NAMES)}",
                path="$.query.types",
            )
        types = frozenset(names)
    wanted: str | None = None
    raw_run = query.get("runId") if run_id else None
    if raw_run is not None:
        wanted = canonical_run_id(raw_run)
        if wanted is None:
            raise bad_request("runId is not a run id (a UUID)", path="$.query.runId")
    if types is None and wanted is None:
        return None
    return EventFilter(types=types, run_id=wanted)
