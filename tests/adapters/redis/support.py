"""Helpers for the Redis adapter's tests: a key prefix of their own, and cleaning it up."""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from typing import Any
from uuid import uuid4

import redis
from flowweaver_redis import RedisDatastore
from flowweaver_redis.datastore import OriginatorIDType

REDIS_URL = os.environ.get("FLOWWEAVER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Nothing listens on port 1 of the loopback: connections are refused at once.
UNREACHABLE_URL = "redis://127.0.0.1:1/0"


def new_key_prefix() -> str:
    """Return a key prefix no other test uses."""
    return f"fwtest:{uuid4().hex}"


def delete_keys(key_prefix: str) -> int:
    """Delete every key under the prefix and return how many there were."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{key_prefix}:*", count=1000):
            batch.append(key)
            if len(batch) == 500:
                deleted += client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += client.unlink(*batch)
        return deleted
    finally:
        client.close()


def list_keys(key_prefix: str) -> set[str]:
    """Return the names of the keys under the prefix, without the prefix."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return {
            key.removeprefix(key_prefix + ":")
            for key in client.scan_iter(match=f"{key_prefix}:*", count=1000)
        }
    finally:
        client.close()


class RedisKeys:
    """Gives each unittest test its own key prefix, and deletes its keys afterwards."""

    key_prefix: str
    originator_id_type: OriginatorIDType = "uuid"

    def setUp(self) -> None:
        self.key_prefix = new_key_prefix()
        self._datastores: list[RedisDatastore] = []
        super().setUp()  # type: ignore[misc]

    def tearDown(self) -> None:
        try:
            super().tearDown()  # type: ignore[misc]
        finally:
            for datastore in self._datastores:
                datastore.close()
            delete_keys(self.key_prefix)

    def new_datastore(self, **kwargs: Any) -> RedisDatastore:
        """Return a datastore on the test's prefix, closed after the test."""
        kwargs.setdefault("originator_id_type", self.originator_id_type)
        datastore = RedisDatastore(REDIS_URL, key_prefix=self.key_prefix, **kwargs)
        self._datastores.append(datastore)
        return datastore


class Relay:
    """A loopback TCP relay to the test server, to take "Redis" away while a store uses it.

    ``close`` shuts the listening port and every connection through it: afterwards the
    port refuses connections, as a stopped server's does.
    """

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 6379)) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stop_receiver, self._stop_sender = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="redis-relay", daemon=True)
        self._thread.start()

    def url(self, **query: object) -> str:
        """Return a store URL of database 0 through the relay."""
        items = "&".join(f"{k}={v}" for k, v in query.items())
        return f"redis://127.0.0.1:{self.port}/0" + (f"?{items}" if items else "")

    def close(self) -> None:
        """Close the port and every relayed connection; return when all are closed."""
        if self._thread.is_alive():
            self._stop_sender.send(b"x")
            self._thread.join()
        self._stop_sender.close()

    def _serve(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ)
        selector.register(self._stop_receiver, selectors.EVENT_READ)
        peers: dict[socket.socket, socket.socket] = {}
        try:
            while True:
                for key, _ in selector.select():
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._stop_receiver:
                        return
                    if sock is self._listener:
                        client, _ = self._listener.accept()
                        upstream = socket.create_connection(self._target)
                        peers[client], peers[upstream] = upstream, client
                        selector.register(client, selectors.EVENT_READ)
                        selector.register(upstream, selectors.EVENT_READ)
                        continue
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if data:
                        peers[sock].sendall(data)
                        continue
                    for end in (sock, peers[sock]):
                        selector.unregister(end)
                        peers.pop(end)
                        end.close()
        finally:
            for sock in peers:
                sock.close()
            selector.close()
            self._listener.close()
            self._stop_receiver.close()


def closed_port() -> int:
    """Return a loopback port that nothing listens on (it was free a moment ago)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def wait_blocked(client_name: str, timeout: float = 10.0) -> None:
    """Return once Redis reports a client of that name blocked (waiting for data)."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Each round trip paces the loop; no sleep is needed to observe the server.
            for found in client.client_list():
                if found["name"] == client_name and "b" in found["flags"]:
                    return
        raise AssertionError(f"no client {client_name} blocked within {timeout} s")
    finally:
        client.close()
