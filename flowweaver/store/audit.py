"""Verify, export and import runs by their stored records and hash chains.

All three work on any store with :class:`flowweaver.ports.StoredRuns`, reading a run in pages
of :data:`PAGE` events, so memory stays bounded whatever a run's length. See
:mod:`flowweaver.store.chain` for the chain itself.

Export writes NDJSON, one stored event a line, runs one after the other, versions in order::

    {"runId":"…","version":1,"topic":"RunStarted","event":{…,"hash":"…"}}

``event`` is the stored JSON byte for byte. Import reads such a file twice: first it checks
every run's chain and compares it with what the target store holds already, then, only when
all of that passed, it stores what the target lacks. So a broken file stores nothing, and a
second import of the same file stores nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import msgspec

from flowweaver.errors import (
    ChainBrokenError,
    ConflictError,
    FieldError,
    NotFoundError,
    ValidationError,
)
from flowweaver.ports import StoredRuns
from flowweaver.store.chain import ChainCheck, ChainWalk, ExportLine

PAGE = 5000
"""Events read (or inserted) at a time."""
INSERT_BYTES = 4 * 1024 * 1024
"""Stored bytes inserted in one transaction at most (a run's events go in several when more)."""
MAX_LINE_BYTES = 64 * 1024 * 1024
"""The longest export line import reads (an event far over any limit of the engine)."""

_line_decoder = msgspec.json.Decoder(ExportLine)
_line_encoder = msgspec.json.Encoder()


def verify_run(store: StoredRuns, run_id: str, *, upto: int | None = None) -> ChainCheck:
    """Walk a run's hash chain (up to version ``upto``) and say whether it holds.

    Raises:
        NotFoundError: the store holds no event of the run.
        StoreError: the store cannot be reached.
    """
    walk = _walk(store, run_id, upto)
    if walk.version == 0 and walk.bad is None:
        raise NotFoundError("run", run_id)
    return walk.result()


def _walk(store: StoredRuns, run_id: str, upto: int | None) -> ChainWalk:
    try:
        walk = ChainWalk(run_id)
    except ValueError:
        raise NotFoundError("run", run_id) from None
    after = 0
    while True:
        rows = store.read_stored(run_id, after=after, upto=upto, limit=PAGE)
        if not rows or not walk.feed(rows):
            return walk
        after = rows[-1][0]
        if len(rows) < PAGE:
            return walk


def export_run(store: StoredRuns, run_id: str) -> Iterator[bytes]:
    """Verify a run, then yield its export lines (each ending in a newline), page by page.

    The lines are those of the versions verified, even if the run grows meanwhile.

    Raises:
        NotFoundError: the store holds no event of the run.
        ChainBrokenError: its chain does not verify; nothing is yielded.
        StoreError: the store cannot be reached.
    """
    check = verify_run(store, run_id)
    if not check.ok:
        raise _broken(run_id, check)
    return _lines(store, run_id, check.version or 0)


def _broken(run_id: str, check: ChainCheck) -> ChainBrokenError:
    return ChainBrokenError(run_id, check.first_bad_version or 1, check.reason or "")


def _lines(store: StoredRuns, run_id: str, upto: int) -> Iterator[bytes]:
    after = 0
    while after < upto:
        rows = store.read_stored(run_id, after=after, upto=upto, limit=PAGE)
        if not rows:
            return
        yield b"".join(
            _line_encoder.encode(
                ExportLine(run_id=run_id, version=v, topic=t, event=msgspec.Raw(d))
            )
            + b"\n"
            for v, t, d in rows
        )
        after = rows[-1][0]


class ImportReport(msgspec.Struct, kw_only=True):
    """What an import did: runs and events stored, and runs the store held already."""

    runs: int = 0
    events: int = 0
    present: int = 0


class _Run:
    """One run of the file as pass one sees it."""

    def __init__(self, run_id: str, held: int) -> None:
        self.run_id = run_id
        self.walk = ChainWalk(run_id)
        self.held = held  # the last version the target holds already
        self.pending: list[tuple[int, str, bytes]] = []  # held lines waiting to be compared


def import_runs(store: StoredRuns, open_lines: Callable[[], Iterable[bytes]]) -> ImportReport:
    """Store the runs of an export in ``store``, unless any of them fails a check.

    ``open_lines`` gives the file's lines from the start, each time it is called (it is
    called twice). Each run's lines must come together, versions from 1 in order, and its
    chain must verify; a run the store holds already must hold the same records (then only
    the versions it lacks are stored, which makes a second import a no-op).

    Raises:
        ValidationError: a line is not an export line, or runs or versions are out of order.
        ChainBrokenError: a run's chain does not verify.
        ConflictError: the store holds a run of the file with other records.
        StoreError: the store failed; what was stored before stays (import again to finish).
    """
    plan: list[tuple[str, int, int]] = []  # run id, versions held, versions in the file
    seen: set[str] = set()
    run: _Run | None = None
    for number, line in _numbered(open_lines()):
        record = _decode(number, line)
        if run is None or record.run_id != run.run_id:
            if run is not None:
                plan.append(_finish(store, run))
            if record.run_id in seen:
                raise _bad(number, f"run {record.run_id} appears again after other runs")
            seen.add(record.run_id)
            try:
                run = _Run(record.run_id, store.last_version(record.run_id))
            except ValueError:
                raise _bad(number, f"{record.run_id!r} is not a run id") from None
        event = bytes(record.event)
        if record.version != run.walk.version + 1:
            raise _bad(
                number,
                f"run {run.run_id}: version {record.version} follows {run.walk.version}",
            )
        if not run.walk.feed([(record.version, record.topic, event)]):
            break
        if record.version <= run.held:
            run.pending.append((record.version, record.topic, event))
            if len(run.pending) >= PAGE:
                _compare(store, run)
    if run is not None:
        plan.append(_finish(store, run))
    report = ImportReport()
    missing: dict[str, int] = {}
    for run_id, held, total in plan:
        if total <= held:
            report.present += 1
        else:
            missing[run_id] = held
            report.runs += 1
            report.events += total - held
    if missing:
        _store_runs(store, open_lines(), missing)
    return report


def _finish(store: StoredRuns, run: _Run) -> tuple[str, int, int]:
    """Close pass one of a run: its chain verified, its held records equal to the file's."""
    check = run.walk.result()
    if not check.ok:
        raise _broken(run.run_id, check)
    _compare(store, run)
    return run.run_id, run.held, run.walk.version


def _compare(store: StoredRuns, run: _Run) -> None:
    if not run.pending:
        return
    first, last = run.pending[0][0], run.pending[-1][0]
    held = store.read_stored(run.run_id, after=first - 1, upto=last)
    if list(map(tuple, held)) != run.pending:
        for ours, theirs in zip(held, run.pending, strict=False):
            if tuple(ours) != theirs:
                break
        else:
            ours = theirs = run.pending[0]
        raise ConflictError(
            f"run {run.run_id} is in the store with other records than in the file "
            f"(from version {theirs[0]}): not imported"
        )
    run.pending.clear()


def _store_runs(store: StoredRuns, lines: Iterable[bytes], missing: dict[str, int]) -> None:
    """Pass two: insert each run's versions after those the store holds, in bounded batches.

    Each batch is checked on its run's chain again before it is stored, so a file changed
    since pass one cannot slip an unverified event in: the store holds a whole chain, or a
    verified beginning of one, whatever happens to the file.
    """
    batch: list[tuple[int, str, bytes]] = []
    size, current = 0, ""
    walk: ChainWalk | None = None
    for number, line in _numbered(lines):
        record = _decode(number, line)
        held = missing.get(record.run_id)
        if held is None:
            continue
        if record.run_id != current:
            if walk is not None and not walk.result().ok:
                raise _broken(current, walk.result())
            _insert(store, current, batch)
            batch, size, current = [], 0, record.run_id
            walk = ChainWalk(current)
        assert walk is not None
        event = bytes(record.event)
        if not walk.feed([(record.version, record.topic, event)]):
            raise _broken(current, walk.result())
        if record.version <= held:
            continue
        if len(batch) >= PAGE or size >= INSERT_BYTES:
            _insert(store, current, batch)
            batch, size = [], 0
        batch.append((record.version, record.topic, event))
        size += len(event)
    if walk is not None and not walk.result().ok:
        raise _broken(current, walk.result())
    _insert(store, current, batch)


def _insert(store: StoredRuns, run_id: str, batch: list[tuple[int, str, bytes]]) -> None:
    if batch:
        store.insert_stored(run_id, batch)


def _numbered(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_LINE_BYTES:
            raise _bad(number, f"the line is longer than {MAX_LINE_BYTES} bytes")
        if line.strip():
            yield number, line


def _decode(number: int, line: bytes) -> ExportLine:
    try:
        return _line_decoder.decode(line)
    except msgspec.DecodeError as e:
        raise _bad(number, f"not an export line: {e}") from None


def _bad(number: int, message: str) -> ValidationError:
    return ValidationError([FieldError(f"line {number}", message)])
