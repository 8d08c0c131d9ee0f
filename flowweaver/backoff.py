"""Exponential backoff: how long to wait before the next try, and nothing else.

Pure: no clock, no sleep, no randomness of its own. A caller that wants jitter passes a sample
in [0, 1] (``random.random()``), so the delays stay reproducible in tests.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_EXPONENT = 64
"""Attempts beyond this many wait as long as this one: ``factor ** attempt`` stays a float."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays ``base * factor ** attempt`` seconds, at most ``cap``, less up to ``jitter`` of it.

    ``jitter`` is the fraction of the delay a sample of 1.0 takes off (0 for none, 1 for "full
    jitter"), so that clients that failed together do not all try again at the same instant.
    """

    base: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError(f"base and cap must be >= 0, not {self.base} and {self.cap}")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, not {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {self.jitter}")

    def delay(self, attempt: int, sample: float = 0.0) -> float:
        """Return the seconds to wait before try ``attempt`` (0 or less: ``base``).

        ``sample`` in [0, 1] scales the jitter; with the default 0.0 the delay is the plain one.
        """
        exponent = min(max(attempt, 0), MAX_EXPONENT)
        plain = min(self.cap, self.base * self.factor**exponent)
        return plain * (1.0 - self.jitter * min(max(sample, 0.0), 1.0))
