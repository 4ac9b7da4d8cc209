"""Ten thousand concurrent tasks through one breaker: nothing lost, no quota broken."""

from __future__ import annotations

import contextlib
from collections import Counter

import anyio
import pytest
from core_helpers import Boom

from aetcd_breaker.core import (
    CallTimeoutError,
    CircuitBreaker,
    CircuitOpenError,
    Counts,
    FakeClock,
    State,
)

pytestmark = pytest.mark.anyio

TASKS = 10_000


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(0.0)


def half_open(clock: FakeClock, max_requests: int) -> CircuitBreaker:
    """A breaker "db" that has just turned half-open."""
    breaker = CircuitBreaker(
        name="db", clock=clock, max_requests=max_requests, initial_state="open"
    )
    clock.advance(30)
    assert breaker.state is State.HALF_OPEN
    return breaker


async def test_every_call_of_a_storm_is_counted_exactly_once(clock: FakeClock) -> None:
    def many_failures(counts: Counts) -> bool:
        return counts.failures >= 100

    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=None,
        trip_rules=[many_failures],
        reset_timeout=0.5,
        is_failure=lambda exc: not isinstance(exc, KeyError),
    )
    seen: Counter[str] = Counter()
    ran = 0

    async def work(i: int, scope: anyio.CancelScope) -> int:
        nonlocal ran
        ran += 1
        for _ in range(i % 3):
            await anyio.sleep(0)
        kind = i % 4
        if kind == 1:
            raise Boom(str(i))
        if kind == 2:
            raise KeyError(i)
        if kind == 3 and i % 8 == 3:
            scope.cancel()
            await anyio.sleep(0)
        return i

    async def caller(i: int) -> None:
        # Callers arrive over about twenty rounds of the scheduler.
        for _ in range(i % 5 + i // 500):
            await anyio.sleep(0)
        # Time moves on during the storm: the breaker opens, half-opens and
        # closes many times while calls of older generations still finish.
        clock.advance(0.001)
        with anyio.CancelScope() as scope:
            try:
                assert await breaker.call(work, i, scope) == i
                seen["success"] += 1
            except Boom:
                seen["failure"] += 1
            except KeyError:
                seen["ignored"] += 1
            except CircuitOpenError:
                seen["rejected"] += 1
        if scope.cancelled_caught:
            seen["cancelled"] += 1

    async with anyio.create_task_group() as tg:
        for i in range(TASKS):
            tg.start_soon(caller, i)

    metrics = breaker.metrics()
    assert sum(seen.values()) == TASKS
    assert ran == TASKS - seen["rejected"]
    assert (metrics.successes, metrics.failures, metrics.ignored) == (
        seen["success"],
        seen["failure"],
        seen["ignored"],
    )
    assert metrics.rejected == seen["rejected"]
    assert metrics.calls == ran - seen["cancelled"]
    assert min(seen[k] for k in ("success", "failure", "ignored", "rejected")) > 0
    assert seen["cancelled"] > 0
    assert metrics.generation >= 5
    if breaker.state is State.HALF_OPEN:
        assert breaker.trials_in_flight == 0


async def test_half_open_quota_holds_under_ten_thousand_concurrent_callers(
    clock: FakeClock,
) -> None:
    breaker = half_open(clock, max_requests=5)
    gate = anyio.Event()
    all_tried = anyio.Event()
    in_flight = most = rejected = tried = 0

    async def trial() -> str:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            await gate.wait()
        finally:
            in_flight -= 1
        return "ok"

    async def caller() -> None:
        nonlocal rejected, tried
        try:
            call = breaker.call(trial)
            tried += 1
            if tried == TASKS:
                all_tried.set()
            await call
        except CircuitOpenError:
            rejected += 1

    async with anyio.create_task_group() as tg:
        for _ in range(TASKS):
            tg.start_soon(caller)
        await all_tried.wait()
        for _ in range(5):
            await anyio.sleep(0)
        # Every caller beyond the quota was turned away while the trials wait.
        assert (in_flight, rejected) == (5, TASKS - 5)
        assert breaker.trials_in_flight == 5
        gate.set()

    assert most == 5
    assert breaker.state is State.CLOSED
    metrics = breaker.metrics()
    assert (metrics.successes, metrics.rejected) == (5, TASKS - 5)


async def cancel_a_storm_of_trials(breaker: CircuitBreaker) -> None:
    """Start TASKS calls on a half-open breaker, then cancel them all at once."""
    started = 0
    all_started = anyio.Event()

    async def trial() -> None:
        nonlocal started
        started += 1
        if started == breaker.max_requests:
            all_started.set()
        await anyio.Event().wait()

    async def caller() -> None:
        with contextlib.suppress(CircuitOpenError):
            await breaker.call(trial)

    async with anyio.create_task_group() as tg:
        for _ in range(TASKS):
            tg.start_soon(caller)
        await all_started.wait()
        assert breaker.trials_in_flight == breaker.max_requests
        tg.cancel_scope.cancel()


async def test_a_storm_of_cancelled_trials_leaks_no_permit(clock: FakeClock) -> None:
    breaker = half_open(clock, max_requests=10)

    for _ in range(2):
        await cancel_a_storm_of_trials(breaker)

        assert breaker.state is State.HALF_OPEN
        assert breaker.trials_in_flight == 0

    permit = breaker.acquire()
    assert permit is not None and permit.trial
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.rejected) == (0, 2 * (TASKS - 10))


async def test_cancellations_racing_ten_thousand_deadlines_are_never_failures(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        name="db", clock=clock, call_timeout=5, failure_threshold=None
    )
    scopes: list[anyio.CancelScope] = []
    seen: Counter[str] = Counter()
    all_started = anyio.Event()
    started = 0

    async def hangs() -> None:
        nonlocal started
        started += 1
        if started == TASKS:
            all_started.set()
        await anyio.Event().wait()

    async def caller(scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await breaker.call(hangs)
            except CallTimeoutError:
                seen["timed_out"] += 1
        if scope.cancelled_caught:
            seen["cancelled"] += 1

    async with anyio.create_task_group() as tg:
        for _ in range(TASKS):
            scopes.append(anyio.CancelScope())
            tg.start_soon(caller, scopes[-1])
        await all_started.wait()
        for scope in scopes[::2]:
            scope.cancel()
        clock.advance(5)

    assert seen == {"timed_out": TASKS // 2, "cancelled": TASKS // 2}
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.failures, metrics.slow_calls) == (
        TASKS // 2,
        TASKS // 2,
        TASKS // 2,
    )
