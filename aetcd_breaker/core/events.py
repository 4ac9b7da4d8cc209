"""States, the counts the rules read, and the records of state changes."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable
from dataclasses import dataclass

import structlog

__all__ = ["Counts", "Metrics", "State", "StateChange", "StateChangeHook"]

_log = structlog.get_logger("aetcd_breaker")

STATE_CHANGED = "aetcd_breaker.state_changed"
HOOK_FAILED = "aetcd_breaker.hook_failed"


class State(enum.StrEnum):
    """The states of a breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class Counts:
    """The outcomes a trip rule sees.

    With a window configured, ``calls``, ``successes``, ``failures`` and
    ``slow_calls`` cover the window; without one, they cover the time since
    the breaker last closed (or since the last ``interval`` reset). Errors
    that are not counted are left out of all of them.
    """

    calls: int = 0
    successes: int = 0
    failures: int = 0
    slow_calls: int = 0
    consecutive_successes: int = 0
    consecutive_failures: int = 0

    @property
    def failure_rate(self) -> float:
        """Failures over calls, 0.0 with no calls."""
        return self.failures / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        """Slow calls over calls, 0.0 with no calls."""
        return self.slow_calls / self.calls if self.calls else 0.0


@dataclass(frozen=True, slots=True)
class StateChange:
    """What a state-change hook receives: one transition, after it happened."""

    breaker: str
    from_state: State
    to_state: State
    reason: str
    generation: int
    at: float
    counts: Counts
    retry_after: float | None


StateChangeHook = Callable[[StateChange], object]


@dataclass(frozen=True, slots=True)
class Metrics:
    """A snapshot of a breaker.

    ``calls``, ``successes``, ``failures``, ``ignored``, ``slow_calls`` and
    ``rejected`` are totals over the breaker's life (``calls`` is every
    admitted call that ended with an outcome: successes + failures +
    ignored; a cancelled call has none). ``failure_rate``,
    ``slow_call_rate`` and the consecutive counts are the ones the trip
    rules see right now (see :class:`Counts`).
    """

    name: str
    state: State
    generation: int
    calls: int
    successes: int
    failures: int
    ignored: int
    slow_calls: int
    rejected: int
    failure_rate: float
    slow_call_rate: float
    consecutive_successes: int
    consecutive_failures: int
    state_changed_at: float
    retry_after: float | None


def emit(change: StateChange, hooks: tuple[StateChangeHook, ...]) -> None:
    """Log one transition, then run the hooks; a failing hook is only logged.

    The application's logging may itself fail (a closed pipe, a broken
    processor). The transition has happened all the same, and the caller must
    see its own call's outcome, not a logging error, so those are dropped.
    """
    opening = change.to_state in (State.OPEN, State.FORCED_OPEN)
    log = _log.warning if opening else _log.info
    counts = change.counts
    with contextlib.suppress(Exception):
        log(
            STATE_CHANGED,
            breaker=change.breaker,
            from_state=change.from_state.value,
            to_state=change.to_state.value,
            reason=change.reason,
            generation=change.generation,
            calls=counts.calls,
            successes=counts.successes,
            failures=counts.failures,
            slow_calls=counts.slow_calls,
            consecutive_successes=counts.consecutive_successes,
            consecutive_failures=counts.consecutive_failures,
            retry_after=change.retry_after,
        )
    for hook in hooks:
        try:
            hook(change)
        except Exception as exc:  # a hook must never break the breaker
            with contextlib.suppress(Exception):
                _log.error(
                    HOOK_FAILED,
                    breaker=change.breaker,
                    hook=getattr(hook, "__qualname__", repr(hook)),
                    error=repr(exc),
                    exc_info=exc,
                )
