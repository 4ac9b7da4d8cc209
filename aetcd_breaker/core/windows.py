"""Sliding windows of recent outcomes: the last N calls, or the last T seconds.

Recording costs O(1) and a window's memory is fixed by its size, whatever the
traffic. Only counted outcomes enter a window; errors that are not counted
stay out of it.
"""

from __future__ import annotations

import math
from array import array
from typing import Protocol

from .errors import InvalidSettingError, InvalidSettingTypeError
from .policies import finite

__all__ = ["CountWindow", "TimeWindow", "Window"]

_FAILED = 1
_SLOW = 2


class Window(Protocol):
    """What the breaker needs of a window."""

    needs_time: bool

    def record(self, now: float, failed: bool, slow: bool) -> None: ...

    def totals(self, now: float) -> tuple[int, int, int]:
        """Return (calls, failures, slow calls) inside the window at ``now``."""
        ...

    def clear(self) -> None: ...


MAX_SIZE = 10_000_000
"""The most calls a CountWindow holds (a byte each)."""

MAX_BUCKETS = 10_000
"""The most buckets a TimeWindow has: after a pause, a call may step over
every one of them in Python."""


def _positive_int(setting: str, value: object, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSettingTypeError(setting, value, "an int")
    # A size past these would take gigabytes, or past the index range raise
    # OverflowError, before the breaker ever ran.
    if not 1 <= value <= most:
        raise InvalidSettingError(setting, value, f"between 1 and {most:_}")
    return value


class CountWindow:
    """The outcomes of the last ``size`` calls."""

    __slots__ = ("_codes", "_failures", "_filled", "_next", "_slow", "size")

    needs_time = False

    def __init__(self, size: int) -> None:
        self.size = _positive_int("CountWindow.size", size, MAX_SIZE)
        self._codes = bytearray(self.size)
        self._next = 0
        self._filled = 0
        self._failures = 0
        self._slow = 0

    def __repr__(self) -> str:
        return f"CountWindow({self.size})"

    def record(self, now: float, failed: bool, slow: bool) -> None:
        i = self._next
        if self._filled == self.size:
            old = self._codes[i]
            self._failures -= old & _FAILED
            self._slow -= (old & _SLOW) >> 1
        else:
            self._filled += 1
        self._codes[i] = failed | (slow << 1)
        self._failures += failed
        self._slow += slow
        self._next = i + 1 if i + 1 < self.size else 0

    def totals(self, now: float) -> tuple[int, int, int]:
        return self._filled, self._failures, self._slow

    def clear(self) -> None:
        self._next = self._filled = self._failures = self._slow = 0


_MIN_BUCKET = 1e-6
"""Seconds a time window's bucket spans at the least."""


class TimeWindow:
    """The outcomes of the last ``seconds``, kept in ``buckets`` equal slices.

    The window slides one bucket at a time, so it covers between
    ``seconds - seconds / buckets`` and ``seconds`` of history.
    """

    __slots__ = (
        "_calls",
        "_failures",
        "_head",
        "_slow",
        "_sums",
        "_width",
        "_zeros",
        "buckets",
        "seconds",
    )

    needs_time = True

    def __init__(self, seconds: float, buckets: int = 10) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise InvalidSettingTypeError("TimeWindow.seconds", seconds, "a number")
        if not (seconds > 0 and finite(seconds)):
            raise InvalidSettingError(
                "TimeWindow.seconds", seconds, "a finite number above 0"
            )
        self.seconds = float(seconds)
        self.buckets = _positive_int("TimeWindow.buckets", buckets, MAX_BUCKETS)
        self._width = self.seconds / self.buckets
        if self._width < _MIN_BUCKET:
            raise InvalidSettingError(
                "TimeWindow.seconds",
                seconds,
                f"at least {_MIN_BUCKET * self.buckets:g} s "
                f"(1 microsecond for each of {self.buckets} buckets)",
            )
        self._zeros = array("q", bytes(8 * self.buckets))
        self._calls = array("q", self._zeros)
        self._failures = array("q", self._zeros)
        self._slow = array("q", self._zeros)
        self._sums = [0, 0, 0]
        self._head: int | None = None

    def __repr__(self) -> str:
        return f"TimeWindow({self.seconds:g}, buckets={self.buckets})"

    def _roll(self, now: float) -> int:
        slot = math.floor(now / self._width)
        head = self._head
        if head is None or slot - head >= self.buckets:
            self.clear()
        elif slot > head:
            for stale in range(head + 1, slot + 1):
                i = stale % self.buckets
                self._sums[0] -= self._calls[i]
                self._sums[1] -= self._failures[i]
                self._sums[2] -= self._slow[i]
                self._calls[i] = self._failures[i] = self._slow[i] = 0
        elif slot < head:
            # A clock that went backwards (a fake clock rewound in a test):
            # keep counting into the newest bucket rather than lose outcomes.
            return head
        self._head = slot
        return slot

    def record(self, now: float, failed: bool, slow: bool) -> None:
        i = self._roll(now) % self.buckets
        self._calls[i] += 1
        self._failures[i] += failed
        self._slow[i] += slow
        sums = self._sums
        sums[0] += 1
        sums[1] += failed
        sums[2] += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        self._roll(now)
        calls, failures, slow = self._sums
        return calls, failures, slow

    def clear(self) -> None:
        zeros = self._zeros
        self._calls[:] = zeros
        self._failures[:] = zeros
        self._slow[:] = zeros
        self._sums = [0, 0, 0]
        self._head = None
