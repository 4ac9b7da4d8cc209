"""The circuit breaker state machine.

Design note. A breaker is ``closed`` (calls pass, outcomes are counted),
``open`` (calls are rejected at once) or ``half_open`` (a few trial calls
test whether the dependency is back), plus two manual states:
``forced_open`` rejects everything and ``disabled`` admits everything, until
``reset()``.

Generation rule: every state change increments ``generation``. A call
remembers the generation it was admitted in, and its outcome moves the
counts and the state only while that generation is current. A slow failure
reported after the breaker opened therefore cannot open it a second time or
restart its timer; it still reaches the lifetime totals.

Half-open permit rule: half-open admits at most ``max_requests`` trials per
period. A trial holds its permit until it ends; a trial that is cancelled,
or ends in an error that is not counted, gives the permit back. The period
closes after ``max_requests`` trial successes (or, with ``success_ratio``,
once that many trials ended and enough of them succeeded) and reopens on a
trial failure (or a missed ratio, or ``half_open_max_wait`` running out).

Every read-modify-write of the state happens without an ``await`` in
between, so each transition is atomic on the event loop without a lock.
The move from open to half-open is made lazily, by the first call or the
first read of ``state`` after the open duration; logs and hooks run after
the state is updated.
"""

from __future__ import annotations

import contextlib
import dis
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from types import CodeType
from typing import Any, Final, ParamSpec, TypeVar

import anyio
import structlog

from . import _settings as settings
from ._clock import Clock, scope_until
from ._deadline import redeliver_cancellation, start_deadline
from .errors import (
    CallTimeoutError,
    CircuitOpenError,
    InvalidSettingError,
    InvalidSettingTypeError,
)
from .events import Counts, Metrics, State, StateChange, StateChangeHook, emit
from .guard import Guard, Permit
from .policies import (
    ConsecutiveFailures,
    FailureRate,
    OpenDuration,
    SlowCallRate,
    TripRule,
    check_count,
    check_ratio,
    finite,
)
from .windows import Window

__all__ = ["CircuitBreaker"]

P = ParamSpec("P")
T = TypeVar("T")

CLOSED: Final = State.CLOSED
OPEN: Final = State.OPEN
HALF_OPEN: Final = State.HALF_OPEN
FORCED_OPEN: Final = State.FORCED_OPEN
DISABLED: Final = State.DISABLED

REJECT: Final = 0
ADMIT: Final = 1
TRIAL: Final = 2

_log = structlog.get_logger("aetcd_breaker")
_UNSET: Any = object()


def _rule_reason(rule: TripRule) -> str:
    if isinstance(rule, ConsecutiveFailures):
        return "consecutive_failures"
    if isinstance(rule, FailureRate):
        return "failure_rate"
    if isinstance(rule, SlowCallRate):
        return "slow_call_rate"
    return "trip_rule:" + getattr(rule, "__qualname__", type(rule).__qualname__)


def _no_time() -> float:
    return 0.0


# The instructions of ``await fn(*args, **kwargs)`` that fail for a mistake at
# the call site: calling ``fn``, and asking its result for an awaitable.
_CALL_SITE_OPS: Final = frozenset({"CALL", "CALL_FUNCTION_EX", "GET_AWAITABLE"})


@functools.cache
def _call_site_offsets(code: CodeType) -> frozenset[int]:
    """Where in ``code`` a TypeError is a mistake at the call site of ``fn``."""
    return frozenset(
        i.offset for i in dis.get_instructions(code) if i.opname in _CALL_SITE_OPS
    )


class CircuitBreaker:
    """A circuit breaker for async calls; see the module docstring for the rules.

    Settings (keyword only; defaults and what ``None`` means are in the README):
        name: shown in errors, logs and metrics.
        max_requests: trial permits per half-open period.
        interval: seconds after which the closed-state counts are cleared
            (gobreaker's ``Interval``); ``None`` never clears them.
        reset_timeout: seconds to stay open, or an open-duration policy such
            as :class:`ExponentialBackoff`.
        failure_threshold: consecutive counted failures that trip the
            breaker; ``None`` turns that rule off.
        call_timeout: default deadline in seconds for a guarded call.
        trip_rules: more rules (:class:`FailureRate`, :class:`SlowCallRate`,
            or any function of :class:`Counts`); any rule firing trips.
        window: a :class:`CountWindow` or :class:`TimeWindow` the rules read.
        success_ratio: close half-open on this ratio of trial successes
            over ``max_requests`` trials, instead of on all of them.
        half_open_max_wait: seconds half-open may last before reopening.
        is_failure: ``is_failure(exc)`` says whether an exception counts;
            by default every ``Exception`` does.
        clock: a :class:`Clock`; the default reads ``time.monotonic``.
        on_state_change: hooks called with a :class:`StateChange`.
        initial_state: the state to start in.
    """

    __slots__ = (
        "__weakref__",
        "_b_csucc",
        "_b_fail",
        "_b_slow",
        "_b_succ",
        "_call_timeout",
        "_cfail",
        "_changed_at",
        "_clock",
        "_custom_rules",
        "_emitting",
        "_fast_gen",
        "_generation",
        "_half_open_until",
        "_half_open_wait",
        "_hooks",
        "_interval",
        "_interval_end",
        "_is_failure",
        "_max_requests",
        "_minimums",
        "_name",
        "_now",
        "_open_duration",
        "_opens",
        "_plain_permit",
        "_retry_at",
        "_rules",
        "_slow_after",
        "_state",
        "_success_ratio",
        "_t_fail",
        "_t_ign",
        "_t_rej",
        "_t_slow",
        "_t_succ",
        "_threshold",
        "_trials",
        "_waiters",
        "_window",
        "_window_now",
    )

    def __init__(
        self,
        *,
        name: str = "default",
        max_requests: int = 1,
        interval: float | None = None,
        reset_timeout: float | OpenDuration = 30.0,
        failure_threshold: int | None = 5,
        call_timeout: float | None = None,
        trip_rules: Iterable[TripRule] = (),
        window: Window | None = None,
        success_ratio: float | None = None,
        half_open_max_wait: float | None = None,
        is_failure: Callable[[BaseException], bool] | None = None,
        clock: Clock | None = None,
        on_state_change: StateChangeHook | Iterable[StateChangeHook] = (),
        initial_state: State | str = State.CLOSED,
    ) -> None:
        if not isinstance(name, str):
            raise InvalidSettingTypeError("name", name, "a str")
        if not name:
            raise InvalidSettingError("name", name, "a non-empty str")
        self._name = name
        self._max_requests = check_count("max_requests", max_requests)
        self._interval = settings.optional_seconds("interval", interval)
        self._open_duration = settings.open_duration(reset_timeout)
        self._threshold = (
            None
            if failure_threshold is None
            else ConsecutiveFailures(failure_threshold).threshold
        )
        self._call_timeout = settings.optional_seconds("call_timeout", call_timeout)
        self._rules = settings.rules(trip_rules)
        rates = [r for r in self._rules if isinstance(r, FailureRate | SlowCallRate)]
        self._minimums = tuple({r.minimum_calls for r in rates})
        self._custom_rules = len(rates) < len(self._rules)
        self._window = settings.window(window)
        size = getattr(self._window, "size", None)
        for rule in rates:
            # A rule that waits for more calls than the window holds never fires.
            if size is not None and rule.minimum_calls > size:
                raise InvalidSettingError(
                    f"{type(rule).__name__}.minimum_calls",
                    rule.minimum_calls,
                    f"at most the CountWindow's size ({size})",
                )
        self._success_ratio = (
            None
            if success_ratio is None
            else check_ratio("success_ratio", success_ratio)
        )
        self._half_open_wait = settings.optional_seconds(
            "half_open_max_wait", half_open_max_wait
        )
        self._is_failure = settings.callable_or_none("is_failure", is_failure)
        self._clock = settings.clock(clock)
        self._now = self._clock.now
        # A count window ignores the time: spare it a clock read per call.
        self._window_now = (
            self._clock.now
            if self._window is not None and self._window.needs_time
            else _no_time
        )
        self._hooks = settings.hooks(on_state_change)
        slow = [
            r.slow_call_duration for r in self._rules if isinstance(r, SlowCallRate)
        ]
        for duration in slow:
            # The counts hold one number of slow calls: a second duration
            # would be judged by the first one's.
            if duration != slow[0]:
                raise InvalidSettingError(
                    "SlowCallRate.slow_call_duration",
                    duration,
                    f"the same in every SlowCallRate rule ({slow[0]:g})",
                )
        self._slow_after = slow[0] if slow else None

        # Lifetime totals, and the totals at the moment the rule counts were
        # last cleared: the counts the rules see are the differences, which
        # keeps the success path down to two increments.
        self._t_succ = self._t_fail = self._t_ign = self._t_slow = self._t_rej = 0
        self._b_succ = self._b_fail = self._b_slow = self._b_csucc = 0
        self._cfail = 0
        self._trials = 0
        self._generation = 0
        self._fast_gen = -1
        self._plain_permit = Permit(0, ADMIT, 0.0)
        self._opens = 0
        self._retry_at = 0.0
        self._half_open_until: float | None = None
        self._interval_end: float | None = None
        self._waiters: anyio.Event | None = None
        # Changes made by a hook while others are told, told after them.
        self._emitting: list[StateChange] | None = None
        self._state = CLOSED
        self._changed_at = self._now()
        self._enter(settings.initial_state(initial_state), self._changed_at)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._name!r} {self.state.value}>"

    # -- reading ---------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def call_timeout(self) -> float | None:
        return self._call_timeout

    @property
    def max_requests(self) -> int:
        return self._max_requests

    @property
    def generation(self) -> int:
        self._tick(self._now())
        return self._generation

    @property
    def state(self) -> State:
        """The state now, after any move that time alone has made due."""
        self._tick(self._now())
        return self._state

    @property
    def retry_after(self) -> float | None:
        """Seconds until a trial call is admitted, when the breaker is open."""
        now = self._now()
        self._tick(now)
        return max(0.0, self._retry_at - now) if self._state is OPEN else None

    @property
    def trials_in_flight(self) -> int:
        """Half-open trial permits taken and not yet given back."""
        self._tick(self._now())
        return self._trials if self._state is HALF_OPEN else 0

    def counts(self) -> Counts:
        """The counts the trip rules see now."""
        now = self._now()
        self._end_interval(now)
        return self._counts(now)

    def metrics(self) -> Metrics:
        """A frozen snapshot of totals, rates and state."""
        now = self._now()
        self._tick(now)
        self._end_interval(now)
        counts = self._counts(now)
        return Metrics(
            name=self._name,
            state=self._state,
            generation=self._generation,
            calls=self._t_succ + self._t_fail + self._t_ign,
            successes=self._t_succ,
            failures=self._t_fail,
            ignored=self._t_ign,
            slow_calls=self._t_slow,
            rejected=self._t_rej,
            failure_rate=counts.failure_rate,
            slow_call_rate=counts.slow_call_rate,
            consecutive_successes=counts.consecutive_successes,
            consecutive_failures=counts.consecutive_failures,
            state_changed_at=self._changed_at,
            retry_after=max(0.0, self._retry_at - now) if self._state is OPEN else None,
        )

    # -- guarded calls ---------------------------------------------------

    async def call(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``await fn(*args, **kwargs)`` under the breaker."""
        gen = self._fast_gen
        if gen < 0:
            if self._state is OPEN:
                # Rejecting is the whole job of an open breaker: keep it short.
                # The clock is fetched, then called: CPython 3.11 cannot
                # specialise self._now() on a slot that holds a function.
                read = self._now
                now = read()
                retry_at = self._retry_at
                if now < retry_at:
                    self._t_rej += 1
                    raise CircuitOpenError(self._name, OPEN, retry_at - now)
            kind = self._admit()
            if kind == REJECT:
                raise self.open_error()
            return await self._call(kind, self._call_timeout, fn, args, kwargs)
        # The plain closed state: no deadline, window, slow rule or interval.
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._settle_call_error(gen, ADMIT, 0.0, exc)
            raise
        if gen == self._fast_gen:
            self._t_succ += 1
            self._cfail = 0
        else:
            self._succeeded(gen, ADMIT, 0.0)
        return result

    async def _call(
        self,
        kind: int,
        timeout: float | None,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        gen = self._generation
        started = self._now() if self._slow_after is not None else 0.0
        deadline = None if timeout is None else start_deadline(self._clock, timeout)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            if deadline is None:
                self._settle_call_error(gen, kind, started, exc)
                raise
            try:
                timed_out = deadline.expired(exc)
            except BaseException as rest:
                # On trio the deadline's scope takes its own cancellation out
                # of an exception group and raises the rest: the outcome.
                self._settle_error(gen, kind, started, rest)
                raise
            if timed_out:
                self._failed(gen, kind, started, True)
                raise CallTimeoutError(self._name, timeout) from None  # type: ignore[arg-type]
            self._settle_call_error(gen, kind, started, exc)
            delivered = await redeliver_cancellation(exc)
            if delivered is exc:
                raise
            raise delivered from None
        if deadline is not None:
            deadline.expired(None)
        self._succeeded(gen, kind, started)
        return result

    def guard(self, *, timeout: float | None = _UNSET) -> Guard:
        """A fresh async context manager that guards the block it wraps.

        ``timeout`` overrides the breaker's ``call_timeout`` for this block;
        ``None`` means no deadline.
        """
        if timeout is _UNSET:
            timeout = self._call_timeout
        else:
            timeout = settings.optional_seconds("timeout", timeout)
        return Guard(self, timeout)

    def __call__(
        self, fn: Callable[P, Awaitable[T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        """Use the breaker as a decorator on an async function.

        The result is an ``async def`` function, typed as one, so its calls
        can go to ``asyncio.create_task`` or ``asyncio.run``.
        """
        inner: object = fn
        while isinstance(inner, functools.partial):
            inner = inner.func
        # A bound method or a partial of a plain def is as plain as the def.
        plain_def = (
            inspect.isfunction(inner) or inspect.ismethod(inner)
        ) and not inspect.iscoroutinefunction(inner)
        if (
            not callable(fn)
            or isinstance(fn, type)
            or plain_def
            or inspect.isasyncgenfunction(inner)
        ):
            raise InvalidSettingTypeError(
                "fn", fn, "an async function (not an async generator)"
            )

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.call(fn, *args, **kwargs)

        return guarded

    # -- the low-level API used by integrations ---------------------------

    def acquire(self) -> Permit | None:
        """Admit a call: a :class:`Permit`, or ``None`` when rejected (counted)."""
        if self._fast_gen >= 0:
            # Plain closed state: every permit of this generation is the same.
            return self._plain_permit
        kind = self._admit()
        if kind == REJECT:
            return None
        started = self._now() if self._slow_after is not None else 0.0
        return Permit(self._generation, kind, started)

    def open_error(
        self, cls: type[CircuitOpenError] = CircuitOpenError
    ) -> CircuitOpenError:
        """A fresh rejection error describing the state now."""
        state = self._state
        if state is OPEN:
            return cls(self._name, state, max(0.0, self._retry_at - self._now()))
        return cls(self._name, state, None)

    def record_success(self, permit: Permit) -> None:
        if permit.generation == self._fast_gen:
            self._t_succ += 1
            self._cfail = 0
            return
        self._succeeded(permit.generation, permit.kind, permit.started)

    def record_failure(self, permit: Permit, *, timed_out: bool = False) -> None:
        self._failed(permit.generation, permit.kind, permit.started, timed_out)

    def record_ignored(self, permit: Permit) -> None:
        """An error that is not counted; a trial's permit is given back."""
        self._t_ign += 1
        self._give_back(permit.generation, permit.kind)

    def release(self, permit: Permit) -> None:
        """End a call that has no outcome (the caller cancelled it)."""
        self._give_back(permit.generation, permit.kind)

    def record_exception(self, permit: Permit, exc: BaseException) -> None:
        """Classify ``exc`` with ``is_failure`` and record it."""
        self._settle_error(permit.generation, permit.kind, permit.started, exc)

    async def wait_ready(self) -> None:
        """Return once a call would be admitted, or the breaker changes.

        Returns at once when a call would be admitted now; otherwise it
        sleeps, without polling, until the open duration ends, the state
        changes, or a half-open trial permit is given back. A caller that
        must get through loops: ``await wait_ready()``, then try the call.
        """
        self._tick(self._now())
        state = self._state
        if state is CLOSED or state is DISABLED:
            return
        if state is HALF_OPEN and self._trials < self._max_requests:
            return
        if self._waiters is None:
            self._waiters = anyio.Event()
        event = self._waiters
        when = self._retry_at if state is OPEN else self._half_open_until
        try:
            with scope_until(self._clock, when):
                await event.wait()
        finally:
            # The last waiter to give up drops the event: asyncio binds it to
            # this loop, and a breaker may outlive the loop (one per test).
            if self._waiters is event and not event.statistics().tasks_waiting:
                self._waiters = None
        self._tick(self._now())

    # -- manual control --------------------------------------------------

    def force_open(self) -> None:
        """Reject every call until :meth:`reset`."""
        self._manual(FORCED_OPEN)

    def disable(self) -> None:
        """Admit every call and never trip, until :meth:`reset`; still counts."""
        self._manual(DISABLED)

    def reset(self) -> None:
        """Back to closed with the counts cleared and the backoff restarted."""
        if self._state is CLOSED:
            self._opens = 0
            self._clear_counts()
            return
        self._manual(CLOSED)

    def _manual(self, to: State) -> None:
        if self._state is not to:
            self._transition(to, "manual", self._now())

    # -- the state machine -----------------------------------------------

    def _admit(self) -> int:
        state = self._state
        if state is CLOSED:
            end = self._interval_end
            if end is not None:
                now = self._now()
                if now >= end:
                    self._clear_counts()
                    self._interval_end = now + self._interval  # type: ignore[operator]
            return ADMIT
        if state is DISABLED:
            return ADMIT
        if state is OPEN and self._now() < self._retry_at:
            self._t_rej += 1
            return REJECT
        if state is not FORCED_OPEN:
            self._tick(self._now())
            state = self._state
            if state is HALF_OPEN:
                if self._trials < self._max_requests:
                    self._trials += 1
                    return TRIAL
            elif state is CLOSED or state is DISABLED:
                # A state-change hook reset or disabled the breaker.
                return self._admit()
        self._t_rej += 1
        return REJECT

    def _end_interval(self, now: float) -> None:
        # What _admit does when a call comes, for a read: counts past the
        # interval are not what the rules would see.
        end = self._interval_end
        if end is not None and now >= end:
            self._clear_counts()
            self._interval_end = now + self._interval  # type: ignore[operator]

    def _tick(self, now: float) -> None:
        state = self._state
        if state is OPEN and now >= self._retry_at:
            self._transition(HALF_OPEN, "reset_timeout_elapsed", now)
        elif (
            state is HALF_OPEN
            and self._half_open_until is not None
            and now >= self._half_open_until
        ):
            self._transition(OPEN, "half_open_max_wait", now)

    def _succeeded(self, gen: int, kind: int, started: float) -> None:
        self._t_succ += 1
        slow = False
        if self._slow_after is not None:
            slow = self._now() - started >= self._slow_after
            self._t_slow += slow
        if self._half_open_until is not None:
            # A trial that outlived half_open_max_wait must not close the
            # breaker: let time reopen it first, so the outcome goes stale.
            self._tick(self._now())
        if gen != self._generation:
            self._b_succ += 1
            self._b_csucc += 1
            self._b_slow += slow
            return
        self._cfail = 0
        if self._window is not None:
            self._window.record(self._window_now(), False, slow)
        state = self._state
        if state is HALF_OPEN:
            try:
                self._judge_trials()
            except BaseException:
                self._give_back(gen, kind)  # see _failed
                raise
        elif state is CLOSED and self._rules and (slow or self._success_may_trip()):
            self._check_rules()

    def _failed(self, gen: int, kind: int, started: float, timed_out: bool) -> None:
        self._t_fail += 1
        slow = timed_out
        if not slow and self._slow_after is not None:
            slow = self._now() - started >= self._slow_after
        self._t_slow += slow
        if self._half_open_until is not None:
            self._tick(self._now())
        if gen != self._generation:
            self._b_fail += 1
            self._b_slow += slow
            return
        self._cfail += 1
        self._b_csucc = self._t_succ
        if self._window is not None:
            self._window.record(self._window_now(), True, slow)
        state = self._state
        if state is CLOSED:
            self._check_rules()
        elif state is HALF_OPEN:
            try:
                if self._success_ratio is None:
                    # A permit not handed out as a trial (a long-lived
                    # stream's, say) reopens too, but no trial failed.
                    why = "trial_failed" if kind == TRIAL else "failure_in_half_open"
                    self._transition(OPEN, why, self._now())
                else:
                    self._judge_trials()
            except BaseException:
                # The open-duration policy failed, so nothing changed: the
                # trial gives its permit back rather than hold it for good.
                self._give_back(gen, kind)
                raise

    def _settle_error(
        self, gen: int, kind: int, started: float, exc: BaseException
    ) -> None:
        if not isinstance(exc, Exception):
            # Cancellation (and KeyboardInterrupt, SystemExit) is no outcome.
            self._give_back(gen, kind)
        elif self._counts_as_failure(exc):
            self._failed(gen, kind, started, False)
        else:
            self._t_ign += 1
            self._give_back(gen, kind)

    def _settle_call_error(
        self, gen: int, kind: int, started: float, exc: BaseException
    ) -> None:
        """Settle what ``await fn(*args, **kwargs)`` raised in :meth:`call`.

        A TypeError raised in the calling frame itself, not inside ``fn``,
        by the call of ``fn`` or by getting an awaitable from its result,
        says that ``fn`` could not be called or awaited as given (a plain
        function, ``None``, wrong arguments): a mistake at the call site that
        says nothing about the dependency, so it is ignored, never counted.
        An awaitable of the dependency's without Python frames (an asyncio
        Future given a TypeError) raises in this frame too, but later, as it
        is awaited: that error is the dependency's, and counts.
        """
        tb = exc.__traceback__
        if (
            type(exc) is TypeError
            and tb is not None
            and tb.tb_next is None
            and tb.tb_lasti in _call_site_offsets(tb.tb_frame.f_code)
        ):
            self._t_ign += 1
            self._give_back(gen, kind)
        else:
            self._settle_error(gen, kind, started, exc)

    def _counts_as_failure(self, exc: BaseException) -> bool:
        classify = self._is_failure
        if classify is None:
            return True
        try:
            return bool(classify(exc))
        except Exception as error:
            # A broken log pipeline must not reach the caller either (emit).
            with contextlib.suppress(Exception):
                _log.error(
                    "aetcd_breaker.classifier_failed",
                    breaker=self._name,
                    error=repr(error),
                    exc_info=error,
                )
            return True

    def _give_back(self, gen: int, kind: int) -> None:
        if kind == TRIAL and gen == self._generation:
            self._trials -= 1
            self._wake()

    def _judge_trials(self) -> None:
        successes = self._t_succ - self._b_succ
        done = successes + self._t_fail - self._b_fail
        ratio = self._success_ratio
        if ratio is None:
            if successes >= self._max_requests:
                self._transition(CLOSED, "trials_succeeded", self._now())
        elif done >= self._max_requests:
            if successes / done >= ratio:
                self._transition(CLOSED, "trials_succeeded", self._now())
            else:
                self._transition(OPEN, "trials_failed", self._now())

    def _success_may_trip(self) -> bool:
        # A fast success never raises a failure or slow-call rate, so the
        # built-in rate rules can only fire on one when it brings the count
        # up to their minimum_calls; a rule of the user's may fire on anything.
        if self._custom_rules or self._window_now is not _no_time:
            # Old buckets of a time window age out, which can raise a rate.
            return True
        if self._window is not None:
            calls = self._window.totals(self._window_now())[0]
        else:
            calls = self._t_succ - self._b_succ + self._t_fail - self._b_fail
        return calls in self._minimums

    def _check_rules(self) -> None:
        if self._threshold is not None and self._cfail >= self._threshold:
            self._transition(OPEN, "consecutive_failures", self._now())
            return
        if not self._rules:
            return
        now = self._now()
        counts = self._counts(now)
        for rule in self._rules:
            try:
                fired = rule(counts)
            except Exception as error:
                # A rule of the user's that breaks must not turn the call's
                # own outcome (a success, even) into its error: log it, and
                # let it not fire, as a hook that breaks is only logged.
                with contextlib.suppress(Exception):
                    _log.error(
                        "aetcd_breaker.rule_failed",
                        breaker=self._name,
                        rule=_rule_reason(rule),
                        error=repr(error),
                        exc_info=error,
                    )
                continue
            if fired:
                self._transition(OPEN, _rule_reason(rule), now)
                return

    def _counts(self, now: float) -> Counts:
        if self._window is not None:
            calls, failures, slow = self._window.totals(now)
        else:
            failures = self._t_fail - self._b_fail
            calls = self._t_succ - self._b_succ + failures
            slow = self._t_slow - self._b_slow
        return Counts(
            calls=calls,
            successes=calls - failures,
            failures=failures,
            slow_calls=slow,
            consecutive_successes=self._t_succ - self._b_csucc,
            consecutive_failures=self._cfail,
        )

    def _clear_counts(self) -> None:
        self._b_succ = self._b_csucc = self._t_succ
        self._b_fail = self._t_fail
        self._b_slow = self._t_slow
        self._cfail = 0
        self._trials = 0
        if self._window is not None:
            self._window.clear()

    def _transition(self, to: State, reason: str, now: float) -> None:
        counts = self._counts(now)
        from_state = self._state
        self._enter(to, now)
        retry_after = self._retry_at - now if to is OPEN else None
        change = StateChange(
            self._name,
            from_state,
            to,
            reason,
            self._generation,
            now,
            counts,
            retry_after,
        )
        self._wake()
        queued = self._emitting
        if queued is not None:
            # A hook moved the state while this change is being told: the
            # rest of the hooks, and the log, hear of it after the first one,
            # so every hook sees the changes in the order they happened.
            queued.append(change)
            return
        self._emitting = queued = [change]
        try:
            while queued:
                emit(queued.pop(0), self._hooks)
        finally:
            self._emitting = None

    def _enter(self, to: State, now: float) -> None:
        if to is OPEN:
            # Asked first, so that a policy's bad answer changes nothing.
            open_for = self._open_duration(self._opens + 1)
            if isinstance(open_for, bool) or not isinstance(open_for, int | float):
                raise InvalidSettingTypeError(
                    "reset_timeout", open_for, "a policy that returns seconds"
                )
            if not (open_for >= 0 and finite(open_for)):
                raise InvalidSettingError(
                    "reset_timeout", open_for, "a policy that returns finite seconds"
                )
        self._state = to
        self._generation += 1
        self._changed_at = now
        self._clear_counts()
        self._half_open_until = None
        self._interval_end = None
        if to is OPEN:
            self._opens += 1
            self._retry_at = now + open_for
        elif to is HALF_OPEN:
            if self._half_open_wait is not None:
                self._half_open_until = now + self._half_open_wait
        elif to is CLOSED:
            self._opens = 0
            if self._interval is not None:
                self._interval_end = now + self._interval
        plain = (
            to is CLOSED
            and self._interval is None
            and self._window is None
            and self._slow_after is None
            and not self._rules
            and self._call_timeout is None
        )
        self._fast_gen = self._generation if plain else -1
        self._plain_permit = Permit(self._generation, ADMIT, 0.0)

    def _wake(self) -> None:
        waiters = self._waiters
        if waiters is not None:
            self._waiters = None
            waiters.set()
