"""Server-sent events: the wire form, the process's one tailer, and the HTTP streams it feeds.

- :mod:`.framing`: an event's API JSON and its SSE frames (pure bytes);
- :mod:`.subscriber`: one stream's whole state (connection, position, live queue, backlog);
- :mod:`.hub`: the one tailer of the log, fanning each new page out to the subscribers;
- :mod:`.streams`: the HTTP handlers, replay then follow, and how a stream ends.

See docs/sse.md for what a client sees.
"""

from .framing import LiveEvent, event_json, sse_frame
from .hub import Hub
from .streams import log_stream, parse_offset, run_stream
from .subscriber import StreamSettings, Subscriber

__all__ = [
    "Hub",
    "LiveEvent",
    "StreamSettings",
    "Subscriber",
    "event_json",
    "log_stream",
    "parse_offset",
    "run_stream",
    "sse_frame",
]
