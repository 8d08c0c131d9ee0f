"""The wire form of an event stream: an event's API JSON, SSE messages, a round's shared frames.

Pure bytes: nothing here waits, writes or keeps state beyond the frames it builds once.
"""

from __future__ import annotations

import msgspec

from flowweaver.domain.events import TERMINAL_EVENT_NAMES
from flowweaver.ports import RecordedEvent

HEARTBEAT = b": keep-alive\n\n"
SHUTDOWN = b": server shutting down\n\n"
TERMINAL = frozenset(name.encode() for name in TERMINAL_EVENT_NAMES)
"""The names of the events that end a run, as bytes (a stream tests every event against it)."""
_encoder = msgspec.json.Encoder()


def is_terminal(rec: RecordedEvent) -> bool:
    """Say whether ``rec`` ends its run (RunCompleted, RunFailed, RunCancelled)."""
    return rec.name.encode() in TERMINAL


def event_json(rec: RecordedEvent) -> bytes:
    """Return the event's API JSON: type, runId, version, timestamp, then its own fields.

    The stored JSON starts with ``{"type":"Name",``; the run id and version are spliced in
    after it, so nothing is decoded. A store that reformats JSON falls back to decoding. An
    event stored at an older schema version is upcast and re-encoded first (``current_raw``).
    """
    name = rec.name.encode()
    raw = rec.current_raw
    prefix_len = len(name) + 11  # len('{"type":"",')
    if raw[:prefix_len] == b'{"type":"' + name + b'",':
        return b'{"type":"%b","runId":"%b","version":%d,%b' % (
            name,
            rec.run_id.encode(),
            rec.version,
            raw[prefix_len:],
        )
    decoded = msgspec.json.decode(raw)
    fields = decoded if isinstance(decoded, dict) else {}
    out: dict[str, object] = {"type": rec.name, "runId": rec.run_id, "version": rec.version}
    out.update((k, v) for k, v in fields.items() if k not in out)
    return _encoder.encode(out)


def sse_frame(offset: int, rec: RecordedEvent, data: bytes | None = None) -> bytes:
    """Return one SSE message: ``id``, ``event`` and ``data`` lines and the blank line."""
    return b"id: %d\nevent: %b\ndata: %b\n\n" % (
        offset,
        rec.name.encode(),
        event_json(rec) if data is None else data,
    )


def retry_line(retry_ms: int) -> bytes:
    """Return the ``retry:`` message a stream starts with."""
    return b"retry: %d\n\n" % retry_ms


def error_message(kind: str, detail: str, **extra: object) -> bytes:
    """Return the ``event: error`` message that ends a stream (``data`` names the ``kind``)."""
    body = _encoder.encode({"type": kind, "detail": detail, **extra})
    return b"event: error\ndata: %b\n\n" % body


class LiveEvent:
    """A new event of the log, with its frames built once for every subscriber."""

    __slots__ = ("_data", "_log_frame", "_run_frame", "rec")

    def __init__(self, rec: RecordedEvent) -> None:
        self.rec = rec
        self._data: bytes | None = None
        self._run_frame: bytes | None = None
        self._log_frame: bytes | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = event_json(self.rec)
        return self._data

    @property
    def run_frame(self) -> bytes:
        """The frame of a per-run stream (``id`` is the run version)."""
        if self._run_frame is None:
            self._run_frame = sse_frame(self.rec.version, self.rec, self.data)
        return self._run_frame

    @property
    def log_frame(self) -> bytes:
        """The frame of the global feed (``id`` is the log position)."""
        if self._log_frame is None:
            self._log_frame = sse_frame(self.rec.position or 0, self.rec, self.data)
        return self._log_frame


class Round:
    """One round's new events for one kind of stream, joined (and chunk-framed) once for all."""

    __slots__ = ("_cache", "by_position", "events", "size", "terminal")

    def __init__(self, events: list[LiveEvent], *, by_position: bool) -> None:
        self.events = events
        self.by_position = by_position
        self.terminal = not by_position and is_terminal(events[-1].rec)
        self.size = sum(len(e.log_frame if by_position else e.run_frame) for e in events)
        self._cache: dict[tuple[int, bool], bytes] = {}

    def framed(self, start: int, chunked: bool) -> bytes:
        """Return the frames from ``events[start]`` on, as one HTTP/1.1 chunk if ``chunked``."""
        key = (start, chunked)
        data = self._cache.get(key)
        if data is None:
            events = self.events[start:]
            body = b"".join(e.log_frame if self.by_position else e.run_frame for e in events)
            data = b"%x\r\n%b\r\n" % (len(body), body) if chunked else body
            self._cache[key] = data
        return data
