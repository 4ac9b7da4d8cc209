"""The breaker against a small reference model of its rules, driven by Hypothesis.

The model is plain Python written from the rules, not from the code: states,
generations, trial permits, counts and open durations. A state machine drives
the breaker's low-level API (``acquire`` and the ``record_*`` methods) through
random interleavings of held calls, outcomes, manual changes and clock moves,
and checks after every step that the breaker and the model agree. A second,
async test checks that ``breaker.call()`` does exactly what the low-level API
does for the same script.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from typing import Any

import anyio
import pytest
from core_helpers import Boom
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from aetcd_breaker.core import (
    CallTimeoutError,
    CircuitBreaker,
    CircuitOpenError,
    ExponentialBackoff,
    FakeClock,
    Permit,
    SlowCallRate,
    State,
    StateChange,
)

SLOW = 3.0
"""SlowCallRate.slow_call_duration in the model's breakers."""

TIMEOUT = 4.0
"""The call deadline in the model's breakers."""

RESET = 6.0
"""The fixed open duration, when there is no backoff."""


# -- the reference model -----------------------------------------------------


@dataclasses.dataclass
class Held:
    """A call admitted and not yet ended."""

    permit: Permit
    generation: int
    trial: bool
    started: float


class Model:
    """What the rules say a breaker does, one plain step at a time.

    ``trials`` counts trial permits taken in this half-open period and not
    given back: a success or failure uses its permit up, a cancelled or
    ignored trial returns it. The slow-call rule uses ``minimum_calls=1``, so
    checking the rules after every counted outcome in closed is the same as
    checking them only when they can newly fire.
    """

    def __init__(
        self,
        *,
        max_requests: int,
        threshold: int | None,
        ratio: float | None,
        max_wait: float | None,
        backoff: bool,
        slow_rule: bool,
        initial: str,
    ) -> None:
        self.max_requests = max_requests
        self.threshold = threshold
        self.ratio = ratio
        self.max_wait = max_wait
        self.backoff = backoff
        self.slow_rule = slow_rule
        self.now = 0.0
        self.state = "closed"
        self.generation = 0
        self.opens = 0
        self.retry_at = 0.0
        self.half_open_until: float | None = None
        self.changed_at = 0.0
        self.totals: Counter[str] = Counter()
        self.transitions: list[tuple[str, str, str]] = []
        self.clear()
        self.enter(initial)

    # time and transitions

    def open_duration(self) -> float:
        if self.backoff:
            return min(8.0, 2.0 * 2.0 ** (self.opens - 1))
        return RESET

    def clear(self) -> None:
        self.calls = self.failures = self.slow_calls = 0
        self.consecutive_successes = self.consecutive_failures = 0
        self.trials = 0

    def enter(self, state: str) -> None:
        self.state = state
        self.generation += 1
        self.changed_at = self.now
        self.clear()
        self.half_open_until = None
        if state == "open":
            self.opens += 1
            self.retry_at = self.now + self.open_duration()
        elif state == "half_open" and self.max_wait is not None:
            self.half_open_until = self.now + self.max_wait
        elif state == "closed":
            self.opens = 0

    def move(self, state: str, reason: str) -> None:
        self.transitions.append((self.state, state, reason))
        self.enter(state)

    def tick(self) -> None:
        """Make the move that time alone has made due, as a state read does."""
        if self.state == "open" and self.now >= self.retry_at:
            self.move("half_open", "reset_timeout_elapsed")
        elif (
            self.state == "half_open"
            and self.half_open_until is not None
            and self.now >= self.half_open_until
        ):
            self.move("open", "half_open_max_wait")

    # calls

    def admit(self) -> bool | None:
        """True for a trial, False for a plain admitted call, None if rejected."""
        self.tick()
        if self.state in ("closed", "disabled"):
            return False
        if self.state == "half_open" and self.trials < self.max_requests:
            self.trials += 1
            return True
        self.totals["rejected"] += 1
        return None

    def slow(self, call: Held, timed_out: bool) -> bool:
        return timed_out or (self.slow_rule and self.now - call.started >= SLOW)

    def succeed(self, call: Held) -> None:
        slow = self.slow(call, False)
        self.totals["successes"] += 1
        self.totals["slow_calls"] += slow
        if call.generation != self.generation:
            return
        self.calls += 1
        self.slow_calls += slow
        self.consecutive_successes += 1
        self.consecutive_failures = 0
        if self.state == "half_open":
            self.judge_trials()
        elif self.state == "closed":
            self.check_rules()

    def fail(self, call: Held, *, timed_out: bool = False) -> None:
        slow = self.slow(call, timed_out)
        self.totals["failures"] += 1
        self.totals["slow_calls"] += slow
        if call.generation != self.generation:
            return
        self.calls += 1
        self.failures += 1
        self.slow_calls += slow
        self.consecutive_failures += 1
        self.consecutive_successes = 0
        if self.state == "closed":
            self.check_rules()
        elif self.state == "half_open":
            if self.ratio is None:
                self.move("open", "trial_failed")
            else:
                self.judge_trials()

    def ignore(self, call: Held) -> None:
        self.totals["ignored"] += 1
        self.give_back(call)

    def give_back(self, call: Held) -> None:
        if call.trial and call.generation == self.generation:
            self.trials -= 1

    def judge_trials(self) -> None:
        successes = self.calls - self.failures
        if self.ratio is None:
            if successes >= self.max_requests:
                self.move("closed", "trials_succeeded")
        elif self.calls >= self.max_requests:
            if successes / self.calls >= self.ratio:
                self.move("closed", "trials_succeeded")
            else:
                self.move("open", "trials_failed")

    def check_rules(self) -> None:
        if self.threshold is not None and self.consecutive_failures >= self.threshold:
            self.move("open", "consecutive_failures")
        elif self.slow_rule and self.slow_calls >= 0.5 * self.calls:
            self.move("open", "slow_call_rate")

    # manual control

    def manual(self, state: str) -> None:
        if self.state != state:
            self.move(state, "manual")

    def reset(self) -> None:
        if self.state == "closed":
            self.opens = 0
            self.clear()
        else:
            self.move("closed", "manual")


# -- the state machine -------------------------------------------------------------


ENDS = ["success", "slow_success", "failure", "timeout", "ignored", "cancel"]
MANUAL = ["force_open", "disable", "reset"]
ACTIONS = ["start", "start", *ENDS, *ENDS, "success", "success", *["wait"] * 3, *MANUAL]


class BreakerMachine(RuleBasedStateMachine):
    @initialize(
        max_requests=st.integers(1, 3),
        threshold=st.sampled_from([1, 2, 3, None]),
        ratio=st.sampled_from([None, 0.5, 1.0]),
        max_wait=st.sampled_from([None, 3.5, 7.0]),
        backoff=st.booleans(),
        slow_rule=st.booleans(),
        initial=st.sampled_from(["closed", "open"]),
        manual_changes=st.integers(0, 2),
    )
    def make(
        self,
        max_requests: int,
        threshold: int | None,
        ratio: float | None,
        max_wait: float | None,
        backoff: bool,
        slow_rule: bool,
        initial: str,
        manual_changes: int,
    ) -> None:
        self.manual_changes = manual_changes
        self.held: list[Held] = []
        self.clock = FakeClock(0.0)
        self.changes: list[StateChange] = []
        self.breaker = CircuitBreaker(
            name="model",
            clock=self.clock,
            max_requests=max_requests,
            failure_threshold=threshold,
            success_ratio=ratio,
            half_open_max_wait=max_wait,
            reset_timeout=(
                ExponentialBackoff(base=2, factor=2, cap=8) if backoff else RESET
            ),
            trip_rules=(
                [SlowCallRate(0.5, slow_call_duration=SLOW, minimum_calls=1)]
                if slow_rule
                else []
            ),
            on_state_change=self.changes.append,
            initial_state=initial,
        )
        self.model = Model(
            max_requests=max_requests,
            threshold=threshold,
            ratio=ratio,
            max_wait=max_wait,
            backoff=backoff,
            slow_rule=slow_rule,
            initial=initial,
        )

    def observe(self) -> None:
        """Read the state, as any caller may, so time-due moves are made."""
        self.breaker.state  # noqa: B018
        self.model.tick()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.model.now += seconds

    def start_call(self) -> None:
        expected = self.model.admit()
        permit = self.breaker.acquire()
        if expected is None:
            assert permit is None
            return
        assert permit is not None
        assert permit.trial is expected
        assert permit.generation == self.model.generation
        self.held.append(Held(permit, self.model.generation, expected, self.model.now))

    def end_call(self, call: Held, end: str) -> None:
        if end == "slow_success":
            self.advance(SLOW)
        elif end == "timeout":
            # The deadline runs out while the call is held.
            self.advance(TIMEOUT)
        self.observe()
        permit = call.permit
        if end in ("success", "slow_success"):
            self.breaker.record_success(permit)
            self.model.succeed(call)
        elif end in ("failure", "timeout"):
            self.breaker.record_failure(permit, timed_out=end == "timeout")
            self.model.fail(call, timed_out=end == "timeout")
        elif end == "ignored":
            self.breaker.record_ignored(permit)
            self.model.ignore(call)
        else:
            self.breaker.release(permit)
            self.model.give_back(call)

    def change_by_hand(self, change: str) -> None:
        getattr(self.breaker, change)()
        if change == "reset":
            self.model.reset()
        else:
            self.model.manual("forced_open" if change == "force_open" else "disabled")

    # A single rule with a weighted choice of action: Hypothesis would pick
    # separate rules unevenly, and the machine would spend most of its steps
    # rejected in a manual state instead of moving through the automatic ones.
    @rule(
        action=st.sampled_from(ACTIONS),
        pick=st.integers(0, 7),
        seconds=st.sampled_from([2.0, 0.5, 1.0, 5.0, 10.0]),
    )
    def step(self, action: str, pick: int, seconds: float) -> None:
        if action in ENDS and self.held:
            self.end_call(self.held.pop(pick % len(self.held)), action)
        elif action in ENDS or action == "start":
            self.start_call()
        elif action == "wait":
            self.advance(seconds)
        elif action == "reset" or self.manual_changes > 0:
            self.manual_changes -= action != "reset"
            self.change_by_hand(action)

    @invariant()
    def breaker_agrees_with_the_model(self) -> None:
        state = self.breaker.state
        model = self.model
        model.tick()
        assert state == model.state
        assert self.breaker.generation == model.generation
        trials = model.trials if model.state == "half_open" else 0
        assert self.breaker.trials_in_flight == trials

        totals = model.totals
        metrics = self.breaker.metrics()
        assert dataclasses.asdict(metrics) == {
            "name": "model",
            "state": State(model.state),
            "generation": model.generation,
            "calls": totals["successes"] + totals["failures"] + totals["ignored"],
            "successes": totals["successes"],
            "failures": totals["failures"],
            "ignored": totals["ignored"],
            "slow_calls": totals["slow_calls"],
            "rejected": totals["rejected"],
            "failure_rate": model.failures / model.calls if model.calls else 0.0,
            "slow_call_rate": model.slow_calls / model.calls if model.calls else 0.0,
            "consecutive_successes": model.consecutive_successes,
            "consecutive_failures": model.consecutive_failures,
            "state_changed_at": model.changed_at,
            "retry_after": (
                model.retry_at - model.now if model.state == "open" else None
            ),
        }
        seen = [(c.from_state, c.to_state, c.reason) for c in self.changes]
        assert seen == model.transitions


BreakerMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=50, deadline=None
)
TestBreakerAgainstModel = BreakerMachine.TestCase


# -- call() does what the low-level API does ------------------------------------------


OPS = ["ok", "fail", "ignore", "slow", "timeout", "cancel", "wait"]


def make_breaker(clock: FakeClock, plain: bool) -> tuple[CircuitBreaker, list[Any]]:
    changes: list[Any] = []
    extra: dict[str, Any] = {}
    if not plain:
        extra = {
            "call_timeout": TIMEOUT,
            "trip_rules": [SlowCallRate(0.5, slow_call_duration=SLOW, minimum_calls=1)],
        }
    breaker = CircuitBreaker(
        name="db",
        clock=clock,
        failure_threshold=2,
        max_requests=2,
        reset_timeout=5,
        is_failure=lambda exc: not isinstance(exc, KeyError),
        on_state_change=changes.append,
        **extra,
    )
    return breaker, changes


async def through_call(breaker: CircuitBreaker, clock: FakeClock, op: str) -> None:
    """Run one scripted call through ``breaker.call()``."""

    async def immediate() -> str:
        if op == "fail":
            raise Boom("down")
        if op == "ignore":
            raise KeyError("k")
        return "ok"

    if op in ("ok", "fail", "ignore"):
        with pytest.raises((Boom, KeyError, CircuitOpenError)):
            await breaker.call(immediate)
            raise Boom("returned")
        return

    settled = anyio.Event()
    started = anyio.Event()
    release = anyio.Event()
    scope = anyio.CancelScope()

    async def held() -> str:
        started.set()
        settled.set()
        await release.wait()
        return "slow"

    async def caller() -> None:
        with scope, contextlib.suppress(CallTimeoutError, CircuitOpenError):
            await breaker.call(held)
        settled.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await settled.wait()
        if not started.is_set():
            return
        if op == "slow":
            clock.advance(SLOW)
            release.set()
        elif op == "timeout":
            clock.advance(TIMEOUT)
        else:
            scope.cancel()


def through_permits(breaker: CircuitBreaker, clock: FakeClock, op: str) -> None:
    """Run the same scripted call through ``acquire()`` and ``record_*()``."""
    permit = breaker.acquire()
    if permit is None:
        return
    if op == "ok":
        breaker.record_success(permit)
    elif op == "fail":
        breaker.record_failure(permit)
    elif op == "ignore":
        breaker.record_ignored(permit)
    elif op == "slow":
        clock.advance(SLOW)
        breaker.record_success(permit)
    elif op == "timeout":
        clock.advance(TIMEOUT)
        breaker.record_failure(permit, timed_out=True)
    else:
        breaker.release(permit)


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.anyio
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(plain=st.booleans(), ops=st.lists(st.sampled_from(OPS), max_size=30))
async def test_call_path_matches_the_low_level_api(plain: bool, ops: list[str]) -> None:
    clock, twin_clock = FakeClock(0.0), FakeClock(0.0)
    breaker, changes = make_breaker(clock, plain)
    twin, twin_changes = make_breaker(twin_clock, plain)

    for op in ops:
        if plain and op == "timeout":
            op = "cancel"
        if op == "wait":
            clock.advance(2)
            twin_clock.advance(2)
        else:
            await through_call(breaker, clock, op)
            through_permits(twin, twin_clock, op)
        assert breaker.metrics() == twin.metrics()
        assert breaker.trials_in_flight == twin.trials_in_flight
        assert changes == twin_changes
