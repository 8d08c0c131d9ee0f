"""The workflow builder produces exactly the JSON document, and the server's validation errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import flowweaver
from flowweaver import Workflow
from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.builder import TaskRef
from flowweaver.domain.spec import (
    WorkflowSpec,
    decode_workflow,
    encode_workflow,
    workflow_from_builtins,
)
from flowweaver.engine import Engine
from flowweaver.errors import HandlerError, ValidationError
from flowweaver.handlers import HandlerRegistry, builtin_registry
from flowweaver.store.memory import MemoryEventStore

ROOT = Path(__file__).resolve().parents[1]
_TASK_KEYWORDS = {
    "inputs",
    "outputs",
    "retry",
    "timeout",
    "trigger",
    "name",
    "wait",
    "workflow",
    "map",
}


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", lambda m: "_" + m[1].lower(), key)


def build(document: dict[str, Any]) -> Workflow:
    """Write ``document`` with the builder, as a user would: keywords, refs, **fields."""
    document = dict(document)
    defaults = document.pop("defaults", {})
    tasks = document.pop("tasks")
    workflow_id = document.pop("id")
    wf = Workflow(
        workflow_id,
        retry=defaults.get("retry"),
        timeout=defaults.get("timeout"),
        **{_snake(key): value for key, value in document.items()},
    )
    refs: dict[str, TaskRef] = {}
    for written in tasks:
        task = dict(written)
        task_id, handler = task.pop("id"), task.pop("handler", None)
        after = [refs.get(dep, dep) for dep in task.pop("dependencies", [])]
        keywords = {key: task.pop(key) for key in _TASK_KEYWORDS & task.keys()}
        extra = {_snake(key): value for key, value in task.items()}  # not yet a keyword
        refs[task_id] = wf.task(task_id, handler, after=after, **keywords, **extra)
    return wf


def _fixture_documents() -> list[tuple[str, dict[str, Any]]]:
    """Every workflow document the repository holds: examples, golden logs, the README's."""
    found: list[tuple[str, dict[str, Any]]] = [("api/examples.py", EXAMPLE_WORKFLOW)]
    found += [(p.name, json.loads(p.read_text())) for p in sorted(ROOT.glob("examples/*.json"))]
    for path in sorted((ROOT / "tests" / "golden").glob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stored = json.loads(json.loads(line)["stored"])
            if "tasks" in stored.get("definition", {}):
                found.append((f"{path.name}:{number}", stored["definition"]))
    return found


FIXTURES = _fixture_documents()


def test_the_contract_example() -> None:
    """DESIGN.md's example gives the document it describes; an output ref reads the task."""
    wf = Workflow("etl")
    a = wf.task("t1", "fetch_data")
    wf.task("t2", "process", after=[a], inputs={"source": a.output("data")})
    assert wf.to_dict() == {
        "id": "etl",
        "tasks": [
            {"id": "t1", "handler": "fetch_data"},
            {
                "id": "t2",
                "handler": "process",
                "dependencies": ["t1"],
                "inputs": {"source": "$.tasks.t1.data"},
            },
        ],
    }
    assert isinstance(wf.spec(), WorkflowSpec)
    assert wf.to_json() == encode_workflow(wf.spec()).decode()


def test_fixtures_are_found() -> None:
    """The round-trip below covers the examples and every golden log's definitions."""
    names = [name for name, _ in FIXTURES]
    assert any(name.endswith(".json") for name in names)
    assert sum(".jsonl:" in name for name in names) >= 5


@pytest.mark.parametrize(("name", "document"), FIXTURES, ids=[name for name, _ in FIXTURES])
def test_every_fixture_document_builds_identically(name: str, document: dict[str, Any]) -> None:
    """Building a repository document gives the same definition and the same stored bytes."""
    expected = workflow_from_builtins(document)
    wf = build(document)
    assert wf.spec() == expected
    assert wf.to_json().encode() == encode_workflow(expected)
    assert wf.to_dict() == msgspec.json.decode(encode_workflow(expected))


def test_a_canonical_document_is_kept_as_written() -> None:
    """A document without default values written out comes back key for key."""
    document = json.loads((ROOT / "examples" / "example.json").read_text())
    assert build(document).to_dict() == document


_ids = st.from_regex(r"\A[a-z][a-z0-9_.:-]{0,6}\Z")
_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-1000, 1000), st.text(alphabet="abc xyz", max_size=5)
)
_json = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text("abc", max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
_retry = st.builds(
    lambda attempts, initial, extra, factor, jitter, non_retryable: {
        "maxAttempts": attempts,
        "initialDelay": initial,
        "maxDelay": initial + extra,
        "backoffFactor": factor,
        "jitter": jitter,
        "nonRetryable": non_retryable,
    },
    st.integers(1, 100),
    st.floats(0, 100),
    st.floats(0, 100),
    st.floats(1, 100),
    st.floats(0, 1),
    st.lists(st.sampled_from(["ValueError", "KeyError", "Oops"]), max_size=2),
)
_optional = {
    "name": st.text("abc de", max_size=8),
    "retry": _retry,
    "timeout": st.floats(0.5, 3600),
    "trigger": st.sampled_from(["all_success", "all_done", "one_failed", "always"]),
    "outputs": st.dictionaries(
        st.sampled_from(["a", "b"]), st.sampled_from(["$.result", "$.inputs.x"])
    ),
    "inputs": st.dictionaries(
        st.sampled_from(["x", "y", "z"]),
        _json | st.sampled_from(["$.params.p", "$.tasks", "$.result[0]"]),
        max_size=3,
    ),
}


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """Valid workflow documents in canonical form (what the server stores)."""
    ids = draw(st.lists(_ids, min_size=1, max_size=6, unique=True))
    tasks = []
    for index, task_id in enumerate(ids):
        task: dict[str, Any] = {"id": task_id, "handler": draw(st.sampled_from(["echo", "h.x"]))}
        task["dependencies"] = (
            draw(st.lists(st.sampled_from(ids[:index]), unique=True)) if index else []
        )
        for key, strategy in _optional.items():
            if draw(st.booleans()):
                task[key] = draw(strategy)
        tasks.append(task)
    document: dict[str, Any] = {"id": draw(_ids), "tasks": tasks}
    if draw(st.booleans()):
        document["defaults"] = {"retry": draw(_retry), "timeout": draw(_optional["timeout"])}
    for key, strategy in {
        "name": _optional["name"],
        "description": st.text("xyz ", max_size=20),
        "onTaskFailure": st.sampled_from(["fail", "pause"]),
    }.items():
        if draw(st.booleans()):
            document[key] = draw(strategy)
    canonical: dict[str, Any] = msgspec.json.decode(
        encode_workflow(workflow_from_builtins(document))
    )
    return canonical


@given(documents())
def test_document_builder_document_is_identity(document: dict[str, Any]) -> None:
    """Any valid document, written with the builder, is the same document."""
    assert build(document).to_dict() == document


def test_handlers_by_decorated_function() -> None:
    """A function @handler registered stands for its name; another function is refused."""

    @flowweaver.handler("builder_test_fetch")
    def fetch(inputs: dict[str, Any]) -> dict[str, Any]:
        return {}

    def stray(inputs: dict[str, Any]) -> None:
        return None

    wf = Workflow("w")
    wf.task("a", fetch)
    assert wf.to_dict()["tasks"][0]["handler"] == "builder_test_fetch"
    with pytest.raises(HandlerError, match="stray is not a registered handler"):
        wf.task("b", stray)


def test_a_function_under_two_names_needs_the_name() -> None:
    """A function registered twice is ambiguous: the builder asks for the name."""

    def twice(inputs: dict[str, Any]) -> None:
        return None

    flowweaver.handler("builder_twice_a")(twice)
    flowweaver.handler("builder_twice_b")(twice)
    with pytest.raises(HandlerError, match="builder_twice_a, builder_twice_b"):
        Workflow("w").task("a", twice)


@pytest.mark.parametrize(
    "mistake",
    [
        lambda wf: wf.task("a", "echo", retry={"max_attempts": 0}),
        lambda wf: wf.task("a", "echo", after=["nope"]),
        lambda wf: wf.task("a", "echo", trigger="sometimes"),  # type: ignore[arg-type]
        lambda wf: wf.task("a", "echo", inputs={"x": "$.[["}),
        lambda wf: wf.task("a", "echo", colour="red"),
        lambda wf: (wf.task("a", "echo"), wf.task("a", "noop")),
        lambda wf: wf.task("bad id", "echo"),
        lambda wf: None,
    ],
)
def test_validation_errors_are_the_servers(mistake: Any) -> None:
    """A bad workflow raises the errors, paths included, that POST /workflows answers."""
    wf = Workflow("w", timeout=10)
    mistake(wf)
    with pytest.raises(ValidationError) as built:
        wf.spec()
    document = json.dumps({"id": "w", "defaults": {"timeout": 10}, "tasks": wf._tasks})
    with pytest.raises(ValidationError) as decoded:
        decode_workflow(document)
    assert built.value.errors == decoded.value.errors


def test_refs_quote_odd_ids_and_add_dependencies() -> None:
    """Output refs bracket ids a dotted path cannot hold, and make the reader depend."""
    wf = Workflow("w")
    a = wf.task("load.v2", "echo", inputs={"rows": [1, 2], "url": Workflow.param("url")})
    b = wf.task("sum", "echo", inputs={"first": a.output("rows", 0), "all": a.output()})
    assert a.output("odd-key") == '$.tasks["load.v2"]["odd-key"]'
    assert a.result == '$.tasks["load.v2"].result'
    document = wf.to_dict()
    assert document["tasks"][1]["dependencies"] == ["load.v2"]
    assert document["tasks"][1]["inputs"] == {
        "first": '$.tasks["load.v2"].rows[0]',
        "all": '$.tasks["load.v2"]',
    }
    assert repr(b) == "TaskRef('sum')"


def test_a_built_workflow_runs_and_registers_as_its_json() -> None:
    """The engine runs a built workflow; its JSON document registers as the same version."""
    wf = Workflow("built", description="built in Python", retry={"max_attempts": 2})
    a = wf.task("load.v2", "echo", inputs={"rows": [1, 2], "url": Workflow.param("url")})
    wf.task("use", "echo", inputs={"first": a.output("result", "rows", 0), "url": a.result})
    registry: HandlerRegistry = builtin_registry()
    engine = Engine(MemoryEventStore(), handlers=registry, workers=2)
    try:
        assert engine.register_workflow(wf.spec()) == (1, True)
        assert engine.register_workflow(json.loads(wf.to_json())) == (1, False)
        handle = engine.start_run("built", parameters={"url": "https://example.com"})
        state = engine.wait_run_finished(handle.run_id, timeout=10)
    finally:
        engine.close()
    assert state.status == "completed"
    assert state.tasks["use"].output == {
        "result": {"first": 1, "url": {"rows": [1, 2], "url": "https://example.com"}}
    }
