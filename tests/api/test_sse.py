"""SSE against a live server: framing, resume, the seam between replay and live, limits."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec
import pytest

from flowweaver.api.app import HUB
from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.api.sse import event_json
from flowweaver.domain import run as commands
from flowweaver.domain.run import RunState
from flowweaver.domain.spec import workflow_from_builtins
from flowweaver.errors import StoreError
from flowweaver.observability import metrics
from flowweaver.ports import Append, RecordedEvent
from flowweaver.store import MemoryEventStore

from .conftest import (
    Gates,
    LiveServer,
    Message,
    collect,
    events_of,
    example_registry,
    run,
    sse_messages,
    wait_finished,
)
from .raw_http import raw_get, read_to_end, read_until

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class ManualRun:
    """Writes a chain run's events straight to a store, a step at a time (no engine)."""

    def __init__(self, store: Any, tasks: int = 20) -> None:
        self.store = store
        self.run_id = str(uuid.uuid4())
        spec = workflow_from_builtins(
            {
                "id": "manual",
                "tasks": [
                    {"id": f"t{i}", "handler": "noop", "dependencies": [f"t{i - 1}"] if i else []}
                    for i in range(tasks)
                ],
            }
        )
        self.tasks = [t.id for t in spec.tasks]
        self.state: RunState
        self.state, events = commands.start_run(self.run_id, spec, 1, {}, NOW)
        self._append(events)
        self._next = 0
        self._started = False
        self.lock = threading.Lock()

    @property
    def version(self) -> int:
        return self.state.version

    @property
    def ended(self) -> bool:
        return self.state.is_terminal

    def _append(self, events: list[Any]) -> None:
        before = self.state.version - len(events)
        self.store.append([Append(self.run_id, before, events)])

    def step(self) -> int:
        """Append the next one or two events; return the version reached."""
        with self.lock:
            task = self.tasks[self._next]
            if not self._started:
                events = commands.record_started(self.state, task, 1, "w", NOW)
                self._started = True
            else:
                events = commands.record_completed(self.state, task, 1, {}, 0.1, NOW)
                self._started = False
                self._next += 1
            self._append(events)
            return self.version

    def finish(self) -> None:
        while not self.ended:
            self.step()


class HookedStore(MemoryEventStore):
    """A memory store that runs a hook before or after the n-th read of a run by the API."""

    def __init__(self) -> None:
        super().__init__()
        self.hooks: dict[tuple[str, int], tuple[str, Callable[[], None]]] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def _count(self, key: str) -> int | None:
        if not threading.current_thread().name.startswith("flowweaver-api"):
            return None
        with self._lock:
            self.calls[key] = self.calls.get(key, 0) + 1
            return self.calls[key]

    def _hooked(self, key: str, read: Callable[[], list[RecordedEvent]]) -> list[RecordedEvent]:
        n = self._count(key)
        hook = self.hooks.get((key, n)) if n is not None else None
        if hook and hook[0] == "before":
            hook[1]()
        rows = read()
        if hook and hook[0] == "after":
            hook[1]()
        return rows

    def read_run(self, run_id: str, **kw: Any) -> list[RecordedEvent]:
        return self._hooked(run_id, lambda: super(HookedStore, self).read_run(run_id, **kw))

    def read_log(self, **kw: Any) -> list[RecordedEvent]:
        return self._hooked("log", lambda: super(HookedStore, self).read_log(**kw))


async def _stream(session: aiohttp.ClientSession, url: str, **kw: Any) -> aiohttp.ClientResponse:
    response = await session.get(url, **kw)
    assert response.status == 200, await response.text()
    return response


def _versions(messages: list[Message]) -> list[int]:
    return [int(m.id or -1) for m in events_of(messages)]


def test_stream_framing(server: LiveServer) -> None:
    """retry first, then id/event/data per event in camelCase, no-cache; ends after terminal."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=EXAMPLE_WORKFLOW) as r:
                assert r.status == 201
            async with s.post(f"{server.url}/runs", json={"workflowId": "example-workflow"}) as r:
                run_id = (await r.json())["id"]
            response = await _stream(s, f"{server.url}/events/{run_id}")
            assert response.headers["Content-Type"].startswith("text/event-stream")
            assert response.headers["Cache-Control"] == "no-cache"
            messages = await collect(response)
            assert messages[0].retry == 3000
            assert messages[0].event is None
            events = events_of(messages)
            assert events[-1].event == "RunCompleted"
            names = [m.event for m in events]
            assert names[:2] == ["RunStarted", "TaskScheduled"]
            assert names.count("TaskCompleted") == 3
            for m in events:
                data = m.json()
                assert list(data)[:4] == ["type", "runId", "version", "timestamp"]
                assert data["type"] == m.event
                assert data["runId"] == run_id
                assert str(data["version"]) == m.id
            completed = [m.json() for m in events if m.event == "TaskCompleted"]
            assert completed[0]["taskId"] == "task1"
            assert completed[0]["attempt"] == 1
            assert completed[0]["output"] == {"data": {"rows": [1, 2, 3], "url": None}}
            assert response.content.at_eof()
            # The same stream under /runs/{id}/events with Accept: text/event-stream.
            again = await _stream(
                s,
                f"{server.url}/runs/{run_id}/events",
                headers={"Accept": "text/event-stream"},
            )
            assert [m.data for m in events_of(await collect(again))] == [m.data for m in events]

    run(main())


def test_resume_with_last_event_id_and_after(server: LiveServer) -> None:
    """Last-Event-ID or ?after=N replays only later events; the header wins over the query."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=EXAMPLE_WORKFLOW):
                pass
            async with s.post(f"{server.url}/runs", json={"workflowId": "example-workflow"}) as r:
                run_id = (await r.json())["id"]
            full = await wait_finished(s, server.url, run_id)
            last = len(full)
            by_query = await collect(await _stream(s, f"{server.url}/events/{run_id}?after=3"))
            assert _versions(by_query) == list(range(4, last + 1))
            by_header = await collect(
                await _stream(
                    s, f"{server.url}/events/{run_id}?after=1", headers={"Last-Event-ID": "5"}
                )
            )
            assert _versions(by_header) == list(range(6, last + 1))
            assert [m.data for m in events_of(by_header)] == [m.data for m in full[5:]]
            # Resuming after the terminal event: nothing more, the stream ends at once.
            done = await collect(
                await _stream(
                    s, f"{server.url}/events/{run_id}", headers={"Last-Event-ID": str(last)}
                )
            )
            assert events_of(done) == []
            assert done[0].retry == 3000

    run(main())


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("?after=abc", {}, 400),
        ("?after=-1", {}, 400),
        ("?after=99999999999999999999", {}, 400),
        ("?after=1.5", {}, 400),
        ("", {"Last-Event-ID": "x1"}, 400),
        ("?after=500", {}, 400),
    ],
)
def test_bad_offsets_are_400_before_the_stream(
    server: LiveServer, query: str, headers: dict[str, str], status: int
) -> None:
    """An offset that is not a number, or beyond the run's end, is a 400 problem, not a stream."""
    manual = ManualRun(server.store, tasks=1)

    async def main() -> None:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{server.url}/events/{manual.run_id}{query}", headers=headers) as r,
        ):
            assert r.status == status
            assert r.headers["Content-Type"].startswith("application/problem+json")
            body = await r.json(content_type=None)
            assert body["status"] == status

    run(main())


def test_unknown_runs_are_404_before_the_stream(server: LiveServer) -> None:
    """A run that does not exist (or an id that is not a UUID) is a 404 problem."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            for path in (
                f"/events/{uuid.uuid4()}",
                f"/events/{uuid.uuid4()}?after=3",
                "/events/not-a-run",
                f"/runs/{uuid.uuid4()}/events",
            ):
                async with s.get(
                    f"{server.url}{path}", headers={"Accept": "text/event-stream"}
                ) as r:
                    assert r.status == 404, path
                    assert (await r.json(content_type=None))["status"] == 404

    run(main())


@pytest.mark.parametrize(
    ("warm", "when", "call"),
    [
        # A parked tailer: replay, subscribe, read again, follow.
        (False, "after", 1),  # appended between the replay and the subscription
        (False, "before", 2),  # appended after subscribing, before the second read: twice
        (False, "after", 2),  # appended after the second read: live only
        # A running tailer: subscribe first, then one read, then follow.
        (True, "before", 1),  # appended after subscribing, before the read: seen twice
        (True, "after", 1),  # appended after the read: live only
    ],
)
def test_no_gap_no_duplicate_at_the_seam(servers: Any, warm: bool, when: str, call: int) -> None:
    """Events appended at each point of the switch from replay to live arrive once, in order."""
    store = HookedStore()
    server = servers(store=store)
    if warm:
        # Follow another run to its end: the tailer keeps running (it lingers) afterwards.
        other = ManualRun(store, tasks=1)

        async def follow_other() -> None:
            async with aiohttp.ClientSession() as s:
                response = await _stream(s, f"{server.url}/events/{other.run_id}")
                async for m in sse_messages(response):
                    if m.event == "TaskScheduled":
                        await asyncio.to_thread(other.finish)

        run(follow_other())
        assert not server.call(lambda: server.app[HUB]._parked)  # type: ignore[index]
    manual = ManualRun(store, tasks=10)
    for _ in range(3):
        manual.step()
    hooked = threading.Event()

    def hook() -> None:
        for _ in range(3):
            manual.step()
        hooked.set()

    store.hooks[(manual.run_id, call)] = (when, hook)

    async def main() -> list[Message]:
        async with aiohttp.ClientSession() as s:
            response = await _stream(s, f"{server.url}/events/{manual.run_id}?after=2")
            seen: list[Message] = []
            async for message in sse_messages(response):
                seen.append(message)
                if (
                    hooked.is_set()
                    and message.id is not None
                    and int(message.id) == manual.version
                    and not manual.ended
                ):
                    # Everything written so far arrived: write the rest, live.
                    await asyncio.to_thread(manual.finish)
            return seen

    messages = run(main())
    assert _versions(messages) == list(range(3, manual.version + 1))
    assert events_of(messages)[-1].event == "RunCompleted"


def test_global_feed_seam(servers: Any) -> None:
    """The global feed resumes by log position with no gap or duplicate at the seam."""
    store = HookedStore()
    server = servers(store=store)
    first = ManualRun(store, tasks=3)
    second = ManualRun(store, tasks=3)
    first.step()
    start = store.max_position()
    second.step()
    # Between the replay and the subscription, both runs move on.
    store.hooks[("log", 1)] = ("after", lambda: (first.step(), second.step()))
    store.hooks[("log", 2)] = ("before", lambda: (first.step(), second.step()))

    async def main() -> list[Message]:
        async with aiohttp.ClientSession() as s:
            response = await _stream(
                s, f"{server.url}/events", headers={"Last-Event-ID": str(start)}
            )
            seen: list[Message] = []
            async for message in sse_messages(response):
                seen.append(message)
                if message.id is not None and int(message.id) == store.max_position():
                    if first.ended and second.ended:
                        break
                    await asyncio.to_thread(lambda: (first.finish(), second.finish()))
            response.close()
            return seen

    messages = events_of(run(main()))
    positions = [int(m.id or 0) for m in messages]
    expected = [r.position for r in store.read_log(after=start, limit=1000)]
    assert positions == expected
    by_run: dict[str, list[int]] = {}
    for m in messages:
        data = m.json()
        by_run.setdefault(data["runId"], []).append(data["version"])
    assert by_run[first.run_id] == list(range(by_run[first.run_id][0], first.version + 1))
    assert by_run[second.run_id] == list(range(by_run[second.run_id][0], second.version + 1))


def test_global_feed_offsets(server: LiveServer) -> None:
    """The global feed refuses a bad offset or one past the end of the log with a 400."""
    ManualRun(server.store, tasks=1)
    top = server.store.max_position()

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            for query in ("?after=x", f"?after={top + 1}"):
                async with s.get(f"{server.url}/events{query}") as r:
                    assert r.status == 400
            response = await _stream(s, f"{server.url}/events?after=0")
            messages = await collect(response, until=lambda m: m.id == str(top))
            response.close()
            assert [int(m.id or 0) for m in events_of(messages)][-1] == top
            assert messages[0].retry == 3000

    run(main())


def test_many_clients_join_while_the_run_appends(sqlite_server: LiveServer) -> None:
    """Clients joining at many points of a live run each get every later event exactly once."""
    server = sqlite_server
    chain = {
        "id": "long",
        "tasks": [
            {"id": f"t{i}", "handler": "noop", "dependencies": [f"t{i - 1}"] if i else []}
            for i in range(150)
        ],
    }

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=chain) as r:
                assert r.status == 201
            async with s.post(f"{server.url}/runs", json={"workflowId": "long"}) as r:
                run_id = (await r.json())["id"]
            reached: dict[int, asyncio.Event] = {k: asyncio.Event() for k in range(0, 440, 40)}

            async def leader() -> list[int]:
                response = await _stream(s, f"{server.url}/events/{run_id}")
                versions = []
                async for m in sse_messages(response):
                    if m.id is None:
                        continue
                    versions.append(int(m.id))
                    for k, event in reached.items():
                        if int(m.id) >= k:
                            event.set()
                for event in reached.values():
                    event.set()
                return versions

            async def joiner(k: int, header: bool) -> tuple[int, list[int]]:
                await reached[k].wait()
                after = max(0, k - 5)
                if header:
                    response = await _stream(
                        s, f"{server.url}/events/{run_id}", headers={"Last-Event-ID": str(after)}
                    )
                else:
                    response = await _stream(s, f"{server.url}/events/{run_id}?after={after}")
                return after, _versions(await collect(response))

            results = await asyncio.gather(
                leader(), *(joiner(k, i % 2 == 0) for i, k in enumerate(reached))
            )
            full = results[0]
            assert full == list(range(1, len(full) + 1))
            for after, versions in results[1:]:
                assert versions == list(range(after + 1, len(full) + 1)), after

    run(main())


def test_heartbeat_while_idle(servers: Any, gates: Gates) -> None:
    """An idle stream gets `: keep-alive` comments at the configured interval, then continues."""
    server = servers(handlers=example_registry(gates), heartbeat=0.05)
    workflow = {"id": "held", "tasks": [{"id": "t", "handler": "gate", "inputs": {"gate": "hb"}}]}

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=workflow):
                pass
            async with s.post(f"{server.url}/runs", json={"workflowId": "held"}) as r:
                run_id = (await r.json())["id"]
            response = await _stream(s, f"{server.url}/events/{run_id}")
            beats = 0
            events = []
            async for m in sse_messages(response):
                if m.comment == "keep-alive":
                    beats += 1
                    if beats == 3:
                        gates.open("hb")
                elif m.event is not None:
                    events.append(m.event)
            assert beats >= 3
            assert events[-1] == "RunCompleted"
            assert "TaskCompleted" in events

    run(main())


async def _live(response: aiohttp.ClientResponse) -> list[Message]:
    """Read until the first heartbeat: from then on the stream follows live events."""
    return await collect(response, until=lambda m: m.comment == "keep-alive")


def test_slow_subscriber_is_dropped_and_others_are_not_held(servers: Any, gates: Gates) -> None:
    """A client that stops reading is dropped with `event: error`; a reading client gets all."""
    # Small tail pages: the flood reaches subscribers over many rounds, so a backlog builds.
    server = servers(
        handlers=example_registry(gates),
        sse_buffer=4 * 1024 * 1024,  # about 200 of its events (the run has 300 large ones)
        heartbeat=0.05,
        tail_page=10,
    )
    blob = "x" * 20_000
    workflow = {
        "id": "wide",
        "tasks": [
            {"id": "start", "handler": "gate", "inputs": {"gate": "go"}},
            *(
                {
                    "id": f"t{i}",
                    "handler": "echo",
                    "dependencies": ["start"],
                    "inputs": {"blob": "$.params.blob"},
                }
                for i in range(150)
            ),
        ],
    }
    dropped_before = metrics.sse_dropped._value.get()

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=workflow) as r:
                assert r.status == 201
            async with s.post(
                f"{server.url}/runs", json={"workflowId": "wide", "parameters": {"blob": blob}}
            ) as r:
                run_id = (await r.json())["id"]
            slow = raw_get(server, f"/events/{run_id}", rcvbuf=4096)
            # Once a heartbeat arrives, the slow stream follows live events; then it stops
            # reading while the run floods it.
            head = await asyncio.to_thread(read_until, slow, b": keep-alive")
            fast = await _stream(s, f"{server.url}/events/{run_id}")
            first = await _live(fast)
            gates.open("go")
            rest = await collect(fast)
            events = events_of(first + rest)
            assert events[-1].event == "RunCompleted"
            assert _versions(first + rest) == list(range(1, len(events) + 1))
            received = head + await asyncio.to_thread(read_to_end, slow)
            slow.close()
            assert b"event: error" in received
            assert b"SubscriberOverflow" in received
            assert b"event: RunCompleted" not in received
            assert server.call(lambda: server.app[HUB].subscribers) == 0  # type: ignore[index]

    run(main())
    assert metrics.sse_dropped._value.get() == dropped_before + 1


def test_a_client_that_never_reads_is_cut_after_the_write_timeout(servers: Any) -> None:
    """A stream whose writes block longer than the write timeout is closed by the server."""
    server = servers(sse_write_timeout=0.3)
    blob = "y" * 200_000
    workflow = {
        "id": "big",
        "tasks": [
            {"id": f"t{i}", "handler": "echo", "inputs": {"b": "$.params.blob"}} for i in range(40)
        ],
    }

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=workflow):
                pass
            async with s.post(
                f"{server.url}/runs", json={"workflowId": "big", "parameters": {"blob": blob}}
            ) as r:
                run_id = (await r.json())["id"]
            await wait_finished(s, server.url, run_id)
        stuck = raw_get(server, f"/events/{run_id}?after=0", rcvbuf=4096)
        # The server answers (ends) the request without the client reading a byte.
        logged = await asyncio.to_thread(server.wait_logged, f"/events/{run_id}?after=0")
        assert logged.status == 200
        received = await asyncio.to_thread(read_to_end, stuck)
        stuck.close()
        assert b"RunCompleted" not in received

    run(main())


def test_one_tailer_feeds_every_subscriber(servers: Any, gates: Gates) -> None:
    """Many streams on one run share the process's single tailer task and all get every event."""
    server = servers(handlers=example_registry(gates), heartbeat=0.05)
    workflow = {"id": "held", "tasks": [{"id": "t", "handler": "gate", "inputs": {"gate": "many"}}]}

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=workflow):
                pass
            async with s.post(f"{server.url}/runs", json={"workflowId": "held"}) as r:
                run_id = (await r.json())["id"]
            responses = [await _stream(s, f"{server.url}/events/{run_id}") for _ in range(20)]
            heads = await asyncio.gather(*(_live(r) for r in responses))

            def tailers() -> int:
                return sum(
                    1 for t in asyncio.all_tasks() if t.get_name() == "flowweaver-sse-tailer"
                )

            assert server.call(lambda: server.app[HUB].subscribers) == 20  # type: ignore[index]
            assert server.call(tailers) == 1
            gates.open("many")
            tails = await asyncio.gather(*(collect(r) for r in responses))
            for head, tail in zip(heads, tails, strict=True):
                assert _versions(head + tail) == list(range(1, len(events_of(head + tail)) + 1))
                assert events_of(tail)[-1].event == "RunCompleted"

    run(main())


def test_shutdown_ends_open_streams(servers: Any, gates: Gates) -> None:
    """Stopping the server ends a following stream instead of waiting for the run."""
    server = servers(handlers=example_registry(gates), heartbeat=0.05)
    workflow = {
        "id": "held",
        "tasks": [{"id": "t", "handler": "gate", "inputs": {"gate": "never"}}],
    }

    async def main() -> list[Message]:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=workflow):
                pass
            async with s.post(f"{server.url}/runs", json={"workflowId": "held"}) as r:
                run_id = (await r.json())["id"]
            response = await _stream(s, f"{server.url}/events/{run_id}")
            head = await _live(response)
            stopping = asyncio.create_task(asyncio.to_thread(server.stop))
            try:
                tail = await collect(response)
            except aiohttp.ClientPayloadError:
                tail = []
            await stopping
            return head + tail

    messages = run(main())
    assert events_of(messages)[-1].event == "TaskStarted"
    assert any(m.comment == "server shutting down" for m in messages)
    gates.open("never")


def test_event_json_falls_back_for_reformatted_json() -> None:
    """A store that reformats stored JSON (spaces, key order) still gets the wire shape."""
    raw = b'{"timestamp": "2026-01-01T00:00:00Z", "type": "TaskStarted", "taskId": "a"}'
    out = msgspec.json.decode(event_json(RecordedEvent("r1", 7, 9, "TaskStarted", raw)))
    assert list(out) == ["type", "runId", "version", "timestamp", "taskId"]
    assert out["version"] == 7


def test_a_store_failure_mid_stream_ends_it_with_an_error_event(servers: Any) -> None:
    """When the store fails after the stream started, it ends with `event: error`, not a hang."""

    class FailingStore(MemoryEventStore):
        reads = 0

        def read_run(self, run_id: str, **kw: Any) -> list[RecordedEvent]:
            if threading.current_thread().name.startswith("flowweaver-api"):
                FailingStore.reads += 1
                if FailingStore.reads == 2:  # the read after subscribing
                    raise StoreError("disk gone")
            return super().read_run(run_id, **kw)

    store = FailingStore()
    server = servers(store=store)
    manual = ManualRun(store, tasks=2)

    async def main() -> list[Message]:
        async with aiohttp.ClientSession() as s:
            return await collect(await _stream(s, f"{server.url}/events/{manual.run_id}"))

    messages = run(main())
    assert _versions(messages[:-1]) == [1, 2]
    assert messages[-1].event == "error"
    assert messages[-1].json()["type"] == "StoreUnavailable"
