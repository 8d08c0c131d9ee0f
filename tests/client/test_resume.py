"""Exactly-once event streams: the server is killed (SIGKILL) again and again while a long
run emits events, and restarted on the same store and port; the client's ``events()`` and
``log_events()`` still yield every event once, in order."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from flowweaver.client import AsyncClient, Client, Event
from tests.client.support import CHAIN, chain, free_port
from tests.serve_process import ServeProcess

KILLS = 6
TASKS = 40
WAIT = 60.0


class Reader(threading.Thread):
    """Reads a stream to its end in a thread; ``reached(n)`` waits for its n-th event."""

    def __init__(self, client: Client, run_id: str | None) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.run_id = run_id
        self.seen: list[Event] = []
        self.error: BaseException | None = None
        self._progress = threading.Condition()

    def run(self) -> None:
        try:
            if self.run_id is not None:
                stream = self.client.events(self.run_id)
            else:
                stream = self.client.log_events()
            for event in stream:
                with self._progress:
                    self.seen.append(event)
                    self._progress.notify_all()
                if self.run_id is None and event.is_terminal:
                    break
        except BaseException as e:
            self.error = e
        finally:
            with self._progress:
                self._progress.notify_all()

    def completed(self) -> int:
        return sum(e.type == "TaskCompleted" for e in self.seen)

    def reached(self, count: int) -> None:
        """Wait until ``count`` tasks completed: a kill then lands on a later task each time."""
        with self._progress:
            ok = self._progress.wait_for(
                lambda: self.completed() >= count or not self.is_alive(), timeout=WAIT
            )
        assert ok, f"the stream stalled at {len(self.seen)} events"
        assert self.error is None, self.error


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_streams_survive_repeated_kill_9_of_the_server(tmp_path: Path) -> None:
    """Six SIGKILLs of the server mid-run, each followed by a restart on the same SQLite file
    and port: the run's stream yields versions 1..N exactly, and the audit feed the same
    events in log order, none twice."""
    store = f"sqlite:///{tmp_path / 'store.db'}"
    port = free_port()

    def start() -> ServeProcess:
        server = ServeProcess(store, tmp_path, args=("--port", str(port)))
        server.wait_started()
        assert server.port == port
        return server

    server = start()
    try:
        client = Client(f"http://127.0.0.1:{port}", reconnect_for=WAIT, stream_timeout=20)
        client.register_workflow(chain(TASKS, 0.1))
        run = client.start_run(CHAIN)
        run_reader = Reader(client, run.id)
        log_client = Client(client.url, reconnect_for=WAIT, stream_timeout=20)
        log_reader = Reader(log_client, None)
        run_reader.start()
        log_reader.start()
        for _ in range(KILLS):
            # Three tasks completed since the last restart, as the reader saw them: the run
            # moved on, so no task is interrupted by more than one kill (3 fail it for good).
            run_reader.reached(run_reader.completed() + 3)
            server.kill()
            server.close()
            server = start()
        run_reader.join(WAIT)
        log_reader.join(WAIT)
        assert not run_reader.is_alive()
        assert not log_reader.is_alive()
        assert run_reader.error is None, run_reader.error
        assert log_reader.error is None, log_reader.error
        final = client.get_run(run.id)
        trail = [(e.offset, e.type, e.data.get("taskId")) for e in run_reader.seen]
        assert final.status == "completed", trail
        offsets = [e.offset for e in run_reader.seen]
        assert offsets == list(range(1, final.version + 1))
        assert run_reader.seen[-1].type == "RunCompleted"
        # The interruptions are in the log: the kills did land mid-run.
        interrupted = [
            e for e in run_reader.seen if e.data.get("error", {}).get("type") == "Interrupted"
        ]
        assert interrupted
        positions = [e.offset for e in log_reader.seen]
        assert positions == sorted(set(positions))
        assert [e.version for e in log_reader.seen] == offsets
        stored = client.history(run.id, limit=1000).events
        assert [e.data for e in stored] == [e.data for e in run_reader.seen]
        client.close()
        log_client.close()
    finally:
        server.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_async_stream_survives_kill_9_of_the_server(tmp_path: Path) -> None:
    """AsyncClient.events() across two SIGKILLs and restarts: versions 1..N, once each."""
    store = f"sqlite:///{tmp_path / 'store.db'}"
    port = free_port()
    servers = [ServeProcess(store, tmp_path, args=("--port", str(port)))]
    servers[0].wait_started()

    async def follow() -> list[int]:
        offsets: list[int] = []
        completed = 0
        kills = 0
        async with AsyncClient(f"http://127.0.0.1:{port}", reconnect_for=WAIT) as client:
            await client.register_workflow(chain(12, 0.1))
            run = await client.start_run(CHAIN)
            async for event in client.events(run.id):
                offsets.append(event.offset)
                completed += event.type == "TaskCompleted"
                if kills < 2 and completed >= 3 * (kills + 1):
                    kills += 1
                    servers[-1].kill()
                    # Start the next server off the loop: the stream reconnects to it.
                    server = ServeProcess(store, tmp_path, args=("--port", str(port)))
                    servers.append(server)
                    await asyncio.to_thread(server.wait_started)
            assert (await client.get_run(run.id)).status == "completed"
        assert kills == 2
        return offsets

    try:
        offsets = asyncio.run(follow())
    finally:
        for server in servers:
            server.close()
    assert offsets == list(range(1, len(offsets) + 1))
