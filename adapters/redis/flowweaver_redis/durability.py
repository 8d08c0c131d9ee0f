"""What a Redis server's settings say about keeping acknowledged events: warnings, in words.

Redis acknowledges a write once it is in memory. Whether it survives a crash depends on the
server's persistence settings, which :func:`durability_warnings` reads with ``CONFIG GET``
(docs/redis.md explains each case).
"""

from __future__ import annotations

from typing import Any

import redis
import redis.exceptions as rexc

_PARAMETERS = (
    "appendonly",
    "appendfsync",
    "no-appendfsync-on-rewrite",
    "save",
    "maxmemory-policy",
)


def durability_warnings(client: redis.Redis) -> list[str]:
    """Return one sentence per way the server's settings can lose acknowledged events.

    An empty list means ``appendonly yes``, ``appendfsync always`` (with
    ``no-appendfsync-on-rewrite no``) and an eviction policy
    that never removes keys without a TTL (``noeviction`` or ``volatile-*``): nothing
    acknowledged is lost when Redis or its host crashes. Replication is not looked at: a
    fail-over to a replica can lose what had not reached it, whatever these settings say.

    Where ``CONFIG`` is disabled (managed Redis services rename or forbid it), the answer is
    one warning that the settings could not be checked, with what ``INFO persistence`` tells.

    Raises:
        redis.exceptions.ConnectionError: the server cannot be reached (and other
            redis-py errors that are not a refusal of ``CONFIG``).
    """
    try:
        settings = {name: _config_get(client, name) for name in _PARAMETERS}
    except rexc.ResponseError as e:  # unknown command, or NOPERM under an ACL
        return [_unchecked(client, e)]
    warnings: list[str] = []
    appendonly = settings["appendonly"].lower()
    appendfsync = settings["appendfsync"].lower()
    save = settings["save"].strip()
    if appendonly != "yes":
        if save:
            warnings.append(
                f"appendonly is no and only RDB snapshots are taken (save {save!r}): a crash "
                "or restart of Redis loses every event recorded since the last snapshot; "
                "set appendonly yes and appendfsync always"
            )
        else:
            warnings.append(
                "Redis persists nothing (appendonly no, save ''): a restart of Redis loses "
                "every recorded event; set appendonly yes and appendfsync always"
            )
    elif appendfsync == "everysec":
        warnings.append(
            "appendfsync is everysec: a power loss or operating system crash loses the "
            "events acknowledged in about the last second (a crash of Redis alone loses "
            "none); set appendfsync always to lose none"
        )
    elif appendfsync != "always":
        warnings.append(
            f"appendfsync is {appendfsync or 'unset'}: the operating system decides when the "
            "append-only file reaches the disk (about 30 s on Linux), so a power loss or "
            "operating system crash loses that much; set appendfsync always to lose none"
        )
    if appendonly == "yes" and settings["no-appendfsync-on-rewrite"].lower() == "yes":
        warnings.append(
            "no-appendfsync-on-rewrite is yes: while Redis rewrites its append-only file it "
            "does not fsync, so a power loss or operating system crash then loses up to about "
            "30 s of acknowledged events; set no-appendfsync-on-rewrite no"
        )
    policy = settings["maxmemory-policy"].lower()
    if policy and policy != "noeviction" and not policy.startswith("volatile-"):
        warnings.append(
            f"maxmemory-policy is {policy}: when Redis reaches maxmemory it deletes keys, "
            "recorded events among them; set maxmemory-policy noeviction"
        )
    return warnings


def _config_get(client: redis.Redis, name: str) -> str:
    # One parameter per call: Redis 6 takes a single pattern. Raw reply, any protocol:
    # RESP2 [name, value], RESP3 {name: value}; bytes unless the client decodes.
    reply: Any = client.execute_command("CONFIG", "GET", name)  # type: ignore[no-untyped-call]
    if isinstance(reply, dict):
        values = list(reply.values())
    elif isinstance(reply, list | tuple):
        values = list(reply)[1:]
    else:
        values = []
    if not values:
        return ""
    value = values[0]
    return value.decode() if isinstance(value, bytes) else str(value)


def _unchecked(client: redis.Redis, refusal: rexc.ResponseError) -> str:
    detail = ""
    try:
        info: Any = client.info("persistence")
    except rexc.ResponseError:
        info = {}
    aof = info.get("aof_enabled") if isinstance(info, dict) else None
    if aof is not None:
        detail = " INFO persistence says the append-only file is " + (
            "on (its fsync policy is unknown)." if str(aof) == "1" else "off."
        )
    return (
        f"cannot read the persistence settings (CONFIG GET refused: {refusal}), so whether "
        "Redis can lose acknowledged events is unknown; make sure it runs with appendonly "
        f"yes, appendfsync always and maxmemory-policy noeviction.{detail}"
    )


__all__ = ["durability_warnings"]
