"""Deterministic ids: run ids from idempotency keys, request hashes."""

from __future__ import annotations

import uuid

import pytest

from flowweaver.domain.ids import (
    canonical_run_id,
    is_handler_name,
    is_ident,
    request_hash,
    run_id_for_key,
    workflow_aggregate_id,
)


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


@pytest.mark.parametrize("text", ["a\n", "a\r\n", "\na", "", "-a", "a" * 129, "a b"], ids=repr)
def test_ids_are_whole_strings_without_a_trailing_newline(text: str) -> None:
    """An id or handler name with a final newline (or any other stray character) is refused."""
    assert not is_ident(text)
    assert not is_handler_name(text)


def test_valid_ids_and_handler_names() -> None:
    """Ids may start with a digit; handler names may not, but may start with an underscore."""
    assert is_ident("etl.v2:load-1_x")
    assert is_ident("a" * 128)
    assert is_handler_name("_private.fetch:v2")
    assert not is_handler_name("1fetch")


RUN = "5f2d7b0e-3c1a-4e8f-9a57-6b1d2c9e4f30"


@pytest.mark.parametrize(
    "spelling",
    [RUN, RUN.upper(), RUN.replace("-", ""), f"urn:uuid:{RUN}", f"{{{RUN}}}", f"{{{RUN.upper()}}}"],
)
def test_every_spelling_of_a_run_id_has_one_canonical_form(spelling: str) -> None:
    """Upper case, no hyphens, braces and urn:uuid: all name the run in its canonical form."""
    assert canonical_run_id(spelling) == RUN


@pytest.mark.parametrize("text", ["", "run-1", RUN + "0", "x" * 1000, RUN[:-1]], ids=repr)
def test_text_that_is_no_uuid_has_no_run_id(text: str) -> None:
    """Text that is not a UUID in any spelling is no run id."""
    assert canonical_run_id(text) is None
