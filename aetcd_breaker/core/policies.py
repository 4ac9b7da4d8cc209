"""When to trip (rules over :class:`Counts`) and how long to stay open."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .errors import InvalidSettingError, InvalidSettingTypeError
from .events import Counts

__all__ = [
    "ConsecutiveFailures",
    "ExponentialBackoff",
    "FailureRate",
    "FixedDuration",
    "OpenDuration",
    "SlowCallRate",
    "TripRule",
]

TripRule = Callable[[Counts], bool]
"""Any function of the counts; the breaker trips when one returns true."""


def check_number(
    setting: str, value: object, *, low: float = 0.0, strict: bool = False
) -> float:
    """Validate a finite number above (or at) ``low``; name the setting if not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSettingTypeError(setting, value, "a number")
    bad = value <= low if strict else value < low
    if bad or not finite(value):
        bound = f"above {low:g}" if strict else f"at least {low:g}"
        raise InvalidSettingError(setting, value, f"a finite number {bound}")
    return float(value)


def finite(value: float) -> bool:
    """Whether ``value`` is a finite float, or an int that converts to one."""
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past float range, 2**1024 and up
        return False


def check_count(setting: str, value: object, low: int = 1) -> int:
    """Validate a whole number of at least ``low``; name the setting if not."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSettingTypeError(setting, value, "an int")
    if value < low:
        raise InvalidSettingError(setting, value, f"at least {low}")
    return value


def check_ratio(setting: str, value: object) -> float:
    """Validate a ratio in (0, 1]."""
    ratio = check_number(setting, value, strict=True)
    if ratio > 1:
        raise InvalidSettingError(setting, value, "a ratio in (0, 1]")
    return ratio


@dataclass(frozen=True, slots=True)
class ConsecutiveFailures:
    """Trip after ``threshold`` counted failures in a row."""

    threshold: int

    def __post_init__(self) -> None:
        check_count("failure_threshold", self.threshold)

    def __call__(self, counts: Counts) -> bool:
        return counts.consecutive_failures >= self.threshold


@dataclass(frozen=True, slots=True)
class FailureRate:
    """Trip when failures make up at least ``threshold`` of the calls.

    The rule stays silent until ``minimum_calls`` calls have been counted.
    """

    threshold: float
    minimum_calls: int = 10

    def __post_init__(self) -> None:
        check_ratio("FailureRate.threshold", self.threshold)
        check_count("FailureRate.minimum_calls", self.minimum_calls)

    def __call__(self, counts: Counts) -> bool:
        # failures / calls, as documented: threshold * calls can round up
        # past a whole count (0.55 * 100 is 55.00000000000001).
        return (
            counts.calls >= self.minimum_calls
            and counts.failures / counts.calls >= self.threshold
        )


@dataclass(frozen=True, slots=True)
class SlowCallRate:
    """Trip when calls slower than ``slow_call_duration`` make up ``threshold``.

    A call is slow by its duration alone, whether it succeeded or failed; a
    call that hit its deadline is both failed and slow.
    """

    threshold: float
    slow_call_duration: float
    minimum_calls: int = 10

    def __post_init__(self) -> None:
        check_ratio("SlowCallRate.threshold", self.threshold)
        check_number(
            "SlowCallRate.slow_call_duration", self.slow_call_duration, strict=True
        )
        check_count("SlowCallRate.minimum_calls", self.minimum_calls)

    def __call__(self, counts: Counts) -> bool:
        return (
            counts.calls >= self.minimum_calls
            and counts.slow_calls / counts.calls >= self.threshold
        )


class OpenDuration(Protocol):
    """How long to stay open on the n-th opening in a row (n starts at 1)."""

    def __call__(self, attempt: int) -> float: ...


@dataclass(frozen=True, slots=True)
class FixedDuration:
    """The same open duration every time."""

    seconds: float

    def __post_init__(self) -> None:
        check_number("reset_timeout", self.seconds)

    def __call__(self, attempt: int) -> float:
        return self.seconds


@dataclass(frozen=True, slots=True)
class ExponentialBackoff:
    """``base * factor ** (n - 1)`` seconds on the n-th opening in a row, capped.

    With ``jitter`` j (0 to 1) each duration is drawn uniformly from
    ``[d * (1 - j), d]``, so instances of a service that opened together do
    not probe etcd in lock-step. Closing the breaker starts again from ``base``.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    jitter: float = 0.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def __post_init__(self) -> None:
        check_number("ExponentialBackoff.base", self.base, strict=True)
        check_number("ExponentialBackoff.factor", self.factor, low=1.0)
        check_number("ExponentialBackoff.cap", self.cap, strict=True)
        jitter = check_number("ExponentialBackoff.jitter", self.jitter)
        if jitter > 1:
            raise InvalidSettingError(
                "ExponentialBackoff.jitter", self.jitter, "between 0 and 1"
            )
        if not callable(getattr(self.rng, "random", None)):
            raise InvalidSettingTypeError(
                "ExponentialBackoff.rng", self.rng, "a random.Random"
            )
        if self.cap < self.base:
            raise InvalidSettingError(
                "ExponentialBackoff.cap", self.cap, f"at least base ({self.base:g})"
            )

    def __call__(self, attempt: int) -> float:
        exponent = max(0, attempt - 1)
        # Compare in log space so a long outage cannot overflow the float.
        # (cap / base itself overflows for a tiny base, hence the difference).
        growth = exponent * math.log(self.factor)
        if growth >= math.log(self.cap) - math.log(self.base):
            duration = self.cap
        else:
            try:
                duration = min(self.cap, self.base * self.factor**exponent)
            except OverflowError:
                # factor ** exponent alone is past float range, the product
                # is not (a tiny base): take the product in log space.
                duration = min(self.cap, math.exp(math.log(self.base) + growth))
        if self.jitter:
            duration *= 1.0 - self.jitter * self.rng.random()
        return duration
