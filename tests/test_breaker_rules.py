"""Trip rules, windows, the interval, and how long the breaker stays open."""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from core_helpers import Boom, fail, ok
from structlog.testing import capture_logs

from aetcd_breaker.core import (
    CallTimeoutError,
    CircuitBreaker,
    CircuitOpenError,
    ConsecutiveFailures,
    Counts,
    CountWindow,
    ExponentialBackoff,
    FailureRate,
    FakeClock,
    InvalidSettingError,
    SlowCallRate,
    State,
    TimeWindow,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(0.0)


async def run(breaker: CircuitBreaker, outcomes: str) -> None:
    """Make one call per letter: S succeeds, F fails."""
    for outcome in outcomes:
        if outcome == "S":
            assert await breaker.call(ok) == "ok"
        else:
            with pytest.raises(Boom):
                await breaker.call(fail)


def timed(
    clock: FakeClock, seconds: float, *, failing: bool = False
) -> Callable[[], Awaitable[str]]:
    """A wrapped call that takes ``seconds`` of fake time, then ends."""

    async def call() -> str:
        clock.advance(seconds)
        await anyio.sleep(0)
        if failing:
            raise Boom("slow and down")
        return "slow"

    return call


def reasons(logs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(entry["to_state"], entry["reason"]) for entry in logs]


# -- trip rules --------------------------------------------------------------


async def test_custom_trip_rule_trips_when_it_returns_true(clock: FakeClock) -> None:
    seen: list[Counts] = []

    def two_failures_after_a_success(counts: Counts) -> bool:
        seen.append(counts)
        return counts.successes >= 1 and counts.failures >= 2

    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=None,
        trip_rules=[two_failures_after_a_success],
    )

    with capture_logs() as logs:
        await run(breaker, "FF")
        assert breaker.state is State.CLOSED
        await run(breaker, "S")

    assert breaker.state is State.OPEN
    assert seen[-1] == Counts(
        calls=3,
        successes=1,
        failures=2,
        slow_calls=0,
        consecutive_successes=1,
        consecutive_failures=0,
    )
    assert reasons(logs) == [
        (
            "open",
            "trip_rule:test_custom_trip_rule_trips_when_it_returns_true."
            "<locals>.two_failures_after_a_success",
        )
    ]


async def test_any_active_rule_firing_trips_the_breaker(clock: FakeClock) -> None:
    def never(counts: Counts) -> bool:
        return False

    def third_failure(counts: Counts) -> bool:
        return counts.failures >= 3

    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=10,
        trip_rules=[never, third_failure],
    )

    with capture_logs() as logs:
        await run(breaker, "FSF")
        assert breaker.state is State.CLOSED
        await run(breaker, "F")

    assert breaker.state is State.OPEN
    assert [entry["reason"] for entry in logs] == [
        "trip_rule:test_any_active_rule_firing_trips_the_breaker.<locals>.third_failure"
    ]


async def test_consecutive_failures_rule_is_checked_before_the_other_rules(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=2,
        trip_rules=[FailureRate(0.5, minimum_calls=2)],
    )

    with capture_logs() as logs:
        await run(breaker, "FF")

    assert reasons(logs) == [("open", "consecutive_failures")]


async def test_consecutive_failures_as_a_trip_rule_trips_at_its_threshold(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=None,
        trip_rules=[ConsecutiveFailures(3)],
    )

    with capture_logs() as logs:
        # A success in between starts the run of failures again.
        await run(breaker, "FFSFF")
        assert breaker.state is State.CLOSED
        await run(breaker, "F")

    assert breaker.state is State.OPEN
    assert reasons(logs) == [("open", "consecutive_failures")]


async def test_failure_rate_stays_silent_until_the_window_holds_minimum_calls(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=None,
        window=CountWindow(10),
        trip_rules=[FailureRate(0.5, minimum_calls=4)],
    )

    with capture_logs() as logs:
        await run(breaker, "FFF")
        assert breaker.state is State.CLOSED
        await run(breaker, "F")

    assert breaker.state is State.OPEN
    assert reasons(logs) == [("open", "failure_rate")]
    assert (logs[0]["calls"], logs[0]["failures"]) == (4, 4)


async def test_failure_rate_trips_at_its_threshold_not_below(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=None,
        trip_rules=[FailureRate(0.5, minimum_calls=4)],
    )

    await run(breaker, "SSSFSF")
    assert breaker.state is State.CLOSED
    assert breaker.metrics().failure_rate == pytest.approx(2 / 6)
    await run(breaker, "F")
    assert breaker.state is State.CLOSED
    await run(breaker, "F")
    assert breaker.state is State.OPEN


@pytest.mark.parametrize("rule", ["failure_rate", "slow_call_rate"])
async def test_rate_rule_trips_on_the_call_that_reaches_minimum_calls(
    clock: FakeClock, rule: str
) -> None:
    if rule == "failure_rate":
        breaker = CircuitBreaker(
            name="db",
            clock=clock,
            failure_threshold=None,
            trip_rules=[FailureRate(0.5, minimum_calls=4)],
        )
        await run(breaker, "FFF")
    else:
        breaker = CircuitBreaker(
            name="db",
            clock=clock,
            failure_threshold=None,
            trip_rules=[SlowCallRate(0.5, slow_call_duration=2, minimum_calls=2)],
        )
        await breaker.call(timed(clock, 2))
    assert breaker.state is State.CLOSED

    await run(breaker, "S")

    assert breaker.state is State.OPEN


async def test_slow_call_rate_counts_slow_successes_and_slow_failures(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=None,
        trip_rules=[SlowCallRate(0.5, slow_call_duration=2, minimum_calls=3)],
    )

    with capture_logs() as logs:
        await breaker.call(timed(clock, 2))
        await run(breaker, "S")
        await breaker.call(timed(clock, 1.5))
        assert breaker.counts().slow_calls == 1
        assert breaker.state is State.CLOSED
        with pytest.raises(Boom):
            await breaker.call(timed(clock, 3, failing=True))

    assert breaker.state is State.OPEN
    assert reasons(logs) == [("open", "slow_call_rate")]
    entry = logs[0]
    assert (entry["calls"], entry["failures"], entry["slow_calls"]) == (4, 1, 2)


async def test_slow_successes_alone_trip_the_slow_call_rate(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        trip_rules=[SlowCallRate(1.0, slow_call_duration=2, minimum_calls=2)],
    )

    await breaker.call(timed(clock, 5))
    assert breaker.state is State.CLOSED
    await breaker.call(timed(clock, 2))

    assert breaker.state is State.OPEN
    assert breaker.metrics().failures == 0


async def test_timed_out_call_is_both_failed_and_slow(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        call_timeout=5,
        failure_threshold=None,
        # The timeout is shorter than slow_call_duration: slow all the same.
        trip_rules=[SlowCallRate(1.0, slow_call_duration=60, minimum_calls=1)],
    )
    started = anyio.Event()

    async def hangs() -> None:
        started.set()
        await anyio.Event().wait()

    async def caller() -> None:
        with pytest.raises(CallTimeoutError):
            await breaker.call(hangs)

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await started.wait()
            clock.advance(5)

    metrics = breaker.metrics()
    assert (metrics.failures, metrics.slow_calls) == (1, 1)
    assert reasons(logs) == [("open", "slow_call_rate")]


# -- windows -----------------------------------------------------------------


async def test_count_window_sees_only_the_last_n_calls(clock: FakeClock) -> None:
    window = CountWindow(4)
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=None,
        window=window,
        trip_rules=[FailureRate(0.5, minimum_calls=4)],
    )

    await run(breaker, "FSSSSSF")
    assert breaker.counts() == Counts(
        calls=4,
        successes=3,
        failures=1,
        consecutive_successes=0,
        consecutive_failures=1,
    )
    assert breaker.state is State.CLOSED
    await run(breaker, "F")

    assert breaker.state is State.OPEN


async def test_time_window_forgets_old_buckets_as_the_clock_advances(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=None,
        window=TimeWindow(10, buckets=10),
        trip_rules=[FailureRate(0.5, minimum_calls=4)],
    )

    await run(breaker, "FF")
    clock.advance(5)
    await run(breaker, "F")
    assert breaker.counts().calls == 3
    clock.advance(4.5)
    assert breaker.counts().calls == 3
    clock.advance(0.5)
    assert (breaker.counts().calls, breaker.counts().failures) == (1, 1)

    await run(breaker, "F")
    assert breaker.state is State.CLOSED
    clock.advance(10)
    assert breaker.counts().calls == 0
    await run(breaker, "FFF")
    assert breaker.state is State.CLOSED
    await run(breaker, "F")
    assert breaker.state is State.OPEN


@pytest.mark.parametrize(
    ("ages", "expected"),
    [((0.0,), 1), ((0.0, 9.9), 2), ((0.0, 10.0), 1), ((0.0, 25.0), 1)],
)
def test_time_window_totals_cover_the_last_seconds(
    ages: tuple[float, ...], expected: int
) -> None:
    window = TimeWindow(10, buckets=10)
    for age in ages:
        window.record(age, failed=True, slow=False)
    assert window.totals(ages[-1]) == (expected, expected, 0)


def test_a_count_window_forgets_slow_calls_that_slide_out() -> None:
    window = CountWindow(3)
    window.record(0.0, failed=True, slow=True)
    window.record(0.0, failed=False, slow=True)
    window.record(0.0, failed=False, slow=False)
    assert window.totals(0.0) == (3, 1, 2)

    window.record(0.0, failed=False, slow=False)
    assert window.totals(0.0) == (3, 0, 1)
    window.record(0.0, failed=False, slow=False)
    assert window.totals(0.0) == (3, 0, 0)


def test_a_time_window_forgets_slow_calls_as_their_buckets_age_out() -> None:
    window = TimeWindow(3, buckets=3)
    window.record(0.5, failed=True, slow=True)
    window.record(1.5, failed=False, slow=True)
    assert window.totals(2.5) == (2, 1, 2)

    assert window.totals(3.5) == (1, 0, 1)
    assert window.totals(4.5) == (0, 0, 0)


def test_a_time_window_counts_a_rewound_clock_into_its_newest_bucket() -> None:
    window = TimeWindow(10, buckets=10)
    window.record(9.5, failed=True, slow=False)
    # Rewound by more than a bucket: the outcome joins the newest bucket
    # and ages out with it, not with the bucket of the time it was given.
    window.record(0.5, failed=True, slow=True)
    assert window.totals(9.5) == (2, 2, 1)
    assert window.totals(10.5) == (2, 2, 1)
    assert window.totals(19.5) == (0, 0, 0)


@pytest.mark.parametrize(
    "window", [CountWindow(50), TimeWindow(5, buckets=10)], ids=repr
)
def test_window_memory_stays_bounded_after_many_records(
    clock: FakeClock, window: CountWindow | TimeWindow
) -> None:
    breaker = CircuitBreaker(
        name="db", clock=clock, failure_threshold=None, window=window
    )
    window = breaker._window  # type: ignore[assignment]  # the breaker's own copy
    sizes = window_sizes(window)

    for i in range(100_000):
        permit = breaker.acquire()
        assert permit is not None
        if i % 3:
            breaker.record_success(permit)
        else:
            breaker.record_failure(permit)
        clock.advance(0.001)

    assert window_sizes(window) == sizes
    calls, failures, _ = window.totals(clock.now())
    assert 0 < failures < calls <= 5000
    assert breaker.metrics().calls == 100_000


def window_sizes(window: CountWindow | TimeWindow) -> tuple[int, ...]:
    if isinstance(window, CountWindow):
        return (len(window._codes),)
    return tuple(len(a) for a in (window._calls, window._failures, window._slow))


async def test_ignored_errors_stay_out_of_the_window(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        window=CountWindow(10),
        is_failure=lambda exc: not isinstance(exc, KeyError),
    )

    async def missing() -> None:
        raise KeyError("k")

    await run(breaker, "SF")
    for _ in range(5):
        with pytest.raises(KeyError):
            await breaker.call(missing)

    assert breaker.counts().calls == 2
    assert breaker.metrics().failure_rate == 0.5
    assert breaker.metrics().ignored == 5


# -- interval ------------------------------------------------------------------


async def test_interval_clears_the_closed_state_counts(clock: FakeClock) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=3, interval=10)

    await run(breaker, "FF")
    clock.advance(9.5)
    await run(breaker, "S")
    await run(breaker, "FF")
    clock.advance(0.5)
    await run(breaker, "F")
    assert breaker.state is State.CLOSED
    assert breaker.counts() == Counts(calls=1, failures=1, consecutive_failures=1)

    await run(breaker, "FF")
    assert breaker.state is State.OPEN
    assert breaker.metrics().failures == 7


async def test_counts_read_past_the_interval_are_already_cleared(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=3, interval=10)
    await run(breaker, "FF")
    clock.advance(10)

    # What the rules would see at the next call, not the last interval's.
    assert breaker.counts() == Counts()
    metrics = breaker.metrics()
    assert (metrics.failure_rate, metrics.consecutive_failures) == (0.0, 0)
    assert metrics.failures == 2
    await run(breaker, "FF")
    assert breaker.state is State.CLOSED
    assert breaker.counts().failures == 2


async def test_without_an_interval_closed_counts_keep_growing(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=3)

    await run(breaker, "FF")
    clock.advance(1000)
    await run(breaker, "F")

    assert breaker.state is State.OPEN


# -- open duration --------------------------------------------------------------


async def reopen(breaker: CircuitBreaker, clock: FakeClock) -> float:
    """Wait out the open period, fail the trial; return the new open duration."""
    retry_after = breaker.retry_after
    assert retry_after is not None
    clock.advance(retry_after)
    await run(breaker, "F")
    assert breaker.state is State.OPEN
    duration = breaker.retry_after
    assert duration is not None
    return duration


async def test_exponential_backoff_grows_per_reopen_up_to_the_cap(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=1,
        reset_timeout=ExponentialBackoff(base=1, factor=2, cap=5),
    )

    with capture_logs() as logs:
        await run(breaker, "F")
        durations = [breaker.retry_after]
        for _ in range(4):
            durations.append(await reopen(breaker, clock))

    assert durations == [1.0, 2.0, 4.0, 5.0, 5.0]
    opened = [e["retry_after"] for e in logs if e["to_state"] == "open"]
    assert opened == durations


async def test_closing_the_breaker_restarts_the_backoff(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=1,
        reset_timeout=ExponentialBackoff(base=1, factor=3, cap=100),
    )
    await run(breaker, "F")
    assert await reopen(breaker, clock) == 3.0
    assert await reopen(breaker, clock) == 9.0

    clock.advance(9)
    await run(breaker, "SF")

    assert breaker.retry_after == 1.0


async def test_jitter_draws_each_duration_within_its_bounds(clock: FakeClock) -> None:
    backoff = ExponentialBackoff(
        base=2, factor=2, cap=16, jitter=0.25, rng=random.Random(7)
    )
    twin = random.Random(7)
    breaker = CircuitBreaker(
        name="db", clock=clock, failure_threshold=1, reset_timeout=backoff
    )

    await run(breaker, "F")
    durations = [breaker.retry_after]
    for _ in range(5):
        durations.append(await reopen(breaker, clock))

    for attempt, duration in enumerate(durations, start=1):
        full = min(16.0, 2.0 * 2 ** (attempt - 1))
        assert duration == pytest.approx(full * (1 - 0.25 * twin.random()))
        assert full * 0.75 <= duration <= full


def test_jitter_of_one_can_draw_anything_down_to_zero() -> None:
    backoff = ExponentialBackoff(base=10, cap=10, jitter=1.0, rng=random.Random(3))
    durations = [backoff(1) for _ in range(2000)]

    assert all(0.0 <= d <= 10.0 for d in durations)
    assert min(durations) < 0.1
    assert max(durations) > 9.9


def test_backoff_of_a_very_long_outage_stays_at_the_cap() -> None:
    backoff = ExponentialBackoff(base=1, factor=10, cap=60)
    assert backoff(10_000) == 60.0
    assert math.isfinite(backoff(10**9))


def test_backoff_from_a_tiny_base_grows_to_the_cap_without_overflow() -> None:
    # factor ** 58 alone is past float range; base * factor ** 58 is not.
    backoff = ExponentialBackoff(base=1e-300, factor=1e10, cap=1e300)
    durations = [backoff(attempt) for attempt in range(1, 100)]

    assert durations == sorted(durations)
    assert math.isclose(durations[58], 1e280)
    assert durations[-1] == 1e300


async def test_open_duration_can_be_any_function_of_the_attempt(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=1,
        reset_timeout=lambda attempt: 7.0 * attempt,
    )
    await run(breaker, "F")
    assert breaker.retry_after == 7.0
    assert await reopen(breaker, clock) == 14.0


async def test_every_rejection_of_an_open_breaker_carries_retry_after(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=1,
        reset_timeout=ExponentialBackoff(base=4, factor=2, cap=60),
    )
    await run(breaker, "F")

    seen = []
    for step in (0.0, 1.0, 2.5):
        clock.advance(step)
        with pytest.raises(CircuitOpenError) as caught:
            await breaker.call(ok)
        seen.append(caught.value.retry_after)
    clock.advance(0.5)
    await run(breaker, "F")
    with pytest.raises(CircuitOpenError) as caught:
        await breaker.call(ok)
    seen.append(caught.value.retry_after)

    assert seen == [4.0, 3.0, 0.5, 8.0]
    assert breaker.metrics().rejected == 4


def test_a_rate_rule_that_needs_more_calls_than_the_window_holds_is_refused() -> None:
    with pytest.raises(InvalidSettingError) as raised:
        CircuitBreaker(window=CountWindow(5), trip_rules=[FailureRate(0.5)])

    assert raised.value.setting == "FailureRate.minimum_calls"
    assert str(raised.value) == (
        "FailureRate.minimum_calls must be at most the CountWindow's size (5), got 10"
    )


async def test_a_time_window_rate_rule_fires_on_a_success_once_old_buckets_age_out(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        failure_threshold=None,
        window=TimeWindow(10, buckets=10),
        trip_rules=[FailureRate(0.5, minimum_calls=3)],
        clock=clock,
    )
    for _ in range(5):
        await breaker.call(ok)
    clock.advance(5)
    for _ in range(4):
        with pytest.raises(Boom):
            await breaker.call(fail)
    assert breaker.state is State.CLOSED  # 4 failures in 9 calls

    clock.advance(5.5)
    # The five successes left the window: 4 failures in 5 calls now.
    await breaker.call(ok)

    assert breaker.state is State.OPEN


@pytest.mark.parametrize(
    ("threshold", "failures", "calls"),
    [(0.55, 55, 100), (0.07, 7, 100), (0.56, 14, 25), (0.28, 7, 25)],
)
def test_rate_rules_fire_at_exactly_their_threshold(
    threshold: float, failures: int, calls: int
) -> None:
    # failures / calls == threshold, though threshold * calls rounds above it.
    assert failures < threshold * calls
    at_threshold = Counts(
        calls=calls, successes=calls - failures, failures=failures, slow_calls=failures
    )

    assert FailureRate(threshold, minimum_calls=calls)(at_threshold)
    assert SlowCallRate(threshold, 1.0, minimum_calls=calls)(at_threshold)


async def test_a_count_window_trips_at_exactly_the_failure_rate(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        failure_threshold=None,
        window=CountWindow(25),
        trip_rules=[FailureRate(0.56, minimum_calls=25)],
        clock=clock,
    )
    await run(breaker, "S" * 11 + "F" * 13)
    assert breaker.state is State.CLOSED

    await run(breaker, "F")  # 14 of 25: 56 %

    assert breaker.state is State.OPEN


async def test_success_ratio_closes_at_exactly_its_ratio(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        failure_threshold=1,
        reset_timeout=1,
        max_requests=100,
        success_ratio=0.07,
        clock=clock,
    )
    await run(breaker, "F")
    clock.advance(1)

    await run(breaker, "S" * 7 + "F" * 93)  # 7 of 100: 7 %

    assert breaker.state is State.CLOSED


def test_slow_call_rules_with_different_durations_are_refused_by_name() -> None:
    # One slow-call count cannot judge calls by two durations: a 0.2 s call
    # would count as slow for a rule that only calls 1 s slow.
    with pytest.raises(InvalidSettingError) as raised:
        CircuitBreaker(
            trip_rules=[
                SlowCallRate(0.5, slow_call_duration=1.0),
                SlowCallRate(0.9, slow_call_duration=0.1),
            ]
        )

    assert raised.value.setting == "SlowCallRate.slow_call_duration"
    assert raised.value.value == 0.1
    assert "the same in every SlowCallRate rule (1)" in str(raised.value)


async def test_slow_call_rules_sharing_a_duration_both_judge_by_it(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        failure_threshold=None,
        trip_rules=[
            SlowCallRate(0.9, slow_call_duration=1.0, minimum_calls=2),
            SlowCallRate(0.5, slow_call_duration=1, minimum_calls=4),
        ],
        clock=clock,
    )
    for seconds in (0.5, 0.5, 1.0):
        await breaker.call(timed(clock, seconds))
    assert breaker.state is State.CLOSED

    await breaker.call(timed(clock, 1.0))  # 2 slow calls of 4

    assert breaker.state is State.OPEN


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf])
def test_a_fake_clock_refuses_to_move_by_a_bad_amount(seconds: float) -> None:
    clock = FakeClock(5.0)

    with pytest.raises(ValueError, match=r"^seconds must be (at least 0|a finite)"):
        clock.advance(seconds)

    assert clock.now() == 5.0


@pytest.mark.parametrize(
    "window", [CountWindow(10), TimeWindow(60)], ids=["count", "time"]
)
async def test_breakers_made_from_one_window_count_only_their_own_calls(
    clock: FakeClock, window: Any
) -> None:
    common: dict[str, Any] = {
        "failure_threshold": None,
        "window": window,
        "trip_rules": [FailureRate(0.5, minimum_calls=4)],
        "clock": clock,
    }
    first = CircuitBreaker(name="first", **common)
    second = CircuitBreaker(name="second", **common)

    await run(second, "FFF")
    await run(first, "F")

    assert first.state is State.CLOSED
    assert first.counts().calls == 1
    assert second.counts().failures == 3
    await run(second, "F")
    assert second.state is State.OPEN
    assert first.counts().calls == 1
