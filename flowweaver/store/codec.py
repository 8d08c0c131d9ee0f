"""The msgspec mapper: domain Structs to the bytes the event store keeps, and back.

Stored JSON is the same camelCase JSON the API serves, so a stored event can be
streamed to clients without being decoded.

Schema versions. A stored record's topic names its type and the schema version of its JSON:
the bare name for version 1 (what every store held before versions existed, so an existing
database reads unchanged) and ``Name@N`` from version 2 on. A record at its type's current
version is decoded directly, and its bytes are served as they are. An older one goes through
the :data:`UPCASTERS` of its type, one version at a time, and is re-encoded in the current
shape. Snapshots are a cache, not a record: one of another schema version, or one that does
not decode, is ignored and the run is replayed from its events instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from flowweaver.domain.events import EVENT_SCHEMA_VERSIONS, RUN_EVENT_TYPES, Event, RunEvent
from flowweaver.domain.run import RunState
from flowweaver.domain.schedule import (
    SCHEDULE_EVENT_TYPES,
    SCHEDULE_SCHEMA_VERSIONS,
    AnyScheduleEvent,
)
from flowweaver.domain.tokens import TOKEN_EVENT_TYPES, TOKEN_SCHEMA_VERSIONS, AnyTokenEvent
from flowweaver.domain.workflow import WorkflowRegistered
from flowweaver.errors import EventSchemaError

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the JSON object of one schema version of a type into that of the next version."""

SCHEMA_SEPARATOR = "@"
WORKFLOW_NAME = "WorkflowRegistered"
SNAPSHOT_NAME = "RunSnapshot"
WORKFLOW_SCHEMA_VERSION = 1
"""The version of WorkflowRegistered's stored JSON."""
SNAPSHOT_SCHEMA_VERSION = 3
"""The version of a snapshot's JSON (an encoded RunState): bump it when RunState changes shape."""

SCHEMA_VERSIONS: dict[str, int] = {
    **EVENT_SCHEMA_VERSIONS,
    WORKFLOW_NAME: WORKFLOW_SCHEMA_VERSION,
    **TOKEN_SCHEMA_VERSIONS,
    **SCHEDULE_SCHEMA_VERSIONS,
}
"""The current schema version of every upcastable record type, by name."""

UPCASTERS: dict[tuple[str, int], Upcaster] = {}
"""(type name, version N) -> the function from version N's JSON object to version N + 1's."""

_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(RunEvent)
_workflow_decoder = msgspec.json.Decoder(WorkflowRegistered)
_token_decoder = msgspec.json.Decoder(AnyTokenEvent)
_schedule_decoder = msgspec.json.Decoder(AnyScheduleEvent)
_state_decoder = msgspec.json.Decoder(RunState)
_object_decoder = msgspec.json.Decoder(dict[str, Any])


def topic(name: str, version: int) -> str:
    """Return the stored topic of a record type at a schema version."""
    return name if version == 1 else f"{name}{SCHEMA_SEPARATOR}{version}"


def split_topic(stored: str) -> tuple[str, int]:
    """Return the type name and schema version a stored topic says.

    Raises:
        EventSchemaError: the version part is not a number.
    """
    name, separator, version = stored.partition(SCHEMA_SEPARATOR)
    if not separator:
        return stored, 1
    if not (version.isascii() and version.isdigit()):
        raise EventSchemaError(f"stored topic {stored!r} has no schema version after '@'")
    return name, int(version)


SNAPSHOT_TOPIC = topic(SNAPSHOT_NAME, SNAPSHOT_SCHEMA_VERSION)
WORKFLOW_TOPIC = topic(WORKFLOW_NAME, WORKFLOW_SCHEMA_VERSION)
_EVENT_TOPICS: dict[type[Event], str] = {
    t: topic(t.__name__, t.schema_version) for t in RUN_EVENT_TYPES
}
_TOKEN_TOPICS: dict[type[Any], str] = {
    t: topic(t.__name__, t.schema_version) for t in TOKEN_EVENT_TYPES
}
_SCHEDULE_TOPICS: dict[type[Any], str] = {
    t: topic(t.__name__, t.schema_version) for t in SCHEDULE_EVENT_TYPES
}
CURRENT_NAMES: dict[str, str] = {topic(name, v): name for name, v in SCHEMA_VERSIONS.items()}
"""Type name by topic, for the topics of events and registrations at their current version:
those are read without upcasting."""
CURRENT_TOPICS = frozenset(CURRENT_NAMES)
_readable: dict[tuple[tuple[str, ...], tuple[tuple[str, int], ...]], tuple[str, ...]] = {}


def upcaster(name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register the decorated function as the upcaster of ``name`` from ``from_version``.

    Raises:
        ValueError: the type is unknown, ``from_version`` is not older than its current
            version, or that step already has an upcaster.
    """
    current = SCHEMA_VERSIONS.get(name)
    if current is None:
        raise ValueError(f"no record type {name!r} to upcast")
    if from_version >= current:
        raise ValueError(f"{name} is at schema version {current}: no upcaster from {from_version}")
    if (name, from_version) in UPCASTERS:
        raise ValueError(f"{name} already has an upcaster from version {from_version}")

    def register(function: Upcaster) -> Upcaster:
        UPCASTERS[(name, from_version)] = function
        return function

    return register


def event_topic(event: Event) -> str:
    """Return the topic an event is stored under: its type at the current schema version."""
    return _EVENT_TOPICS[type(event)]


def readable_topics(names: Iterable[str]) -> tuple[str, ...]:
    """Return every topic records of these types can be read from.

    That is each version from the oldest with an unbroken chain of upcasters up to the
    current one; a store filters its log by these, so a record of a version newer than this
    code (a downgrade) is left out of the log rather than failing every reader of it.
    """
    key = (tuple(names), tuple(UPCASTERS))
    found = _readable.get(key)
    if found is None:
        topics: list[str] = []
        for name in key[0]:
            current = SCHEMA_VERSIONS.get(name, 1)
            oldest = current
            while (name, oldest - 1) in UPCASTERS:
                oldest -= 1
            topics += [topic(name, v) for v in range(oldest, current + 1)]
        found = _readable.setdefault(key, tuple(topics))
    return found


def encode(obj: object) -> bytes:
    """Encode an event, a registration or a snapshot to JSON."""
    return _encoder.encode(obj)


def upcast(stored_topic: str, data: bytes) -> bytes:
    """Return a stored record's JSON in its type's current schema.

    At the current version that is ``data`` itself. An older version is decoded, passed
    through each upcaster in turn, checked against the current type and encoded again.

    Raises:
        EventSchemaError: the version is newer than this code knows, or a step of the chain
            has no upcaster.
        msgspec.ValidationError: the upcast JSON is not a valid record of the current type.
    """
    if stored_topic in CURRENT_TOPICS:
        return data
    name, version = split_topic(stored_topic)
    current = SCHEMA_VERSIONS.get(name)
    if current is None:
        raise EventSchemaError(f"stored topic {stored_topic!r} names no known record type")
    if version > current:
        raise EventSchemaError(
            f"{name} is stored at schema version {version}, newer than this Flowweaver "
            f"reads ({current}): it was written by a newer version"
        )
    document = _object_decoder.decode(data)
    while version < current:
        step = UPCASTERS.get((name, version))
        if step is None:
            raise EventSchemaError(f"no upcaster for {name} from schema version {version}")
        document = step(document)
        version += 1
    decoder: msgspec.json.Decoder[Any] = (
        _workflow_decoder
        if name == WORKFLOW_NAME
        else _token_decoder
        if name in TOKEN_SCHEMA_VERSIONS
        else _schedule_decoder
        if name in SCHEDULE_SCHEMA_VERSIONS
        else _event_decoder
    )
    return _encoder.encode(decoder.decode(_encoder.encode(document)))


def decode_event(data: bytes, stored_topic: str | None = None) -> RunEvent:
    """Decode a stored run event; ``stored_topic`` None means it is at the current version.

    Raises:
        EventSchemaError: see :func:`upcast`.
    """
    if stored_topic is not None and stored_topic not in CURRENT_TOPICS:
        data = upcast(stored_topic, data)
    event: RunEvent = _event_decoder.decode(data)
    return event


def decode_registration(data: bytes, stored_topic: str | None = None) -> WorkflowRegistered:
    """Decode a stored workflow registration, upcast from an older version if need be.

    Raises:
        EventSchemaError: see :func:`upcast`.
    """
    if stored_topic is not None and stored_topic not in CURRENT_TOPICS:
        data = upcast(stored_topic, data)
    return _workflow_decoder.decode(data)


def token_topic(event: AnyTokenEvent) -> str:
    """Return the topic a token event is stored under: its type at the current version."""
    return _TOKEN_TOPICS[type(event)]


def decode_token_event(data: bytes, stored_topic: str | None = None) -> AnyTokenEvent:
    """Decode a stored token event, upcast from an older version if need be.

    Raises:
        EventSchemaError: see :func:`upcast`.
    """
    if stored_topic is not None and stored_topic not in CURRENT_TOPICS:
        data = upcast(stored_topic, data)
    event: AnyTokenEvent = _token_decoder.decode(data)
    return event


def schedule_topic(event: AnyScheduleEvent) -> str:
    """Return the topic a schedule event is stored under: its type at the current version."""
    return _SCHEDULE_TOPICS[type(event)]


def decode_schedule_event(data: bytes, stored_topic: str | None = None) -> AnyScheduleEvent:
    """Decode a stored schedule event, upcast from an older version if need be.

    Raises:
        EventSchemaError: see :func:`upcast`.
    """
    if stored_topic is not None and stored_topic not in CURRENT_TOPICS:
        data = upcast(stored_topic, data)
    event: AnyScheduleEvent = _schedule_decoder.decode(data)
    return event


def decode_state(data: bytes) -> RunState:
    """Decode a run snapshot of the current schema version."""
    return _state_decoder.decode(data)


def decode_snapshot(data: bytes, stored_topic: str) -> RunState:
    """Decode a stored run snapshot, refusing one this code cannot trust.

    Raises:
        EventSchemaError: the snapshot is of another schema version, or does not decode
            to the current RunState; the caller replays the run's events instead.
    """
    if stored_topic != SNAPSHOT_TOPIC:
        raise EventSchemaError(
            f"snapshot stored as {stored_topic!r}, this Flowweaver reads {SNAPSHOT_TOPIC!r}"
        )
    try:
        return _state_decoder.decode(data)
    except msgspec.DecodeError as e:  # ValidationError included
        raise EventSchemaError(f"snapshot does not decode: {e}") from e


def snapshot_originator(run: uuid.UUID, version: int | None = None) -> uuid.UUID:
    """Return the id a run's snapshots of a schema version (the current one) are kept under.

    Version 1 uses the run's own id, as snapshots always did. Each later version gets an id
    of its own, so that after a bump the fold can record new snapshots at versions where
    old ones already sit, instead of replaying every read of a long run from the start.
    """
    version = SNAPSHOT_SCHEMA_VERSION if version is None else version
    return run if version == 1 else uuid.uuid5(run, topic(SNAPSHOT_NAME, version))
