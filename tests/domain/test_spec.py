"""Validation of the workflow document: every rule, each error located by its JSON path."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import pytest

from flowweaver.domain.spec import (
    MAX_NESTING,
    MAX_TASKS,
    TOO_DEEP,
    RetryPolicy,
    WorkflowSpec,
    decode_workflow,
    encode_workflow,
    nesting_error,
    workflow_from_builtins,
)
from flowweaver.errors import FieldError, ValidationError
from flowweaver.testing.runs import task, workflow


def errors_of(document: dict[str, Any]) -> list[FieldError]:
    with pytest.raises(ValidationError) as info:
        workflow_from_builtins(document)
    return list(info.value.errors)


def doc(*tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": "wf", "tasks": list(tasks), **extra}


def test_valid_document_decodes_camel_case_into_snake_case() -> None:
    """A complete document decodes, with camelCase wire names mapped to Python attributes."""
    body = (
        b'{"id": "etl", "name": "ETL", "description": "d",'
        b' "defaults": {"retry": {"maxAttempts": 3, "initialDelay": 0.5}, "timeout": 30},'
        b' "tasks": [{"id": "t1", "handler": "fetch_data", "outputs": {"data": "$.result"}},'
        b' {"id": "t2", "handler": "echo", "dependencies": ["t1"], "inputs": {"x": "$.data"},'
        b' "retry": {"maxAttempts": 2, "nonRetryable": ["ValueError"]}, "timeout": 10}]}'
    )
    spec = decode_workflow(body)
    assert spec.id == "etl"
    assert spec.defaults.retry == RetryPolicy(max_attempts=3, initial_delay=0.5)
    t2 = spec.task("t2")
    assert t2.dependencies == ("t1",)
    assert spec.retry_policy(t2).non_retryable == ("ValueError",)
    assert spec.retry_policy(spec.task("t1")).max_attempts == 3
    assert spec.timeout_of(t2) == 10
    assert spec.timeout_of(spec.task("t1")) == 30


def test_task_without_any_retry_policy_gets_one_attempt() -> None:
    """Without a task or default retry policy a task has exactly one attempt."""
    spec = workflow(task("a"))
    assert spec.retry_policy(spec.task("a")).max_attempts == 1
    assert spec.timeout_of(spec.task("a")) is None


def test_unknown_task_lookup_raises_key_error() -> None:
    """Asking a spec for a task id it does not have raises KeyError."""
    with pytest.raises(KeyError):
        workflow(task("a")).task("b")


@pytest.mark.parametrize(
    "bad_id", ["", "-a", "_a", ".a", "a b", "a/b", "é", "a" * 129, "a\n"], ids=repr
)
def test_workflow_id_must_match_the_id_pattern(bad_id: str) -> None:
    """A workflow id outside ``^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`` is rejected at ``$.id``."""
    errors = errors_of({"id": bad_id, "tasks": [task("a")]})
    assert [e.path for e in errors] == ["$.id"]


@pytest.mark.parametrize("good_id", ["a", "A9", "9", "a_b.c:d-e", "a" * 128])
def test_ids_inside_the_pattern_are_accepted(good_id: str) -> None:
    """Ids of 1 to 128 characters from the allowed set are valid for workflows and tasks."""
    spec = workflow_from_builtins({"id": good_id, "tasks": [task(good_id)]})
    assert spec.tasks[0].id == good_id


@pytest.mark.parametrize("bad_id", ["", "-t", "t t", "a" * 129])
def test_task_id_must_match_the_id_pattern(bad_id: str) -> None:
    """A task id outside the pattern is rejected at ``$.tasks[i].id``."""
    errors = errors_of(doc(task("ok"), task(bad_id)))
    assert [e.path for e in errors] == ["$.tasks[1].id"]


def test_duplicate_task_ids_are_reported_at_the_second_occurrence() -> None:
    """A repeated task id is an error at the repeat, naming the first occurrence."""
    errors = errors_of(doc(task("a"), task("b"), task("a")))
    assert [e.path for e in errors] == ["$.tasks[2].id"]
    assert "duplicate" in errors[0].message
    assert "$.tasks[0]" in errors[0].message


def test_unknown_dependency_is_reported_at_its_index() -> None:
    """A dependency on a task that does not exist is reported at ``dependencies[j]``."""
    errors = errors_of(doc(task("a"), task("b", "a", "ghost")))
    assert [e.path for e in errors] == ["$.tasks[1].dependencies[1]"]
    assert "ghost" in errors[0].message


def test_self_dependency_is_rejected() -> None:
    """A task that depends on itself is an error at that dependency."""
    errors = errors_of(doc(task("a", "a")))
    assert [e.path for e in errors] == ["$.tasks[0].dependencies[0]"]
    assert "itself" in errors[0].message


def test_dependency_listed_twice_is_rejected() -> None:
    """Listing the same dependency twice is an error at ``dependencies``."""
    errors = errors_of(doc(task("a"), task("b", "a", "a")))
    assert [e.path for e in errors] == ["$.tasks[1].dependencies"]


def test_two_task_cycle_is_named_in_run_order() -> None:
    """A cycle of two tasks is reported as ``a -> b -> a``."""
    errors = errors_of(doc(task("a", "b"), task("b", "a")))
    assert errors == [FieldError("$.tasks", "dependency cycle: a -> b -> a")]


def test_a_cycle_is_reported_together_with_the_other_errors() -> None:
    """A cycle is reported beside other problems, not only once they are fixed."""
    errors = errors_of(
        doc(
            task("a", "b", "ghost"),
            task("b", "a", retry={"initialDelay": 5, "maxDelay": 1}),
            task("c", "c"),
        )
    )
    assert FieldError("$.tasks", "dependency cycle: a -> b -> a") in errors
    assert {e.path for e in errors} == {
        "$.tasks",
        "$.tasks[0].dependencies[1]",
        "$.tasks[1].retry.maxDelay",
        "$.tasks[2].dependencies[0]",
    }
    assert sum("cycle" in e.message for e in errors) == 1  # the self-dependency is not one too


def test_longer_cycle_is_named_with_arrows_pointing_downstream() -> None:
    """Each arrow in the cycle message points from a task to one that depends on it."""
    # b depends on a, c depends on b, a depends on c: a runs before b, b before c, c before a.
    errors = errors_of(doc(task("a", "c"), task("b", "a"), task("c", "b"), task("d", "a")))
    assert len(errors) == 1
    assert errors[0].path == "$.tasks"
    names = errors[0].message.removeprefix("dependency cycle: ").split(" -> ")
    assert names[0] == names[-1]
    assert sorted(names[:-1]) == ["a", "b", "c"]
    spec_deps = {"a": {"c"}, "b": {"a"}, "c": {"b"}}
    for before, after in itertools.pairwise(names):
        assert before in spec_deps[after], f"{after} does not depend on {before}"


def test_workflow_needs_at_least_one_task() -> None:
    """An empty task list is rejected at ``$.tasks``."""
    errors = errors_of(doc())
    assert [e.path for e in errors] == ["$.tasks"]
    assert "at least one task" in errors[0].message


def test_missing_tasks_field_is_reported_by_path() -> None:
    """A document without ``tasks`` fails with a located error."""
    errors = errors_of({"id": "wf"})
    assert errors[0].path == "$"
    assert "tasks" in errors[0].message


def test_at_most_ten_thousand_tasks() -> None:
    """10,000 tasks are accepted and 10,001 are rejected at ``$.tasks``."""
    tasks = [{"id": f"t{i}", "handler": "noop"} for i in range(MAX_TASKS)]
    assert len(workflow_from_builtins(doc(*tasks)).tasks) == MAX_TASKS
    errors = errors_of(doc(*tasks, {"id": "one-more", "handler": "noop"}))
    assert [e.path for e in errors] == ["$.tasks"]
    assert str(MAX_TASKS) in errors[0].message


@pytest.mark.parametrize(
    "bad", ["", "1fetch", "-x", "fetch data", "f/x", "h" * 129, "h\n"], ids=repr
)
def test_handler_name_must_match_its_pattern(bad: str) -> None:
    """A handler name outside ``^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$`` is rejected at its path."""
    errors = errors_of(doc(task("a"), task("b", handler=bad)))
    assert [e.path for e in errors] == ["$.tasks[1].handler"]


@pytest.mark.parametrize("good", ["fetch_data", "_private", "pkg.module:func", "a-b"])
def test_handler_names_in_the_pattern_are_accepted(good: str) -> None:
    """Dotted, colon and underscore handler names are valid."""
    assert workflow(task("a", handler=good)).tasks[0].handler == good


@pytest.mark.parametrize(
    ("retry", "path"),
    [
        ({"maxAttempts": 0}, "$.tasks[0].retry.maxAttempts"),
        ({"maxAttempts": 101}, "$.tasks[0].retry.maxAttempts"),
        ({"maxAttempts": 1.5}, "$.tasks[0].retry.maxAttempts"),
        ({"initialDelay": -1}, "$.tasks[0].retry.initialDelay"),
        ({"initialDelay": 86_401}, "$.tasks[0].retry.initialDelay"),
        ({"backoffFactor": 0.5}, "$.tasks[0].retry.backoffFactor"),
        ({"backoffFactor": 101}, "$.tasks[0].retry.backoffFactor"),
        ({"maxDelay": -0.1}, "$.tasks[0].retry.maxDelay"),
        ({"jitter": 1.5}, "$.tasks[0].retry.jitter"),
        ({"jitter": -0.1}, "$.tasks[0].retry.jitter"),
        ({"nonRetryable": [""]}, "$.tasks[0].retry.nonRetryable[0]"),
    ],
)
def test_retry_policy_ranges(retry: dict[str, Any], path: str) -> None:
    """Every retry field out of its range is rejected at its own path."""
    errors = errors_of(doc(task("a", retry=retry)))
    assert [e.path for e in errors] == [path]


@pytest.mark.parametrize(
    ("timeout", "ok"), [(0, False), (-1, False), (0.001, True), (86_400, True), (86_401, False)]
)
def test_timeout_range(timeout: float, ok: bool) -> None:
    """A timeout must be above 0 and at most a day."""
    document = doc(task("a", timeout=timeout))
    if ok:
        assert workflow_from_builtins(document).tasks[0].timeout == timeout
    else:
        assert [e.path for e in errors_of(document)] == ["$.tasks[0].timeout"]


def test_max_delay_below_initial_delay_is_rejected_on_the_task() -> None:
    """A task's maxDelay smaller than its initialDelay is an error at the task's retry."""
    errors = errors_of(doc(task("a"), task("b", retry={"initialDelay": 5, "maxDelay": 1})))
    assert errors == [
        FieldError("$.tasks[1].retry.maxDelay", "maxDelay must be at least initialDelay")
    ]


def test_max_delay_below_initial_delay_is_rejected_once_on_the_defaults() -> None:
    """A bad default retry policy is reported once, at ``$.defaults.retry``, not per task."""
    errors = errors_of(
        doc(task("a"), task("b"), defaults={"retry": {"initialDelay": 5, "maxDelay": 1}})
    )
    assert errors == [
        FieldError("$.defaults.retry.maxDelay", "maxDelay must be at least initialDelay")
    ]


def test_max_delay_equal_to_initial_delay_is_fine() -> None:
    """maxDelay may equal initialDelay (a constant delay)."""
    spec = workflow(task("a", retry={"initialDelay": 3, "maxDelay": 3}))
    assert spec.tasks[0].retry == RetryPolicy(initial_delay=3, max_delay=3)


@pytest.mark.parametrize(
    ("inputs", "path"),
    [
        ({"x": "$.[["}, "$.tasks[0].inputs.x"),
        ({"x": {"deep": ["lit", "$..["]}}, "$.tasks[0].inputs.x.deep[1]"),
        ({"x": "$.a | $.b"}, "$.tasks[0].inputs.x"),
    ],
)
def test_invalid_input_jsonpath_is_reported_where_it_sits(
    inputs: dict[str, Any], path: str
) -> None:
    """An input JSONPath that does not parse is reported at its path inside ``inputs``."""
    errors = errors_of(doc(task("a", inputs=inputs)))
    assert [e.path for e in errors] == [path]
    assert "JSONPath" in errors[0].message


def test_literal_inputs_are_not_parsed_as_paths() -> None:
    """Input values that do not start with ``$`` are literals, whatever they contain."""
    spec = workflow(task("a", inputs={"s": "a.[[", "n": 1, "l": ["x", {"y": None}]}))
    assert spec.tasks[0].inputs["s"] == "a.[["


@pytest.mark.parametrize(
    ("outputs", "message"),
    [({"data": "result"}, "must be a JSONPath"), ({"data": "$.[["}, "")],
)
def test_invalid_output_jsonpath_is_reported_by_name(outputs: dict[str, str], message: str) -> None:
    """An output that is not a valid JSONPath is reported at ``outputs.<name>``."""
    errors = errors_of(doc(task("a", outputs=outputs)))
    assert [e.path for e in errors] == ["$.tasks[0].outputs.data"]
    assert message in errors[0].message


def test_every_problem_is_reported_not_just_the_first() -> None:
    """Independent problems in one document are all reported, each at its path."""
    errors = errors_of(
        doc(
            task("a", "ghost"),
            task("a"),
            task("b", inputs={"x": "$.[["}),
            task("c", retry={"initialDelay": 9, "maxDelay": 1}),
        )
    )
    assert {e.path for e in errors} == {
        "$.tasks[0].dependencies[0]",
        "$.tasks[1].id",
        "$.tasks[2].inputs.x",
        "$.tasks[3].retry.maxDelay",
    }
    with pytest.raises(ValidationError, match=r"and 3 more"):
        workflow_from_builtins(doc(task("a", "ghost"), task("a"), task("a"), task("a")))


def test_malformed_json_is_a_validation_error_at_the_root() -> None:
    """Bytes that are not JSON raise ValidationError located at ``$``."""
    with pytest.raises(ValidationError) as info:
        decode_workflow(b'{"id": "wf", "tasks": [')
    assert info.value.errors[0].path == "$"


def test_wrong_type_deep_inside_is_located() -> None:
    """A wrong type deep in the document names its full path."""
    with pytest.raises(ValidationError) as info:
        decode_workflow(b'{"id": "wf", "tasks": [{"id": "a", "handler": "h", "dependencies": 5}]}')
    assert info.value.errors[0].path == "$.tasks[0].dependencies"


def test_canonical_encoding_is_equal_for_equal_definitions() -> None:
    """Equal definitions encode to equal bytes whatever the key order of their inputs."""
    one = workflow(task("a", inputs={"x": 1, "y": 2}))
    two = workflow(task("a", inputs={"y": 2, "x": 1}))
    assert encode_workflow(one) == encode_workflow(two)
    assert msgspec.json.decode(encode_workflow(one), type=WorkflowSpec) == one


def test_retry_delay_grows_by_the_backoff_factor_and_stops_at_max_delay() -> None:
    """The delay before attempt n is initialDelay * factor^(n-2), capped at maxDelay."""
    policy = RetryPolicy(max_attempts=10, initial_delay=1.0, backoff_factor=2.0, max_delay=5.0)
    assert [policy.delay_before(n) for n in range(2, 7)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_retry_delay_jitter_scales_by_the_sample() -> None:
    """A jitter of 0.5 moves the delay by up to half of it, in the sample's direction."""
    policy = RetryPolicy(initial_delay=2.0, jitter=0.5)
    assert policy.delay_before(2, 1.0) == 3.0
    assert policy.delay_before(2, -1.0) == 1.0
    assert policy.delay_before(2, 0.0) == 2.0


def test_unknown_fields_are_refused_with_their_path() -> None:
    """A misspelt field (maxAttempt) is an error at its object, not silently ignored."""
    doc = b'{"id":"x","tasks":[{"id":"a","handler":"noop","retry":{"maxAttempt":3}}]}'
    with pytest.raises(ValidationError) as info:
        decode_workflow(doc)
    assert info.value.errors[0].path == "$.tasks[0].retry"
    assert "maxAttempt" in info.value.errors[0].message


def test_jitter_never_pushes_a_delay_past_max_delay() -> None:
    """maxDelay bounds the delay after jitter too."""
    policy = RetryPolicy(max_attempts=5, initial_delay=10, max_delay=10, jitter=0.5)
    assert policy.delay_before(5, jitter_sample=1.0) == 10
    assert policy.delay_before(2, jitter_sample=-1.0) == 5


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def test_inputs_nested_too_deeply_are_one_located_error() -> None:
    """Inputs deeper than MAX_NESTING are refused at the first too-deep path, not a crash."""
    errors = errors_of(doc(task("a", inputs={"x": [_nested(500)]})))
    assert len(errors) == 1
    assert errors[0].path == "$.tasks[0].inputs.x[0]" + ".a" * (MAX_NESTING - 2)
    assert "nested more than 64 levels" in errors[0].message
    assert workflow_from_builtins(doc(task("a", inputs=_nested(MAX_NESTING - 1))))


def test_a_document_nested_beyond_the_stack_is_a_validation_error() -> None:
    """JSON nested 100,000 deep is a ValidationError from decode_workflow, not a RecursionError."""
    body = b'{"id":"x","tasks":[{"id":"t","handler":"echo","inputs":%b}]}' % (
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    )
    with pytest.raises(ValidationError, match="nested"):
        decode_workflow(body)


def test_nesting_error_counts_levels_from_the_value() -> None:
    """A scalar is level 0, an object level 1; lists count like objects."""
    assert nesting_error(1, "$") is None
    assert nesting_error(_nested(3), "$", limit=3) is None
    assert nesting_error(_nested(4), "$", limit=3) == FieldError("$.a.a.a", TOO_DEEP)
    assert nesting_error([[[[]]]], "$.p", limit=3) == FieldError("$.p[0][0][0]", TOO_DEEP)
