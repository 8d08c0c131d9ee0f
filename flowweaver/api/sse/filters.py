"""Which events a stream or page shows: ``?types=A,B`` (event type names), ``?runId=``, and
``?since=`` / ``?until=`` (RFC 3339 instants, both ends included, on the events' timestamps).

A filter only hides events: offsets stay what they are (log positions on the global feed, run
versions on a run's stream), so ``Last-Event-ID`` resumes a filtered stream exactly as an
unfiltered one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from flowweaver.api.errors import bad_request
from flowweaver.domain.events import RUN_EVENT_NAMES
from flowweaver.domain.ids import canonical_run_id
from flowweaver.ports import RecordedEvent
from flowweaver.travel import event_time, parse_instant

_KNOWN = frozenset(RUN_EVENT_NAMES)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Events of these types (None: every type) of this run (None: every run), stamped in
    ``[since, until]`` (None: no bound)."""

    types: frozenset[str] | None = None
    run_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, rec: RecordedEvent) -> bool:
        """Say whether ``rec`` passes the filter: its name and run id first, then (only when
        bounded in time) its timestamp, the one field decoded."""
        if not (
            (self.types is None or rec.name in self.types)
            and (self.run_id is None or rec.run_id == self.run_id)
        ):
            return False
        if self.since is None and self.until is None:
            return True
        stamp = event_time(rec)
        return (self.since is None or stamp >= self.since) and (
            self.until is None or stamp <= self.until
        )


def parse_event_filter(query: Mapping[str, str], *, run_id: bool = False) -> EventFilter | None:
    """Return the filter a query string asks for, None when it asks for none.

    ``types`` is a comma-separated list of event type names; ``runId`` (only where ``run_id``
    is True: the global feed) a run's id; ``since`` and ``until`` RFC 3339 instants.

    Raises:
        ApiError: an empty or unknown type name, a runId that is no UUID, a malformed
            instant, or ``until`` before ``since`` (400).
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
    since, until = _instant(query, "since"), _instant(query, "until")
    if since is not None and until is not None and until < since:
        raise bad_request("until is before since", path="$.query.until")
    if types is None and wanted is None and since is None and until is None:
        return None
    return EventFilter(types=types, run_id=wanted, since=since, until=until)


def _instant(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return parse_instant(raw)
    except ValueError:
        # Not the parser's message: it quotes the value, and error answers quote nothing sent.
        raise bad_request(
            f"query parameter {name} must be an RFC 3339 timestamp with an offset, "
            "such as 2026-01-31T09:30:00Z",
            path=f"$.query.{name}",
        ) from None
