"""Server-sent events, read: a sans-IO parser fed the stream's bytes as they come, and the
bookkeeping that makes a stream resumed after a dropped connection yield each event once.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from flowweaver.errors import BadResponseError

from .calls import Event, event_from

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
"""The largest SSE message taken (an event carries task outputs of up to a few MiB)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One dispatched SSE message (comments and ``retry:`` lines are not messages)."""

    id: str | None
    event: str
    data: str


class SseParser:
    """Turn the bytes of a ``text/event-stream`` into messages (the WHATWG parsing rules).

    Raises (from :meth:`feed`):
        BadResponseError: a line or message over :data:`MAX_MESSAGE_BYTES`.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.retry_ms: int | None = None
        self._buffer = b""
        self._id: str | None = None
        self._event = ""
        self._data: list[str] = []
        self._size = 0

    def feed(self, chunk: bytes) -> list[Message]:
        """Take the next bytes; return the messages they complete."""
        self._buffer += chunk
        out: list[Message] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = self._buffer[:end].rstrip(b"\r")
            self._buffer = self._buffer[end + 1 :]
            message = self._line(line.decode("utf-8", errors="replace"))
            if message is not None:
                out.append(message)
        if len(self._buffer) + self._size > MAX_MESSAGE_BYTES:
            raise BadResponseError(self.url, "an event stream message over 32 MiB")
        return out

    def _line(self, line: str) -> Message | None:
        if not line:
            if not self._data and self._id is None:
                self._event = ""
                return None
            message = Message(
                id=self._id, event=self._event or "message", data="\n".join(self._data)
            )
            self._id, self._event, self._data, self._size = None, "", [], 0
            return message
        if line.startswith(":"):
            return None  # a comment: the heartbeat
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
            self._size += len(value)
        elif name == "id":
            self._id = value
        elif name == "event":
            self._event = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


class Resume:
    """Where a stream is: the last offset yielded, so that a resumed stream skips what was seen."""

    def __init__(self, url: str, after: int) -> None:
        self.url = url
        self.last = after

    def take(self, message: Message) -> Event | None:
        """Return the event of ``message``, or None for one already yielded (or no event).

        Raises:
            BadResponseError: an event without a numeric id or whose data is not an event.
        """
        if message.id is None or not message.data:
            return None
        try:
            offset = int(message.id)
        except ValueError:
            shown = message.id[:40]
            raise BadResponseError(self.url, f"an event id that is no offset: {shown!r}") from None
        if offset <= self.last:
            return None
        try:
            data = msgspec.json.decode(message.data)
            event = event_from(data, offset)
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as e:
            raise BadResponseError(self.url, f"an event that cannot be read: {e}") from None
        self.last = offset
        return event
