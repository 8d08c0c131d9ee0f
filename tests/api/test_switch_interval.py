"""``serve`` sets a short GIL switch interval, FLOWWEAVER_SWITCH_INTERVAL overriding it."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from flowweaver.api.app import SWITCH_INTERVAL, set_switch_interval
from flowweaver.cli import main
from flowweaver.errors import ValidationError


@pytest.fixture(autouse=True)
def _restore_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_the_default_is_half_a_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the variable the interval is 0.5 ms, a tenth of the interpreter's default."""
    monkeypatch.delenv("FLOWWEAVER_SWITCH_INTERVAL", raising=False)
    sys.setswitchinterval(0.005)
    set_switch_interval()
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL) == pytest.approx(0.0005)


def test_the_variable_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """FLOWWEAVER_SWITCH_INTERVAL=0.002 sets 2 ms."""
    monkeypatch.setenv("FLOWWEAVER_SWITCH_INTERVAL", "0.002")
    set_switch_interval()
    assert sys.getswitchinterval() == pytest.approx(0.002)


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "5", "nan", ""])
def test_a_bad_value_is_refused(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    """A value that is not seconds in (0, 1] is refused and the interval stays as it was."""
    monkeypatch.setenv("FLOWWEAVER_SWITCH_INTERVAL", raw)
    sys.setswitchinterval(0.004)
    with pytest.raises(ValidationError):
        set_switch_interval()
    assert sys.getswitchinterval() == pytest.approx(0.004)


def test_serve_refuses_a_bad_value_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``serve`` with a bad FLOWWEAVER_SWITCH_INTERVAL exits 1 with one line, serving nothing."""
    monkeypatch.setenv("FLOWWEAVER_SWITCH_INTERVAL", "soon")
    assert main(["serve", "--store", "memory://", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "FLOWWEAVER_SWITCH_INTERVAL" in err
