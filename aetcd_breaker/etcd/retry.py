"""Retries inside one admitted call: a backoff policy and the loop that uses it.

A retried call is one logical call to the breaker: it takes one permit,
runs under one deadline, and records one outcome however many attempts it
made. Only failures that count are retried (etcd's answers are not), never
past the call's deadline, and never once the breaker would reject a new call:
when another call has tripped it meanwhile, the retry ends with the rejection.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..core import InvalidSettingError, State
from ..core._deadline import redeliver_cancellation, start_deadline
from ..core.policies import check_count, check_number
from ._arguments import name_refused
from ._session import check_timeout
from .errors import EtcdCircuitOpenError

if TYPE_CHECKING:
    from ._session import Op, Session

__all__ = ["Retry", "call_retrying"]

T = TypeVar("T")

_ADMITTING = (State.CLOSED, State.DISABLED)


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry a failed call up to ``attempts`` times in all, with backoff.

    The n-th wait is ``base * factor**(n-1)`` seconds, capped at ``cap``,
    then drawn from ``[d*(1-jitter), d]`` so that clients do not retry in
    lock-step.
    """

    attempts: int = 3
    base: float = 0.05
    factor: float = 2.0
    cap: float = 1.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        check_count("attempts", self.attempts)
        check_number("base", self.base)
        check_number("factor", self.factor, low=1.0)
        check_number("cap", self.cap)
        if not 0 <= check_number("jitter", self.jitter) <= 1:
            raise InvalidSettingError("jitter", self.jitter, "a ratio in [0, 1]")

    def delay(self, retry: int) -> float:
        """Seconds to wait before the ``retry``-th retry (1 for the first)."""
        try:
            grown = self.base * self.factor ** (retry - 1)
        except OverflowError:
            # factor**(retry-1) beyond float range: the cap, or no wait at all.
            grown = math.inf if self.base else 0.0
        seconds = min(self.cap, grown)
        if self.jitter:
            seconds *= 1 - self.jitter * random.random()
        return seconds


def _admits_retry(session: Session, generation: int) -> bool:
    """Whether the breaker would let the call go on: same period, or admitting."""
    breaker = session.breaker
    return breaker.generation == generation or breaker.state in _ADMITTING


async def call_retrying(
    session: Session,
    policy: Retry,
    op: Op[T],
    call_timeout: object,
    args: tuple[Any, ...],
) -> T:
    """Run ``op`` like ``Session.call``, retrying counted failures per ``policy``."""
    seconds = session.timeout if call_timeout is None else check_timeout(call_timeout)
    breaker = session.breaker
    permit = breaker.acquire()
    if permit is None:
        raise breaker.open_error(EtcdCircuitOpenError)
    clock = session.clock
    channels = session.channels
    give_up_at = clock.now() + seconds
    deadline = start_deadline(clock, seconds)
    attempt = 1
    while True:
        inner = channels.for_trial() if permit.trial else channels.current
        inner.calls += 1
        try:
            try:
                result = await op(inner.client, *args)
            finally:
                inner.calls -= 1
                if inner.retired:
                    channels.drained(inner)
        except asyncio.CancelledError as exc:
            error = await redeliver_cancellation(exc)
            session.settle(permit, deadline.expired(error), seconds, inner, error)
            if error is exc:
                raise
            raise error from exc
        except Exception as exc:
            wait = policy.delay(attempt) if attempt < policy.attempts else None
            # No await between the failure and these checks: the deadline
            # cannot fire in between, so settle() sees the failure as it was.
            if (
                wait is None
                or not session.counts(exc)
                or clock.now() + wait >= give_up_at
            ):
                session.settle(permit, deadline.expired(exc), seconds, inner, exc)
                name_refused(op, args, exc)
                raise
            if not _admits_retry(session, permit.generation):
                session.settle(permit, deadline.expired(exc), seconds, inner, exc)
                raise breaker.open_error(EtcdCircuitOpenError) from exc
            try:
                await clock.sleep_until(clock.now() + wait)
            except BaseException as cancelled:
                # The deadline, or the caller, ended the wait.
                session.settle(
                    permit, deadline.expired(cancelled), seconds, inner, cancelled
                )
                raise
            if not _admits_retry(session, permit.generation):
                session.settle(permit, deadline.expired(exc), seconds, inner, exc)
                raise breaker.open_error(EtcdCircuitOpenError) from exc
            session.retries += 1
            attempt += 1
            continue
        except BaseException as exc:
            # KeyboardInterrupt and the like: no outcome, the permit goes back.
            session.settle(permit, deadline.expired(exc), seconds, inner, exc)
            raise
        deadline.expired(None)
        breaker.record_success(permit)
        return result
