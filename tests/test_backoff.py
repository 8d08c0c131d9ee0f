"""The one exponential backoff: delays per attempt, the cap, the jitter and bad settings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowweaver.backoff import Backoff


def test_delays_double_from_the_base_up_to_the_cap() -> None:
    """Attempt n waits base * 2**n seconds until the cap, then the cap."""
    backoff = Backoff(base=0.05, cap=1.0)
    assert [backoff.delay(n) for n in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_any_attempt_count_gives_the_cap_not_an_overflow() -> None:
    """A huge attempt count (a server away for hours) waits the cap; 2**1024 is no float."""
    assert Backoff(base=0.05, cap=2.0).delay(10**6) == 2.0


def test_attempts_below_zero_wait_the_base() -> None:
    """Attempt 0 and below wait the base delay."""
    backoff = Backoff(base=0.001, cap=0.05)
    assert backoff.delay(0) == backoff.delay(-3) == 0.001


def test_another_factor() -> None:
    """The factor replaces 2."""
    assert [Backoff(base=1.0, cap=100.0, factor=3.0).delay(n) for n in range(4)] == [
        1.0,
        3.0,
        9.0,
        27.0,
    ]


def test_jitter_takes_off_its_fraction_scaled_by_the_sample() -> None:
    """With jitter j, a sample s takes j * s of the delay off; sample 0 is the plain delay."""
    backoff = Backoff(base=1.0, cap=8.0, jitter=0.5)
    assert backoff.delay(2) == 4.0
    assert backoff.delay(2, sample=1.0) == 2.0
    assert backoff.delay(10, sample=0.5) == 6.0


@given(
    attempt=st.integers(min_value=-10, max_value=10**9),
    sample=st.floats(min_value=-1.0, max_value=2.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
def test_every_delay_is_within_zero_and_the_cap(attempt: int, sample: float, jitter: float) -> None:
    """Whatever the attempt and sample, the delay is in [0, cap]."""
    delay = Backoff(base=0.05, cap=5.0, jitter=jitter).delay(attempt, sample)
    assert 0.0 <= delay <= 5.0


@pytest.mark.parametrize(
    "settings",
    [
        {"base": -1.0, "cap": 1.0},
        {"base": 1.0, "cap": -1.0},
        {"base": 1.0, "cap": 1.0, "factor": 0.5},
        {"base": 1.0, "cap": 1.0, "jitter": 1.5},
    ],
)
def test_settings_that_make_no_backoff_are_refused(settings: dict[str, float]) -> None:
    """A negative base or cap, a shrinking factor or jitter outside [0, 1] is a ValueError."""
    with pytest.raises(ValueError, match="must be"):
        Backoff(**settings)
