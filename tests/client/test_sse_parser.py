"""The client's SSE parser and resume bookkeeping, fed bytes as a network would cut them."""

from __future__ import annotations

import json

import pytest

from flowweaver.client.sse import Message, Resume, SseParser
from flowweaver.errors import BadResponseError

URL = "http://127.0.0.1:1/events/r"


def _frame(offset: int, kind: str = "TaskStarted") -> bytes:
    data = {"type": kind, "runId": "r", "version": offset, "timestamp": "2026-01-01T00:00:00Z"}
    return b"id: %d\nevent: %b\ndata: %b\n\n" % (offset, kind.encode(), json.dumps(data).encode())


def test_messages_survive_any_cut_of_the_bytes() -> None:
    """Cut at every byte, with a retry line, heartbeats and CRLF, the messages are the same."""
    stream = b"retry: 3000\n\n: keep-alive\n\n" + _frame(1) + b": keep-alive\r\n\r\n" + _frame(2)
    whole = SseParser(URL).feed(stream)
    assert [m.id for m in whole] == ["1", "2"]
    for cut in range(len(stream)):
        parser = SseParser(URL)
        assert parser.feed(stream[:cut]) + parser.feed(stream[cut:]) == whole
        assert parser.retry_ms == 3000


def test_data_lines_join_and_an_error_message_has_no_id() -> None:
    """Several data lines join with newlines; the server's closing `event: error` has no id."""
    got = SseParser(URL).feed(b'data: a\ndata: b\n\nevent: error\ndata: {"type":"X"}\n\n')
    assert got == [Message(None, "message", "a\nb"), Message(None, "error", '{"type":"X"}')]


def test_resume_skips_what_was_yielded_and_checks_ids() -> None:
    """An offset at or below the last one yielded is skipped; an id that is no number is not
    this API; a message without an id is no event."""
    resume = Resume(URL, after=1)
    parser = SseParser(URL)
    taken = [resume.take(m) for m in parser.feed(_frame(1) + _frame(2) + _frame(2) + _frame(3))]
    assert [e.offset if e else None for e in taken] == [None, 2, None, 3]
    assert resume.take(Message(None, "error", "{}")) is None
    with pytest.raises(BadResponseError):
        resume.take(Message("x", "TaskStarted", "{}"))
    with pytest.raises(BadResponseError):
        resume.take(Message("9", "TaskStarted", "not json"))
