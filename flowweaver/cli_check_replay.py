"""``flowweaver check-replay``: re-derive every decision of stored runs with this code.

    flowweaver check-replay RUN_ID ... | --all [--store URL] [--max-task-data SIZE]

One line per run, ``ok`` or its first difference (see :mod:`flowweaver.domain.replay_check`),
then a summary line; exit 0 when every run matches, 1 when one differs. A reader: it never
writes, so it works beside a live server on the same store (SQLite included). With ``--all``
runs are read a page at a time and each run's events a page at a time, so memory stays
bounded however large the store.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from typing import TextIO

from flowweaver.domain.events import RunEvent
from flowweaver.domain.replay_check import check_run
from flowweaver.errors import EventSchemaError
from flowweaver.ports import LogReader, RunQueries, StoreReader

RUNS_PAGE = 100
"""Runs listed per read with ``--all``."""
EVENTS_PAGE = 1000
"""A run's events read per read."""


def add_arguments(command: argparse.ArgumentParser) -> None:
    """Add the command's own arguments (the caller adds --store and --max-task-data)."""
    command.add_argument(
        "run_ids", metavar="RUN_ID", nargs="*", help="the runs to check (or --all)"
    )
    command.add_argument(
        "--all", dest="every", action="store_true", help="check every run of the store"
    )


def every_run_id(store: RunQueries, page: int = RUNS_PAGE) -> Iterator[str]:
    """Yield the id of every run of ``store``, newest first, reading ``page`` runs at a time."""
    cursor: str | None = None
    while True:
        found = store.list_runs(limit=page, cursor=cursor)
        for row in found.runs:
            yield row.id
        if found.next_cursor is None:
            return
        cursor = found.next_cursor


def stored_events(store: LogReader, run_id: str, page: int = EVENTS_PAGE) -> Iterator[RunEvent]:
    """Yield a run's stored events in version order, reading ``page`` events at a time."""
    after = 0
    while True:
        records = store.read_run(run_id, after=after, limit=page)
        for record in records:
            yield record.event
        if len(records) < page:
            return
        after = records[-1].version


def check_replay(
    store: StoreReader, run_ids: Iterable[str], out: TextIO, *, max_io_bytes: int
) -> int:
    """Check each run of ``run_ids`` and print one line per run, then a summary line.

    Returns 0 when every run matches, 1 when one differs or holds an event this code cannot
    read.

    Raises:
        StoreError: the store failed while reading.
    """
    checked = differing = events = 0
    for run_id in run_ids:
        checked += 1
        try:
            report = check_run(run_id, stored_events(store, run_id), max_io_bytes=max_io_bytes)
        except EventSchemaError as e:
            differing += 1
            print(f"run {run_id}  unreadable: {e}", file=out, flush=True)
            continue
        events += report.events
        if report.difference is None:
            print(f"run {run_id}  ok ({report.events} events)", file=out, flush=True)
        else:
            differing += 1
            print(f"run {run_id}  {report.difference.describe()}", file=out, flush=True)
    runs = f"{checked} run{'' if checked == 1 else 's'}"
    verdict = "all match" if not differing else f"{differing} differ{'s' if differing == 1 else ''}"
    print(f"{runs} checked, {events} events: {verdict}", file=out, flush=True)
    return 1 if differing else 0
