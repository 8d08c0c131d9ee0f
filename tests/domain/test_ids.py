"""Deterministic ids: run ids from idempotency keys, request hashes."""

from __future__ import annotations

import uuid

from flowweaver.domain.ids import request_hash, run_id_for_key, workflow_aggregate_id


def test_run_id_is_a_stable_uuid_per_workflow_and_key() -> None:
    """The same (workflow, key) always gives the same UUID; another key or workflow another."""
    first = run_id_for_key("etl", "key-1")
    assert first == run_id_for_key("etl", "key-1")
    assert uuid.UUID(first).version == 5
    assert first != run_id_for_key("etl", "key-2")
    assert first != run_id_for_key("etl2", "key-1")


def test_workflow_and_key_cannot_be_confused_by_concatenation() -> None:
    """("ab", "c") and ("a", "bc") name different runs."""
    assert run_id_for_key("ab", "c") != run_id_for_key("a", "bc")


def test_workflow_aggregate_id_is_stable_and_distinct_from_run_ids() -> None:
    """A workflow's aggregate id is fixed and never equals a run id for the same text."""
    assert workflow_aggregate_id("etl") == workflow_aggregate_id("etl")
    assert str(workflow_aggregate_id("etl")) != run_id_for_key("etl", "")


def test_request_hash_ignores_key_order_but_not_values() -> None:
    """Parameters equal up to key order hash alike; different parameters differ."""
    assert request_hash("w", 1, {"a": 1, "b": 2}) == request_hash("w", 1, {"b": 2, "a": 1})
    assert request_hash("w", 1, {"a": 1}) != request_hash("w", 1, {"a": 2})
    assert request_hash("w", 1, {}) != request_hash("w", 2, {})
