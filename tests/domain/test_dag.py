"""The task graph: roots, ready sets, descendants and topological order."""

from __future__ import annotations

import graphlib

import pytest
from hypothesis import given

from flowweaver.domain.dag import Dag, find_cycle, topological_order
from flowweaver.domain.spec import decode_workflow, encode_workflow
from flowweaver.testing.runs import dags, task, workflow


def diamond() -> Dag:
    #   a -> b -> d -> e
    #   a -> c -> d        f (independent)
    return Dag(
        workflow(
            task("a"),
            task("b", "a"),
            task("c", "a"),
            task("d", "b", "c"),
            task("e", "d"),
            task("f"),
        )
    )


def test_roots_are_tasks_without_dependencies_in_declaration_order() -> None:
    """The roots are the tasks with no dependencies, as declared."""
    assert diamond().roots() == ["a", "f"]


def test_dependents_index_points_downstream() -> None:
    """``dependents`` maps each task to the tasks that depend on it."""
    dag = diamond()
    assert dag.dependents["a"] == ("b", "c")
    assert dag.dependents["d"] == ("e",)
    assert dag.dependents["e"] == ()


def test_ready_set_grows_as_dependencies_complete() -> None:
    """A task is ready once every dependency completed and it has not started."""
    dag = diamond()
    assert dag.ready(completed=set(), started=set()) == ["a", "f"]
    assert dag.ready(completed={"a"}, started={"a", "f"}) == ["b", "c"]
    assert dag.ready(completed={"a", "b"}, started={"a", "b", "c", "f"}) == []
    assert dag.ready(completed={"a", "b", "c"}, started={"a", "b", "c", "f"}) == ["d"]


def test_ready_successors_needs_every_dependency_of_the_successor() -> None:
    """After a completion only successors whose dependencies all completed are ready."""
    dag = diamond()
    assert dag.ready_successors("a", {"a"}) == ["b", "c"]
    assert dag.ready_successors("b", {"a", "b"}) == []
    assert dag.ready_successors("c", {"a", "b", "c"}) == ["d"]
    assert dag.ready_successors("e", {"a", "b", "c", "d", "e"}) == []


def test_descendants_are_everything_downstream_in_topological_order() -> None:
    """Descendants include indirect dependents, each once, in an order that respects edges."""
    dag = diamond()
    found = dag.descendants("a")
    assert sorted(found) == ["b", "c", "d", "e"]
    assert found.index("d") > max(found.index("b"), found.index("c"))
    assert dag.descendants("c") == ["d", "e"]
    assert dag.descendants("e") == []
    assert dag.descendants("f") == []


def test_topological_order_of_a_cycle_raises() -> None:
    """A cyclic graph has no topological order."""
    with pytest.raises(graphlib.CycleError):
        topological_order({"a": ["b"], "b": ["a"]})


def test_find_cycle_is_none_for_a_dag() -> None:
    """An acyclic workflow has no cycle to report."""
    assert find_cycle(workflow(task("a"), task("b", "a"))) is None


@given(dags())
def test_topological_order_respects_every_edge(graph: dict[str, tuple[str, ...]]) -> None:
    """In the order, every task comes after all of its dependencies, and each task once."""
    order = topological_order(graph)
    assert sorted(order) == sorted(graph)
    position = {node: index for index, node in enumerate(order)}
    for node, deps in graph.items():
        for dep in deps:
            assert position[dep] < position[node]


@given(dags(max_nodes=15))
def test_descendants_are_exactly_the_reachable_tasks(graph: dict[str, tuple[str, ...]]) -> None:
    """descendants(t) is the set reachable along dependent edges, in topological order."""
    spec = workflow(*(task(node, *deps) for node, deps in graph.items()))
    dag = Dag(spec)
    for node in graph:
        reachable: set[str] = set()
        frontier = [n for n, deps in graph.items() if node in deps]
        while frontier:
            current = frontier.pop()
            if current not in reachable:
                reachable.add(current)
                frontier.extend(n for n, deps in graph.items() if current in deps)
        found = dag.descendants(node)
        assert set(found) == reachable
        assert len(found) == len(reachable)
        assert found == [t for t in dag.order if t in reachable]


@given(dags(max_nodes=15))
def test_running_ready_sets_to_exhaustion_completes_every_task(
    graph: dict[str, tuple[str, ...]],
) -> None:
    """Completing ready tasks wave by wave reaches every task and never a task early."""
    dag = Dag(workflow(*(task(node, *deps) for node, deps in graph.items())))
    completed: set[str] = set()
    while True:
        wave = dag.ready(completed, completed)
        if not wave:
            break
        for node in wave:
            assert set(graph[node]) <= completed
        completed.update(wave)
    assert completed == set(graph)


def test_a_definition_builds_its_graph_once_and_keeps_it() -> None:
    """``spec.dag`` is built on first use and the same object afterwards."""
    spec = workflow(task("a"), task("b", "a"))
    dag = spec.dag
    assert spec.dag is dag
    assert dag.dependents == {"a": ("b",), "b": ()}


def test_the_kept_graph_is_not_part_of_the_definition() -> None:
    """A definition whose graph was built encodes and compares as before."""
    spec = workflow(task("a"), task("b", "a"))
    before = encode_workflow(spec)
    assert isinstance(spec.dag, Dag)
    twin = decode_workflow(before)
    assert encode_workflow(spec) == before
    assert spec == twin
    assert twin.dag is not spec.dag  # one graph per definition object
