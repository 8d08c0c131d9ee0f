"""durability_warnings: which Redis persistence settings can lose acknowledged events."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.exceptions as rexc
from flowweaver_redis import durability_warnings
from flowweaver_redis.store import open_store

from flowweaver.ports import Checkpoints, DurabilityReport, EventStore, LeaseProvider
from tests.adapters.redis.support import REDIS_URL, Relay


class FakeConfig:
    """A client whose CONFIG GET answers from a dict (the edge of the unit), in RESP2 shape."""

    def __init__(self, decode: bool = False, **settings: str) -> None:
        self.settings = {name.replace("_", "-"): value for name, value in settings.items()}
        self.decode = decode

    def execute_command(self, *args: Any) -> Any:
        assert args[:2] == ("CONFIG", "GET")
        value = self.settings.get(args[2], "")
        pair = [args[2], value]
        return pair if self.decode else [p.encode() for p in pair]


class RefusingConfig:
    """A client where CONFIG is disabled, as on managed Redis services."""

    def __init__(self, aof_enabled: int | None) -> None:
        self.aof_enabled = aof_enabled

    def execute_command(self, *args: Any) -> Any:
        raise rexc.ResponseError("unknown command 'CONFIG', with args beginning with: 'GET'")

    def info(self, section: str) -> dict[str, Any]:
        assert section == "persistence"
        return {} if self.aof_enabled is None else {"aof_enabled": self.aof_enabled}


def warnings_for(**settings: str) -> list[str]:
    defaults = {
        "appendonly": "yes",
        "appendfsync": "always",
        "no_appendfsync_on_rewrite": "no",
        "save": "",
        "maxmemory_policy": "noeviction",
    }
    return durability_warnings(FakeConfig(**{**defaults, **settings}))  # type: ignore[arg-type]


@pytest.mark.redis
def test_the_test_server_without_persistence_is_warned_about() -> None:
    """The real test server runs with no persistence at all: that is a warning."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        warnings = durability_warnings(client)
    finally:
        client.close()
    assert len(warnings) == 1
    assert "persists nothing" in warnings[0]
    assert "appendfsync always" in warnings[0]


@pytest.mark.redis
def test_the_store_reports_its_server_settings(key_prefix: str) -> None:
    """RedisEventStore.durability_warnings asks its own server."""
    store = open_store(f"{REDIS_URL}?prefix={key_prefix}")
    try:
        [warning] = store.durability_warnings()
    finally:
        store.close()
    assert "persists nothing" in warning


@pytest.mark.redis
def test_the_store_turns_a_failure_to_ask_into_a_warning(key_prefix: str) -> None:
    """Where Redis went away, durability_warnings says so instead of raising."""
    relay = Relay()
    store = open_store(relay.url(prefix=key_prefix))
    try:
        relay.close()
        [warning] = store.durability_warnings()
    finally:
        store.close()
    assert warning.startswith("cannot read the Redis persistence settings")


def test_append_only_file_synced_on_every_write_loses_nothing() -> None:
    """appendonly yes, appendfsync always, noeviction: no warning."""
    assert warnings_for() == []


@pytest.mark.parametrize("policy", ["noeviction", "volatile-lru", "volatile-ttl", "volatile-lfu"])
def test_policies_that_never_evict_keys_without_a_ttl_are_safe(policy: str) -> None:
    """Recorded events have no TTL, so noeviction and volatile-* never delete them."""
    assert warnings_for(maxmemory_policy=policy) == []


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random"])
def test_policies_that_evict_any_key_are_warned_about(policy: str) -> None:
    """An allkeys-* policy deletes events when memory runs out."""
    [warning] = warnings_for(maxmemory_policy=policy)
    assert policy in warning
    assert "noeviction" in warning


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"appendonly": "no", "save": ""}, "persists nothing"),
        ({"appendonly": "no", "save": "3600 1 300 100"}, "only RDB snapshots"),
        ({"appendfsync": "everysec"}, "about the last second"),
        ({"appendfsync": "no"}, "operating system decides"),
        ({"no_appendfsync_on_rewrite": "yes"}, "does not fsync"),
    ],
)
def test_settings_that_lose_acknowledged_events_are_warned_about(
    settings: dict[str, str], words: str
) -> None:
    """No persistence, RDB only, and an append-only file not synced each write all warn."""
    [warning] = warnings_for(**settings)
    assert words in warning


def test_several_weaknesses_give_one_warning_each() -> None:
    """RDB only and an evicting policy: two warnings."""
    warnings = warnings_for(appendonly="no", save="900 1", maxmemory_policy="allkeys-lru")
    assert len(warnings) == 2


def test_decoded_replies_read_the_same() -> None:
    """A client that decodes replies to str gives the same answers."""
    client = FakeConfig(decode=True, appendonly="yes", appendfsync="everysec", save="")
    assert len(durability_warnings(client)) == 1  # type: ignore[arg-type]


@pytest.mark.parametrize(("aof", "words"), [(None, ""), (0, "is off"), (1, "is on")])
def test_config_disabled_gives_one_warning_that_nothing_could_be_checked(
    aof: int | None, words: str
) -> None:
    """Where CONFIG is refused, one warning says the settings are unknown (INFO helps a little)."""
    [warning] = durability_warnings(RefusingConfig(aof))  # type: ignore[arg-type]
    assert warning.startswith("cannot read the persistence settings")
    assert words in warning


@pytest.mark.redis
def test_the_store_is_an_event_store_that_reports_durability(key_prefix: str) -> None:
    """A Redis store is an EventStore and a DurabilityReport, with no other capability."""
    store = open_store(f"{REDIS_URL}?prefix={key_prefix}")
    try:
        assert isinstance(store, EventStore)
        assert isinstance(store, DurabilityReport)
        assert not isinstance(store, LeaseProvider)
        assert not isinstance(store, Checkpoints)
    finally:
        store.close()
