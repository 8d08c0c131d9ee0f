"""Limits on JSONPath: length, the compiled-path cache, no regular expressions."""

from __future__ import annotations

import gc
import json
import time
import tracemalloc

import msgspec
import pytest

from flowweaver.domain import data
from flowweaver.domain.data import (
    MAX_PATH_LENGTH,
    PathCache,
    path_error,
    select,
)
from flowweaver.domain.events import TaskFailed
from flowweaver.domain.run import start_run
from flowweaver.domain.spec import WorkflowSpec, decode_workflow
from flowweaver.errors import TaskInputError, ValidationError
from flowweaver.testing.runs import T0, task, workflow

CATASTROPHIC = "$.params.items[?@ =~ /(a+)+$/]"


def _long_path(length: int, salt: str = "") -> str:
    path = f"$.params.k{salt}" + ".abcdefgh" * (length // 9 + 1)
    return path[:length]


def _refused_document(salt: str, paths: int = 9, length: int = MAX_PATH_LENGTH) -> str:
    """A workflow with long, valid paths that is refused for an unknown dependency."""
    inputs = {f"x{k}": _long_path(length, f"{salt}_{k}") for k in range(paths)}
    return json.dumps(
        {
            "id": "wf",
            "tasks": [{"id": "t", "handler": "noop", "dependencies": ["nope"], "inputs": inputs}],
        }
    )


def _errors(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, str]:
    return {e.path: e.message for e in exc.value.errors}


def test_an_overlong_path_is_refused_at_its_location() -> None:
    """A path over MAX_PATH_LENGTH is a validation error at its inputs/outputs path."""
    too_long = _long_path(MAX_PATH_LENGTH + 1)
    assert path_error(_long_path(MAX_PATH_LENGTH)) is None
    with pytest.raises(ValidationError) as exc:
        workflow(
            task("t", inputs={"x": {"deep": [too_long]}}, outputs={"y": too_long}),
        )
    errors = _errors(exc)
    assert set(errors) == {"$.tasks[0].inputs.x.deep[0]", "$.tasks[0].outputs.y"}
    assert all(f"at most {MAX_PATH_LENGTH} characters" in m for m in errors.values())


def test_an_overlong_path_is_refused_without_being_compiled() -> None:
    """Refusing an 800 KB path costs no compilation (it took seconds before)."""
    huge = _long_path(800_000)
    started = time.perf_counter()
    problem = path_error(huge)
    assert problem is not None
    assert "800000" in problem
    assert time.perf_counter() - started < 0.05


def test_validating_a_workflow_adds_nothing_to_the_path_cache() -> None:
    """Paths compiled while validating (refused or not) are not kept; run-time paths are."""
    data.PATH_CACHE.clear()
    for i in range(20):
        with pytest.raises(ValidationError):
            decode_workflow(_refused_document(f"r{i}"))
    assert len(data.PATH_CACHE) == 0
    assert data.PATH_CACHE.size_bytes == 0
    select("$.a", {"a": 1})
    assert len(data.PATH_CACHE) == 1
    assert 0 < data.PATH_CACHE.size_bytes <= data.PATH_CACHE.max_bytes


def test_the_path_cache_is_bounded_by_size_and_evicts_the_least_recently_used() -> None:
    """Its accounting never exceeds the byte bound however many distinct paths are used."""
    cache = PathCache(max_bytes=2_000_000)
    document = {"params": {"k": 1}}
    paths = [_long_path(MAX_PATH_LENGTH, f"p{i}") for i in range(50)]
    hot = "$.params.k"
    for path in paths:
        with pytest.raises(TaskInputError):
            select(path, document, cache=cache)
        assert select(hot, document, cache=cache) == 1
        assert cache.size_bytes <= cache.max_bytes
    assert hot in cache
    assert paths[0] not in cache
    assert paths[-1] in cache
    assert 0 < len(cache) < len(paths)


def test_refused_workflows_do_not_grow_memory() -> None:
    """After warming up, further refused workflows with long paths keep no memory."""

    def refuse(count: int, salt: str) -> None:
        for i in range(count):
            with pytest.raises(ValidationError):
                decode_workflow(_refused_document(f"{salt}{i}"))

    tracemalloc.start()
    try:
        refuse(3, "warm")
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        refuse(20, "more")
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Before the fix each of these requests kept about 1 MB of compiled paths.
    assert grown < 1_000_000, f"{grown} bytes kept by 20 refused workflows"


@pytest.mark.parametrize(
    "path",
    [
        CATASTROPHIC,
        "$.params.items[?@ =~ $.params.pattern]",
        "$.params.items[?match(@, '(a+)+$')]",
        "$.params.items[?search(@, $.params.pattern)]",
        "$.params.items[?@.a == 1 && (match(@.b, 'x'))]",
    ],
)
def test_regular_expressions_in_filters_are_refused_at_registration(path: str) -> None:
    """`=~` and the match()/search() functions are refused with a clear error at their path."""
    with pytest.raises(ValidationError) as exc:
        workflow(task("t", inputs={"x": path}))
    message = _errors(exc)["$.tasks[0].inputs.x"]
    assert "regular expressions are not supported" in message


def test_other_filters_still_work() -> None:
    """Filters without regular expressions (comparisons, length, count) are accepted."""
    document = {"items": [{"n": "aa", "v": 1}, {"n": "b", "v": 5}]}
    assert select("$.items[?@.v > 2].n", document) == ["b"]
    assert select("$.items[?length(@.n) == 2].v", document) == [1]
    assert path_error("$.items[?count(@.*) > 1]") is None
    assert select("$.match.search", {"match": {"search": 1}}) == 1


def test_a_regex_path_cannot_run_even_if_stored_before_the_rule() -> None:
    """A definition that skipped validation fails its task at once instead of backtracking."""
    document = {
        "id": "old",
        "tasks": [{"id": "t", "handler": "noop", "inputs": {"x": CATASTROPHIC}}],
    }
    spec = msgspec.convert(document, WorkflowSpec)  # no validate_workflow: as if stored long ago
    started = time.perf_counter()
    state, events = start_run("run", spec, 1, {"items": ["a" * 40 + "!"]}, T0)
    assert time.perf_counter() - started < 1.0
    failed = [e for e in events if isinstance(e, TaskFailed)]
    assert failed[0].error.type == "InputError"
    assert "regular expressions are not supported" in failed[0].error.message
    assert state.status == "failed"
    with pytest.raises(TaskInputError, match="regular expressions"):
        select(CATASTROPHIC, {"params": {"items": ["a"]}})


def test_parameter_values_are_data_never_paths() -> None:
    """A parameter that looks like a path is passed on as text, not evaluated."""
    spec = workflow(task("t", inputs={"x": "$.params.p"}))
    state, _ = start_run("run", spec, 1, {"p": CATASTROPHIC}, T0)
    assert state.task("t").inputs == {"x": CATASTROPHIC}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("$.params..*..*", "at most 1 descendant segment"),
        ("$..a[?@..b]", "at most 1 descendant segment"),
        ("$.params[0,1][0,1][0,1][0,1]", "multiply to at most 8"),
        ("$.params[?@['a','a']['a','a']['a','a']['a','a']]", "multiply to at most 8"),
    ],
)
def test_paths_that_select_nodes_many_times_over_are_refused(path: str, message: str) -> None:
    """A second `..`, or unions that multiply past MAX_FAN_OUT, are refused at their path."""
    with pytest.raises(ValidationError) as exc:
        workflow(task("t", inputs={"x": path}))
    assert message in _errors(exc)["$.tasks[0].inputs.x"]


@pytest.mark.parametrize(
    "path", ["$..book[?@.price < 10]", "$.a['x','y','z']", "$.a[0,1][0,1][0,1]", "$.a[*].b[*]"]
)
def test_one_descendant_segment_and_small_unions_are_allowed(path: str) -> None:
    """Ordinary uses of `..` and unions still validate."""
    assert path_error(path) is None


def test_a_multiplying_path_stored_before_the_rule_cannot_run() -> None:
    """`$..*` six times over a 60-deep object (hours before) fails its task at once."""
    path = "$.params" + "..*" * 6 + "[?@.z]"
    document = {"id": "old", "tasks": [{"id": "t", "handler": "noop", "inputs": {"x": path}}]}
    spec = msgspec.convert(document, WorkflowSpec)  # no validate_workflow: as if stored long ago
    deep: dict[str, object] = {}
    node = deep
    for _ in range(60):
        node["a"] = {}
        node = node["a"]  # type: ignore[assignment]
    started = time.perf_counter()
    state, events = start_run("run", spec, 1, {"deep": deep}, T0)
    assert time.perf_counter() - started < 1.0
    failed = [e for e in events if isinstance(e, TaskFailed)]
    assert "descendant segment" in failed[0].error.message
    assert state.status == "failed"
