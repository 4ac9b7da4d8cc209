"""Using a breaker: call, decorator, guard, outcomes, logs, hooks, settings,
metrics, the registry, manual states and ``wait_ready``."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
import structlog
from core_helpers import Boom, fail, ok, settle
from structlog.testing import capture_logs

from aetcd_breaker.core import (
    BreakerError,
    BreakerRegistry,
    CircuitBreaker,
    CircuitOpenError,
    Counts,
    CountWindow,
    ExponentialBackoff,
    FailureRate,
    FakeClock,
    InvalidSettingError,
    InvalidSettingTypeError,
    Metrics,
    SlowCallRate,
    State,
    StateChange,
    TimeWindow,
    registry,
)

pytestmark = pytest.mark.anyio

NAN = float("nan")
INF = float("inf")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(100.0)


async def trip(breaker: CircuitBreaker, failures: int = 1) -> None:
    for _ in range(failures):
        with pytest.raises(Boom):
            await breaker.call(fail)


class Counting:
    """A wrapped function that counts how often it ran."""

    def __init__(self) -> None:
        self.runs = 0

    async def __call__(self) -> str:
        self.runs += 1
        return "ran"


def changed(
    level: str, from_state: str, to_state: str, **fields: Any
) -> dict[str, Any]:
    """The exact log entry of a manual state change of the breaker "db"."""
    entry = {
        "event": "aetcd_breaker.state_changed",
        "log_level": level,
        "breaker": "db",
        "from_state": from_state,
        "to_state": to_state,
        "reason": "manual",
        "calls": 0,
        "successes": 0,
        "failures": 0,
        "slow_calls": 0,
        "consecutive_successes": 0,
        "consecutive_failures": 0,
        "retry_after": None,
    }
    entry.update(fields)
    return entry


# -- call, decorator, guard ----------------------------------------------------


async def test_call_passes_arguments_through_and_returns_the_result(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock)

    async def put(
        key: str, value: int, *, lease: int | None = None
    ) -> tuple[str, int, int | None]:
        return key, value, lease

    assert await breaker.call(put, "k", 1, lease=7) == ("k", 1, 7)
    assert breaker.metrics().successes == 1


async def test_decorator_guards_every_call_and_keeps_the_function_identity(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=2)
    runs: list[int] = []

    @breaker
    async def fetch(n: int) -> int:
        """Fetch n."""
        runs.append(n)
        if n < 0:
            raise Boom(str(n))
        return n * 2

    assert await fetch(21) == 42
    for n in (-1, -2):
        with pytest.raises(Boom):
            await fetch(n)
    with pytest.raises(CircuitOpenError):
        await fetch(5)

    assert runs == [21, -1, -2]
    assert (fetch.__name__, fetch.__doc__) == ("fetch", "Fetch n.")
    assert fetch.__wrapped__.__name__ == "fetch"  # type: ignore[attr-defined]
    assert breaker.metrics().rejected == 1


def test_decorating_something_not_callable_is_a_setting_type_error() -> None:
    breaker = CircuitBreaker(name="db")
    with pytest.raises(InvalidSettingTypeError, match="fn must be an async function"):
        breaker(42)  # type: ignore[arg-type]


async def test_guard_records_the_outcome_of_its_block(clock: FakeClock) -> None:
    breaker = CircuitBreaker(name="db", clock=clock)
    error = Boom("in block")

    async with breaker.guard() as permit:
        assert not permit.trial
    with pytest.raises(Boom) as caught:
        async with breaker.guard():
            raise error

    assert caught.value is error
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.successes, metrics.failures) == (2, 1, 1)


async def test_guard_on_an_open_breaker_rejects_without_entering_the_block(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=1)
    await trip(breaker)
    entered = False

    with pytest.raises(CircuitOpenError) as caught:
        async with breaker.guard():
            entered = True

    assert not entered
    assert (caught.value.state, caught.value.retry_after) == (State.OPEN, 30.0)


async def test_guard_in_half_open_holds_a_trial_permit(clock: FakeClock) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=1)
    await trip(breaker)
    clock.advance(30)

    async with breaker.guard() as permit:
        assert permit.trial
        assert breaker.trials_in_flight == 1

    assert breaker.state is State.CLOSED


async def test_a_guard_guards_one_block_only(clock: FakeClock) -> None:
    breaker = CircuitBreaker(name="db", clock=clock)
    guard = breaker.guard()
    async with guard:
        pass

    with pytest.raises(RuntimeError, match=r"call breaker\.guard\(\) again"):
        async with guard:
            pass

    assert breaker.metrics().calls == 1


async def test_concurrent_tasks_each_get_their_own_guard(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        name="db", clock=clock, failure_threshold=1, max_requests=2
    )
    await trip(breaker)
    clock.advance(30)
    both_inside = anyio.Event()
    release = anyio.Event()
    permits: list[object] = []

    async def guarded() -> None:
        async with breaker.guard() as permit:
            permits.append(permit)
            if len(permits) == 2:
                both_inside.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(guarded)
        tg.start_soon(guarded)
        await both_inside.wait()
        assert breaker.trials_in_flight == 2
        release.set()

    assert permits[0] is not permits[1]
    assert breaker.state is State.CLOSED
    assert breaker.metrics().successes == 2


async def test_one_guard_shared_by_two_tasks_admits_only_the_first(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock)
    guard = breaker.guard()
    inside = anyio.Event()
    release = anyio.Event()

    async def first() -> None:
        async with guard:
            inside.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await inside.wait()
        with pytest.raises(RuntimeError):
            async with guard:
                pass
        release.set()

    assert breaker.metrics().calls == 1


# -- outcomes ------------------------------------------------------------------


async def test_the_real_exception_reaches_the_caller_even_on_the_tripping_call(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=2)
    errors = [Boom("first"), Boom("second")]

    async def failing(error: Exception) -> None:
        raise error

    seen = []
    for error in errors:
        with pytest.raises(Boom) as caught:
            await breaker.call(failing, error)
        seen.append(caught.value)

    assert seen == errors
    assert seen[1] is errors[1]
    assert seen[1].__cause__ is None
    assert breaker.state is State.OPEN


@pytest.mark.parametrize(
    "error",
    [ValueError("v"), KeyError("k"), TimeoutError(), OSError(5, "io"), Boom("b")],
    ids=lambda e: type(e).__name__,
)
async def test_every_exception_counts_as_a_failure_by_default(
    clock: FakeClock, error: Exception
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=1)

    async def failing() -> None:
        raise error

    with pytest.raises(type(error)):
        await breaker.call(failing)

    assert breaker.state is State.OPEN
    assert breaker.metrics().failures == 1


def plain(value: int) -> int:
    return value


async def needs_one(value: int) -> int:
    return value


MISUSES: list[tuple[str, Any, tuple[Any, ...]]] = [
    ("a plain function", plain, (1,)),
    ("None", None, ()),
    ("missing arguments", needs_one, ()),
    ("too many arguments", needs_one, (1, 2)),
]


@pytest.mark.parametrize(
    ("fn", "args"), [m[1:] for m in MISUSES], ids=[m[0] for m in MISUSES]
)
@pytest.mark.parametrize("call_timeout", [None, 5.0], ids=["plain", "deadline"])
async def test_a_call_that_cannot_call_or_await_fn_is_ignored_not_counted(
    clock: FakeClock, fn: Any, args: tuple[Any, ...], call_timeout: float | None
) -> None:
    # A mistake at the call site says nothing about the dependency: it must
    # not open the breaker, nor use up a half-open trial.
    breaker = CircuitBreaker(
        name="db", clock=clock, failure_threshold=1, call_timeout=call_timeout
    )

    with pytest.raises(TypeError):
        await breaker.call(fn, *args)

    assert breaker.state is State.CLOSED
    metrics = breaker.metrics()
    assert (metrics.failures, metrics.ignored) == (0, 1)

    await trip(breaker)
    clock.advance(breaker.metrics().retry_after or 0)
    assert breaker.state is State.HALF_OPEN
    with pytest.raises(TypeError):
        await breaker.call(fn, *args)
    # The trial permit came back: the next call is admitted and closes it.
    assert await breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED


async def test_a_type_error_raised_inside_fn_still_counts(clock: FakeClock) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=1)

    async def broken() -> None:
        raise TypeError("inside the dependency's client")

    with pytest.raises(TypeError):
        await breaker.call(broken)

    assert breaker.state is State.OPEN


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("call_timeout", [None, 5.0], ids=["plain", "deadline"])
async def test_a_type_error_from_a_future_that_fn_returned_still_counts(
    clock: FakeClock, call_timeout: float | None
) -> None:
    # A future has no Python frame to raise from: its error surfaces in the
    # frame that awaits it, as a call-site mistake does, but it is news of
    # the dependency, and counts.
    breaker = CircuitBreaker(
        name="db", clock=clock, failure_threshold=1, call_timeout=call_timeout
    )
    loop = asyncio.get_running_loop()

    def request() -> asyncio.Future[None]:
        answer = loop.create_future()
        loop.call_soon(answer.set_exception, TypeError("the dependency's answer"))
        return answer

    with pytest.raises(TypeError, match="the dependency's answer"):
        await breaker.call(request)

    assert breaker.state is State.OPEN
    assert (breaker.metrics().failures, breaker.metrics().ignored) == (1, 0)


async def test_errors_the_classifier_rejects_are_ignored(clock: FakeClock) -> None:
    classified: list[BaseException] = []

    def is_failure(exc: BaseException) -> bool:
        classified.append(exc)
        return not isinstance(exc, KeyError)

    breaker = CircuitBreaker(
        name="db", clock=clock, failure_threshold=3, is_failure=is_failure
    )
    missing = KeyError("k")

    async def lookup() -> None:
        raise missing

    await trip(breaker, 2)
    for _ in range(3):
        with pytest.raises(KeyError) as caught:
            await breaker.call(lookup)
        assert caught.value is missing
    await breaker.call(ok)

    metrics = breaker.metrics()
    assert breaker.state is State.CLOSED
    assert (metrics.calls, metrics.successes, metrics.failures) == (6, 1, 2)
    assert metrics.ignored == 3
    assert metrics.failure_rate == pytest.approx(2 / 3)
    assert breaker.counts().calls == 3
    assert len(classified) == 5


async def test_ignored_errors_neither_break_nor_extend_a_failure_streak(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=2,
        is_failure=lambda e: not isinstance(e, KeyError),
    )

    async def lookup() -> None:
        raise KeyError("k")

    await trip(breaker, 1)
    with pytest.raises(KeyError):
        await breaker.call(lookup)
    assert breaker.metrics().consecutive_failures == 1
    await trip(breaker, 1)

    assert breaker.state is State.OPEN


async def test_a_classifier_that_raises_is_logged_and_counts_as_failure(
    clock: FakeClock,
) -> None:
    broken = ZeroDivisionError("classifier broke")

    def is_failure(exc: BaseException) -> bool:
        raise broken

    breaker = CircuitBreaker(
        name="db", clock=clock, failure_threshold=1, is_failure=is_failure
    )
    original = Boom("original")

    async def failing() -> None:
        raise original

    with capture_logs() as logs, pytest.raises(Boom) as caught:
        await breaker.call(failing)

    assert caught.value is original
    assert breaker.state is State.OPEN
    assert logs[0] == {
        "event": "aetcd_breaker.classifier_failed",
        "log_level": "error",
        "breaker": "db",
        "error": "ZeroDivisionError('classifier broke')",
        "exc_info": broken,
    }
    assert [entry["event"] for entry in logs] == [
        "aetcd_breaker.classifier_failed",
        "aetcd_breaker.state_changed",
    ]


async def test_a_rule_that_raises_is_logged_and_never_replaces_the_outcome(
    clock: FakeClock,
) -> None:
    raised: list[Exception] = []

    def broken(counts: Counts) -> bool:
        try:
            return counts.successes / counts.failures < 1
        except ZeroDivisionError as error:
            raised.append(error)
            raise

    breaker = CircuitBreaker(
        name="db", clock=clock, failure_threshold=2, trip_rules=[broken]
    )
    with capture_logs() as logs:
        assert await breaker.call(ok) == "ok"

    assert breaker.state is State.CLOSED
    assert logs == [
        {
            "event": "aetcd_breaker.rule_failed",
            "log_level": "error",
            "breaker": "db",
            "rule": "trip_rule:test_a_rule_that_raises_is_logged_and_never_replaces"
            "_the_outcome.<locals>.broken",
            "error": "ZeroDivisionError('division by zero')",
            "exc_info": raised[0],
        }
    ]
    # The other rules still judge: two failures in a row trip as usual.
    await trip(breaker, 2)
    assert breaker.state is State.OPEN


async def test_cancellation_never_reaches_the_classifier(clock: FakeClock) -> None:
    classified: list[BaseException] = []
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=1,
        is_failure=lambda e: classified.append(e) is None,
    )
    started = anyio.Event()

    async def hangs() -> None:
        started.set()
        await anyio.Event().wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call, hangs)
        await started.wait()
        tg.cancel_scope.cancel()

    assert classified == []
    assert breaker.state is State.CLOSED
    assert breaker.metrics().calls == 0


# -- logs and hooks ------------------------------------------------------------


async def test_successful_calls_log_nothing(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        name="db", clock=clock, call_timeout=5, window=CountWindow(10)
    )
    plain = CircuitBreaker(name="plain", clock=clock)

    with capture_logs() as logs:
        for _ in range(100):
            await breaker.call(ok)
            await plain.call(ok)
            async with breaker.guard():
                pass

    assert logs == []


async def test_log_level_is_warning_entering_open_states_and_info_otherwise(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=1)

    with capture_logs() as logs:
        await trip(breaker)
        clock.advance(30)
        await trip(breaker)
        breaker.force_open()
        breaker.disable()
        breaker.reset()

    assert [(e["log_level"], e["to_state"], e["reason"]) for e in logs] == [
        ("warning", "open", "consecutive_failures"),
        ("info", "half_open", "reset_timeout_elapsed"),
        ("warning", "open", "trial_failed"),
        ("warning", "forced_open", "manual"),
        ("info", "disabled", "manual"),
        ("info", "closed", "manual"),
    ]
    assert [e["generation"] for e in logs] == [2, 3, 4, 5, 6, 7]


async def test_hooks_receive_a_frozen_state_change_after_the_move(
    clock: FakeClock,
) -> None:
    received: list[tuple[StateChange, State]] = []

    def hook(change: StateChange) -> None:
        received.append((change, breaker.state))

    breaker = CircuitBreaker(
        name="db", clock=clock, failure_threshold=2, on_state_change=hook
    )
    await breaker.call(ok)
    await trip(breaker, 2)

    [(change, state_seen)] = received
    assert change == StateChange(
        breaker="db",
        from_state=State.CLOSED,
        to_state=State.OPEN,
        reason="consecutive_failures",
        generation=2,
        at=100.0,
        counts=Counts(
            calls=3,
            successes=1,
            failures=2,
            consecutive_successes=0,
            consecutive_failures=2,
        ),
        retry_after=30.0,
    )
    assert state_seen is State.OPEN
    with pytest.raises(dataclasses.FrozenInstanceError):
        change.reason = "edited"  # type: ignore[misc]


async def test_a_failing_hook_is_logged_and_never_breaks_the_breaker(
    clock: FakeClock,
) -> None:
    raised: list[Exception] = []
    later: list[str] = []

    def broken(change: StateChange) -> None:
        raised.append(RuntimeError("hook broke"))
        raise raised[-1]

    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=1,
        on_state_change=[broken, lambda change: later.append(change.to_state)],
    )
    original = Boom("original")

    async def failing() -> None:
        raise original

    with capture_logs() as logs:
        with pytest.raises(Boom) as caught:
            await breaker.call(failing)
        breaker.force_open()

    assert caught.value is original
    assert breaker.state is State.FORCED_OPEN
    assert later == ["open", "forced_open"]
    hook_failed = {
        "event": "aetcd_breaker.hook_failed",
        "log_level": "error",
        "breaker": "db",
        "hook": (
            "test_a_failing_hook_is_logged_and_never_breaks_the_breaker.<locals>.broken"
        ),
        "error": "RuntimeError('hook broke')",
    }
    assert [e["event"] for e in logs] == [
        "aetcd_breaker.state_changed",
        "aetcd_breaker.hook_failed",
        "aetcd_breaker.state_changed",
        "aetcd_breaker.hook_failed",
    ]
    assert logs[1] == {**hook_failed, "exc_info": raised[0]}
    assert logs[3] == {**hook_failed, "exc_info": raised[1]}


# -- bad settings --------------------------------------------------------------

V, T = ValueError, TypeError

BREAKER_SETTINGS: list[tuple[str, object, type]] = [
    ("max_requests", 0, V),
    ("max_requests", -1, V),
    ("max_requests", 1.5, T),
    ("max_requests", True, T),
    ("max_requests", "2", T),
    ("failure_threshold", 0, V),
    ("failure_threshold", -3, V),
    ("failure_threshold", 2.0, T),
    ("interval", 0, V),
    ("interval", -1, V),
    ("interval", NAN, V),
    ("interval", INF, V),
    ("interval", "10", T),
    ("reset_timeout", -1.0, V),
    ("reset_timeout", NAN, V),
    ("reset_timeout", INF, V),
    ("reset_timeout", "30", T),
    ("reset_timeout", None, T),
    ("reset_timeout", ExponentialBackoff, T),
    ("reset_timeout", 2**2000, V),
    ("call_timeout", 0, V),
    ("call_timeout", -0.5, V),
    ("call_timeout", NAN, V),
    ("call_timeout", INF, V),
    ("call_timeout", "1", T),
    ("call_timeout", 2**2000, V),
    ("half_open_max_wait", 0, V),
    ("half_open_max_wait", -1, V),
    ("half_open_max_wait", NAN, V),
    ("half_open_max_wait", INF, V),
    ("half_open_max_wait", [], T),
    ("success_ratio", 0, V),
    ("success_ratio", -0.1, V),
    ("success_ratio", 1.5, V),
    ("success_ratio", NAN, V),
    ("success_ratio", INF, V),
    ("success_ratio", "1", T),
    ("is_failure", 5, T),
    ("is_failure", "yes", T),
    ("is_failure", TimeoutError, T),
    ("on_state_change", StateChange, T),
    ("on_state_change", 5, T),
    ("on_state_change", "hook", T),
    ("trip_rules", "rule", T),
    ("trip_rules", 5, T),
    ("trip_rules", FailureRate, T),
    ("clock", "now", T),
    ("clock", 5, T),
    ("clock", FakeClock, T),
    ("initial_state", "half_open", V),
    ("initial_state", "nope", V),
    ("initial_state", State.HALF_OPEN, V),
    ("window", "last10", T),
    ("window", 10, T),
    ("name", 5, T),
    ("name", None, T),
]


class _NoTimeSaid:
    """A window that does not say whether it needs the time."""

    def record(self, now: float, failed: bool, slow: bool) -> None: ...

    def totals(self, now: float) -> tuple[int, int, int]:
        return 0, 0, 0

    def clear(self) -> None: ...


NO_TIME_SAID = _NoTimeSaid()


# An async def where a plain function is needed: called, it gives a coroutine
# that is never awaited, and a coroutine is true. Such a rule fired on every
# outcome, such a classifier counted every error, such a hook never ran.
async def _async_rule(counts: Counts) -> bool:
    return False


async def _async_classifier(exc: BaseException) -> bool:
    return False


async def _async_hook(change: StateChange) -> None: ...


class _AsyncCallable:
    async def __call__(self, counts: Counts) -> bool:
        return False


ASYNC_CALLABLE = _AsyncCallable()


async def _async_policy(attempt: int) -> float:
    return 1.0


ASYNC_PARTIAL = functools.partial(_async_classifier)


def breaker_cases() -> list[Any]:
    cases = [
        pytest.param(
            lambda key=key, value=value: CircuitBreaker(**{key: value}),
            key,
            value,
            kind,
            id=f"{key}={value!r}",
        )
        for key, value, kind in BREAKER_SETTINGS
    ]
    cases += [
        pytest.param(
            lambda: CircuitBreaker(on_state_change=[print, 5]),
            "on_state_change",
            5,
            T,
            id="on_state_change=[print, 5]",
        ),
        pytest.param(
            lambda: CircuitBreaker(on_state_change=[print, StateChange]),
            "on_state_change",
            StateChange,
            T,
            id="on_state_change=[print, StateChange]",
        ),
        pytest.param(
            lambda: CircuitBreaker(trip_rules=[FailureRate(0.5), 1]),
            "trip_rules",
            1,
            T,
            id="trip_rules=[rule, 1]",
        ),
        pytest.param(
            lambda: CircuitBreaker(trip_rules=[FailureRate(0.5), _async_rule]),
            "trip_rules",
            _async_rule,
            T,
            id="trip_rules=[rule, async def]",
        ),
        pytest.param(
            lambda: CircuitBreaker(trip_rules=ASYNC_CALLABLE),
            "trip_rules",
            ASYNC_CALLABLE,
            T,
            id="trip_rules=object with async __call__",
        ),
        pytest.param(
            lambda: CircuitBreaker(is_failure=_async_classifier),
            "is_failure",
            _async_classifier,
            T,
            id="is_failure=async def",
        ),
        pytest.param(
            lambda: CircuitBreaker(is_failure=ASYNC_PARTIAL),
            "is_failure",
            ASYNC_PARTIAL,
            T,
            id="is_failure=partial of async def",
        ),
        pytest.param(
            lambda: CircuitBreaker(on_state_change=_async_hook),
            "on_state_change",
            _async_hook,
            T,
            id="on_state_change=async def",
        ),
        pytest.param(
            lambda: CircuitBreaker(on_state_change=[print, _async_hook]),
            "on_state_change",
            _async_hook,
            T,
            id="on_state_change=[print, async def]",
        ),
        pytest.param(
            # Not found out at the first trip, in place of the call's own error.
            lambda: CircuitBreaker(reset_timeout=_async_policy),
            "reset_timeout",
            _async_policy,
            T,
            id="reset_timeout=async def",
        ),
        pytest.param(
            lambda: CircuitBreaker(name=""),
            "name",
            "",
            V,
            id="name=''",
        ),
        pytest.param(
            lambda: CircuitBreaker(initial_state=5),
            "initial_state",
            5,
            T,
            id="initial_state=5",
        ),
        pytest.param(
            lambda: CircuitBreaker(window=NO_TIME_SAID),
            "window",
            NO_TIME_SAID,
            T,
            id="window without needs_time",
        ),
        pytest.param(
            lambda: CircuitBreaker(window=CountWindow),
            "window",
            CountWindow,
            T,
            id="window=CountWindow",
        ),
    ]
    return cases


def guard(**kwargs: Any) -> object:
    return CircuitBreaker().guard(**kwargs)


# The last keyword is the bad one; the others make it reachable.
PART_SETTINGS: list[tuple[Callable[..., object], dict[str, Any], type]] = [
    (FailureRate, {"threshold": 0}, V),
    (FailureRate, {"threshold": 1.5}, V),
    (FailureRate, {"threshold": NAN}, V),
    (FailureRate, {"threshold": "0.5"}, T),
    (FailureRate, {"threshold": 0.5, "minimum_calls": 0}, V),
    (FailureRate, {"threshold": 0.5, "minimum_calls": 2.5}, T),
    (SlowCallRate, {"slow_call_duration": 1, "threshold": 0}, V),
    (SlowCallRate, {"threshold": 0.5, "slow_call_duration": 0}, V),
    (SlowCallRate, {"threshold": 0.5, "slow_call_duration": -1}, V),
    (SlowCallRate, {"threshold": 0.5, "slow_call_duration": INF}, V),
    (SlowCallRate, {"threshold": 0.5, "slow_call_duration": 1, "minimum_calls": -1}, V),
    (CountWindow, {"size": 0}, V),
    (CountWindow, {"size": -5}, V),
    (CountWindow, {"size": 2.5}, T),
    (CountWindow, {"size": "10"}, T),
    # Past what memory can hold: named, not an OverflowError from bytearray.
    (CountWindow, {"size": 2**70}, V),
    (CountWindow, {"size": 2**2000}, V),
    (CountWindow, {"size": 10_000_001}, V),
    (CountWindow, {"size": 2**63}, V),
    (TimeWindow, {"seconds": 0}, V),
    (TimeWindow, {"seconds": -1}, V),
    (TimeWindow, {"seconds": NAN}, V),
    (TimeWindow, {"seconds": INF}, V),
    (TimeWindow, {"seconds": "10"}, T),
    (TimeWindow, {"seconds": 5e-324}, V),
    (TimeWindow, {"seconds": 2**2000}, V),
    (TimeWindow, {"buckets": 10, "seconds": 1e-6}, V),
    (TimeWindow, {"seconds": 10, "buckets": 0}, V),
    (TimeWindow, {"seconds": 10, "buckets": 1.5}, T),
    (TimeWindow, {"seconds": 1e300, "buckets": 2**70}, V),
    (TimeWindow, {"seconds": 10, "buckets": 2**2000}, V),
    (TimeWindow, {"seconds": 1e9, "buckets": 10_001}, V),
    (TimeWindow, {"seconds": 1e20, "buckets": 2**63}, V),
    (ExponentialBackoff, {"base": 0}, V),
    (ExponentialBackoff, {"base": -1}, V),
    (ExponentialBackoff, {"base": NAN}, V),
    (ExponentialBackoff, {"base": "1"}, T),
    (ExponentialBackoff, {"factor": 0.5}, V),
    (ExponentialBackoff, {"factor": INF}, V),
    (ExponentialBackoff, {"cap": 0}, V),
    (ExponentialBackoff, {"base": 2, "cap": 1}, V),
    (ExponentialBackoff, {"jitter": -0.1}, V),
    (ExponentialBackoff, {"jitter": 1.5}, V),
    (ExponentialBackoff, {"jitter": NAN}, V),
    (ExponentialBackoff, {"jitter": 0.5, "rng": None}, T),
    (ExponentialBackoff, {"rng": 42}, T),
    (guard, {"timeout": 0}, V),
    (guard, {"timeout": -1}, V),
    (guard, {"timeout": NAN}, V),
    (guard, {"timeout": "1"}, T),
]


def part_cases() -> list[Any]:
    cases = []
    for make, kwargs, kind in PART_SETTINGS:
        key, value = list(kwargs.items())[-1]
        setting = key if make is guard else f"{make.__name__}.{key}"
        cases.append(
            pytest.param(
                lambda make=make, kwargs=kwargs: make(**kwargs),
                setting,
                value,
                kind,
                id=f"{make.__name__}({kwargs})",
            )
        )
    return cases


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a is b or a == b


@pytest.mark.parametrize(
    ("setting", "value", "kind"),
    [
        ("start", NAN, V),
        ("start", 2**2000, V),
        ("start", "0", T),
        ("start", True, T),
        ("seconds", -1, V),
        ("seconds", INF, V),
        ("seconds", 2**2000, V),
        ("seconds", "1", T),
        ("seconds", None, T),
    ],
)
def test_a_fake_clock_names_a_bad_start_or_step(
    setting: str, value: object, kind: type
) -> None:
    # A test helper too: not a bare TypeError or OverflowError, nor a clock
    # moved to infinity.
    with pytest.raises(kind) as caught:
        if setting == "start":
            FakeClock(value)  # type: ignore[arg-type]
        else:
            FakeClock().advance(value)  # type: ignore[arg-type]

    assert isinstance(caught.value, BreakerError)
    assert str(caught.value).startswith(f"{setting} must be ")
    assert str(caught.value).endswith(repr(value))


@pytest.mark.parametrize(
    ("make", "setting", "value", "kind"), breaker_cases() + part_cases()
)
def test_bad_setting_raises_an_error_naming_the_setting_and_the_value(
    make: Callable[[], object], setting: str, value: object, kind: type
) -> None:
    with pytest.raises(BreakerError) as caught:
        make()

    error = caught.value
    assert isinstance(error, kind)
    expected = InvalidSettingError if kind is ValueError else InvalidSettingTypeError
    assert type(error) is expected
    assert error.setting == setting
    assert same(error.value, value)
    message = str(error)
    assert message.startswith(f"{setting} must be ")
    assert message.endswith(repr(value))


# -- metrics -------------------------------------------------------------------


async def test_metrics_is_a_frozen_snapshot_of_totals_rates_and_state(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=3,
        is_failure=lambda e: not isinstance(e, KeyError),
        trip_rules=[SlowCallRate(1.0, slow_call_duration=2, minimum_calls=100)],
    )

    async def lookup() -> None:
        raise KeyError("k")

    async def slow() -> str:
        clock.advance(2)
        return "slow"

    await breaker.call(ok)
    await breaker.call(slow)
    with pytest.raises(KeyError):
        await breaker.call(lookup)
    await trip(breaker, 2)
    before = breaker.metrics()
    await trip(breaker, 1)
    clock.advance(10)
    for _ in range(2):
        with pytest.raises(CircuitOpenError):
            await breaker.call(ok)

    assert before == Metrics(
        name="db",
        state=State.CLOSED,
        generation=1,
        calls=5,
        successes=2,
        failures=2,
        ignored=1,
        slow_calls=1,
        rejected=0,
        failure_rate=0.5,
        slow_call_rate=0.25,
        consecutive_successes=0,
        consecutive_failures=2,
        state_changed_at=100.0,
        retry_after=None,
    )
    assert breaker.metrics() == Metrics(
        name="db",
        state=State.OPEN,
        generation=2,
        calls=6,
        successes=2,
        failures=3,
        ignored=1,
        slow_calls=1,
        rejected=2,
        failure_rate=0.0,
        slow_call_rate=0.0,
        consecutive_successes=0,
        consecutive_failures=0,
        state_changed_at=102.0,
        retry_after=20.0,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.calls = 0  # type: ignore[misc]


async def test_metrics_totals_outlive_state_changes_and_rates_follow_the_rules(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=2)
    await trip(breaker, 2)
    clock.advance(30)
    await breaker.call(ok)
    await trip(breaker, 1)

    metrics = breaker.metrics()
    assert metrics.state is State.CLOSED
    assert (metrics.calls, metrics.successes, metrics.failures) == (4, 1, 3)
    assert (metrics.failure_rate, metrics.consecutive_failures) == (1.0, 1)
    assert metrics.generation == 4


# -- registry ------------------------------------------------------------------


def test_registry_gets_or_creates_breakers_by_name() -> None:
    reg = BreakerRegistry()
    clock = FakeClock()

    etcd = reg.get_or_create("etcd", clock=clock, failure_threshold=2)
    again = reg.get_or_create("etcd", failure_threshold=9)
    cache = reg.get_or_create("cache", clock=clock)

    assert again is etcd
    assert reg.get("etcd") is etcd
    assert reg.get("nothing") is None
    assert reg.names() == ["cache", "etcd"]
    assert "etcd" in reg
    assert len(reg) == 2
    etcd.force_open()
    snapshot = reg.metrics()
    assert list(snapshot) == ["cache", "etcd"]
    assert snapshot["etcd"].state is State.FORCED_OPEN
    assert snapshot["cache"] == cache.metrics()


async def test_registry_breaker_keeps_the_settings_it_was_made_with(
    clock: FakeClock,
) -> None:
    reg = BreakerRegistry()
    first = reg.get_or_create("etcd", clock=clock, failure_threshold=2)
    breaker = reg.get_or_create("etcd", clock=clock, failure_threshold=9)
    await trip(breaker, 2)
    assert breaker is first
    assert breaker.state is State.OPEN


def test_registry_holds_breakers_weakly() -> None:
    reg = BreakerRegistry()
    breaker = reg.get_or_create("short-lived")
    kept = reg.get_or_create("kept")
    assert reg.names() == ["kept", "short-lived"]

    del breaker
    gc.collect()

    assert reg.get("short-lived") is None
    assert reg.names() == ["kept"]
    assert list(reg.metrics()) == ["kept"]
    assert kept.name == "kept"


def test_registry_refuses_a_second_breaker_of_the_same_name() -> None:
    reg = BreakerRegistry()
    first = reg.register(CircuitBreaker(name="etcd"))
    assert reg.register(first) is first
    with pytest.raises(ValueError, match="'etcd' is already registered"):
        reg.register(CircuitBreaker(name="etcd"))


@pytest.mark.parametrize("breaker", [None, "etcd", CircuitBreaker], ids=repr)
def test_registry_names_what_is_registered_when_it_is_no_breaker(
    breaker: Any,
) -> None:
    # Not a bare AttributeError about a missing .name.
    reg = BreakerRegistry()

    with pytest.raises(InvalidSettingTypeError, match=r"^breaker must be a"):
        reg.register(breaker)
    assert len(reg) == 0


@pytest.mark.parametrize("name", [[], 5, None, b"db"], ids=repr)
def test_registry_names_a_name_that_is_not_a_str(name: Any) -> None:
    reg = BreakerRegistry()

    with pytest.raises(InvalidSettingTypeError, match=r"^name must be a str"):
        reg.get_or_create(name)
    with pytest.raises(InvalidSettingTypeError, match=r"^name must be a str"):
        reg.get(name)
    assert name not in reg


def test_process_wide_registry_finds_the_breakers_it_made() -> None:
    breaker = registry.get_or_create("test_breaker_api.process-wide")
    assert registry.get("test_breaker_api.process-wide") is breaker
    assert "test_breaker_api.process-wide" in registry.names()


# -- manual states -------------------------------------------------------------


async def test_force_open_rejects_every_call_until_reset(clock: FakeClock) -> None:
    breaker = CircuitBreaker(name="db", clock=clock)
    fn = Counting()

    with capture_logs() as logs:
        breaker.force_open()
        clock.advance(10_000)
        with pytest.raises(CircuitOpenError) as caught:
            await breaker.call(fn)
        assert breaker.acquire() is None
        breaker.reset()

    error = caught.value
    assert fn.runs == 0
    assert (error.breaker, error.state, error.retry_after) == (
        "db",
        State.FORCED_OPEN,
        None,
    )
    assert str(error) == "circuit 'db' is forced_open; calls are rejected until reset()"
    assert logs == [
        changed("warning", "closed", "forced_open", generation=2),
        changed("info", "forced_open", "closed", generation=3),
    ]
    assert breaker.state is State.CLOSED
    assert breaker.metrics().rejected == 2


async def test_disabled_breaker_admits_everything_never_trips_and_still_counts(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=1)
    breaker.disable()

    with capture_logs() as logs:
        await trip(breaker, 50)
        await breaker.call(ok)

    assert logs == []
    metrics = breaker.metrics()
    assert metrics.state is State.DISABLED
    assert (metrics.calls, metrics.successes, metrics.failures) == (51, 1, 50)
    assert metrics.consecutive_successes == 1


async def test_reset_closes_an_open_breaker_with_counts_and_backoff_restarted(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=2,
        reset_timeout=ExponentialBackoff(base=1, factor=10, cap=1000),
    )
    await trip(breaker, 2)
    clock.advance(1)
    await trip(breaker, 1)
    assert breaker.retry_after == 10.0

    with capture_logs() as logs:
        breaker.reset()

    assert logs == [changed("info", "open", "closed", generation=5)]
    assert breaker.counts() == Counts()
    await trip(breaker, 2)
    assert breaker.retry_after == 1.0


async def test_reset_of_a_closed_breaker_clears_counts_without_a_transition(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=2)
    await trip(breaker, 1)

    with capture_logs() as logs:
        breaker.reset()

    assert logs == []
    assert breaker.generation == 1
    await trip(breaker, 1)
    assert breaker.state is State.CLOSED


@pytest.mark.parametrize("initial", ["forced_open", State.FORCED_OPEN])
async def test_breaker_can_start_forced_open(clock: FakeClock, initial: Any) -> None:
    with capture_logs() as logs:
        breaker = CircuitBreaker(name="db", clock=clock, initial_state=initial)
        with pytest.raises(CircuitOpenError):
            await breaker.call(ok)
        breaker.reset()

    assert logs == [changed("info", "forced_open", "closed", generation=2)]
    assert await breaker.call(ok) == "ok"


async def test_breaker_can_start_open_or_disabled(clock: FakeClock) -> None:
    opened = CircuitBreaker(name="db", clock=clock, initial_state="open")
    disabled = CircuitBreaker(
        name="db", clock=clock, initial_state=State.DISABLED, failure_threshold=1
    )

    with pytest.raises(CircuitOpenError) as caught:
        await opened.call(ok)
    await trip(disabled, 3)

    assert caught.value.retry_after == 30.0
    assert disabled.state is State.DISABLED


# -- wait_ready ----------------------------------------------------------------


class Waiter:
    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.done = anyio.Event()

    async def run(self) -> None:
        await self.breaker.wait_ready()
        self.done.set()


async def test_wait_ready_returns_at_once_when_calls_pass(clock: FakeClock) -> None:
    for state in ("closed", "disabled"):
        breaker = CircuitBreaker(name="db", clock=clock, initial_state=state)
        with anyio.fail_after(5):
            await breaker.wait_ready()


async def test_wait_ready_wakes_exactly_when_the_clock_reaches_retry_at(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=1)
    await trip(breaker)
    waiter = Waiter(breaker)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter.run)
        await settle()
        clock.advance(29.5)
        await settle()
        assert not waiter.done.is_set()
        clock.advance(0.5)
        with anyio.fail_after(5):
            await waiter.done.wait()

    assert breaker.state is State.HALF_OPEN


async def test_wait_ready_on_forced_open_waits_for_reset_not_for_time(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, initial_state="forced_open")
    waiter = Waiter(breaker)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter.run)
        await settle()
        clock.advance(1e6)
        await settle()
        assert not waiter.done.is_set()
        breaker.reset()
        with anyio.fail_after(5):
            await waiter.done.wait()


async def test_wait_ready_in_half_open_wakes_when_a_permit_comes_back(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=1)
    await trip(breaker)
    clock.advance(30)
    permit = breaker.acquire()
    assert permit is not None and permit.trial
    waiter = Waiter(breaker)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter.run)
        await settle()
        assert not waiter.done.is_set()
        breaker.release(permit)
        with anyio.fail_after(5):
            await waiter.done.wait()

    assert breaker.acquire() is not None


class _BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize(
    ("settings", "setting", "shown"),
    [
        ({"max_requests": -(10**5000)}, "max_requests", "<an int of 16610 bits>"),
        ({"reset_timeout": 10**5000}, "reset_timeout", "<an int of 16610 bits>"),
        ({"name": 10**5000}, "name", "int <an int of 16610 bits>"),
        ({"clock": _BrokenRepr()}, "clock", "<a _BrokenRepr whose repr() fails>"),
    ],
    ids=["max_requests", "reset_timeout", "name", "clock"],
)
def test_a_bad_value_without_a_repr_is_still_named_in_the_error(
    settings: dict[str, Any], setting: str, shown: str
) -> None:
    with pytest.raises(BreakerError) as raised:
        CircuitBreaker(**settings)

    assert raised.value.setting == setting  # type: ignore[attr-defined]
    assert str(raised.value).startswith(f"{setting} must be ")
    assert str(raised.value).endswith(shown)


def test_decorating_a_plain_function_is_refused_by_name() -> None:
    def load() -> str:
        return "not awaitable"

    with pytest.raises(InvalidSettingTypeError) as raised:
        CircuitBreaker()(load)  # type: ignore[arg-type]

    assert raised.value.setting == "fn"
    assert raised.value.value is load


class _Loader:
    def load(self) -> str:
        return "not awaitable"

    async def stream(self) -> AsyncIterator[int]:
        yield 1


@pytest.mark.parametrize(
    "fn",
    [
        _Loader().load,
        functools.partial(_Loader.load, _Loader()),
        functools.partial(_Loader().stream),
        _Loader,
    ],
    ids=["bound method", "partial", "partial of an async generator", "class"],
)
def test_decorating_a_plain_method_partial_or_class_is_refused_by_name(
    fn: Any,
) -> None:
    with pytest.raises(InvalidSettingTypeError) as raised:
        CircuitBreaker()(fn)

    assert raised.value.setting == "fn"
    assert raised.value.value is fn


async def test_decorating_an_async_method_or_partial_guards_it(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(clock=clock, failure_threshold=1)

    class Store:
        async def get(self, key: str) -> str:
            return key

    assert await breaker(Store().get)("k") == "k"
    assert await breaker(functools.partial(Store.get, Store()))("j") == "j"
    with pytest.raises(Boom):
        await breaker(functools.partial(fail))()
    assert breaker.state is State.OPEN


def test_a_rule_class_in_place_of_a_rule_is_refused_by_name() -> None:
    with pytest.raises(InvalidSettingTypeError) as raised:
        CircuitBreaker(trip_rules=[FailureRate])

    assert raised.value.setting == "trip_rules"
    assert raised.value.value is FailureRate


@pytest.mark.parametrize("answer", [NAN, -1.0, INF, "30", None])
async def test_an_open_duration_policy_with_a_bad_answer_is_named_at_the_trip(
    clock: FakeClock, answer: object
) -> None:
    breaker = CircuitBreaker(
        failure_threshold=1, reset_timeout=lambda opens: answer, clock=clock
    )

    with pytest.raises(BreakerError) as raised:
        await breaker.call(fail)

    assert raised.value.setting == "reset_timeout"  # type: ignore[attr-defined]
    assert same(raised.value.value, answer)  # type: ignore[attr-defined]
    # Nothing changed: no open state whose end cannot be told.
    assert breaker.state is State.CLOSED


@pytest.mark.parametrize("ratio", [None, 0.5])
async def test_a_policy_failing_on_a_failed_trial_leaves_the_permit_free(
    clock: FakeClock, ratio: float | None
) -> None:
    breaker = CircuitBreaker(
        failure_threshold=1,
        reset_timeout=lambda opens: 1.0 if opens == 1 else "soon",
        success_ratio=ratio,
        clock=clock,
    )
    await trip(breaker)
    clock.advance(1)

    with pytest.raises(InvalidSettingTypeError):
        await breaker.call(fail)

    # Still half-open, as the policy could not tell how long to open for,
    # but not wedged: the failed trial does not hold its permit for good.
    assert breaker.state is State.HALF_OPEN
    assert breaker.trials_in_flight == 0
    assert await breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED


@pytest.mark.parametrize("action", ["disable", "reset"])
async def test_a_hook_that_disables_or_resets_on_half_open_lets_the_call_run(
    clock: FakeClock, action: str
) -> None:
    def hook(change: StateChange) -> None:
        if change.to_state is State.HALF_OPEN:
            getattr(breaker, action)()

    breaker = CircuitBreaker(
        failure_threshold=1, reset_timeout=1, clock=clock, on_state_change=hook
    )
    with pytest.raises(Boom):
        await breaker.call(fail)
    clock.advance(2)

    assert await breaker.call(ok) == "ok"
    assert breaker.state is (State.DISABLED if action == "disable" else State.CLOSED)


async def test_a_hook_that_moves_the_state_lets_every_hook_hear_in_order(
    clock: FakeClock,
) -> None:
    heard: dict[str, list[int]] = {"first": [], "second": []}

    def first(change: StateChange) -> None:
        heard["first"].append(change.generation)
        if change.to_state is State.OPEN:
            breaker.reset()

    def second(change: StateChange) -> None:
        heard["second"].append(change.generation)

    breaker = CircuitBreaker(
        failure_threshold=1, clock=clock, on_state_change=[first, second]
    )
    with capture_logs() as logs, pytest.raises(Boom):
        await breaker.call(fail)

    assert breaker.state is State.CLOSED
    # Not the reset first and the opening last, which would leave a hook
    # that follows the state believing that the breaker is open.
    assert heard == {"first": [2, 3], "second": [2, 3]}
    assert [(e["to_state"], e["generation"]) for e in logs] == [
        ("open", 2),
        ("closed", 3),
    ]


def test_decorating_an_async_generator_is_refused_by_name() -> None:
    async def events() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(InvalidSettingTypeError) as raised:
        CircuitBreaker()(events)  # type: ignore[arg-type]

    assert raised.value.setting == "fn"
    assert "not an async generator" in str(raised.value)


async def test_a_broken_log_pipeline_never_reaches_the_caller(
    clock: FakeClock,
) -> None:
    def broken_processor(*_: object) -> dict[str, object]:
        raise BrokenPipeError("the log sink went away")

    breaker = CircuitBreaker(name="db", failure_threshold=1, clock=clock)

    async def fail() -> None:
        raise ValueError("the call's own error")

    structlog.configure(processors=[broken_processor])
    try:
        with pytest.raises(ValueError, match="the call's own error"):
            await breaker.call(fail)
    finally:
        structlog.reset_defaults()

    assert breaker.state is State.OPEN


async def test_a_broken_classifier_with_a_broken_log_pipeline_still_counts(
    clock: FakeClock,
) -> None:
    def broken_processor(*_: object) -> dict[str, object]:
        raise BrokenPipeError("the log sink went away")

    def broken_classifier(exc: BaseException) -> bool:
        raise ZeroDivisionError("classifier broke")

    breaker = CircuitBreaker(
        name="db", failure_threshold=1, is_failure=broken_classifier, clock=clock
    )

    async def fail() -> None:
        raise ValueError("the call's own error")

    structlog.configure(processors=[broken_processor])
    try:
        with pytest.raises(ValueError, match="the call's own error"):
            await breaker.call(fail)
    finally:
        structlog.reset_defaults()

    assert breaker.state is State.OPEN


async def test_wait_ready_woken_by_a_state_change_leaves_no_timer_behind(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=30, clock=clock)
    with pytest.raises(Boom):
        await breaker.call(fail)

    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.wait_ready)
        await clock.wait_for_sleepers(1)
        breaker.reset()

    # Nobody waits any more: a sleeper counted here would mislead
    # wait_for_sleepers() in the next test step.
    assert clock.sleepers == 0


async def test_hooks_see_a_change_made_by_an_earlier_hook_after_the_one_it_followed(
    clock: FakeClock,
) -> None:
    seen: list[tuple[str, State, State]] = []

    def force_open_on_open(change: StateChange) -> None:
        seen.append(("first", change.from_state, change.to_state))
        if change.to_state is State.OPEN:
            breaker.force_open()

    def gauge(change: StateChange) -> None:
        seen.append(("second", change.from_state, change.to_state))

    breaker = CircuitBreaker(
        name="db",
        failure_threshold=1,
        clock=clock,
        on_state_change=[force_open_on_open, gauge],
    )
    with capture_logs() as logs:
        await trip(breaker)

    # Every hook is told of the trip before the change its first hook made,
    # so the last change a hook saw is the state the breaker is in.
    assert seen == [
        ("first", State.CLOSED, State.OPEN),
        ("second", State.CLOSED, State.OPEN),
        ("first", State.OPEN, State.FORCED_OPEN),
        ("second", State.OPEN, State.FORCED_OPEN),
    ]
    assert breaker.state is State.FORCED_OPEN
    assert [(log["from_state"], log["to_state"]) for log in logs] == [
        ("closed", "open"),
        ("open", "forced_open"),
    ]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_wait_ready_that_timed_out_leaves_nothing_bound_to_its_event_loop(
    backend: str,
) -> None:
    # A breaker kept at module level outlives each test's event loop: a
    # waiter that gave up in one loop must not leave the next loop an event
    # bound to the first.
    breaker = CircuitBreaker(name="db", initial_state="forced_open")

    async def give_up_waiting() -> None:
        with anyio.move_on_after(0.05):
            await breaker.wait_ready()

    async def wait_for_reset() -> bool:
        async with anyio.create_task_group() as tg:
            waiter = Waiter(breaker)
            tg.start_soon(waiter.run)
            await anyio.sleep(0.05)
            breaker.reset()
            with anyio.fail_after(5):
                await waiter.done.wait()
        return waiter.done.is_set()

    anyio.run(give_up_waiting, backend=backend)
    assert anyio.run(wait_for_reset, backend=backend)
    breaker.force_open()
    assert anyio.run(wait_for_reset, backend=backend)


async def test_a_failure_in_half_open_that_no_trial_made_is_logged_as_such(
    clock: FakeClock,
) -> None:
    # A long-lived stream (a watch) reports its failure with a permit of its
    # own: in half-open it reopens the breaker, but no trial failed.
    from aetcd_breaker.core import Permit
    from aetcd_breaker.core.breaker import ADMIT

    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=1)
    await trip(breaker)
    clock.advance(30)
    assert breaker.state is State.HALF_OPEN

    with capture_logs() as logs:
        breaker.record_failure(Permit(breaker.generation, ADMIT, clock.now()))
        clock.advance(30)
        assert breaker.state is State.HALF_OPEN
        await trip(breaker)

    assert [(e["to_state"], e["reason"]) for e in logs] == [
        ("open", "failure_in_half_open"),
        ("half_open", "reset_timeout_elapsed"),
        ("open", "trial_failed"),
    ]
