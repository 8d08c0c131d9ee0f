"""Per-client request limits: a token bucket per principal, and a cap on its SSE streams.

A client is its principal (:func:`~flowweaver.api.principal.principal`, the token's name with
``serve --auth token``) or, for ``anonymous``, the peer address of its connection. The
``X-Forwarded-For`` header is not read: anyone can send it, so behind a reverse proxy every
anonymous client shares the proxy's address (limit them at the proxy, or give them tokens).

- ``--rate-limit N``: each client has a bucket of N tokens (the burst) refilled at N per
  second; a request takes one, and a request that finds none is answered 429 problem+json
  with ``Retry-After``, the whole seconds until a token is back, before its handler runs (so a
  refused POST stores nothing). ``/healthz`` and ``/readyz`` are not limited.
- ``--sse-per-client N``: each client may follow at most N SSE streams at once; one more is a
  429 problem+json with ``Retry-After``.

Both count refusals in ``flowweaver_http_requests_refused{reason}``. The buckets' memory is
bounded: at most :data:`MAX_CLIENTS` keys, least recently used first out, and a bucket idle
long enough to be full again is dropped, since a new bucket is the same.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web

from flowweaver.engine.operator import ANONYMOUS
from flowweaver.observability import metrics

from .errors import Handler, problem_response
from .principal import principal
from .server import HEALTH_PATHS

MAX_CLIENTS = 100_000
SSE_ROUTES = frozenset({"/events", "/events/{runId}"})


class TokenBuckets:
    """A token bucket per key: ``rate`` tokens at most, refilled at ``rate`` per second.

    :meth:`take` is O(1): a dict lookup, a move to the end of the recency order, and at most
    two idle buckets dropped from its front. Time comes from ``clock`` (monotonic).
    """

    __slots__ = ("_buckets", "_clock", "capacity", "max_keys", "rate")

    def __init__(
        self,
        rate: float,
        *,
        max_keys: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be above 0")
        self.rate = rate
        self.capacity = max(1.0, float(rate))
        self.max_keys = max_keys
        self._clock = clock
        # key -> [tokens, when they were counted]; least recently used first
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Take a token from ``key``'s bucket: return 0, or the seconds until one is there."""
        now = self._clock()
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            self._forget_idle(now)
            if len(buckets) >= self.max_keys:
                buckets.popitem(last=False)
            buckets[key] = [self.capacity - 1, now]
            return 0.0
        buckets.move_to_end(key)
        tokens = min(self.capacity, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1:
            bucket[0] = tokens - 1
            return 0.0
        bucket[0] = tokens
        return (1 - tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        """Drop up to two least recently used buckets that have filled up again."""
        buckets = self._buckets
        for _ in range(2):
            if not buckets:
                return
            key, (tokens, stamp) = next(iter(buckets.items()))
            if tokens + (now - stamp) * self.rate < self.capacity:
                return
            del buckets[key]


class Limits:
    """The limits of one app: its buckets and the SSE streams open per client."""

    def __init__(self, *, rate: float, sse_per_client: int, retry_ms: int) -> None:
        self.buckets = TokenBuckets(rate) if rate > 0 else None
        self.rate = rate
        self.sse_per_client = sse_per_client
        self.sse_retry_after = str(max(1, math.ceil(retry_ms / 1000)))
        self.streams: dict[str, int] = {}


LIMITS: web.AppKey[Limits] = web.AppKey("limits", Limits)


def client_key(request: web.Request) -> str:
    """Return whom ``request`` counts against: its principal, else its peer address."""
    who = principal(request)
    if who != ANONYMOUS:
        return "principal:" + who
    return "address:" + (request.remote or "")


def add_limits(app: web.Application, *, rate: float, sse_per_client: int, retry_ms: int) -> None:
    """Enforce ``--rate-limit`` and ``--sse-per-client`` on ``app`` (0 turns either off)."""
    if rate <= 0 and sse_per_client <= 0:
        return
    app[LIMITS] = Limits(rate=rate, sse_per_client=sse_per_client, retry_ms=retry_ms)
    app.middlewares.append(limits_middleware)


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a request past its client's rate, or an SSE stream past its client's cap."""
    if request.path in HEALTH_PATHS:
        return await handler(request)
    limits = request.app[LIMITS]
    key = client_key(request)
    buckets = limits.buckets
    if buckets is not None:
        wait = buckets.take(key)
        if wait > 0:
            metrics.http_refused.labels(reason="rate_limit").inc()
            return _too_many(
                request,
                "rate-limited",
                f"more than {limits.rate:g} requests per second; retry later",
                str(max(1, math.ceil(wait))),
            )
    cap = limits.sse_per_client
    if cap <= 0 or request.match_info.route.resource is None:
        return await handler(request)
    if request.match_info.route.resource.canonical not in SSE_ROUTES:
        return await handler(request)
    streams = limits.streams
    open_now = streams.get(key, 0)
    if open_now >= cap:
        metrics.http_refused.labels(reason="sse_per_client").inc()
        return _too_many(
            request,
            "too-many-streams",
            f"you follow {open_now} streams already, the most one client may; close one and retry",
            limits.sse_retry_after,
        )
    streams[key] = open_now + 1
    try:
        return await handler(request)
    finally:
        left = streams.get(key, 1) - 1
        if left > 0:
            streams[key] = left
        else:
            streams.pop(key, None)


def _too_many(request: web.Request, slug: str, detail: str, retry_after: str) -> web.Response:
    return problem_response(
        429, slug, detail, instance=request.path, headers={"Retry-After": retry_after}
    )
