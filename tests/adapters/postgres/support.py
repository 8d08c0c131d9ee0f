"""Helpers for the PostgreSQL adapter's tests: the server's URL, schemas, a loopback proxy."""

from __future__ import annotations

import os
import selectors
import socket
import threading
import uuid
from datetime import UTC, datetime
from typing import Literal

import psycopg
from psycopg.sql import SQL, Identifier

from flowweaver.domain.events import RunStarted, TaskScheduled
from flowweaver.domain.spec import TaskSpec, WorkflowSpec

NOW = datetime(2025, 1, 1, tzinfo=UTC)
SERVER_URL = os.environ.get("FLOWWEAVER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def new_schema_name() -> str:
    """Return a schema name no other test uses."""
    return f"fwtest_{uuid.uuid4().hex}"


def store_url(schema: str, *, port: int | None = None, **options: object) -> str:
    """Return the store URL of ``schema`` on the test server (or on ``port`` of loopback)."""
    base = SERVER_URL
    if port is not None:
        base = f"postgresql://postgres@127.0.0.1:{port}/test"
    query = "&".join(f"{k}={v}" for k, v in {"schema": schema, **options}.items())
    return f"{base}?{query}"


def drop_schema(schema: str) -> None:
    """Drop the schema and everything in it."""
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(SQL("DROP SCHEMA IF EXISTS {0} CASCADE").format(Identifier(schema)))


def terminate_backend(pid: int) -> None:
    """End one server session, as a dropped connection or a server restart would."""
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


Mode = Literal["forward", "hang"]


class TcpProxy:
    """A loopback TCP proxy to the test server, to take "the server" down and up again.

    ``stop`` closes the port and every connection through it (a server that went away);
    ``start`` opens the same port again (the server is back). In ``hang`` mode it accepts
    connections and never forwards a byte (a server that accepts but never answers).
    """

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.target = target
        self.port = 0
        self.mode: Mode = "forward"
        self._thread: threading.Thread | None = None
        self._stop_sender: socket.socket | None = None

    def start(self, mode: Mode = "forward") -> None:
        """Listen (on the same port as before, if any) and serve in the background."""
        self.mode = mode
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        stop_receiver, self._stop_sender = socket.socketpair()
        self._thread = threading.Thread(
            target=self._serve, args=(listener, stop_receiver), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close the port and every connection through it; return when all are closed."""
        if self._thread is None or self._stop_sender is None:
            return
        self._stop_sender.send(b"x")
        self._thread.join()
        self._stop_sender.close()
        self._thread = None

    def _serve(self, listener: socket.socket, stop_receiver: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ, None)
        selector.register(stop_receiver, selectors.EVENT_READ, None)
        peers: dict[socket.socket, socket.socket | None] = {}
        try:
            while True:
                for key, _ in selector.select():
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is stop_receiver:
                        return
                    if sock is listener:
                        client, _ = listener.accept()
                        if self.mode == "hang":
                            peers[client] = None
                            continue
                        upstream = socket.create_connection(self.target)
                        peers[client], peers[upstream] = upstream, client
                        selector.register(client, selectors.EVENT_READ, None)
                        selector.register(upstream, selectors.EVENT_READ, None)
                        continue
                    peer = peers.get(sock)
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if data and peer is not None:
                        peer.sendall(data)
                        continue
                    for end in (sock, peer):
                        if end is not None and end in peers:
                            selector.unregister(end)
                            peers.pop(end)
                            end.close()
        finally:
            for sock in peers:
                sock.close()
            selector.close()
            listener.close()
            stop_receiver.close()


def run_started(workflow_id: str = "wf", tasks: int = 3) -> RunStarted:
    """Return the first event of a run of a chain of ``tasks`` noop tasks."""
    spec = WorkflowSpec(
        id=workflow_id,
        tasks=tuple(
            TaskSpec(id=f"t{i}", handler="noop", dependencies=(f"t{i - 1}",) if i else ())
            for i in range(tasks)
        ),
    )
    return RunStarted(timestamp=NOW, workflow_id=workflow_id, workflow_version=1, definition=spec)


def task_scheduled(task: int = 0, attempt: int = 1) -> TaskScheduled:
    """Return a TaskScheduled event for task ``t<task>``."""
    return TaskScheduled(timestamp=NOW, task_id=f"t{task}", attempt=attempt)


def new_run_id() -> str:
    """Return a fresh run id."""
    return str(uuid.uuid4())
