"""A blocking SSE reader for tests that drive `flowweaver serve` subprocesses."""

from __future__ import annotations

import http.client
import json
from typing import Any


def read_sse(port: int, path: str, timeout: float = 30.0) -> list[tuple[str, str, Any]]:
    """Read an SSE stream on 127.0.0.1 to its end: (id, event, data) of every message."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Accept": "text/event-stream"})
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        messages: list[tuple[str, str, Any]] = []
        fields: dict[str, str] = {}
        for raw in response:  # ends when the server closes the stream
            line = raw.decode().rstrip("\r\n")
            if not line:
                if "event" in fields:
                    messages.append((fields["id"], fields["event"], json.loads(fields["data"])))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        return messages
    finally:
        connection.close()
