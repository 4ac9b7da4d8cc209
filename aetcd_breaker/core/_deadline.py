"""Per-call deadlines: task timers on asyncio, cancel scopes on trio.

On asyncio a deadline cancels the calling task and recognises its own
cancellation by the task's cancel count (as ``asyncio.timeout`` does), not by
a cancel message: gRPC's asyncio calls raise a fresh ``CancelledError`` that
drops the message, which defeats ``anyio.fail_after`` around an aetcd call.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import anyio

from ._clock import Clock, MonotonicClock, TimerHandle, scope_until

__all__ = [
    "RESOLUTION",
    "Deadline",
    "StartDeadline",
    "asyncio_deadlines",
    "redeliver_cancellation",
    "start_deadline",
]

RESOLUTION = 0.005
"""Deadlines on the default clock under asyncio fire up to this many seconds late."""


class Deadline(Protocol):
    """A running deadline over one call, in the task that makes the call."""

    def expired(self, exc: BaseException | None) -> bool:
        """Stop the deadline; tell whether it, and nothing else, ended the call.

        ``exc`` is what the call raised (``None`` if it returned). True means
        the call was cancelled by this deadline alone; when the caller's own
        cancellation raced it, the answer is False so that the cancellation
        propagates as cancellation.
        """
        ...


class _Wheel:
    """Deadlines grouped by 5 ms slot, behind one loop timer for the earliest.

    A loop timer per call costs a heap push into the loop's timer queue and
    leaves a cancelled handle behind after each fast call (about 4 us a call
    with ``asyncio.timeout``); here a deadline is a pair of dict operations.
    Slots whose calls all ended are skipped without waking the loop for
    them, so a steady stream of fast calls wakes it about once a timeout,
    not once a slot.
    """

    __slots__ = ("armed", "due", "handle", "loop", "now", "slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # asyncio's own loops read time.monotonic(); calling it directly
        # saves a method call a deadline.
        base = type(loop).time is asyncio.BaseEventLoop.time
        self.now: Callable[[], float] = time.monotonic if base else loop.time
        self.slots: dict[int, dict[_TimerDeadline, None]] = {}
        self.due: list[int] = []
        """The numbers of the slots in ``slots``, as a heap."""
        self.armed = math.inf
        """The slot the loop timer is set for."""
        self.handle: asyncio.TimerHandle | None = None

    def add(
        self, deadline: _TimerDeadline, seconds: float
    ) -> dict[_TimerDeadline, None]:
        # The slot after the one the deadline falls in: late by up to a slot,
        # never early.
        slot = int((self.now() + seconds) * _SLOTS_PER_SECOND) + 1
        bucket = self.slots.get(slot)
        if bucket is None:
            bucket = self.slots[slot] = {}
            heapq.heappush(self.due, slot)
            if slot < self.armed:
                self._arm(slot)
        bucket[deadline] = None
        return bucket

    def _arm(self, slot: int) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.armed = slot
        self.handle = self.loop.call_at(slot * RESOLUTION, self._fire)

    def _fire(self) -> None:
        # Every slot up to the one armed, or up to now if the loop ran late,
        # is due; empty slots after it are dropped until one holds a deadline.
        reached = max(self.armed, self.now() * _SLOTS_PER_SECOND)
        self.handle = None
        self.armed = math.inf
        due, slots = self.due, self.slots
        while due:
            slot = due[0]
            if slot <= reached:
                heapq.heappop(due)
                for deadline in slots.pop(slot):
                    deadline.fire()
            elif not slots[slot]:
                heapq.heappop(due)
                del slots[slot]
            else:
                self._arm(slot)
                return


_wheel: _Wheel | None = None
_SLOTS_PER_SECOND = 1 / RESOLUTION

# On Python 3.11 asyncio.current_task is a Python wrapper around this mapping;
# reading it directly saves a quarter of a deadline's cost there.
_current_tasks = getattr(asyncio.tasks, "_current_tasks", None)
_current_task: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None] = (
    _current_tasks.get if isinstance(_current_tasks, dict) else asyncio.current_task
)


def _ours(task: asyncio.Task[object], base: int, exc: BaseException | None) -> bool:
    # Only cancel requests beyond those pending when the deadline started can
    # be ours (asyncio.timeout reasons the same way), and an enclosing anyio
    # scope that was cancelled in the same step as the deadline fired must
    # still see its cancellation: it does not add a request of its own when
    # one is already pending.
    if task.uncancel() > base or not isinstance(exc, asyncio.CancelledError):
        return False
    return anyio.current_effective_deadline() != -math.inf


class _TimerDeadline:
    __slots__ = ("_base", "_bucket", "_fired", "_task")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        global _wheel
        task = _current_task(loop)
        if task is None:
            raise RuntimeError("a deadline needs to run inside a task")
        self._task = task
        self._base = task.cancelling()
        self._fired = False
        wheel = _wheel
        if wheel is None or wheel.loop is not loop:
            wheel = _wheel = _Wheel(loop)
        self._bucket = wheel.add(self, seconds)

    def fire(self) -> None:
        self._fired = True
        self._task.cancel()

    def expired(self, exc: BaseException | None) -> bool:
        if not self._fired:
            self._bucket.pop(self, None)
            return False
        return _ours(self._task, self._base, exc)


class _TaskDeadline:
    """A deadline from any clock's timer, for asyncio tasks."""

    __slots__ = ("_base", "_fired", "_handle", "_task")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, clock: Clock, when: float
    ) -> None:
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline needs to run inside a task")
        self._task = task
        self._base = task.cancelling()
        self._fired = False
        self._handle: TimerHandle = clock.call_at(when, self._fire)

    def _fire(self) -> None:
        self._fired = True
        self._task.cancel()

    def expired(self, exc: BaseException | None) -> bool:
        self._handle.cancel()
        if not self._fired:
            return False
        return _ours(self._task, self._base, exc)


class _ScopeDeadline:
    __slots__ = ("_scope",)

    def __init__(self, scope: anyio.CancelScope) -> None:
        self._scope = scope
        scope.__enter__()

    def expired(self, exc: BaseException | None) -> bool:
        scope = self._scope
        if exc is None:
            scope.__exit__(None, None, None)
            return False
        # The scope swallows the cancellation only when it was its own.
        return bool(scope.__exit__(type(exc), exc, exc.__traceback__))


StartDeadline = Callable[[asyncio.AbstractEventLoop, float], Deadline]
"""Starts a deadline of some seconds for the current task of an asyncio loop."""


def asyncio_deadlines(clock: Clock) -> StartDeadline:
    """How deadlines on ``clock`` start in asyncio tasks, chosen once."""
    if type(clock) is MonotonicClock:
        return _TimerDeadline

    def start(loop: asyncio.AbstractEventLoop, seconds: float) -> Deadline:
        return _TaskDeadline(loop, clock, clock.now() + seconds)

    return start


def start_deadline(clock: Clock, seconds: float) -> Deadline:
    """Start a deadline ``seconds`` from now for the current task."""
    loop = asyncio._get_running_loop()
    if loop is None:
        return _ScopeDeadline(scope_until(clock, clock.now() + seconds))
    if type(clock) is MonotonicClock:
        return _TimerDeadline(loop, seconds)
    return _TaskDeadline(loop, clock, clock.now() + seconds)


async def redeliver_cancellation(exc: BaseException) -> BaseException:
    """The cancellation to propagate: ``exc``, or anyio's own delivered again.

    anyio tells its cancellations by the message it passes to
    ``Task.cancel()``. A bare ``CancelledError`` (from gRPC, which drops the
    message, or from a deadline that fired just before an enclosing scope
    was cancelled) would escape that scope unrecognised. anyio's cancellation
    is level-triggered, so one checkpoint inside the cancelled scope brings
    the recognisable one back.
    """
    if (
        not isinstance(exc, asyncio.CancelledError)
        or exc.args
        or anyio.current_effective_deadline() != -math.inf
    ):
        return exc
    # anyio delivers a pending cancellation again on every turn of the loop;
    # the bound only guards against a scope that never does. A bare one met
    # on the way is a deadline timer's request that landed while the task
    # was runnable: its deadline accounts for it, so keep waiting for anyio's.
    for _ in range(10):
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError as delivered:
            if delivered.args:
                return delivered
    return exc
