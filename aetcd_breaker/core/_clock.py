"""Time for the breaker: reading it, sleeping until a moment, and timers."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, runtime_checkable

import anyio

from .errors import InvalidSettingError, InvalidSettingTypeError

__all__ = [
    "Clock",
    "ClockScope",
    "FakeClock",
    "MonotonicClock",
    "TimerHandle",
    "scope_until",
]


class TimerHandle(Protocol):
    """What a clock's timer returns: something that can be cancelled."""

    def cancel(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    """What the breaker needs of time.

    ``now()`` is read on the hot path, so it must be cheap. ``sleep_until``
    and ``call_at`` let a fake clock drive open durations and call deadlines
    in tests without any real waiting.
    """

    def now(self) -> float:
        """Return the current time in seconds (monotonic)."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Return once ``now() >= when``."""
        ...

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Run ``callback()`` (on the event loop) once ``now() >= when``."""
        ...


class MonotonicClock:
    """The default clock: ``time.monotonic``, the same base as asyncio's loop."""

    __slots__ = ()

    now = staticmethod(time.monotonic)

    async def sleep_until(self, when: float) -> None:
        await anyio.sleep(max(0.0, when - time.monotonic()))

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        # Only asyncio has loop timers; on trio the breaker uses cancel scopes
        # with anyio deadlines for this clock instead.
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, when - time.monotonic()), callback)


class ClockScope:
    """A cancel scope that a clock's timer cancels; the timer stops on exit."""

    __slots__ = ("scope", "timer")

    def __init__(self, clock: Clock, when: float) -> None:
        self.scope = anyio.CancelScope()
        self.timer = clock.call_at(when, self.scope.cancel)

    @property
    def cancelled_caught(self) -> bool:
        return self.scope.cancelled_caught

    def __enter__(self) -> anyio.CancelScope:
        return self.scope.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        # A timer left behind would count as a sleeper on a FakeClock.
        self.timer.cancel()
        return bool(self.scope.__exit__(exc_type, exc, tb))


def scope_until(clock: Clock, when: float | None) -> anyio.CancelScope | ClockScope:
    """A cancel scope that ``clock`` cancels once ``now() >= when`` (never: None)."""
    if when is None:
        return anyio.CancelScope()
    if type(clock) is MonotonicClock:
        # anyio's deadlines run on the backend's own clock (trio's is offset
        # from time.monotonic), so translate through the remaining seconds.
        remaining = max(0.0, when - time.monotonic())
        return anyio.CancelScope(deadline=anyio.current_time() + remaining)
    return ClockScope(clock, when)


def _fake_seconds(setting: str, value: object, *, low: float | None) -> float:
    """A finite number for a fake clock (at least ``low``), or a named error."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSettingTypeError(setting, value, "a number of seconds")
    try:
        seconds = float(value)
    except OverflowError:  # an int past float range
        seconds = math.inf
    if not math.isfinite(seconds):
        raise InvalidSettingError(setting, value, "a finite number")
    if low is not None and not seconds >= low:
        raise InvalidSettingError(setting, value, f"at least {low:g}")
    return seconds


class _FakeTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that moves only when a test calls :meth:`advance`.

    Sleepers and timers registered with it fire during ``advance`` once
    their moment has come, on asyncio and on trio alike. Nothing waits for
    real time.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = _fake_seconds("start", start, low=None)
        self._seq = itertools.count()
        self._timers: list[tuple[float, int, _FakeTimer]] = []

    def now(self) -> float:
        return self._now

    @property
    def sleepers(self) -> int:
        """How many timers (sleeps, deadlines, waits) are pending right now."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        timer = _FakeTimer(callback)
        if when <= self._now:
            callback()
        else:
            heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        timer = self.call_at(when, event.set)
        try:
            await event.wait()
        finally:
            timer.cancel()

    def deadline_scope(self, when: float) -> ClockScope:
        """A cancel scope this clock cancels once ``now() >= when``."""
        return ClockScope(self, when)

    def advance(self, seconds: float) -> None:
        """Move time forward and run whatever has fallen due, in time order."""
        self._now += _fake_seconds("seconds", seconds, low=0)
        while self._timers and self._timers[0][0] <= self._now:
            timer = heapq.heappop(self._timers)[2]
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback()

    async def wait_for_sleepers(self, count: int = 1) -> None:
        """Let other tasks run until at least ``count`` timers are pending."""
        while self.sleepers < count:
            await anyio.sleep(0)
