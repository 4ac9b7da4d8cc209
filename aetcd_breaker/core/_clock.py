"""Time for the breaker: reading it, sleeping until a moment, and deadlines."""

from __future__ import annotations

import heapq
import itertools
import math
import time
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "FakeClock", "MonotonicClock"]


@runtime_checkable
class Clock(Protocol):
    """What the breaker needs of time.

    ``now()`` is read on the hot path, so it must be cheap. ``sleep_until``
    and ``deadline_scope`` let a fake clock drive open durations and call
    deadlines in tests without any real waiting.
    """

    def now(self) -> float:
        """Return the current time in seconds (monotonic)."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Return once ``now() >= when``."""
        ...

    def deadline_scope(self, when: float) -> anyio.CancelScope:
        """Return a cancel scope that cancels its body once ``now() >= when``."""
        ...


class MonotonicClock:
    """The default clock: ``time.monotonic``, the same base as asyncio's loop."""

    __slots__ = ()

    now = staticmethod(time.monotonic)

    async def sleep_until(self, when: float) -> None:
        await anyio.sleep(max(0.0, when - time.monotonic()))

    def deadline_scope(self, when: float) -> anyio.CancelScope:
        # anyio's deadlines run on the backend's own clock (trio's is offset
        # from time.monotonic), so translate through the remaining seconds.
        remaining = max(0.0, when - time.monotonic())
        return anyio.CancelScope(deadline=anyio.current_time() + remaining)


class FakeClock:
    """A clock that moves only when a test calls :meth:`advance`.

    Sleepers and deadlines registered with it fire during ``advance`` once
    their moment has come, on asyncio and on trio alike. Nothing waits for
    real time.
    """

    def __init__(self, start: float = 0.0) -> None:
        if not math.isfinite(start):
            raise ValueError(f"start must be a finite number, got {start!r}")
        self._now = float(start)
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._scopes: list[tuple[float, int, anyio.CancelScope]] = []

    def now(self) -> float:
        return self._now

    @property
    def sleepers(self) -> int:
        """How many tasks are sleeping on this clock right now."""
        return sum(1 for _, _, event in self._sleepers if not event.is_set())

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (when, next(self._seq), event))
        await event.wait()

    def deadline_scope(self, when: float) -> anyio.CancelScope:
        scope = anyio.CancelScope()
        if when <= self._now:
            scope.cancel()
        else:
            heapq.heappush(self._scopes, (when, next(self._seq), scope))
        return scope

    def advance(self, seconds: float) -> None:
        """Move time forward and wake whatever has fallen due."""
        if not seconds >= 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        self._now += seconds
        while self._scopes and self._scopes[0][0] <= self._now:
            heapq.heappop(self._scopes)[2].cancel()
        while self._sleepers and self._sleepers[0][0] <= self._now:
            heapq.heappop(self._sleepers)[2].set()

    async def wait_for_sleepers(self, count: int = 1) -> None:
        """Let other tasks run until at least ``count`` of them sleep here."""
        while self.sleepers < count:
            await anyio.sleep(0)
