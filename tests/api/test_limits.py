"""Per-client limits: ``--rate-limit`` token buckets and ``--sse-per-client``, on a real server.

The buckets' clock is frozen in the live server (its monotonic clock replaced by a value the
test moves), so the number of requests a burst gets through is exact, not a guess about how
fast the loop answers. Two client addresses, 127.0.0.1 and 127.0.0.2, both reach loopback on
Linux: each has its own bucket and its own streams.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.api.limits import LIMITS, MAX_CLIENTS, Limits, TokenBuckets
from flowweaver.cli import build_parser, main
from flowweaver.observability import metrics

from .conftest import LiveServer, Servers, run

PROBLEM = "application/problem+json"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _refused(reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "flowweaver_http_requests_refused_total", {"reason": reason}
    )
    return value or 0.0


def _limits(server: LiveServer) -> Limits:
    assert server.app is not None
    return server.app[LIMITS]


def _freeze(server: LiveServer) -> Clock:
    clock = Clock()
    buckets = _limits(server).buckets
    assert buckets is not None

    def swap() -> None:
        buckets._clock = clock

    server.call(swap)
    return clock


def _wait_streams(server: LiveServer, key: str, count: int) -> None:
    """Return once ``key`` has ``count`` streams open (each server call is a round trip)."""
    streams = _limits(server).streams
    deadline = time.monotonic() + 10
    while server.call(lambda: streams.get(key, 0)) != count:
        assert time.monotonic() < deadline, f"{key} never had {count} streams"


def _session(address: str = "127.0.0.1", connections: int = 20) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, local_addr=(address, 0))
    return aiohttp.ClientSession(connector=connector)


# --- the buckets alone ------------------------------------------------------------------------


def test_a_bucket_holds_a_burst_of_n_and_refills_at_n_per_second() -> None:
    """N requests pass at once, the next waits 1/N s; half a second later N/2 more pass."""
    clock = Clock()
    buckets = TokenBuckets(10, clock=clock)
    assert [buckets.take("a") for _ in range(10)] == [0.0] * 10
    assert buckets.take("a") == pytest.approx(0.1)
    assert buckets.take("b") == 0.0  # another key, another bucket
    clock.now += 0.5
    assert [buckets.take("a") for _ in range(5)] == [0.0] * 5
    assert buckets.take("a") == pytest.approx(0.1)
    clock.now += 60  # refills to the burst, never past it
    assert sum(buckets.take("a") == 0.0 for _ in range(20)) == 10
    with pytest.raises(ValueError, match="above 0"):
        TokenBuckets(0)


def test_buckets_are_bounded_and_idle_ones_are_dropped() -> None:
    """At most max_keys buckets (least recently used out); a full idle bucket is forgotten."""
    clock = Clock()
    buckets = TokenBuckets(2, max_keys=3, clock=clock)
    for key in "abcd":
        buckets.take(key)
    assert len(buckets) == 3  # "a" went first
    clock.now += 10  # every bucket is full again: new keys drop them, two at a time
    buckets.take("e")
    assert len(buckets) <= 2
    buckets.take("f")
    assert len(buckets) <= 3
    assert TokenBuckets(1).max_keys == MAX_CLIENTS


# --- on a live server -------------------------------------------------------------------------


def test_a_burst_of_1000_posts_gets_n_through_and_429s_that_store_nothing(
    servers: Servers,
) -> None:
    """With --rate-limit 50 and the clock still, 50 of 1,000 POST /runs are stored; 950 get a
    429 problem+json with Retry-After 1, counted in the metric; health checks still pass."""
    server = servers(rate_limit=50)
    clock = _freeze(server)
    before = _refused("rate_limit")

    async def main() -> tuple[list[int], list[Any]]:
        async with _session() as s:
            async with s.post(f"{server.url}/workflows", json=EXAMPLE_WORKFLOW) as r:
                assert r.status == 201

            async def post(i: int) -> tuple[int, Any]:
                body = {"workflowId": "example-workflow", "parameters": {"i": i}}
                async with s.post(f"{server.url}/runs", json=body) as r:
                    if r.status == 429:
                        assert r.headers["Content-Type"].startswith(PROBLEM)
                        assert r.headers["Retry-After"] == "1"
                        problem = await r.json(content_type=None)
                        assert problem["status"] == 429
                        assert problem["type"] == "urn:flowweaver:problem:rate-limited"
                    return r.status, await r.read()

            answers = await asyncio.gather(*(post(i) for i in range(1000)))
            statuses = [status for status, _ in answers]
            async with s.get(f"{server.url}/healthz") as r:
                assert r.status == 200
            async with s.get(f"{server.url}/readyz") as r:
                assert r.status == 200
            async with s.get(f"{server.url}/runs") as r:
                assert r.status == 429
            clock.now += 0.1  # five tokens back
            more = []
            for _ in range(6):
                async with s.get(f"{server.url}/runs?limit=1000") as r:
                    more.append((r.status, await r.json(content_type=None)))
            return statuses, more

    statuses, more = run(main())
    # The workflow's POST took one token of the 50.
    assert statuses.count(201) == 49
    assert statuses.count(429) == 951
    assert _refused("rate_limit") - before == 951 + 1 + 1
    assert [status for status, _ in more] == [200] * 5 + [429]
    assert len(more[0][1]["runs"]) == 49
    assert len(server.store.list_runs(limit=1000).runs) == 49


def test_each_client_address_has_its_own_bucket(servers: Servers) -> None:
    """127.0.0.1 spending its burst leaves 127.0.0.2's untouched; its Retry-After rounds up."""
    server = servers(rate_limit=3)
    clock = _freeze(server)

    async def burst(address: str) -> list[tuple[int, str | None]]:
        async with _session(address, connections=1) as s:
            out = []
            for _ in range(5):
                async with s.get(f"{server.url}/workflows") as r:
                    out.append((r.status, r.headers.get("Retry-After")))
            return out

    first = run(burst("127.0.0.1"))
    second = run(burst("127.0.0.2"))
    assert first == [(200, None)] * 3 + [(429, "1")] * 2
    assert second == first
    clock.now += 1 / 3
    assert run(burst("127.0.0.1"))[:2] == [(200, None), (429, "1")]
    assert len(_limits(server).buckets or ()) == 2


def test_a_slow_rate_says_how_many_seconds_to_wait(servers: Servers) -> None:
    """Retry-After is the whole seconds until a token is back: 1 at 1/s after a burst of 1."""
    server = servers(rate_limit=1)
    clock = _freeze(server)

    async def main() -> list[tuple[int, str | None]]:
        async with _session(connections=1) as s:
            out = []
            for step in (0.0, 0.0, 0.25, 0.75):
                clock.now += step
                async with s.get(f"{server.url}/workflows") as r:
                    out.append((r.status, r.headers.get("Retry-After")))
            return out

    assert run(main()) == [(200, None), (429, "1"), (429, "1"), (200, None)]


def test_sse_streams_per_client_are_capped(servers: Servers) -> None:
    """With --sse-per-client 2 a third stream from one address is a 429 problem; another
    address may still follow; closing a stream frees its place."""
    server = servers(sse_per_client=2)
    before = _refused("sse_per_client")

    async def main() -> None:
        async with _session() as s, _session("127.0.0.2") as other:
            first = await s.get(f"{server.url}/events")
            second = await s.get(f"{server.url}/events")
            assert (first.status, second.status) == (200, 200)
            async with s.get(f"{server.url}/events") as third:
                assert third.status == 429
                assert third.headers["Content-Type"].startswith(PROBLEM)
                assert third.headers["Retry-After"] == "3"  # the streams' retry interval
                problem = await third.json(content_type=None)
                assert problem["type"] == "urn:flowweaver:problem:too-many-streams"
            async with other.get(f"{server.url}/events") as elsewhere:
                assert elsewhere.status == 200
            first.close()
            await asyncio.to_thread(_wait_streams, server, "address:127.0.0.1", 1)
            async with s.get(f"{server.url}/events") as again:
                assert again.status == 200
            second.close()

    run(main())
    assert _refused("sse_per_client") - before == 1


def test_limits_are_off_by_default_and_the_flags_parse() -> None:
    """Both flags default to 0 (off) and take FLOWWEAVER_ variables; bad values exit 2."""
    serve = build_parser().parse_args(["serve", "--rate-limit", "20", "--sse-per-client", "4"])
    assert (serve.rate_limit, serve.sse_per_client) == (20, 4)
    default = build_parser().parse_args(["serve"])
    assert (default.rate_limit, default.sse_per_client) == (0, 0)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--rate-limit", "-3"])
    assert exit_info.value.code == 2


def test_the_variables_set_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """FLOWWEAVER_RATE_LIMIT and FLOWWEAVER_SSE_PER_CLIENT set the defaults; junk exits 2."""
    monkeypatch.setenv("FLOWWEAVER_RATE_LIMIT", "7")
    monkeypatch.setenv("FLOWWEAVER_SSE_PER_CLIENT", "3")
    serve = build_parser().parse_args(["serve"])
    assert (serve.rate_limit, serve.sse_per_client) == (7, 3)
    monkeypatch.setenv("FLOWWEAVER_RATE_LIMIT", "fast")
    assert main(["serve"]) == 2


def test_a_principal_has_one_bucket_and_one_stream_count_from_any_address(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a principal (as --auth token gives), its requests count together from every
    address; anonymous ones still count by address."""
    import flowweaver.api.limits as limits_module  # noqa: PLC0415 - patched for this test

    monkeypatch.setattr(
        limits_module,
        "principal",
        lambda request: request.headers.get("X-Test-Principal", "anonymous"),
    )
    server = servers(rate_limit=2)
    _freeze(server)
    streams = servers(sse_per_client=1)
    alice = {"X-Test-Principal": "alice"}

    async def main() -> list[int]:
        statuses = []
        async with _session() as one, _session("127.0.0.2") as two:
            for s in (one, two, one):
                async with s.get(f"{server.url}/workflows", headers=alice) as r:
                    statuses.append(r.status)
            async with two.get(f"{server.url}/workflows") as r:  # anonymous: its address
                statuses.append(r.status)
            async with one.get(f"{streams.url}/events", headers=alice) as first:
                statuses.append(first.status)
                async with two.get(f"{streams.url}/events", headers=alice) as second:
                    statuses.append(second.status)
                async with two.get(f"{streams.url}/events") as anonymous:
                    statuses.append(anonymous.status)
        return statuses

    assert run(main()) == [200, 200, 429, 200, 200, 429, 200]
    keys = server.call(lambda: list(_limits(server).buckets._buckets))  # type: ignore[union-attr]
    assert sorted(keys) == ["address:127.0.0.2", "principal:alice"]
