"""Call deadlines: timeouts are failures, the caller's own cancellation is not."""

from __future__ import annotations

import asyncio

import anyio
import pytest
from core_helpers import Boom, fail, ok, settle
from structlog.testing import capture_logs

from aetcd_breaker.core import (
    BreakerError,
    CallTimeoutError,
    CircuitBreaker,
    FakeClock,
    State,
    _deadline,
)

pytestmark = pytest.mark.anyio

asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])

TINY = 0.02
"""A real timeout short enough to keep the real-clock tests fast."""

RACE = 0.1
"""A real timeout for the race tests: long enough that the test has surely
scheduled its cancellation before the deadline's timer comes due."""


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(500.0)


async def never() -> None:
    await anyio.Event().wait()


class Parked:
    """A wrapped call that starts, then waits until the test ends it."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.cancelled = False

    async def __call__(self) -> str:
        self.started.set()
        try:
            await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        return "late"


class Caller:
    """Runs ``breaker.call`` (or a guarded block) in a task of its own."""

    def __init__(
        self, breaker: CircuitBreaker, *, guard: bool = False, **kw: float | None
    ) -> None:
        self.breaker = breaker
        self.fn = Parked()
        self.guard = guard
        self.guard_settings = kw
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.result: str | None = None
        self.error: Exception | None = None

    async def run(self) -> None:
        with self.scope:
            try:
                if self.guard:
                    async with self.breaker.guard(**self.guard_settings):
                        self.result = await self.fn()
                else:
                    self.result = await self.breaker.call(self.fn)
            except Exception as exc:
                self.error = exc
        self.done.set()


async def start(tg: anyio.abc.TaskGroup, caller: Caller) -> Caller:
    tg.start_soon(caller.run)
    await caller.fn.started.wait()
    return caller


def outcomes(breaker: CircuitBreaker) -> tuple[int, int, int, int]:
    metrics = breaker.metrics()
    return metrics.calls, metrics.successes, metrics.failures, metrics.slow_calls


# -- the fake clock, on both backends ----------------------------------------


@pytest.mark.parametrize("guard", [False, True], ids=["call", "guard"])
async def test_call_past_its_deadline_is_cancelled_and_raises_call_timeout_error(
    clock: FakeClock, guard: bool
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, call_timeout=5)

    async with anyio.create_task_group() as tg:
        caller = await start(tg, Caller(breaker, guard=guard))
        clock.advance(4.5)
        await settle()
        assert not caller.done.is_set()
        clock.advance(0.5)
        await caller.done.wait()

    error = caller.error
    assert isinstance(error, CallTimeoutError)
    assert isinstance(error, TimeoutError)
    assert isinstance(error, BreakerError)
    assert (error.breaker, error.timeout) == ("db", 5.0)
    assert str(error) == "call guarded by 'db' did not finish within 5 s"
    assert caller.fn.cancelled
    assert not caller.scope.cancelled_caught
    assert outcomes(breaker) == (1, 0, 1, 1)
    assert breaker.metrics().consecutive_failures == 1


async def test_call_ending_before_its_deadline_is_a_success_and_stays_unharmed(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, call_timeout=5)
    after = Parked()
    seen: list[str] = []

    async def caller() -> None:
        seen.append(await breaker.call(ok))
        # The same task, still running when the old deadline comes due.
        seen.append(await after())

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await after.started.wait()
        clock.advance(10)
        await settle()
        after.release.set()

    assert seen == ["ok", "late"]
    assert not after.cancelled
    assert outcomes(breaker) == (1, 1, 0, 0)


async def test_timed_out_call_counts_toward_the_failure_threshold(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        name="db", clock=clock, call_timeout=5, failure_threshold=1
    )

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            caller = await start(tg, Caller(breaker))
            clock.advance(5)

    assert isinstance(caller.error, CallTimeoutError)
    assert breaker.state is State.OPEN
    assert logs == [
        {
            "event": "aetcd_breaker.state_changed",
            "log_level": "warning",
            "breaker": "db",
            "from_state": "closed",
            "to_state": "open",
            "reason": "consecutive_failures",
            "generation": 2,
            "calls": 1,
            "successes": 0,
            "failures": 1,
            "slow_calls": 1,
            "consecutive_successes": 0,
            "consecutive_failures": 1,
            "retry_after": 30.0,
        }
    ]


async def test_guard_timeout_overrides_the_breaker_call_timeout(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, call_timeout=5)

    async with anyio.create_task_group() as tg:
        short = await start(tg, Caller(breaker, guard=True, timeout=2))
        unbounded = await start(tg, Caller(breaker, guard=True, timeout=None))
        clock.advance(2)
        await short.done.wait()
        clock.advance(100)
        await settle()
        assert not unbounded.done.is_set()
        unbounded.fn.release.set()

    assert isinstance(short.error, CallTimeoutError)
    assert short.error.timeout == 2.0
    assert unbounded.result == "late"
    assert outcomes(breaker) == (2, 1, 1, 1)


@pytest.mark.parametrize("guard", [False, True], ids=["call", "guard"])
async def test_caller_cancellation_racing_the_deadline_propagates_as_cancellation(
    clock: FakeClock, guard: bool
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, call_timeout=5)

    async with anyio.create_task_group() as tg:
        caller = await start(tg, Caller(breaker, guard=guard))
        caller.scope.cancel()
        clock.advance(5)

    assert caller.scope.cancelled_caught
    assert caller.error is None
    assert caller.fn.cancelled
    assert outcomes(breaker) == (0, 0, 0, 0)


async def test_trial_cancelled_by_its_caller_at_the_deadline_gives_its_permit_back(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(
        name="db", clock=clock, call_timeout=5, max_requests=1, initial_state="open"
    )
    clock.advance(30)

    async with anyio.create_task_group() as tg:
        trial = await start(tg, Caller(breaker))
        assert breaker.trials_in_flight == 1
        trial.scope.cancel()
        clock.advance(5)

    assert trial.scope.cancelled_caught
    assert breaker.state is State.HALF_OPEN
    assert breaker.trials_in_flight == 0
    assert outcomes(breaker) == (0, 0, 0, 0)


@pytest.mark.parametrize("guard", [False, True], ids=["call", "guard"])
async def test_caller_cancellation_is_neither_success_nor_failure(
    clock: FakeClock, guard: bool
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, failure_threshold=1)

    async with anyio.create_task_group() as tg:
        caller = await start(tg, Caller(breaker, guard=guard))
        tg.cancel_scope.cancel()

    assert caller.fn.cancelled
    assert breaker.state is State.CLOSED
    assert outcomes(breaker) == (0, 0, 0, 0)
    assert breaker.metrics().ignored == 0


async def test_deadline_firing_just_before_the_caller_cancels_still_yields_cancel(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, call_timeout=5)

    async with anyio.create_task_group() as tg:
        caller = await start(tg, Caller(breaker))
        # The same step, the other order: deadline first, then the caller.
        clock.advance(5)
        caller.scope.cancel()

    assert caller.scope.cancelled_caught
    assert caller.error is None
    assert outcomes(breaker) == (0, 0, 0, 0)


async def test_deadline_inside_shielded_cleanup_raises_call_timeout_error(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, call_timeout=5)
    fn = Parked()
    seen: list[type[BaseException]] = []

    async def cancelled_then_cleans_up() -> None:
        with anyio.CancelScope() as outer:
            outer.cancel()
            try:
                await anyio.lowlevel.checkpoint()
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        await breaker.call(fn)
                    except BaseException as exc:
                        seen.append(type(exc))

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancelled_then_cleans_up)
        await fn.started.wait()
        clock.advance(5)

    assert seen == [CallTimeoutError]
    assert outcomes(breaker) == (1, 0, 1, 1)


@asyncio_only
async def test_task_cancel_racing_a_fake_clock_deadline_raises_cancelled_error(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(name="db", clock=clock, call_timeout=5)
    fn = Parked()
    seen: list[type[BaseException]] = []

    async def caller() -> None:
        try:
            await breaker.call(fn)
        except BaseException as exc:
            seen.append(type(exc))
            raise

    task = asyncio.get_running_loop().create_task(caller())
    await fn.started.wait()
    task.cancel()
    clock.advance(5)
    await asyncio.wait([task])

    assert task.cancelled()
    assert seen == [asyncio.CancelledError]
    assert outcomes(breaker) == (0, 0, 0, 0)


# -- the real default clock ---------------------------------------------------


@asyncio_only
@pytest.mark.parametrize("guard", [False, True], ids=["call", "guard"])
async def test_real_clock_deadline_raises_call_timeout_error_and_leaves_no_cancel(
    guard: bool,
) -> None:
    breaker = CircuitBreaker(name="db", call_timeout=TINY)

    with pytest.raises(CallTimeoutError) as caught:
        if guard:
            async with breaker.guard():
                await never()
        else:
            await breaker.call(never)

    assert caught.value.timeout == TINY
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
    await anyio.sleep(0)
    assert outcomes(breaker) == (1, 0, 1, 1)


@asyncio_only
@pytest.mark.parametrize("guard", [False, True], ids=["call", "guard"])
async def test_real_clock_call_ending_in_time_leaves_no_deadline_behind(
    guard: bool,
) -> None:
    breaker = CircuitBreaker(name="db", call_timeout=TINY)
    if guard:
        async with breaker.guard():
            await ok()
    else:
        await breaker.call(ok)

    # The first deadline's slot comes due while this call waits; a deadline
    # left behind would cancel the task, not time out this call.
    with pytest.raises(CallTimeoutError) as caught:
        async with breaker.guard(timeout=2 * TINY):
            await never()

    assert caught.value.timeout == 2 * TINY
    assert outcomes(breaker) == (2, 1, 1, 1)


class FireSpy:
    """Entered in a deadline's registry like a task: sees the deadline fire."""

    fired = False

    def cancel(self) -> None:
        self.fired = True


def pending_deadline() -> tuple[float, FireSpy]:
    """The moment the only pending real-clock deadline fires, and a spy on it."""
    wheel = _deadline._wheel
    assert wheel is not None
    # Slots whose deadlines all ended keep their timer until it fires.
    [(slot, registry)] = [(slot, r) for slot, r in wheel.slots.items() if r]
    assert len(registry) == 1
    when = slot * _deadline.RESOLUTION
    assert asyncio.get_running_loop().time() < when
    spy = FireSpy()
    registry[spy] = spy  # type: ignore[assignment]
    return when, spy


@asyncio_only
async def test_real_clock_task_cancel_racing_the_deadline_raises_cancelled_error() -> (
    None
):
    breaker = CircuitBreaker(name="db", call_timeout=RACE)
    started = anyio.Event()
    seen: list[type[BaseException]] = []

    async def wrapped() -> None:
        started.set()
        await never()

    async def caller() -> None:
        try:
            await breaker.call(wrapped)
        except BaseException as exc:
            seen.append(type(exc))
            raise

    loop = asyncio.get_running_loop()
    task = loop.create_task(caller())
    await started.wait()
    when, spy = pending_deadline()
    # Same loop time as the wheel's timer: both run before the task resumes.
    loop.call_at(when, task.cancel)
    await asyncio.wait([task])

    assert spy.fired
    assert task.cancelled()
    assert seen == [asyncio.CancelledError]
    assert outcomes(breaker) == (0, 0, 0, 0)


@asyncio_only
async def test_real_clock_outer_scope_cancel_racing_the_deadline_wins() -> None:
    breaker = CircuitBreaker(name="db", call_timeout=RACE)
    started = anyio.Event()

    async def wrapped() -> None:
        started.set()
        await never()

    loop = asyncio.get_running_loop()
    async with anyio.create_task_group() as tg:
        caller = Caller(breaker)
        caller.fn = wrapped  # type: ignore[assignment]
        tg.start_soon(caller.run)
        await started.wait()
        when, spy = pending_deadline()
        loop.call_at(when, caller.scope.cancel)

    assert spy.fired
    assert caller.scope.cancelled_caught
    assert caller.error is None
    assert outcomes(breaker) == (0, 0, 0, 0)


@asyncio_only
async def test_real_clock_deadline_in_shielded_cleanup_raises_call_timeout_error() -> (
    None
):
    breaker = CircuitBreaker(name="db", call_timeout=TINY)
    seen: list[type[BaseException]] = []

    with anyio.CancelScope() as outer:
        outer.cancel()
        try:
            await anyio.sleep(1)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await breaker.call(never)
                except BaseException as exc:
                    seen.append(type(exc))

    assert seen == [CallTimeoutError]
    assert outcomes(breaker) == (1, 0, 1, 1)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_real_clock_deadline_on_trio_raises_call_timeout_error() -> None:
    breaker = CircuitBreaker(name="db", call_timeout=TINY)

    with pytest.raises(CallTimeoutError):
        await breaker.call(never)

    await anyio.sleep(0)
    assert outcomes(breaker) == (1, 0, 1, 1)


def wheel_timers(loop: asyncio.AbstractEventLoop) -> int:
    """Loop timers the deadline wheel has pending (cancelled ones left out)."""
    scheduled = loop._scheduled  # type: ignore[attr-defined]
    return sum(
        1
        for handle in scheduled
        if not handle.cancelled()
        and getattr(handle._callback, "__func__", None) is _deadline._Wheel._fire
    )


async def timed_out_after(breaker: CircuitBreaker, timeout: float) -> float:
    """Seconds a never-ending call guarded with ``timeout`` ran before it timed out."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(CallTimeoutError):
        async with breaker.guard(timeout=timeout):
            await never()
    return loop.time() - started


@asyncio_only
async def test_real_clock_deadlines_in_many_slots_share_one_loop_timer() -> None:
    breaker = CircuitBreaker(name="db", call_timeout=5.0, failure_threshold=1000)
    loop = asyncio.get_running_loop()
    for _ in range(50):
        await breaker.call(ok)
        await asyncio.sleep(0.002)
    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(timed_out_after, breaker, 0.3 + n * 0.01)
        await asyncio.sleep(0.05)

        # Fifty ended calls and twenty running ones span many 5 ms slots.
        assert wheel_timers(loop) == 1
        tg.cancel_scope.cancel()


@asyncio_only
async def test_real_clock_shorter_deadline_started_later_fires_first_and_on_time() -> (
    None
):
    breaker = CircuitBreaker(name="db", failure_threshold=1000)
    lasted: dict[float, float] = {}

    async def run(timeout: float) -> None:
        lasted[timeout] = await timed_out_after(breaker, timeout)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, 0.3)
        await asyncio.sleep(0.01)
        tg.start_soon(run, TINY)
        tg.start_soon(run, 0.1)

    for timeout, seconds in lasted.items():
        assert seconds >= timeout
        # One 5 ms slot late at most, plus what a busy test machine adds.
        assert seconds < timeout + _deadline.RESOLUTION + 0.25
    assert lasted[TINY] < lasted[0.1] < lasted[0.3]


@asyncio_only
async def test_real_clock_deadline_after_many_ended_calls_still_fires() -> None:
    breaker = CircuitBreaker(name="db", call_timeout=TINY, failure_threshold=1000)
    for _ in range(30):
        await breaker.call(ok)
        await asyncio.sleep(0.003)

    # The ended calls' slots come due (and are skipped) while this one waits.
    seconds = await timed_out_after(breaker, 3 * TINY)

    assert 3 * TINY <= seconds < 3 * TINY + _deadline.RESOLUTION + 0.25
    assert wheel_timers(asyncio.get_running_loop()) == 0


@pytest.mark.parametrize("guard", [False, True], ids=["call", "guard"])
async def test_deadline_beyond_float_range_lets_the_trial_close_the_circuit(
    guard: bool, anyio_backend: str
) -> None:
    # 1e308 is finite, so valid; a moment that far ahead is not a float.
    breaker = CircuitBreaker(
        name="db", failure_threshold=1, reset_timeout=TINY, call_timeout=1e308
    )
    with pytest.raises(Boom):
        await breaker.call(fail)
    await anyio.sleep(2 * TINY)
    assert breaker.state is State.HALF_OPEN

    if guard:
        async with breaker.guard():
            result = await ok()
    else:
        result = await breaker.call(ok)

    assert result == "ok"
    assert breaker.state is State.CLOSED
    assert await breaker.call(ok) == "ok"
    if anyio_backend == "asyncio":
        assert wheel_timers(asyncio.get_running_loop()) == 0


class NegativeTimeLoop:
    """The two loop methods the wheel uses, on a clock that reads below zero."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.timers: list[float] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: object) -> FireSpy:
        self.timers.append(when)
        return FireSpy()


@asyncio_only
@pytest.mark.parametrize("now", [-1e6 - 0.0012, -0.0512, 0.0012, 1e6 + 0.0012])
async def test_wheel_deadline_is_due_within_one_slot_at_any_sign_of_loop_time(
    now: float,
) -> None:
    loop = NegativeTimeLoop(now)
    wheel = _deadline._Wheel(loop)  # type: ignore[arg-type]

    wheel.registry(0.0123)

    [when] = loop.timers
    assert now + 0.0123 <= when <= now + 0.0123 + _deadline.RESOLUTION


class CleanupFailed(Exception):
    """A task of the wrapped call failed while it was being cancelled."""


async def fails_when_cut_off() -> None:
    """A call whose child task raises on its way out of the cancellation."""

    async def child() -> None:
        try:
            await never()
        finally:
            raise CleanupFailed("cleanup failed")

    async with anyio.create_task_group() as tg:
        tg.start_soon(child)
        await never()


@pytest.mark.parametrize("guard", [False, True], ids=["call", "guard"])
async def test_an_error_left_beside_the_deadline_cancellation_ends_the_trial(
    clock: FakeClock, guard: bool
) -> None:
    breaker = CircuitBreaker(
        failure_threshold=1, reset_timeout=1, call_timeout=5, clock=clock
    )
    with pytest.raises(Boom):
        await breaker.call(fail)
    clock.advance(1)
    assert breaker.state is State.HALF_OPEN

    async def trial() -> None:
        if guard:
            async with breaker.guard():
                await fails_when_cut_off()
        else:
            await breaker.call(fails_when_cut_off)

    async def cut_off() -> None:
        await clock.wait_for_sleepers(1)
        clock.advance(5)

    with pytest.raises(BaseExceptionGroup) as raised:
        async with anyio.create_task_group() as tg:
            tg.start_soon(cut_off)
            await trial()

    assert raised.group_contains(CleanupFailed)
    # The trial failed, as on asyncio, rather than keeping its permit forever
    # (trio's scope raised what was left of the group past the breaker).
    assert breaker.state is State.OPEN
    assert breaker.metrics().failures == 2


@asyncio_only
async def test_wheel_keeps_no_slot_for_every_5_ms_of_a_long_timeout() -> None:
    loop = NegativeTimeLoop(1000.0)
    wheel = _deadline._Wheel(loop)  # type: ignore[arg-type]
    held = FireSpy()
    wheel.registry(1800.0)["held"] = held  # a call that outlives the others

    # An hour-long timeout under a call every 5 ms, each ending at once.
    for call in range(720_000):
        registry = wheel.registry(3600.0)
        registry[call] = FireSpy()
        registry.pop(call)
        loop.now += 0.005

    assert len(wheel.slots) < 2 * 1024
    assert sorted(wheel.due) == sorted(wheel.slots)
    # The call still held is cut off when its moment comes, and only it.
    loop.now = 1000.0 + 1800.0 + _deadline.RESOLUTION
    wheel._fire()
    assert held.fired
    assert not any(wheel.slots.values())
