"""Permits for admitted calls, and the ``async with breaker.guard()`` block."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from ._deadline import Deadline, redeliver_cancellation, start_deadline
from .errors import CallTimeoutError

if TYPE_CHECKING:
    from .breaker import CircuitBreaker

__all__ = ["Guard", "Permit"]


class Permit:
    """An admitted call: the generation it belongs to and whether it is a trial."""

    __slots__ = ("generation", "kind", "started")

    def __init__(self, generation: int, kind: int, started: float) -> None:
        self.generation = generation
        self.kind = kind
        self.started = started

    @property
    def trial(self) -> bool:
        """True when the call was admitted as a half-open trial."""
        return self.kind == 2

    def __repr__(self) -> str:
        trial = " trial" if self.trial else ""
        return f"<Permit generation={self.generation}{trial}>"


class Guard:
    """Guards one ``async with`` block; make a fresh one per use."""

    __slots__ = ("_breaker", "_deadline", "_permit", "_timeout")

    def __init__(self, breaker: CircuitBreaker, timeout: float | None) -> None:
        self._breaker = breaker
        self._timeout = timeout
        self._permit: Permit | None = None
        self._deadline: Deadline | None = None

    async def __aenter__(self) -> Permit:
        if self._permit is not None:
            raise RuntimeError("a guard guards one block; call breaker.guard() again")
        breaker = self._breaker
        permit = breaker.acquire()
        if permit is None:
            raise breaker.open_error()
        self._permit = permit
        if self._timeout is not None:
            self._deadline = start_deadline(breaker.clock, self._timeout)
        return permit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        breaker = self._breaker
        permit = self._permit
        assert permit is not None
        deadline = self._deadline
        if deadline is not None:
            try:
                timed_out = deadline.expired(exc)
            except BaseException as rest:
                # On trio the deadline's scope takes its own cancellation out
                # of an exception group and raises the rest: the outcome.
                breaker.record_exception(permit, rest)
                raise
            if timed_out:
                breaker.record_failure(permit, timed_out=True)
                assert self._timeout is not None
                raise CallTimeoutError(breaker.name, self._timeout) from None
        if exc is None:
            breaker.record_success(permit)
            return
        breaker.record_exception(permit, exc)
        if deadline is not None:
            delivered = await redeliver_cancellation(exc)
            if delivered is not exc:
                raise delivered from None
