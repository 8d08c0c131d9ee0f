"""The task graph: cycles, topological order, ready sets, descendants."""

from __future__ import annotations

import graphlib
from collections import deque
from collections.abc import Collection, Iterable, Mapping

from flowweaver.domain.spec import WorkflowSpec


class Dag:
    """The dependency graph of one workflow, indexed both ways for cheap lookups."""

    __slots__ = ("dependencies", "dependents", "order")

    def __init__(self, spec: WorkflowSpec) -> None:
        self.dependencies: dict[str, tuple[str, ...]] = {t.id: t.dependencies for t in spec.tasks}
        dependents: dict[str, list[str]] = {t.id: [] for t in spec.tasks}
        for task in spec.tasks:
            for dep in task.dependencies:
                dependents[dep].append(task.id)
        self.dependents: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in dependents.items()}
        self.order: tuple[str, ...] = topological_order(self.dependencies)

    def roots(self) -> list[str]:
        """Return the tasks with no dependencies, in declaration order."""
        return [t for t, deps in self.dependencies.items() if not deps]

    def ready_successors(self, task_id: str, completed: Collection[str]) -> list[str]:
        """Return the dependents of ``task_id`` whose every dependency is in ``completed``."""
        return [
            succ
            for succ in self.dependents[task_id]
            if all(dep in completed for dep in self.dependencies[succ])
        ]

    def ready(self, completed: Collection[str], started: Collection[str]) -> list[str]:
        """Return every task not yet started whose dependencies all completed."""
        return [
            t
            for t in self.order
            if t not in started and all(dep in completed for dep in self.dependencies[t])
        ]

    def descendants(self, task_id: str) -> list[str]:
        """Return every task downstream of ``task_id``, in topological order."""
        found: set[str] = set()
        stack = list(self.dependents[task_id])
        while stack:
            node = stack.pop()
            if node not in found:
                found.add(node)
                stack.extend(self.dependents[node])
        return [t for t in self.order if t in found]


def topological_order(dependencies: Mapping[str, Iterable[str]]) -> tuple[str, ...]:
    """Return an order in which every task comes after all of its dependencies.

    Kahn's algorithm, keeping declaration order among tasks that are ready together.

    Raises:
        graphlib.CycleError: the graph has a cycle.
    """
    waiting = dict.fromkeys(dependencies, 0)
    dependents: dict[str, list[str]] = {node: [] for node in dependencies}
    for node, deps in dependencies.items():
        for dep in deps:
            waiting[node] += 1
            dependents.setdefault(dep, []).append(node)
            waiting.setdefault(dep, 0)
    ready = deque(node for node, count in waiting.items() if count == 0)
    order: list[str] = []
    while ready:
        node = ready.popleft()
        order.append(node)
        for successor in dependents.get(node, ()):
            waiting[successor] -= 1
            if waiting[successor] == 0:
                ready.append(successor)
    if len(order) != len(waiting):
        # Let graphlib find and name the cycle.
        tuple(graphlib.TopologicalSorter(dependencies).static_order())
    return tuple(order)


def find_cycle(spec: WorkflowSpec) -> list[str] | None:
    """Return one cycle as ``[a, b, a]``, each task followed by one that depends on it, or None.

    So ``a -> b -> a`` reads the way users draw DAGs: ``a -> b`` means a runs before b.
    """
    return cycle_in({t.id: t.dependencies for t in spec.tasks})


def cycle_in(dependencies: Mapping[str, Iterable[str]]) -> list[str] | None:
    """Return one cycle of a graph given as task -> its dependencies, as :func:`find_cycle`."""
    try:
        topological_order(dependencies)
    except graphlib.CycleError as e:
        # graphlib lists each node as an immediate predecessor (a dependency) of the next,
        # which is already run order.
        return list(e.args[1])
    return None
