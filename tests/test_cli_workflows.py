"""`flowweaver workflows register` takes a JSON file or module:attribute; errors are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowweaver.cli import main
from flowweaver.store import open_store
from tests.test_cli import fw

ROOT = Path(__file__).resolve().parents[1]

MODULE = """
from flowweaver import Workflow
from flowweaver.domain.spec import workflow_from_builtins

wf = Workflow("etl", description="built in Python")
fetch = wf.task("fetch", "echo", inputs={"url": Workflow.param("url")})
wf.task("use", "echo", inputs={"got": fetch.result})

as_dict = {"id": "plain", "tasks": [{"id": "a", "handler": "noop"}]}
as_spec = workflow_from_builtins({"id": "spec", "tasks": [{"id": "a", "handler": "noop"}]})
number = 3
broken = Workflow("broken")
"""


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Write a module of workflows in a fresh directory and make it the current one."""
    name = f"wf_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def register(source: str, store: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["workflows", "register", source, "--store", store])
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def test_register_a_builder_a_dict_and_a_spec(
    module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each kind of attribute registers; the same definition again records nothing."""
    store = f"sqlite:///{tmp_path / 'fw.db'}"
    assert register(f"{module}:wf", store, capsys) == (0, "workflow etl v1 registered", "")
    assert register(f"{module}:wf", store, capsys) == (0, "workflow etl v1 unchanged", "")
    assert register(f"{module}:as_dict", store, capsys)[:2] == (0, "workflow plain v1 registered")
    assert register(f"{module}:as_spec", store, capsys)[:2] == (0, "workflow spec v1 registered")
    assert register(f"{module}.py:wf", store, capsys)[:2] == (0, "workflow etl v1 unchanged")
    opened = open_store(store)
    try:
        assert opened.get_workflow("etl") is not None
    finally:
        opened.close()


def test_a_json_file_registers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A JSON document registers as before the builder existed."""
    store = f"sqlite:///{tmp_path / 'fw.db'}"
    source = str(ROOT / "examples" / "example.json")
    assert register(source, store, capsys)[:2] == (0, "workflow example-workflow v1 registered")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{m}:missing", "flowweaver: error: module '{m}' has no attribute 'missing'"),
        ("no_such_module_xyz:wf", "flowweaver: error: no module named 'no_such_module_xyz'"),
        ("{m}:number", "flowweaver: error: {m}:number is of type int, not a Workflow, "),
        ("{m}:broken", "flowweaver: error: $.tasks: a workflow needs at least one task"),
        ("{m}:1x", "flowweaver: error: {m}:1x: '1x' is not an attribute name"),
        ("missing.json", "flowweaver: error: cannot read missing.json: No such file"),
        ("missing.py:wf", "flowweaver: error: no file missing.py"),
    ],
)
def test_bad_sources_are_one_line(
    module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, message: str
) -> None:
    """A missing module, file or attribute, a wrong type, an invalid workflow: one line, exit 1."""
    store = f"sqlite:///{tmp_path / 'fw.db'}"
    code, out, err = register(source.format(m=module), store, capsys)
    assert (code, out) == (1, "")
    assert err.startswith(message.format(m=module))
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "fw.db").exists()  # nothing stored, no store made


def test_a_module_of_the_current_directory(tmp_path: Path) -> None:
    """The installed command finds a module beside the user, as `python -m` would; `run` too."""
    (tmp_path / "my_flows.py").write_text(MODULE)
    done = fw("workflows", "register", "my_flows:wf", "--store", "sqlite:///fw.db", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "workflow etl v1 registered\n", "")
    done = fw(
        "run", "my_flows:wf", "--params", '{"url": "u"}', "--store", "sqlite:///fw.db", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].endswith("(etl v1)")
    assert "completed" in done.stdout.splitlines()[-1]
    failing = tmp_path / "failing.py"
    failing.write_text("raise RuntimeError('boom')\n")
    done = fw("workflows", "register", "failing:wf", "--store", "sqlite:///fw.db", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == "flowweaver: error: cannot import 'failing': RuntimeError: boom\n"
