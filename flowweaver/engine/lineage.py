"""Lineage: where a run was forked from (or which sub-workflow task started it), and the runs
forked from it or started by its tasks. A reader of the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from flowweaver.domain.events import RunForked, RunStarted
from flowweaver.errors import NotFoundError
from flowweaver.ports import LogReader, RunQueries, RunRow


class LineageStore(LogReader, RunQueries, Protocol):
    """What reading a lineage needs: a run's first event and the run list's children."""


@dataclass(frozen=True)
class ParentLink:
    """The run a fork was taken from, and the parent's version it was taken at; for a
    sub-workflow's child run, the parent's task that started it (and no version)."""

    run_id: str
    at_version: int | None
    task_id: str | None = None


@dataclass(frozen=True)
class Lineage:
    """A run's parent (None for a run that was started, not forked) and a page of its forks.

    ``children`` are newest first; ``next_cursor`` names the next page (None at the end).
    """

    run_id: str
    parent: ParentLink | None
    children: list[RunRow]
    next_cursor: str | None


def read_lineage(
    store: LineageStore, run_id: str, *, limit: int = 100, cursor: str | None = None
) -> Lineage:
    """Return the lineage of ``run_id``: its first event names its parent, the run list its forks.

    Raises:
        NotFoundError: no such run.
        ValidationError: ``limit`` below 1 or a cursor this store did not issue.
    """
    first = store.read_run(run_id, upto=1)
    if not first:
        raise NotFoundError("run", run_id)
    event = first[0].event
    parent: ParentLink | None = None
    if isinstance(event, RunForked):
        parent = ParentLink(event.parent_run_id, event.parent_version)
    elif isinstance(event, RunStarted) and event.parent is not None:
        parent = ParentLink(event.parent.run_id, None, event.parent.task_id)
    page = store.child_runs(run_id, limit=limit, cursor=cursor)
    return Lineage(run_id=run_id, parent=parent, children=page.runs, next_cursor=page.next_cursor)
