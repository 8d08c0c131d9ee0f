"""The table of environment-backed flags: each flag, its FLOWWEAVER_* variable, help and docs."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from flowweaver import cli

ROOT = Path(__file__).resolve().parents[1]
# A valid text for each serve flag, and the value it parses to.
SAMPLES = {
    "--host": ("0.0.0.0", "0.0.0.0"),  # noqa: S104 - parsed, never bound
    "--port": ("8080", 8080),
    "--store": ("sqlite:///x.db", "sqlite:///x.db"),
    "--auth": ("token", "token"),
    "--handlers": ("a.py", ["a.py"]),
    "--workers": ("3", 3),
    "--actor-threads": ("4", 4),
    "--example-handlers": ("0", False),
    "--log-format": ("json", "json"),
    "--log-level": ("debug", "DEBUG"),
    "--body-limit": ("2MiB", 2 * 1024 * 1024),
    "--heartbeat": ("2.5", 2.5),
    "--sse-buffer": ("64KiB", 64 * 1024),
    "--sse-drain-timeout": ("1", 1.0),
    "--header-timeout": ("2", 2.0),
    "--body-timeout": ("3", 3.0),
    "--keepalive-timeout": ("4", 4.0),
    "--max-connections": ("10", 10),
    "--max-connections-per-client": ("5", 5),
    "--health-connections": ("2", 2),
    "--rate-limit": ("20", 20),
    "--sse-per-client": ("4", 4),
    "--grace": ("6", 6.0),
    "--scheduler": ("0", False),
    "--max-task-data": ("4KiB", 4096),
    "--allowed-host": ("api.example.com", ["api.example.com"]),
    "--cors-origin": ("https://App.example.com:443", ["https://app.example.com"]),
    "--tls-cert": ("cert.pem", "cert.pem"),
    "--tls-key": ("key.pem", "key.pem"),
}
TYPED = [o for o in cli._SERVE if o.convert not in (str, str.upper)]


def _serve_help() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.build_parser().parse_args(["serve", "--help"])
    return " ".join(out.getvalue().split())


def test_every_serve_flag_has_a_sample() -> None:
    """The samples below cover every serve flag, so the tests that use them cover the table."""
    assert {o.flag for o in cli._SERVE} == set(SAMPLES)


@pytest.mark.parametrize("option", cli._SERVE, ids=lambda o: o.flag)
def test_the_variable_and_the_flag_set_the_same_value(
    option: cli._Option, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FLOWWEAVER_<FLAG>=V and --flag V parse to the same value; the flag wins over both."""
    text, value = SAMPLES[option.flag]
    dest = option.flag.removeprefix("--").replace("-", "_")
    from_flag = cli.build_parser().parse_args(["serve", option.flag, text])
    monkeypatch.setenv(option.env, text)
    from_env = cli.build_parser().parse_args(["serve"])
    assert getattr(from_flag, dest) == getattr(from_env, dest) == value


@pytest.mark.parametrize("option", cli._SERVE, ids=lambda o: o.flag)
def test_an_empty_variable_is_no_setting(
    option: cli._Option, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FLOWWEAVER_<FLAG>= (empty) leaves the default, for text flags too (an empty HOST meant every
    interface)."""
    dest = option.flag.removeprefix("--").replace("-", "_")
    default = getattr(cli.build_parser().parse_args(["serve"]), dest)
    monkeypatch.setenv(option.env, "")
    assert getattr(cli.build_parser().parse_args(["serve"]), dest) == default


@pytest.mark.parametrize("option", TYPED, ids=lambda o: o.flag)
def test_a_bad_variable_is_a_usage_error_that_names_it(
    option: cli._Option, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A variable its flag could not parse is exit 2 with one line naming the variable."""
    monkeypatch.setenv(option.env, "x1")
    assert cli.main(["serve"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"flowweaver: error: {option.env}: ")


def test_the_help_and_the_docs_name_every_variable() -> None:
    """`serve --help` shows each flag with its variable; docs/operations.md lists both."""
    shown = _serve_help()
    docs = (ROOT / "docs" / "operations.md").read_text()
    for option in cli._SERVE:
        assert f"{option.flag} " in shown, option.flag
        assert f"({option.env}" in shown, option.env
        assert f"| `{option.flag}` | `{option.env}` |" in docs, option.flag


def test_a_repeatable_flag_adds_each_use_and_replaces_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--allowed-host a --allowed-host b,c gives all three; flags replace the variable's list."""
    monkeypatch.setenv("FLOWWEAVER_ALLOWED_HOST", "from-env.example, other.example")
    parse = cli.build_parser().parse_args
    assert parse(["serve"]).allowed_host == ["from-env.example", "other.example"]
    args = parse(["serve", "--allowed-host", "a.example", "--allowed-host", "b.example", "c"])
    assert args.allowed_host == ["a.example", "b.example", "c"]
    origins = ["--cors-origin", "https://a.example", "--cors-origin", "http://localhost:8080"]
    assert parse(["serve", *origins]).cors_origin == ["https://a.example", "http://localhost:8080"]
