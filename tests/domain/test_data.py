"""Data passing: JSONPath inputs over upstream outputs and params, and published outputs."""

from __future__ import annotations

from typing import Any

import pytest

from flowweaver.domain.data import (
    compile_path,
    input_context,
    is_path,
    path_error,
    publish,
    resolve_inputs,
    select,
)
from flowweaver.domain.run import record_completed, record_started, start_run
from flowweaver.errors import TaskInputError
from flowweaver.testing.runs import T0, task, workflow


def test_strings_starting_with_dollar_are_paths_and_the_rest_literals() -> None:
    """Only strings that start with ``$`` are JSONPath references."""
    assert is_path("$.a")
    assert is_path("$")
    assert not is_path("a.$")
    assert not is_path(1)
    assert not is_path(None)


def test_singular_path_gives_its_value_and_wildcards_give_a_list() -> None:
    """A singular path selects one value; a non-singular one a list of matches."""
    document = {"a": {"b": [1, 2, 3]}, "n": None}
    assert select("$.a.b[1]", document) == 2
    assert select("$.a.b", document) == [1, 2, 3]
    assert select("$.a.b[*]", document) == [1, 2, 3]
    assert select("$.n", document) is None
    assert select("$", document) == document


@pytest.mark.parametrize("path", ["$.missing", "$.a.missing", "$.a.b[7]", "$.a.c[*]"])
def test_path_matching_nothing_raises_task_input_error(path: str) -> None:
    """A path that selects nothing raises TaskInputError naming the path."""
    with pytest.raises(TaskInputError, match=r"matched nothing"):
        select(path, {"a": {"b": [1], "c": []}})


def test_bad_paths_are_explained_and_good_ones_compiled_once() -> None:
    """path_error explains what is wrong; compile_path caches compiled paths."""
    assert path_error("$.ok") is None
    assert path_error("$.[[")
    assert path_error("$.a | $.b") == "compound paths (| and &) are not supported"
    assert compile_path("$.x") is compile_path("$.x")
    with pytest.raises(ValueError, match=r"."):
        compile_path("$.[[")


def test_resolve_inputs_replaces_paths_at_any_depth_and_keeps_literals() -> None:
    """Paths are resolved inside nested objects and lists; literals pass through unchanged."""
    context = input_context({"data": {"rows": [1, 2]}}, {"limit": 5}, {"t1": {"data": 1}})
    inputs = {
        "rows": "$.data.rows",
        "limit": "$.params.limit",
        "all": "$.tasks",
        "nested": {"first": "$.data.rows[0]", "list": ["$.params.limit", "text", 3]},
        "literal": "plain",
        "number": 7,
    }
    assert resolve_inputs(inputs, context) == {
        "rows": [1, 2],
        "limit": 5,
        "all": {"t1": {"data": 1}},
        "nested": {"first": 1, "list": [5, "text", 3]},
        "literal": "plain",
        "number": 7,
    }


def test_unresolvable_input_names_the_input() -> None:
    """A missing input path raises TaskInputError naming the input and the path."""
    with pytest.raises(TaskInputError, match=r"input 'x'.*\$\.nope"):
        resolve_inputs({"x": "$.nope"}, input_context({}, {}, {}))


def test_input_context_merges_upstream_at_the_root_beside_params_and_tasks() -> None:
    """Upstream outputs sit at the root; ``params`` and ``tasks`` are added beside them."""
    context = input_context({"data": 1}, {"p": 2}, {"t": {"data": 1}})
    assert context == {"data": 1, "params": {"p": 2}, "tasks": {"t": {"data": 1}}}


def test_publish_without_outputs_wraps_the_result() -> None:
    """A task without ``outputs`` publishes ``{"result": <result>}``."""
    assert publish([1, 2], {"x": 1}, {}) == {"result": [1, 2]}
    assert publish(None, {}, {}) == {"result": None}


def test_publish_with_outputs_selects_from_result_and_inputs() -> None:
    """``outputs`` maps names to paths over ``{"result": ..., "inputs": ...}``."""
    published = publish(
        {"rows": [1, 2], "count": 2},
        {"source": "db"},
        {"data": "$.result.rows", "n": "$.result.count", "from": "$.inputs.source"},
    )
    assert published == {"data": [1, 2], "n": 2, "from": "db"}


def test_publish_output_path_matching_nothing_raises() -> None:
    """An output path that matches nothing raises TaskInputError naming the output."""
    with pytest.raises(TaskInputError, match=r"output 'data'"):
        publish({"other": 1}, {}, {"data": "$.result.rows"})


def test_original_example_passes_data_from_t1_through_t2_to_t3() -> None:
    """task1 publishes {data} via outputs, task2 reads ``$.data``, task3 reads ``$.result``."""
    spec = workflow(
        task("task1", handler="fetch_data", outputs={"data": "$.result"}),
        task("task2", "task1", handler="transform", inputs={"rows": "$.data"}),
        task("task3", "task2", handler="load", inputs={"transformed": "$.result"}),
    )
    state, _ = start_run("run", spec, 1, {}, T0)
    assert state.task("task1").status == "scheduled"
    fetched: dict[str, Any] = {"rows": [1, 2, 3]}
    record_started(state, "task1", 1, "w", T0)
    record_completed(state, "task1", 1, fetched, 1.0, T0)
    assert state.task("task1").output == {"data": fetched}
    assert state.task("task2").inputs == {"rows": fetched}
    record_started(state, "task2", 1, "w", T0)
    record_completed(state, "task2", 1, [2, 4, 6], 1.0, T0)
    assert state.task("task3").inputs == {"transformed": [2, 4, 6]}
    record_started(state, "task3", 1, "w", T0)
    record_completed(state, "task3", 1, "loaded", 1.0, T0)
    assert state.status == "completed"
    assert state.published_outputs()["task3"] == {"result": "loaded"}


def test_inputs_see_params_and_every_completed_task() -> None:
    """Inputs can read run parameters and any completed task's output, not only direct deps."""
    spec = workflow(
        task("a"),
        task("b", "a"),
        task("c", "b", inputs={"fromA": "$.tasks.a.result", "limit": "$.params.limit"}),
    )
    state, _ = start_run("run", spec, 1, {"limit": 10}, T0)
    for task_id, result in (("a", "A"), ("b", "B")):
        record_started(state, task_id, 1, "w", T0)
        record_completed(state, task_id, 1, result, 1.0, T0)
    assert state.task("c").inputs == {"fromA": "A", "limit": 10}


def test_outputs_of_several_dependencies_merge_at_the_root() -> None:
    """With two dependencies, both published objects are visible at the root of the context."""
    spec = workflow(
        task("x", outputs={"left": "$.result"}),
        task("y", outputs={"right": "$.result"}),
        task("z", "x", "y", inputs={"pair": ["$.left", "$.right"]}),
    )
    state, _ = start_run("run", spec, 1, {}, T0)
    for task_id, result in (("x", 1), ("y", 2)):
        record_started(state, task_id, 1, "w", T0)
        record_completed(state, task_id, 1, result, 1.0, T0)
    assert state.task("z").inputs == {"pair": [1, 2]}
