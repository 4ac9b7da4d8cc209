"""Per-call deadlines: task timers on asyncio, cancel scopes on trio.

On asyncio a deadline cancels the calling task and recognises its own
cancellation by the task's cancel count (as ``asyncio.timeout`` does), not by
a cancel message: gRPC's asyncio calls raise a fresh ``CancelledError`` that
drops the message, which defeats ``anyio.fail_after`` around an aetcd call.

A running deadline is an entry in a *registry*: a dict, handed out by
:meth:`Timers.registry`, from a key of the caller's choosing to the task to
cancel. When the deadline comes, the timer cancels every task still entered
and empties the dict; so a call that ends and finds its key gone knows that
its deadline fired, and one that finds it there pops it, which is all it
takes to stop a deadline.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import anyio

from ._clock import Clock, ClockScope, MonotonicClock, TimerHandle, scope_until

__all__ = [
    "RESOLUTION",
    "Deadline",
    "Registry",
    "Timers",
    "current_task",
    "redeliver_cancellation",
    "start_deadline",
    "timed_out",
    "timers_for",
]

RESOLUTION = 0.005
"""Deadlines on the default clock under asyncio fire up to this many seconds late."""

Registry = dict[Any, "asyncio.Task[Any]"]
"""Running deadlines that come due at one moment: a key for each, and its task."""


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


class Timers(Protocol):
    """Where deadlines of one event loop and one clock are entered."""

    def registry(self, seconds: float) -> Registry:
        """The registry for a deadline ``seconds`` from now."""
        ...


def _cancel_all(registry: Registry) -> None:
    # Emptied first: a deadline whose key is gone has fired.
    tasks = list(registry.values())
    registry.clear()
    for task in tasks:
        task.cancel()


class _Wheel:
    """Deadlines grouped by 5 ms slot, behind one loop timer for the earliest.

    A loop timer per call costs a heap push into the loop's timer queue and
    leaves a cancelled handle behind after each fast call (about 4 us a call
    with ``asyncio.timeout``); here a deadline is a pair of dict operations.
    Slots whose calls all ended are skipped without waking the loop for
    them, so a steady stream of fast calls wakes it about once a timeout,
    not once a slot.
    """

    __slots__ = ("armed", "due", "handle", "loop", "now", "slots", "sweep_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # asyncio's own loops read time.monotonic(); calling it directly
        # saves a method call a deadline.
        base = type(loop).time is asyncio.BaseEventLoop.time
        self.now: Callable[[], float] = time.monotonic if base else loop.time
        self.slots: dict[int, Registry] = {}
        self.due: list[int] = []
        """The numbers of the slots in ``slots``, as a heap."""
        self.armed = math.inf
        """The slot the loop timer is set for."""
        self.handle: asyncio.TimerHandle | None = None
        self.sweep_at = _MIN_SWEEP
        """How many slots may be kept before the empty ones are dropped."""

    def registry(self, seconds: float) -> Registry:
        # The slot after the one the deadline falls in: late by up to a slot,
        # never early (floor, not int(), which rounds up below zero).
        try:
            slot = _floor((self.now() + seconds) * _SLOTS_PER_SECOND) + 1
        except OverflowError:
            # Beyond float range (over about 1e305 seconds): a deadline that
            # never comes, so no timer; the caller enters and pops as usual.
            return {}
        registry = self.slots.get(slot)
        if registry is None:
            if len(self.slots) >= self.sweep_at:
                self._sweep()
            registry = self.slots[slot] = {}
            heapq.heappush(self.due, slot)
            if slot < self.armed:
                self._arm(slot)
        return registry

    def _sweep(self) -> None:
        # Slots whose calls all ended wait for their moment to be dropped; a
        # long timeout under steady traffic would keep one for every 5 ms of
        # it (an hour: 720 000 slots, over 200 MB). Drop them now and then:
        # the armed timer finds its slot gone and moves on to the next.
        slots = self.slots = {s: r for s, r in self.slots.items() if r}
        self.due = list(slots)
        heapq.heapify(self.due)
        self.sweep_at = max(_MIN_SWEEP, 2 * len(slots))

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
                _cancel_all(slots.pop(slot))
            elif not slots[slot]:
                heapq.heappop(due)
                del slots[slot]
            else:
                self._arm(slot)
                return


class _OnClock(dict[Any, "asyncio.Task[Any]"]):
    """The registry of one deadline on a clock of the caller's (a FakeClock)."""

    __slots__ = ("clock", "handle", "when")

    def __init__(self, clock: Clock, when: float) -> None:
        super().__init__()
        self.clock = clock
        self.when = when
        self.handle: TimerHandle | None = None

    def __setitem__(self, key: Any, task: asyncio.Task[Any]) -> None:
        super().__setitem__(key, task)
        # Armed once entered, so a clock that fires at once finds the task.
        if self.handle is None:
            self.handle = self.clock.call_at(self.when, self._fire)

    def pop(self, key: Any, default: Any = None) -> Any:
        if self.handle is not None:
            self.handle.cancel()
        return super().pop(key, default)

    def _fire(self) -> None:
        _cancel_all(self)


class _ClockTimers:
    """Deadlines on a clock of the caller's: a timer of that clock each."""

    __slots__ = ("clock",)

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def registry(self, seconds: float) -> Registry:
        return _OnClock(self.clock, self.clock.now() + seconds)


_wheel: _Wheel | None = None
_MIN_SWEEP = 1024
_SLOTS_PER_SECOND = 1 / RESOLUTION
_floor = math.floor

# On Python 3.11 asyncio.current_task is a Python wrapper around this mapping;
# reading it directly saves a quarter of a deadline's cost there.
_current_tasks = getattr(asyncio.tasks, "_current_tasks", None)
current_task: Callable[[asyncio.AbstractEventLoop | None], asyncio.Task[Any] | None]
"""The task ``loop`` is running now, or ``None``; no system call."""
current_task = (
    _current_tasks.get if isinstance(_current_tasks, dict) else asyncio.current_task
)


def timers_for(loop: asyncio.AbstractEventLoop, clock: Clock) -> Timers:
    """Where deadlines on ``clock`` in tasks of ``loop`` are entered."""
    global _wheel
    if type(clock) is not MonotonicClock:
        return _ClockTimers(clock)
    wheel = _wheel
    if wheel is None or wheel.loop is not loop:
        wheel = _wheel = _Wheel(loop)
    return wheel


def timed_out(
    task: asyncio.Task[Any], base: int, key: Any, registry: Registry, exc: object
) -> bool:
    """Stop a deadline entered as ``registry[key] = task``; did it end the call?

    ``base`` is ``task.cancelling()`` from when the deadline started, ``exc``
    what the call raised (``None`` if it returned). Only cancel requests
    beyond those pending at the start can be the deadline's (asyncio.timeout
    reasons the same way), and an enclosing anyio scope that was cancelled in
    the same step as the deadline fired must still see its cancellation: it
    does not add a request of its own when one is already pending.
    """
    if registry.pop(key, None) is not None:
        return False
    if task.uncancel() > base or not isinstance(exc, asyncio.CancelledError):
        return False
    return anyio.current_effective_deadline() != -math.inf


class _TaskDeadline:
    """A deadline over the current asyncio task, entered in a registry."""

    __slots__ = ("_base", "_registry", "_task")

    def __init__(self, task: asyncio.Task[Any], registry: Registry) -> None:
        self._task = task
        self._base = task.cancelling()
        self._registry = registry
        registry[self] = task

    def expired(self, exc: BaseException | None) -> bool:
        return timed_out(self._task, self._base, self, self._registry, exc)


class _ScopeDeadline:
    __slots__ = ("_scope",)

    def __init__(self, scope: anyio.CancelScope | ClockScope) -> None:
        self._scope = scope
        scope.__enter__()

    def expired(self, exc: BaseException | None) -> bool:
        scope = self._scope
        if exc is None:
            scope.__exit__(None, None, None)
            return False
        # The scope swallows the cancellation only when it was its own.
        return bool(scope.__exit__(type(exc), exc, exc.__traceback__))


def start_deadline(clock: Clock, seconds: float) -> Deadline:
    """Start a deadline ``seconds`` from now for the current task."""
    loop = asyncio._get_running_loop()
    if loop is None:
        return _ScopeDeadline(scope_until(clock, clock.now() + seconds))
    task = current_task(loop)
    if task is None:
        raise RuntimeError("a deadline needs to run inside a task")
    return _TaskDeadline(task, timers_for(loop, clock).registry(seconds))


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
