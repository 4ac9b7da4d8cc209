"""The state machine: closed, open and half-open, and the generation rule."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from core_helpers import Boom, fail, ok
from structlog.testing import capture_logs

from aetcd_breaker.core import (
    CircuitBreaker,
    CircuitOpenError,
    CountWindow,
    FakeClock,
    State,
)

pytestmark = pytest.mark.anyio

START = 1000.0


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


class Counting:
    """A wrapped function that must never run: it counts how often it did."""

    def __init__(self) -> None:
        self.runs = 0

    async def __call__(self) -> str:
        self.runs += 1
        return "ran"


class Parked:
    """A wrapped call that starts, then waits until the test ends it."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self._release = anyio.Event()
        self._error: BaseException | None = None
        self.cancelled = False

    async def __call__(self) -> str:
        self.started.set()
        try:
            await self._release.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        if self._error is not None:
            raise self._error
        return "late"

    def succeed(self) -> None:
        self._release.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._release.set()


class Caller:
    """One ``breaker.call`` run in its own task; keeps what the caller saw."""

    def __init__(self, breaker: CircuitBreaker, fn: Parked) -> None:
        self.breaker = breaker
        self.fn = fn
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.result: str | None = None
        self.error: Exception | None = None

    async def run(self) -> None:
        with self.scope:
            try:
                self.result = await self.breaker.call(self.fn)
            except Exception as exc:
                self.error = exc
        self.done.set()


async def start(tg: anyio.abc.TaskGroup, breaker: CircuitBreaker) -> Caller:
    """Start a parked call through ``breaker`` and wait until it runs."""
    caller = Caller(breaker, Parked())
    tg.start_soon(caller.run)
    await caller.fn.started.wait()
    return caller


async def trip(breaker: CircuitBreaker, failures: int) -> None:
    for _ in range(failures):
        with pytest.raises(Boom):
            await breaker.call(fail)


def changed(
    level: str,
    from_state: str,
    to_state: str,
    reason: str,
    generation: int,
    *,
    retry_after: float | None = None,
    **counts: int,
) -> dict[str, Any]:
    """The exact log entry of one state change of the breaker "db"."""
    fields = dict.fromkeys(
        (
            "calls",
            "successes",
            "failures",
            "slow_calls",
            "consecutive_successes",
            "consecutive_failures",
        ),
        0,
    )
    fields.update(counts)
    return {
        "event": "aetcd_breaker.state_changed",
        "log_level": level,
        "breaker": "db",
        "from_state": from_state,
        "to_state": to_state,
        "reason": reason,
        "generation": generation,
        "retry_after": retry_after,
        **fields,
    }


TRIPPED_BY_THREE = changed(
    "warning",
    "closed",
    "open",
    "consecutive_failures",
    2,
    retry_after=30.0,
    calls=3,
    failures=3,
    consecutive_failures=3,
)


# -- closed ------------------------------------------------------------------


async def test_closed_breaker_runs_calls_and_counts_their_outcomes(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock)

    assert await breaker.call(ok) == "ok"
    assert await breaker.call(ok) == "ok"
    await trip(breaker, 1)

    metrics = breaker.metrics()
    assert breaker.state is State.CLOSED
    assert (metrics.calls, metrics.successes, metrics.failures) == (3, 2, 1)
    assert metrics.consecutive_failures == 1
    assert metrics.consecutive_successes == 0


async def test_trips_after_failure_threshold_consecutive_failures(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=3)

    with capture_logs() as logs:
        await trip(breaker, 2)
        assert breaker.state is State.CLOSED
        assert logs == []
        await trip(breaker, 1)

    assert breaker.state is State.OPEN
    assert logs == [TRIPPED_BY_THREE]


async def test_a_success_resets_the_failure_streak(clock: FakeClock) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=3)

    with capture_logs() as logs:
        await trip(breaker, 2)
        await breaker.call(ok)
        await trip(breaker, 2)
        assert breaker.state is State.CLOSED
        await trip(breaker, 1)

    assert breaker.state is State.OPEN
    assert logs == [
        changed(
            "warning",
            "closed",
            "open",
            "consecutive_failures",
            2,
            retry_after=30.0,
            calls=6,
            successes=1,
            failures=5,
            consecutive_failures=3,
        )
    ]


async def test_failure_threshold_none_never_trips_on_failures(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=None)

    with capture_logs() as logs:
        await trip(breaker, 200)

    assert breaker.state is State.CLOSED
    assert breaker.metrics().consecutive_failures == 200
    assert logs == []


# -- open --------------------------------------------------------------------


async def test_open_breaker_rejects_at_once_without_running_the_call(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=3)
    await trip(breaker, 3)
    clock.advance(10)
    fn = Counting()

    with pytest.raises(CircuitOpenError) as caught:
        await breaker.call(fn)

    error = caught.value
    assert fn.runs == 0
    assert error.breaker == "db"
    assert error.state is State.OPEN
    assert error.retry_after == 20.0
    assert str(error) == "circuit 'db' is open; a trial call is allowed in 20.000 s"
    assert breaker.metrics().rejected == 1


async def test_open_breaker_turns_half_open_after_reset_timeout_on_a_state_read(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=3)
    await trip(breaker, 3)

    with capture_logs() as logs:
        clock.advance(29.5)
        assert breaker.state is State.OPEN
        clock.advance(0.5)
        assert breaker.state is State.HALF_OPEN
        assert breaker.state is State.HALF_OPEN

    assert logs == [changed("info", "open", "half_open", "reset_timeout_elapsed", 3)]
    assert breaker.metrics().state_changed_at == START + 30


async def test_late_failure_from_before_the_open_neither_reopens_nor_restarts_timer(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=3)

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            slow = await start(tg, breaker)
            await trip(breaker, 3)
            clock.advance(5)
            late = Boom("late")
            slow.fn.fail(late)
            await slow.done.wait()

    assert slow.error is late
    assert logs == [TRIPPED_BY_THREE]
    assert breaker.state is State.OPEN
    assert breaker.generation == 2
    assert breaker.retry_after == 25.0
    assert breaker.metrics().failures == 4


# -- half-open ---------------------------------------------------------------


async def half_open(clock: FakeClock, **settings: Any) -> CircuitBreaker:
    """A breaker "db" tripped by one failure and moved on to half-open."""
    breaker = CircuitBreaker(
        name="db", clock=clock, failure_threshold=1, reset_timeout=30, **settings
    )
    await trip(breaker, 1)
    clock.advance(30)
    assert breaker.state is State.HALF_OPEN
    return breaker


async def test_half_open_admits_max_requests_trials_and_rejects_more_at_once(
    clock: FakeClock,
) -> None:
    breaker = await half_open(clock, max_requests=2)
    fn = Counting()

    async with anyio.create_task_group() as tg:
        first = await start(tg, breaker)
        second = await start(tg, breaker)
        assert breaker.trials_in_flight == 2

        # Rejected while both trials are still parked: not queued behind them.
        with pytest.raises(CircuitOpenError) as caught:
            await breaker.call(fn)

        first.fn.succeed()
        second.fn.succeed()

    error = caught.value
    assert fn.runs == 0
    assert (error.breaker, error.state, error.retry_after) == ("db", "half_open", None)
    assert str(error) == "circuit 'db' is half_open; every trial permit is in use"
    assert (first.result, second.result) == ("late", "late")
    assert breaker.state is State.CLOSED


async def test_cancelled_trial_gives_its_permit_back(clock: FakeClock) -> None:
    breaker = await half_open(clock, max_requests=1)

    async with anyio.create_task_group() as tg:
        trial = await start(tg, breaker)
        with pytest.raises(CircuitOpenError):
            await breaker.call(ok)
        trial.scope.cancel()
        await trial.done.wait()
        assert trial.scope.cancelled_caught
        assert trial.fn.cancelled
        assert breaker.trials_in_flight == 0

        second = await start(tg, breaker)
        assert breaker.trials_in_flight == 1
        second.fn.succeed()

    assert second.result == "late"
    assert breaker.state is State.CLOSED
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.successes, metrics.failures) == (2, 1, 1)


async def test_trial_ending_in_an_ignored_error_gives_its_permit_back(
    clock: FakeClock,
) -> None:
    breaker = await half_open(
        clock, max_requests=1, is_failure=lambda e: not isinstance(e, LookupError)
    )
    missing = KeyError("key")

    async with anyio.create_task_group() as tg:
        trial = await start(tg, breaker)
        trial.fn.fail(missing)
        await trial.done.wait()

    assert trial.error is missing
    assert breaker.state is State.HALF_OPEN
    assert breaker.trials_in_flight == 0
    assert breaker.metrics().ignored == 1
    assert await breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED


async def test_half_open_closes_after_max_requests_consecutive_trial_successes(
    clock: FakeClock,
) -> None:
    breaker = await half_open(clock, max_requests=3)

    with capture_logs() as logs:
        await breaker.call(ok)
        await breaker.call(ok)
        assert breaker.state is State.HALF_OPEN
        assert logs == []
        await breaker.call(ok)

    assert breaker.state is State.CLOSED
    assert logs == [
        changed(
            "info",
            "half_open",
            "closed",
            "trials_succeeded",
            4,
            calls=3,
            successes=3,
            consecutive_successes=3,
        )
    ]


async def test_half_open_reopens_on_a_trial_failure(clock: FakeClock) -> None:
    breaker = await half_open(clock, max_requests=3)

    with capture_logs() as logs:
        await breaker.call(ok)
        await trip(breaker, 1)

    assert breaker.state is State.OPEN
    assert breaker.retry_after == 30.0
    assert logs == [
        changed(
            "warning",
            "half_open",
            "open",
            "trial_failed",
            4,
            retry_after=30.0,
            calls=2,
            successes=1,
            failures=1,
            consecutive_failures=1,
        )
    ]


@pytest.mark.parametrize(
    ("ratio", "outcomes", "to_state", "reason"),
    [
        (0.5, "SFSF", "closed", "trials_succeeded"),
        (0.5, "FFSS", "closed", "trials_succeeded"),
        (0.5, "SFFF", "open", "trials_failed"),
        (0.75, "SSFS", "closed", "trials_succeeded"),
        (0.75, "SFSF", "open", "trials_failed"),
        (1.0, "SSSF", "open", "trials_failed"),
    ],
)
async def test_success_ratio_judges_half_open_after_max_requests_trials(
    clock: FakeClock, ratio: float, outcomes: str, to_state: str, reason: str
) -> None:
    breaker = await half_open(clock, max_requests=4, success_ratio=ratio)

    with capture_logs() as logs:
        for outcome in outcomes[:-1]:
            await (breaker.call(ok) if outcome == "S" else trip(breaker, 1))
        assert breaker.state is State.HALF_OPEN
        assert logs == []
        await (breaker.call(ok) if outcomes[-1] == "S" else trip(breaker, 1))

    assert breaker.state == to_state
    successes = outcomes.count("S")
    assert [(e["to_state"], e["reason"], e["successes"]) for e in logs] == [
        (to_state, reason, successes)
    ]
    assert logs[0]["failures"] == 4 - successes


async def test_trials_in_flight_is_read_after_half_open_max_wait_reopens(
    clock: FakeClock,
) -> None:
    breaker = await half_open(clock, max_requests=1, half_open_max_wait=10)

    async with anyio.create_task_group() as tg:
        stuck = await start(tg, breaker)
        assert breaker.trials_in_flight == 1
        clock.advance(10)
        # Read first, before state: the trial's period is over.
        assert breaker.trials_in_flight == 0
        assert breaker.state is State.OPEN
        stuck.fn.succeed()


async def test_half_open_max_wait_reopens_a_breaker_whose_trial_never_finishes(
    clock: FakeClock,
) -> None:
    breaker = await half_open(clock, max_requests=1, half_open_max_wait=10)

    async with anyio.create_task_group() as tg:
        stuck = await start(tg, breaker)
        with capture_logs() as logs:
            clock.advance(9.5)
            assert breaker.state is State.HALF_OPEN
            clock.advance(0.5)
            assert breaker.state is State.OPEN
        assert logs == [
            changed(
                "warning",
                "half_open",
                "open",
                "half_open_max_wait",
                4,
                retry_after=30.0,
            )
        ]

        # The trial's late success belongs to the period that was given up.
        clock.advance(1)
        stuck.fn.succeed()
        await stuck.done.wait()

    assert stuck.result == "late"
    assert breaker.state is State.OPEN
    assert breaker.retry_after == 29.0
    assert breaker.generation == 4


async def test_trial_ending_after_half_open_max_wait_cannot_close_the_breaker(
    clock: FakeClock,
) -> None:
    breaker = await half_open(clock, max_requests=1, half_open_max_wait=10)

    async with anyio.create_task_group() as tg:
        stuck = await start(tg, breaker)
        # Nobody reads the state while the wait runs out.
        clock.advance(11)
        stuck.fn.succeed()
        await stuck.done.wait()

    assert breaker.state is State.OPEN


# -- generations -------------------------------------------------------------


async def test_slow_success_admitted_before_the_open_does_not_close_half_open(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        name="db", clock=clock, failure_threshold=2, max_requests=1
    )

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            slow = await start(tg, breaker)
            await trip(breaker, 2)
            clock.advance(30)
            assert breaker.state is State.HALF_OPEN
            slow.fn.succeed()
            await slow.done.wait()

    assert slow.result == "late"
    assert breaker.state is State.HALF_OPEN
    assert breaker.generation == 3
    assert breaker.trials_in_flight == 0
    assert [e["to_state"] for e in logs] == ["open", "half_open"]
    assert breaker.metrics().successes == 1


async def test_late_failure_does_not_reopen_a_half_open_breaker(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        name="db", clock=clock, failure_threshold=2, max_requests=1
    )

    async with anyio.create_task_group() as tg:
        slow = await start(tg, breaker)
        await trip(breaker, 2)
        clock.advance(30)
        assert breaker.state is State.HALF_OPEN
        slow.fn.fail(Boom("late"))
        await slow.done.wait()

    assert isinstance(slow.error, Boom)
    assert breaker.state is State.HALF_OPEN
    assert breaker.generation == 3
    assert await breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED


async def test_late_failure_does_not_count_against_the_next_closed_period(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        name="db", clock=clock, failure_threshold=2, max_requests=1
    )

    async with anyio.create_task_group() as tg:
        slow = await start(tg, breaker)
        await trip(breaker, 2)
        clock.advance(30)
        await breaker.call(ok)
        assert breaker.state is State.CLOSED
        slow.fn.fail(Boom("late"))
        await slow.done.wait()
        await trip(breaker, 1)

    # Only the new failure is in the streak; the late one is in the totals.
    metrics = breaker.metrics()
    assert breaker.state is State.CLOSED
    assert metrics.consecutive_failures == 1
    assert metrics.failures == 4


@pytest.mark.parametrize("window", [None, CountWindow(10)], ids=repr)
async def test_late_success_does_not_break_the_next_closed_periods_streak(
    clock: FakeClock, window: CountWindow | None
) -> None:
    breaker = CircuitBreaker(
        name="db", clock=clock, failure_threshold=2, max_requests=1, window=window
    )

    async with anyio.create_task_group() as tg:
        slow = await start(tg, breaker)
        await trip(breaker, 2)
        clock.advance(30)
        await breaker.call(ok)
        await trip(breaker, 1)
        slow.fn.succeed()
        await slow.done.wait()
        counts = breaker.counts()
        await trip(breaker, 1)

    # The late success reaches the totals, not the counts of this period.
    assert slow.result == "late"
    assert (counts.calls, counts.successes, counts.failures) == (1, 0, 1)
    assert counts.consecutive_failures == 1
    assert breaker.state is State.OPEN
    assert breaker.metrics().successes == 2


@pytest.mark.parametrize("end", ["cancel", "ignored_error"])
async def test_trial_of_an_earlier_half_open_period_frees_no_current_permit(
    clock: FakeClock, end: str
) -> None:
    breaker = await half_open(
        clock, max_requests=2, is_failure=lambda e: not isinstance(e, LookupError)
    )

    async with anyio.create_task_group() as tg:
        old = await start(tg, breaker)
        await trip(breaker, 1)
        clock.advance(30)
        assert breaker.state is State.HALF_OPEN
        first = await start(tg, breaker)
        second = await start(tg, breaker)

        if end == "cancel":
            old.scope.cancel()
        else:
            old.fn.fail(KeyError("k"))
        await old.done.wait()

        assert breaker.trials_in_flight == 2
        with pytest.raises(CircuitOpenError):
            await breaker.call(ok)
        first.fn.succeed()
        second.fn.succeed()

    assert breaker.state is State.CLOSED
