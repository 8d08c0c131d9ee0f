"""Raw sockets on loopback, for tests that must see the bytes a client library would hide."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .conftest import LiveServer


def connect(server: LiveServer, *, rcvbuf: int = 0, timeout: float = 10) -> socket.socket:
    """Open a connection to the server (``rcvbuf``, set before connecting, shrinks its window)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", server.port))
    return sock


def raw_get(
    server: LiveServer, path: str, *, version: str = "1.1", rcvbuf: int = 0
) -> socket.socket:
    """Send one ``GET path`` with ``Connection: close`` and return the socket, unread."""
    sock = connect(server, rcvbuf=rcvbuf, timeout=15)
    sock.sendall(
        f"GET {path} HTTP/{version}\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    )
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    """Read until ``marker`` has arrived; fail if the server closes first."""
    received = b""
    while marker not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before {marker!r}"
        received += chunk
    return received


def read_to_end(sock: socket.socket) -> bytes:
    """Read until the server closes the connection (a reset counts as the end)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
