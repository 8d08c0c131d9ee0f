"""The msgspec mapper: domain Structs to the bytes the event store keeps, and back.

Stored JSON is the same camelCase JSON the API serves, so a stored event can be
streamed to clients without being decoded.
"""

from __future__ import annotations

import msgspec

from flowweaver.domain.events import RunEvent
from flowweaver.domain.run import RunState
from flowweaver.domain.workflow import WorkflowRegistered

_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(RunEvent)
_workflow_decoder = msgspec.json.Decoder(WorkflowRegistered)
_state_decoder = msgspec.json.Decoder(RunState)

SNAPSHOT_TOPIC = "RunSnapshot"
WORKFLOW_TOPIC = "WorkflowRegistered"


def encode(obj: object) -> bytes:
    """Encode an event, a registration or a snapshot to JSON."""
    return _encoder.encode(obj)


def decode_event(data: bytes) -> RunEvent:
    """Decode a stored run event."""
    event: RunEvent = _event_decoder.decode(data)
    return event


def decode_registration(data: bytes) -> WorkflowRegistered:
    """Decode a stored workflow registration."""
    return _workflow_decoder.decode(data)


def decode_state(data: bytes) -> RunState:
    """Decode a stored run snapshot."""
    return _state_decoder.decode(data)
