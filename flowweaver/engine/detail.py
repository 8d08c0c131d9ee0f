"""Failure detail of one attempt: the lines its handler logs, and the traceback when it raises.

Each attempt gets its own :class:`AttemptLog` (the handler's ``context.log``) over its own
:class:`LogCapture`: lines are kept per attempt object, never in a thread-local or a context
variable, so two handlers logging at once on two workers (or an async handler and a sync one)
never mix lines. Every line also goes to the normal log. A handler that logs nothing pays for
two small objects and nothing else: the structlog logger is bound on first use.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Collection
from datetime import UTC, datetime
from types import CodeType, TracebackType
from typing import Any

import msgspec

from flowweaver.domain.events import MAX_LOG_BYTES, MAX_LOG_LINES, MAX_TRACEBACK_BYTES, LogLine

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()

NOTICE_RESERVE = 256
"""Bytes kept free under MAX_LOG_BYTES for the line that says how many were dropped."""
_NOT_FIELDS = frozenset({"exc_info", "stack_info"})  # structlog's switches, not data


def _json_value(value: Any) -> Any:
    """Return ``value`` as plain JSON (what the store gives back), or as a string if it is not."""
    try:
        return _decoder.decode(_encoder.encode(value))
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.MsgspecError):
        try:
            return str(value)
        except Exception:  # noqa: BLE001 - a value whose __str__ fails still gets a line
            return f"<unprintable {type(value).__name__}>"


def _message(event: Any, args: tuple[Any, ...]) -> str:
    try:
        text = "" if event is None else str(event)
        if args:
            try:
                text = text % args
            except (TypeError, ValueError):
                text = " ".join([text, *(str(a) for a in args)])
    except Exception:  # noqa: BLE001 - a message whose __str__ fails still gets a line
        return f"<unprintable {type(event).__name__}>"
    return text


class LogCapture:
    """The lines one attempt logged, bounded to MAX_LOG_LINES lines and MAX_LOG_BYTES of JSON.

    The lines kept are the first ones; once one does not fit, it and every later line are
    dropped, and :meth:`lines` ends with one line saying how many. Thread-safe: a handler may
    log from threads of its own.
    """

    __slots__ = ("_bytes", "_closed", "_dropped", "_lines", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[LogLine] = []
        self._bytes = 2  # the brackets of the JSON array
        self._dropped = 0
        self._closed = False

    def add(self, level: str, message: str, fields: dict[str, Any]) -> None:
        """Record one line, or count it as dropped when it is past the bounds."""
        if self._closed:
            return
        if self._dropped or len(self._lines) >= MAX_LOG_LINES:
            with self._lock:  # past the bound a line costs a count, not its encoding
                self._dropped += 1
            return
        line = LogLine(
            timestamp=datetime.now(UTC),
            level=level,
            message=message,
            fields={k: _json_value(v) for k, v in fields.items() if k not in _NOT_FIELDS},
        )
        size = len(_encoder.encode(line)) + 1  # its comma
        with self._lock:  # a line that races lines() goes to a list nobody reads again
            if (
                self._dropped
                or len(self._lines) >= MAX_LOG_LINES
                or self._bytes + size + NOTICE_RESERVE > MAX_LOG_BYTES
            ):
                self._dropped += 1
                return
            self._lines.append(line)
            self._bytes += size

    def lines(self) -> tuple[LogLine, ...]:
        """Stop recording and return the lines, with the drop notice last if any were dropped."""
        with self._lock:
            self._closed = True
            if not self._lines and not self._dropped:
                return ()
            kept = list(self._lines)
            if self._dropped:
                kept.append(
                    LogLine(
                        timestamp=datetime.now(UTC),
                        level="warning",
                        message=(
                            f"{self._dropped} more lines dropped (an attempt keeps at most "
                            f"{MAX_LOG_LINES} lines, {MAX_LOG_BYTES} bytes)"
                        ),
                        fields={"dropped": self._dropped},
                    )
                )
            return tuple(kept)


class AttemptLog:
    """``context.log``: a structlog-style logger whose lines are also kept for the attempt.

    ``log.info("fetched", rows=3)`` records LogLine(level="info", message="fetched",
    fields={"rows": 3}) and logs the same event, bound to run_id, task_id and attempt, as any
    other structlog call would. :meth:`bind` returns a logger that adds its fields to both.
    """

    __slots__ = ("_base", "_bound", "_capture", "_context", "_logger")

    def __init__(
        self,
        capture: LogCapture,
        base: Any,
        context: dict[str, Any],
        bound: dict[str, Any] | None = None,
    ) -> None:
        self._capture = capture
        self._base = base
        self._context = context
        self._bound = bound or {}
        self._logger: Any = None

    @property
    def capture(self) -> LogCapture:
        """Return the attempt's capture (shared by every logger bound from this one)."""
        return self._capture

    def _emit(self, level: str, method: str, event: Any, args: tuple[Any, ...], kw: Any) -> Any:
        fields = {**self._bound, **kw} if self._bound else kw
        self._capture.add(level, _message(event, args), fields)
        if self._logger is None:
            self._logger = self._base.bind(**self._context, **self._bound)
        return getattr(self._logger, method)(event, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        # Whatever else a structlog logger offers still works, only its lines are not kept.
        if name.startswith("__"):
            raise AttributeError(name)
        if self._logger is None:
            self._logger = self._base.bind(**self._context, **self._bound)
        return getattr(self._logger, name)

    def bind(self, **fields: Any) -> AttemptLog:
        """Return a logger for the same attempt whose lines carry ``fields`` too."""
        return AttemptLog(self._capture, self._base, self._context, {**self._bound, **fields})

    def new(self, **fields: Any) -> AttemptLog:
        """Return a logger for the same attempt with only ``fields`` bound."""
        return AttemptLog(self._capture, self._base, self._context, dict(fields))

    def unbind(self, *keys: str) -> AttemptLog:
        """Return a logger for the same attempt without ``keys``.

        Raises:
            KeyError: a key is not bound.
        """
        bound = dict(self._bound)
        for key in keys:
            del bound[key]
        return AttemptLog(self._capture, self._base, self._context, bound)

    def try_unbind(self, *keys: str) -> AttemptLog:
        """Return a logger for the same attempt without ``keys``, bound or not."""
        bound = {k: v for k, v in self._bound.items() if k not in keys}
        return AttemptLog(self._capture, self._base, self._context, bound)

    def debug(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        """Log and keep a debug line."""
        return self._emit("debug", "debug", event, args, kw)

    def info(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        """Log and keep an info line."""
        return self._emit("info", "info", event, args, kw)

    msg = info

    def warning(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        """Log and keep a warning line."""
        return self._emit("warning", "warning", event, args, kw)

    warn = warning

    def error(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        """Log and keep an error line."""
        return self._emit("error", "error", event, args, kw)

    def exception(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        """Log and keep an error line; the normal log also gets the exception being handled."""
        return self._emit("error", "exception", event, args, kw)

    def critical(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        """Log and keep a critical line."""
        return self._emit("critical", "critical", event, args, kw)

    fatal = critical

    def log(self, level: int | str, event: Any = None, *args: Any, **kw: Any) -> Any:
        """Log and keep a line at ``level`` (a name or a :mod:`logging` number)."""
        name = _level_name(level)
        return self._emit(name, name, event, args, kw)

    async def adebug(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        """Log and keep a debug line (for async handlers; logging does not block)."""
        return self.debug(event, *args, **kw)

    async def ainfo(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        """Log and keep an info line (for async handlers)."""
        return self.info(event, *args, **kw)

    async def awarning(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        """Log and keep a warning line (for async handlers)."""
        return self.warning(event, *args, **kw)

    async def aerror(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        """Log and keep an error line (for async handlers)."""
        return self.error(event, *args, **kw)

    async def aexception(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        """Log and keep an error line with the exception being handled (for async handlers)."""
        return self.exception(event, *args, **kw)

    async def acritical(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        """Log and keep a critical line (for async handlers)."""
        return self.critical(event, *args, **kw)

    async def alog(self, level: int | str, event: Any = None, *args: Any, **kw: Any) -> Any:
        """Log and keep a line at ``level`` (for async handlers)."""
        return self.log(level, event, *args, **kw)


_LEVEL_NAMES = {10: "debug", 20: "info", 30: "warning", 40: "error", 50: "critical"}
_LEVEL_ALIASES = {"warn": "warning", "fatal": "critical", "exception": "error", "msg": "info"}


def _level_name(level: int | str) -> str:
    if isinstance(level, int):
        return _LEVEL_NAMES.get(level, "info")
    name = str(level).lower()
    name = _LEVEL_ALIASES.get(name, name)
    return name if name in _LEVEL_NAMES.values() else "info"


# --- traceback --------------------------------------------------------------------------------


FORMAT_CAP = 1024 * 1024
"""Characters of a traceback formatted at most: past them the rest is not even formatted."""


def handler_traceback(
    error: BaseException, skip_codes: Collection[CodeType], skip_dirs: tuple[str, ...]
) -> str | None:
    """Return ``error``'s traceback from the handler's first frame on, as Python prints it.

    The leading frames whose code is in ``skip_codes`` or whose file is under ``skip_dirs``
    (the engine's own, and asyncio's for async handlers) are cut off; chained causes and
    contexts are kept. The text is at most MAX_TRACEBACK_BYTES in UTF-8 (see
    :func:`bound_traceback`); formatting stops after FORMAT_CAP characters, so a handler that
    chains a million exceptions costs a bounded amount of work. None when formatting fails.
    """
    tb: TracebackType | None = error.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code in skip_codes or tb.tb_frame.f_code.co_filename.startswith(skip_dirs)
    ):
        tb = tb.tb_next
    chunks: list[str] = []
    size = 0
    complete = True
    try:
        # Source lines are read as frames are formatted, not up front: only for what is kept.
        exc = traceback.TracebackException(type(error), error, tb, lookup_lines=False)
        final = "".join(exc.format_exception_only())
        for chunk in exc.format():
            chunks.append(chunk)
            size += len(chunk)
            if size > FORMAT_CAP:
                complete = False
                break
    except Exception:  # noqa: BLE001 - a failure's detail must not fail the failure
        return None
    if complete:
        return bound_traceback("".join(chunks), final)
    return bound_traceback("".join(chunks) + final, final, more=True)


_MARKER = "\n[... {} bytes cut ...]\n"
_MARKER_ROOM = len(_MARKER.format(f"more than {10**12}"))  # the widest a marker can be


def bound_traceback(
    text: str, final: str, limit: int = MAX_TRACEBACK_BYTES, *, more: bool = False
) -> str:
    """Return ``text`` whole if it fits ``limit`` UTF-8 bytes, else cut in the middle.

    The start is kept, then a marker with the number of bytes cut ("more than N" when
    ``more`` says the text was not formatted to its end), then ``final`` (the final exception
    line(s), which end ``text``), itself cut in its middle when it takes more than half the
    room. A cut never splits a UTF-8 character; what cannot be encoded is replaced.
    """
    data = text.encode("utf-8", "replace")
    if len(data) <= limit and not more:
        return data.decode("utf-8")
    tail = final.encode("utf-8", "replace")
    if not data.endswith(tail):
        tail = b""
    half = limit // 2
    if len(tail) > half:
        keep = half - _MARKER_ROOM
        tail = _cut(tail, keep // 2, keep - keep // 2).encode("utf-8")
    head_room = limit - len(tail) - _MARKER_ROOM
    body = data[: len(data) - len(tail)] if tail else data
    head = body[:head_room].decode("utf-8", "ignore")
    cut = len(data) - len(head.encode("utf-8")) - len(tail)
    return head + _MARKER.format(f"more than {cut}" if more else cut) + tail.decode("utf-8")


def _cut(data: bytes, start: int, end: int) -> str:
    """Keep ``start`` bytes from the front and ``end`` from the back, with the marker between."""
    head = data[:start].decode("utf-8", "ignore")
    tail = data[len(data) - end :].decode("utf-8", "ignore")
    cut = len(data) - len(head.encode("utf-8")) - len(tail.encode("utf-8"))
    return head + _MARKER.format(cut) + tail
