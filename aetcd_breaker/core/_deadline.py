"""Per-call deadlines: a cheap timer on asyncio, a cancel scope elsewhere."""

from __future__ import annotations

import asyncio

import anyio

from ._clock import Clock, MonotonicClock

__all__ = ["Deadline", "start_deadline"]


class Deadline:
    """A running deadline over one call, in the task that makes the call."""

    __slots__ = ()

    def expired(self, exc: BaseException | None) -> bool:
        """Stop the deadline; tell whether it, and nothing else, ended the call.

        ``exc`` is what the call raised (``None`` if it returned). True means
        the call was cancelled by this deadline alone; when the caller's own
        cancellation raced it, the answer is False so that the cancellation
        propagates as cancellation.
        """
        raise NotImplementedError


class _TimerDeadline(Deadline):
    # asyncio.timeout() costs about 4 us a call; a bare loop timer plus the
    # task's cancel/uncancel bookkeeping does the same job for a fraction.
    __slots__ = ("_fired", "_handle", "_task")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        task = asyncio.current_task(loop)
        assert task is not None
        self._task = task
        self._fired = False
        self._handle = loop.call_later(seconds, self._fire)

    def _fire(self) -> None:
        self._fired = True
        self._task.cancel()

    def expired(self, exc: BaseException | None) -> bool:
        self._handle.cancel()
        if not self._fired:
            return False
        # uncancel() reports the cancel requests still pending: any left over
        # belong to the caller (task.cancel() or an outer scope), whose
        # cancellation must win over our deadline.
        ours = self._task.uncancel() == 0
        return ours and isinstance(exc, asyncio.CancelledError)


class _ScopeDeadline(Deadline):
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


def start_deadline(clock: Clock, seconds: float) -> Deadline:
    """Start a deadline ``seconds`` from now for the current task."""
    if type(clock) is MonotonicClock:
        loop = asyncio._get_running_loop()
        if loop is not None:
            return _TimerDeadline(loop, seconds)
    return _ScopeDeadline(clock.deadline_scope(clock.now() + seconds))
