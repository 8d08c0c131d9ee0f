"""The tamper-evidence commands: ``verify``, ``export`` and ``import``.

    flowweaver verify [RUN_ID ... | --all] [--store URL]
    flowweaver export RUN_ID ... | --all [--store URL] [-o FILE]
    flowweaver import FILE [--store URL]

They only read the store (import only writes records it lacks), so they work beside a live
server on the same SQLite file: its lock stops a second engine, not readers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import IO, Any

from flowweaver.errors import ChainBrokenError, NotFoundError
from flowweaver.ports import EventStore, StoredRuns
from flowweaver.store import open_store
from flowweaver.store.audit import MAX_LINE_BYTES, export_run, import_runs, verify_run

LIST_PAGE = 500
EXIT_OK = 0
EXIT_FAILURE = 1


def add_chain_commands(
    commands: Any, run_id: Callable[[str], str]
) -> list[argparse.ArgumentParser]:
    """Add verify, export and import to the CLI's subparsers; return them (each needs --store)."""
    verify = commands.add_parser(
        "verify", help="check runs' stored events against their hash chains"
    )
    verify.add_argument("run_ids", metavar="RUN_ID", nargs="*", type=run_id, help="runs to check")
    verify.add_argument("--all", action="store_true", help="check every run of the store")

    export = commands.add_parser("export", help="write runs' stored events as NDJSON")
    export.add_argument("run_ids", metavar="RUN_ID", nargs="*", type=run_id, help="runs to export")
    export.add_argument("--all", action="store_true", help="export every run of the store")
    export.add_argument(
        "-o", "--output", metavar="FILE", default=None, help="write to FILE (default stdout)"
    )

    imports = commands.add_parser("import", help="store the runs of an export file")
    imports.add_argument("file", metavar="FILE", help="an export (NDJSON) to read")
    return [verify, export, imports]


def _cli() -> ModuleType:
    """Return the CLI module, for its errors and store opener (it imports this module)."""
    from flowweaver import cli  # noqa: PLC0415

    return cli


def _stored(store: EventStore) -> StoredRuns:
    if not isinstance(store, StoredRuns):
        raise _cli().CommandError(f"{type(store).__name__} keeps no stored records to check")
    return store


def _run_ids(args: argparse.Namespace, store: EventStore) -> Iterator[str]:
    if args.all == bool(args.run_ids):
        raise _cli().UsageError("name runs (RUN_ID ...) or pass --all, not both")
    if not args.all:
        yield from args.run_ids
        return
    cursor = None
    while True:
        page = store.list_runs(limit=LIST_PAGE, cursor=cursor)
        for row in page.runs:
            yield row.id
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def verify(args: argparse.Namespace) -> int:
    """Print one line per run (ok, or where its chain breaks); exit 1 when any is not ok."""
    cli = _cli()
    store = cli._open_existing(args.store)
    failed = False
    out = sys.stdout
    try:
        stored = _stored(store)
        for run_id in _run_ids(args, store):
            try:
                check = verify_run(stored, run_id)
            except NotFoundError:
                print(f"{run_id} not found", file=out)
                failed = True
                continue
            if check.ok:
                print(f"{run_id} ok version {check.version} head {check.head}", file=out)
            else:
                failed = True
                print(
                    f"{run_id} broken at version {check.first_bad_version}: {check.reason}",
                    file=out,
                )
            out.flush()
    finally:
        store.close()
    return EXIT_FAILURE if failed else EXIT_OK


def export(args: argparse.Namespace) -> int:
    """Write the runs' stored events as NDJSON; refuse a run whose chain is broken.

    With ``-o FILE`` the file appears only when every run was written; on stdout the runs
    before the broken one are out already.
    """
    cli = _cli()
    store = cli._open_existing(args.store)
    try:
        stored = _stored(store)
        run_ids = _run_ids(args, store)
        if args.output is None:
            count = _write(stored, run_ids, sys.stdout.buffer)
        else:
            count = _write_file(stored, run_ids, Path(args.output))
    except ChainBrokenError as e:
        raise cli.CommandError(f"{e}; nothing of it exported") from None
    finally:
        store.close()
    if args.output is not None:
        print(f"exported {count} runs to {args.output}", file=sys.stderr)
    return EXIT_OK


def _write(stored: StoredRuns, run_ids: Iterator[str], out: IO[bytes]) -> int:
    count = 0
    for run_id in run_ids:
        for page in export_run(stored, run_id):
            out.write(page)
        out.flush()
        count += 1
    return count


def _write_file(stored: StoredRuns, run_ids: Iterator[str], path: Path) -> int:
    directory = path.parent if str(path.parent) else Path()
    if not directory.is_dir():
        raise _cli().CommandError(f"no directory {directory} for {path}")
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            count = _write(stored, run_ids, out)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return count


def import_file(args: argparse.Namespace) -> int:
    """Check every run of the file, then store what the store lacks; print what it did."""
    cli = _cli()
    path = Path(args.file)
    if not path.is_file():
        raise cli.CommandError(f"no file {path}")
    store = open_store(args.store)
    try:
        report = import_runs(_stored(store), lambda: file_lines(path))
    except ChainBrokenError as e:
        raise cli.CommandError(f"{e}; nothing imported") from None
    finally:
        store.close()
    print(
        f"imported {report.runs} runs ({report.events} events); "
        f"{report.present} already in the store"
    )
    return EXIT_OK


def file_lines(path: Path, limit: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """Yield the lines of a file, none read past ``limit`` bytes (a longer one is refused).

    Raises:
        CommandError: a line is longer than ``limit``.
    """
    with path.open("rb") as file:
        number = 0
        while line := file.readline(limit + 1):
            number += 1
            if len(line) > limit:
                raise _cli().CommandError(f"{path}: line {number} is longer than {limit} bytes")
            yield line


CHAIN_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "verify": verify,
    "export": export,
    "import": import_file,
}
