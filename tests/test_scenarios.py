"""Outages of a real etcd, with and without the breaker.

Each scenario puts a ``BreakerClient`` through one kind of outage (a
partition, a crash, a slow or hung server, resets, flapping) and asserts the
exact state changes it logs. It then runs the same calls through a raw
``aetcd.Client`` whose ``timeout`` equals the breaker's deadline, and reports
what the breaker changed: calls that failed fast instead of waiting, their
latency, and the requests that reached etcd (counted by a ``FaultProxy``).

The report goes into each test's ``user_properties`` and, when the
``SCENARIO_REPORT`` environment variable names a file, is appended to it as
Markdown. Timings are only reported, never asserted, apart from bounds that
turn a hang into a failure and the CPU bound of the idle-service test.

Transitions from open to half-open are made lazily, by the first call or
state read after the open duration. So each scenario keeps the fault on for
less than the open duration, makes no call while it heals, and then waits in
``wait_ready()`` before a single trial: the sequence of state changes is then
the same on every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import itertools
import os
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aetcd
import anyio
import pytest
from structlog.testing import capture_logs

from aetcd_breaker.core import (
    CircuitBreaker,
    ExponentialBackoff,
    SlowCallRate,
    State,
    StateChange,
)
from aetcd_breaker.etcd import (
    BreakerClient,
    EtcdCallTimeoutError,
    EtcdCircuitOpenError,
    is_etcd_failure,
)
from aetcd_breaker.testing import EtcdServer, FaultProxy

pytestmark = [pytest.mark.anyio, pytest.mark.etcd]

REPORT_ENV = "SCENARIO_REPORT"
KEY = b"/scenario/key"
VALUE = b"written before the fault"

DEADLINE = 0.3
"""The deadline of every etcd call, guarded or raw, unless a test says otherwise."""
OPEN_FOR = 1.0
"""The breaker's open duration: longer than any phase that keeps etcd broken."""
CALLS = 8
"""Calls made one after the other while etcd is broken."""
FAST = 0.05
"""A failed call quicker than this waited for nothing."""
POLL = 0.02
"""How often the baseline retries while waiting for etcd to come back."""
HANG = 30.0
"""Bounds that only turn a hang into a failure; no test relies on them."""

TRIPPED = ("closed", "open", "consecutive_failures")
PROBING = ("open", "half_open", "reset_timeout_elapsed")
RECOVERED = ("half_open", "closed", "trials_succeeded")
REOPENED = ("half_open", "open", "trial_failed")

Transition = tuple[str, str, str]
Call = Callable[[], Awaitable[object]]
Action = Callable[[], object]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", autouse=True)
async def one_event_loop() -> AsyncIterator[None]:
    """Run the module's tests on one event loop.

    gRPC hands completions of a closed channel's calls to the loop they
    started on, sometimes after the call returned; on a closed loop they
    would surface as errors in the next test.
    """
    yield
    await anyio.sleep(0.1)


# -- tallies and the report ------------------------------------------------


@dataclass
class Tally:
    """What one side of a scenario saw, call by call."""

    outcomes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    # Only the types and a few fields of the errors: an aetcd error that is
    # kept alive keeps its gRPC connection open, even after the client closed.
    errors: list[type[BaseException]] = field(default_factory=list)
    deadlines: list[float] = field(default_factory=list)
    rejected_while: Counter[State] = field(default_factory=Counter)
    failed_fast: int = 0

    @property
    def calls(self) -> int:
        return len(self.latencies)

    async def call(self, call: Call) -> str:
        """Make one call; return and count how it ended."""
        started = time.perf_counter()
        try:
            await call()
        except aetcd.ClientError as exc:
            self.errors.append(type(exc))
            if isinstance(exc, EtcdCircuitOpenError):
                outcome = "rejected"
                self.rejected_while[exc.state] += 1
            elif isinstance(exc, aetcd.ConnectionTimeoutError):
                outcome = "timed_out"
                if isinstance(exc, EtcdCallTimeoutError):
                    self.deadlines.append(exc.timeout)
            else:
                outcome = "failed" if is_etcd_failure(exc) else "ignored"
        else:
            outcome = "ok"
        elapsed = time.perf_counter() - started
        self.outcomes[outcome] += 1
        self.latencies.append(elapsed)
        if outcome != "ok" and elapsed < FAST:
            self.failed_fast += 1
        return outcome

    def seen(self) -> dict[str, int]:
        """The outcomes that happened, with their counts."""
        return {name: count for name, count in self.outcomes.items() if count}


@dataclass
class Side:
    """One side of a comparison: raw aetcd or the breaker."""

    name: str
    tally: Tally
    requests: int | None = None
    recovery: float | None = None
    failed_after_heal: int = 0
    extra: str = ""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def report(
    request: pytest.FixtureRequest, title: str, sides: Sequence[Side], note: str = ""
) -> None:
    """Record the comparison of one scenario (see the module docstring)."""
    lines = [
        f"### {title}",
        "",
        "| side | calls | ok | failed fast | failed slowly | rejected | mean ms "
        "| max ms | requests to etcd | heal to first ok ms | failed after heal |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for side in sides:
        tally = side.tally
        errors = tally.calls - tally.outcomes["ok"]
        cells = [
            side.name,
            str(tally.calls),
            str(tally.outcomes["ok"]),
            str(tally.failed_fast),
            str(errors - tally.failed_fast),
            str(tally.outcomes["rejected"]),
            ms(statistics.fmean(tally.latencies)) if tally.latencies else "-",
            ms(max(tally.latencies)) if tally.latencies else "-",
            "-" if side.requests is None else str(side.requests),
            "-" if side.recovery is None else ms(side.recovery),
            str(side.failed_after_heal),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    extras = [f"- {side.name}: {side.extra}" for side in sides if side.extra]
    text = "\n".join([*lines, "", *extras, *([note] if note else []), "", ""])
    request.node.user_properties.append(("scenario_report", text))
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(text)


# -- helpers ----------------------------------------------------------------


def transitions(logs: list[dict[str, Any]]) -> list[Transition]:
    """The (from, to, reason) of every state change logged."""
    return [
        (log["from_state"], log["to_state"], log["reason"])
        for log in logs
        if log["event"] == "aetcd_breaker.state_changed"
    ]


def retry_afters(logs: list[dict[str, Any]]) -> list[float]:
    return [
        log["retry_after"]
        for log in logs
        if log["event"] == "aetcd_breaker.state_changed" and log["to_state"] == "open"
    ]


async def act(action: Action) -> None:
    """Run a fault or a heal, waiting for it when it is async."""
    result = action()
    if inspect.isawaitable(result):
        await result


async def until_ok(call: Call) -> tuple[float, int]:
    """Retry ``call`` every POLL s until it succeeds: (seconds taken, failures)."""
    started = time.perf_counter()
    failures = 0
    with anyio.fail_after(HANG):
        while True:
            try:
                await call()
            except aetcd.ClientError:
                failures += 1
                await anyio.sleep(POLL)
            else:
                return time.perf_counter() - started, failures


async def trial(breaker: CircuitBreaker, call: Call) -> float:
    """Wait until the breaker admits a call, make it; the seconds it all took."""
    started = time.perf_counter()
    await breaker.wait_ready()
    await call()
    return time.perf_counter() - started


def breaker_of(name: str, **settings: Any) -> CircuitBreaker:
    settings = {"failure_threshold": 2, "reset_timeout": OPEN_FOR, **settings}
    return CircuitBreaker(name=name, max_requests=1, **settings)


@contextlib.asynccontextmanager
async def proxied(server: EtcdServer, proxy: bool) -> AsyncIterator[FaultProxy | None]:
    if not proxy:
        yield None
        return
    async with FaultProxy(server.host, server.port) as fresh:
        yield fresh


async def run_raw(
    server: EtcdServer,
    fault: Callable[[FaultProxy | None], object],
    heal: Callable[[FaultProxy | None], object],
    *,
    through_proxy: bool = True,
    deadline: float = DEADLINE,
    warm_up: bool = True,
) -> Side:
    """The baseline: the same calls through a raw aetcd client with the deadline.

    The client talks to etcd through a proxy of its own (so that its
    requests are counted apart), or directly.
    """
    tally = Tally()
    async with proxied(server, through_proxy) as proxy:
        host, port = (
            (server.host, server.port) if proxy is None else (proxy.host, proxy.port)
        )
        async with aetcd.Client(host, port, timeout=deadline) as raw:
            if warm_up:
                await raw.put(KEY, VALUE)
            before = 0 if proxy is None else proxy.requests

            with anyio.fail_after(HANG):
                await act(lambda: fault(proxy))
                for _ in range(CALLS):
                    await tally.call(lambda: raw.get(KEY))
                await act(lambda: heal(proxy))
                recovery, failures = await until_ok(lambda: raw.get(KEY))

            # Requests held by the fault reach etcd before the call that
            # succeeded; every retry is taken to have reached it.
            requests = None
            if proxy is not None:
                requests = proxy.requests - before - failures - 1
    return Side("raw aetcd", tally, requests, recovery, failures)


# -- 1. partition ------------------------------------------------------------


async def test_partition_opens_at_the_deadline_rejects_locally_one_trial_closes(
    etcd_server: EtcdServer, fault_proxy: FaultProxy, request: pytest.FixtureRequest
) -> None:
    raw = await run_raw(
        etcd_server, lambda p: p.black_hole(), lambda p: p.pass_through()
    )
    breaker = breaker_of("partition")
    tally = Tally()
    async with BreakerClient(
        fault_proxy.host, fault_proxy.port, breaker=breaker, call_timeout=DEADLINE
    ) as etcd:
        await etcd.put(KEY, VALUE)
        before = fault_proxy.requests

        with capture_logs() as logs, anyio.fail_after(HANG):
            fault_proxy.black_hole()
            for _ in range(CALLS):
                await tally.call(lambda: etcd.get(KEY))
            fault_proxy.pass_through()
            # The two timed-out requests were held, not dropped: they reach
            # etcd now, and had any rejected call been sent, it would too.
            await fault_proxy.wait_for_requests(before + 2)
            healed = time.perf_counter()
            rejected_after_heal = [await Tally().call(lambda: etcd.get(KEY))]
            before_trial = fault_proxy.requests
            await breaker.wait_ready()
            found = await etcd.get(KEY)
            recovery = time.perf_counter() - healed
            after_trial = fault_proxy.requests

    assert tally.seen() == {"timed_out": 2, "rejected": CALLS - 2}
    assert tally.deadlines == [DEADLINE, DEADLINE]
    assert rejected_after_heal == ["rejected"]
    assert before_trial == before + 2
    assert after_trial - before_trial == 1
    assert found is not None and found.value == VALUE
    assert transitions(logs) == [TRIPPED, PROBING, RECOVERED]
    report(
        request,
        "1. Partition (black hole), deadline 0.3 s",
        [raw, Side("breaker", tally, before_trial - before, recovery)],
        "The breaker waits out its open duration (1 s) before its trial; raw "
        "aetcd retries every 20 ms and is back as soon as the partition heals.",
    )


# -- 2. crash and restart ----------------------------------------------------


async def test_crashed_etcd_restarted_on_its_port_is_found_again_with_its_data(
    etcd_server: EtcdServer, request: pytest.FixtureRequest
) -> None:
    raw = await run_raw(
        etcd_server,
        lambda _: etcd_server.kill(),
        lambda _: etcd_server.arestart(),
        through_proxy=False,
    )
    breaker = breaker_of("crash")
    tally = Tally()
    async with BreakerClient(
        etcd_server.host, etcd_server.port, breaker=breaker, call_timeout=DEADLINE
    ) as etcd:
        await etcd.put(KEY, b"before the crash")

        with capture_logs() as logs, anyio.fail_after(HANG):
            etcd_server.kill()
            for _ in range(CALLS):
                await tally.call(lambda: etcd.get(KEY))
            await etcd_server.arestart()
            recovery = await trial(breaker, lambda: etcd.get(KEY))
            found = await etcd.get(KEY)

    assert tally.seen() == {"failed": 2, "rejected": CALLS - 2}
    assert found is not None and found.value == b"before the crash"
    assert transitions(logs) == [TRIPPED, PROBING, RECOVERED]
    report(
        request,
        "2. Crash (SIGKILL) and restart on the same port and data",
        [
            raw,
            Side(
                "breaker", tally, None, recovery, extra=f"{etcd.reconnects} reconnects"
            ),
        ],
        "A killed etcd refuses connections, so raw aetcd fails fast too; the "
        "breaker's open duration started before the restart.",
    )


# -- 3. slow etcd ------------------------------------------------------------


async def test_latency_above_the_deadline_trips_the_breaker(
    etcd_server: EtcdServer, fault_proxy: FaultProxy, request: pytest.FixtureRequest
) -> None:
    # 0.15 s each way: every call takes at least 0.3 s, over its 0.2 s deadline.
    deadline = 0.2
    raw = await run_raw(
        etcd_server,
        lambda p: p.delay(0.15),
        lambda p: p.pass_through(),
        deadline=deadline,
    )
    breaker = breaker_of("slow")
    tally = Tally()
    async with BreakerClient(
        fault_proxy.host, fault_proxy.port, breaker=breaker, call_timeout=deadline
    ) as etcd:
        await etcd.put(KEY, VALUE)
        before = fault_proxy.requests

        with capture_logs() as logs, anyio.fail_after(HANG):
            fault_proxy.delay(0.15)
            for _ in range(CALLS):
                await tally.call(lambda: etcd.get(KEY))
            fault_proxy.pass_through()
            recovery = await trial(breaker, lambda: etcd.get(KEY))
        requests = fault_proxy.requests - before - 1

    assert tally.seen() == {"timed_out": 2, "rejected": CALLS - 2}
    assert tally.deadlines == [deadline, deadline]
    assert requests == 2
    assert transitions(logs) == [TRIPPED, PROBING, RECOVERED]
    report(
        request,
        "3a. Slow etcd: 0.3 s a call against a 0.2 s deadline",
        [raw, Side("breaker", tally, requests, recovery)],
    )


async def test_latency_below_the_deadline_does_not_trip_on_failures_alone(
    etcd_server: EtcdServer, fault_proxy: FaultProxy, request: pytest.FixtureRequest
) -> None:
    # 0.05 s each way: about 0.1 s a call, well within a 0.5 s deadline.
    deadline = 0.5
    raw = await run_raw(
        etcd_server,
        lambda p: p.delay(0.05),
        lambda p: p.pass_through(),
        deadline=deadline,
    )
    breaker = breaker_of("slow-but-in-time")
    tally = Tally()
    async with BreakerClient(
        fault_proxy.host, fault_proxy.port, breaker=breaker, call_timeout=deadline
    ) as etcd:
        await etcd.put(KEY, VALUE)
        before = fault_proxy.requests

        with capture_logs() as logs, anyio.fail_after(HANG):
            fault_proxy.delay(0.05)
            for _ in range(CALLS):
                await tally.call(lambda: etcd.get(KEY))
            fault_proxy.pass_through()
        requests = fault_proxy.requests - before

    assert tally.seen() == {"ok": CALLS}
    assert requests == CALLS
    assert transitions(logs) == []
    report(
        request,
        "3b. Slow etcd: 0.1 s a call within a 0.5 s deadline, failure_threshold only",
        [raw, Side("breaker", tally, requests)],
    )


async def test_slow_call_rate_trips_on_latency_below_the_deadline(
    etcd_server: EtcdServer, fault_proxy: FaultProxy, request: pytest.FixtureRequest
) -> None:
    deadline = 0.5
    raw = await run_raw(
        etcd_server,
        lambda p: p.delay(0.05),
        lambda p: p.pass_through(),
        deadline=deadline,
    )
    rule = SlowCallRate(0.5, slow_call_duration=0.05, minimum_calls=3)
    breaker = breaker_of("slow-calls", trip_rules=[rule])
    tally = Tally()
    async with BreakerClient(
        fault_proxy.host, fault_proxy.port, breaker=breaker, call_timeout=deadline
    ) as etcd:
        await etcd.put(KEY, VALUE)
        # The first call on a new connection may be slow by itself.
        breaker.reset()
        before = fault_proxy.requests

        with capture_logs() as logs, anyio.fail_after(HANG):
            fault_proxy.delay(0.05)
            for _ in range(CALLS):
                await tally.call(lambda: etcd.get(KEY))
            fault_proxy.pass_through()
            recovery = await trial(breaker, lambda: etcd.get(KEY))
        requests = fault_proxy.requests - before - 1

    assert tally.seen() == {"ok": 3, "rejected": CALLS - 3}
    assert requests == 3
    assert transitions(logs) == [
        ("closed", "open", "slow_call_rate"),
        PROBING,
        RECOVERED,
    ]
    report(
        request,
        "3c. Slow etcd: 0.1 s a call within a 0.5 s deadline, "
        "SlowCallRate(0.5, slow_call_duration=0.05)",
        [raw, Side("breaker", tally, requests, recovery)],
    )


# -- 4. hung etcd ------------------------------------------------------------


async def test_hung_etcd_calls_end_at_their_deadline_and_resume_closes(
    etcd_server: EtcdServer, fault_proxy: FaultProxy, request: pytest.FixtureRequest
) -> None:
    raw = await run_raw(
        etcd_server, lambda _: etcd_server.pause(), lambda _: etcd_server.resume()
    )
    breaker = breaker_of("hung")
    tally = Tally()
    async with BreakerClient(
        fault_proxy.host, fault_proxy.port, breaker=breaker, call_timeout=DEADLINE
    ) as etcd:
        await etcd.put(KEY, VALUE)
        before = fault_proxy.requests

        with capture_logs() as logs, anyio.fail_after(HANG):
            etcd_server.pause()
            for _ in range(CALLS):
                await tally.call(lambda: etcd.get(KEY))
            etcd_server.resume()
            recovery = await trial(breaker, lambda: etcd.get(KEY))
        requests = fault_proxy.requests - before - 1

    assert tally.errors[:2] == [EtcdCallTimeoutError] * 2
    assert tally.deadlines == [DEADLINE, DEADLINE]
    assert tally.seen() == {"timed_out": 2, "rejected": CALLS - 2}
    assert requests == 2
    assert transitions(logs) == [TRIPPED, PROBING, RECOVERED]
    report(
        request,
        "4. Hung etcd (SIGSTOP) and resume (SIGCONT), deadline 0.3 s",
        [raw, Side("breaker", tally, requests, recovery)],
    )


# -- 5. half-open under load -------------------------------------------------

LOAD = 500
"""Tasks calling at once in the half-open test."""
KNOCK = 0.1
"""How long a task of the half-open test waits after a rejection."""


async def raw_load(server: EtcdServer, deadline: float, seconds: float) -> Side:
    """LOAD tasks calling a hung etcd for ``seconds`` through a raw client."""
    tally = Tally()
    async with (
        FaultProxy(server.host, server.port) as proxy,
        aetcd.Client(proxy.host, proxy.port, timeout=deadline) as raw,
    ):
        await raw.put(KEY, VALUE)
        before = proxy.requests
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop:
                await tally.call(lambda: raw.get(KEY))

        server.pause()
        try:
            with anyio.fail_after(HANG):
                async with anyio.create_task_group() as tg:
                    for _ in range(LOAD):
                        tg.start_soon(worker)
        finally:
            server.resume()
        requests = proxy.requests - before
    rate = requests / seconds
    return Side("raw aetcd", tally, requests, extra=f"{rate:.0f} requests/s to etcd")


async def test_half_open_under_load_sends_at_most_max_requests_trials_per_period(
    etcd_server: EtcdServer, fault_proxy: FaultProxy, request: pytest.FixtureRequest
) -> None:
    deadline = DEADLINE
    raw = await raw_load(etcd_server, deadline, 1.0)
    # (state entered, requests forwarded so far) at each transition; hooks
    # run inside the transition, so no request can slip between the two.
    marks: list[tuple[State, int]] = []
    heal = anyio.Event()
    closed = anyio.Event()

    def mark(change: StateChange) -> None:
        marks.append((change.to_state, fault_proxy.requests))
        if [state for state, _ in marks].count(State.OPEN) == 3:
            heal.set()
        if change.to_state is State.CLOSED:
            # Set before any waiting task wakes: none calls once closed.
            closed.set()

    breaker = CircuitBreaker(
        name="half-open-load",
        failure_threshold=2,
        max_requests=3,
        reset_timeout=ExponentialBackoff(base=0.3, factor=2.0, cap=10.0),
        on_state_change=mark,
    )
    tally = Tally()
    async with BreakerClient(
        fault_proxy.host, fault_proxy.port, breaker=breaker, call_timeout=deadline
    ) as etcd:

        async def worker() -> None:
            # No wait_ready() here: it would let only as many tasks through
            # as there are permits. These keep knocking, as a busy service does.
            while not closed.is_set():
                if await tally.call(lambda: etcd.get(KEY)) == "rejected":
                    await anyio.sleep(KNOCK)

        await etcd.put(KEY, VALUE)
        with capture_logs() as logs, anyio.fail_after(HANG):
            etcd_server.pause()
            for _ in range(2):
                await tally.call(lambda: etcd.get(KEY))
            paused = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(LOAD):
                    tg.start_soon(worker)
                await heal.wait()
                etcd_server.resume()
                resumed = time.perf_counter()
        metrics = breaker.metrics()

    assert transitions(logs) == [
        TRIPPED,
        PROBING,
        REOPENED,
        PROBING,
        REOPENED,
        PROBING,
        RECOVERED,
    ]
    assert retry_afters(logs) == pytest.approx([0.3, 0.6, 1.2])
    states = [state for state, _ in marks]
    counts = [requests for _, requests in marks]
    deltas = [after - before for before, after in itertools.pairwise(counts)]
    assert states[1::2] == [State.HALF_OPEN] * 3
    # While open nothing reaches etcd; each half-open period lets through at
    # most max_requests trials, and the last one exactly that many.
    assert deltas[0::2] == [0, 0, 0]
    assert all(1 <= trials <= 3 for trials in deltas[1::2])
    assert deltas[-1] == 3
    half_open_rejections = tally.rejected_while[State.HALF_OPEN]
    assert metrics.rejected == tally.outcomes["rejected"]
    assert half_open_rejections > LOAD
    guarded = sum(deltas[:-1]) + 2
    rate = guarded / (resumed - paused)
    report(
        request,
        f"5. Half-open under load: {LOAD} tasks, hung etcd, max_requests=3, "
        "deadline 0.3 s",
        [
            raw,
            Side(
                "breaker",
                tally,
                guarded,
                extra=f"{rate:.1f} requests/s to etcd over "
                f"{resumed - paused:.1f} s of outage; trials per half-open "
                f"period {deltas[1::2]}; {half_open_rejections} calls "
                "rejected while half-open",
            ),
        ],
        "Raw aetcd ran 1 s of the outage; the breaker ran until etcd resumed.",
    )


# -- 6. resets, a late etcd, flapping ----------------------------------------


async def in_flight_then_reset(
    proxy: FaultProxy, server: EtcdServer, tally: Tally, call: Call, count: int
) -> None:
    """Make ``count`` calls hang on a paused etcd, then reset their connection."""
    before = proxy.requests
    server.pause()
    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(tally.call, call)
        # Forwarded to etcd, so truly in flight when the resets go out.
        await proxy.wait_for_requests(before + count)
        proxy.reset_connections()


async def test_connections_reset_under_calls_fail_them_and_open_the_breaker(
    etcd_server: EtcdServer, fault_proxy: FaultProxy, request: pytest.FixtureRequest
) -> None:
    in_flight = 3
    raw_tally = Tally()
    async with (
        FaultProxy(etcd_server.host, etcd_server.port) as raw_proxy,
        aetcd.Client(raw_proxy.host, raw_proxy.port, timeout=DEADLINE) as raw,
    ):
        await raw.put(KEY, VALUE)
        with anyio.fail_after(HANG):
            call = lambda: raw.get(KEY)  # noqa: E731
            await in_flight_then_reset(
                raw_proxy, etcd_server, raw_tally, call, in_flight
            )
            for _ in range(CALLS - in_flight):
                await raw_tally.call(call)
            etcd_server.resume()
            raw_proxy.pass_through()
            raw_recovery, raw_failures = await until_ok(call)

    breaker = breaker_of("resets", failure_threshold=in_flight)
    tally = Tally()
    async with BreakerClient(
        fault_proxy.host, fault_proxy.port, breaker=breaker, call_timeout=DEADLINE
    ) as etcd:
        await etcd.put(KEY, VALUE)
        with capture_logs() as logs, anyio.fail_after(HANG):
            call = lambda: etcd.get(KEY)  # noqa: E731
            await in_flight_then_reset(fault_proxy, etcd_server, tally, call, in_flight)
            for _ in range(CALLS - in_flight):
                await tally.call(call)
            etcd_server.resume()
            fault_proxy.pass_through()
            recovery = await trial(breaker, call)

    assert tally.seen() == {"failed": in_flight, "rejected": CALLS - in_flight}
    assert tally.errors[:in_flight] == [aetcd.ConnectionFailedError] * in_flight
    assert transitions(logs) == [TRIPPED, PROBING, RECOVERED]
    report(
        request,
        "6a. Connections reset under 3 calls in flight to a hung etcd",
        [
            Side("raw aetcd", raw_tally, None, raw_recovery, raw_failures),
            Side("breaker", tally, None, recovery),
        ],
        "Every call after the reset met a reset connection or gRPC's reconnect "
        "backoff: raw aetcd fails fast here too, but keeps connecting.",
    )


async def test_etcd_started_after_the_client_is_found_once_it_is_up(
    etcd_server: EtcdServer, request: pytest.FixtureRequest
) -> None:
    # The fixture's etcd fixed the port and the data; nothing listens there now.
    etcd_server.kill()
    raw = await run_raw(
        etcd_server,
        lambda _: None,
        lambda _: etcd_server.arestart(),
        through_proxy=False,
        warm_up=False,
    )
    etcd_server.kill()

    breaker = breaker_of("late-etcd")
    tally = Tally()
    async with BreakerClient(
        etcd_server.host, etcd_server.port, breaker=breaker, call_timeout=DEADLINE
    ) as etcd:
        with capture_logs() as logs, anyio.fail_after(HANG):
            for _ in range(CALLS):
                await tally.call(lambda: etcd.get(KEY))
            await etcd_server.arestart()
            recovery = await trial(breaker, lambda: etcd.put(KEY, VALUE))

    assert tally.seen() == {"failed": 2, "rejected": CALLS - 2}
    assert tally.errors[:2] == [aetcd.ConnectionFailedError] * 2
    assert transitions(logs) == [TRIPPED, PROBING, RECOVERED]
    report(
        request,
        "6b. etcd not running when the client starts",
        [raw, Side("breaker", tally, None, recovery)],
    )


FLAP = 1.0
"""Seconds each fault of the flapping test lasts, and each healthy spell."""
WORKERS = 50
"""Tasks calling through each client in the flapping test."""
PACE = 0.1
"""Seconds a task of the flapping test waits between two calls."""
LEGAL = {
    ("closed", "open"),
    ("open", "half_open"),
    ("half_open", "open"),
    ("half_open", "closed"),
}


async def test_flapping_etcd_leaks_no_permit_or_task_and_the_counts_add_up(
    etcd_server: EtcdServer, fault_proxy: FaultProxy, request: pytest.FixtureRequest
) -> None:
    tasks_before = asyncio.all_tasks()
    breaker = CircuitBreaker(
        name="flapping", failure_threshold=3, reset_timeout=0.5, max_requests=2
    )
    tally, raw_tally = Tally(), Tally()
    stop = anyio.Event()
    # Calls that failed (or were rejected) while etcd was healthy throughout.
    healthy = True
    failed_healthy: Counter[str] = Counter()

    async def guarded_worker(etcd: BreakerClient) -> None:
        while not stop.is_set():
            was_healthy = healthy
            outcome = await tally.call(lambda: etcd.get(KEY))
            failed_healthy["breaker"] += outcome != "ok" and was_healthy and healthy
            if outcome == "rejected":
                await breaker.wait_ready()
            else:
                await anyio.sleep(PACE)

    async def raw_worker(raw: aetcd.Client) -> None:
        while not stop.is_set():
            was_healthy = healthy
            outcome = await raw_tally.call(lambda: raw.get(KEY))
            failed_healthy["raw"] += outcome != "ok" and was_healthy and healthy
            await anyio.sleep(PACE)

    async with (
        FaultProxy(etcd_server.host, etcd_server.port) as raw_proxy,
        BreakerClient(
            fault_proxy.host, fault_proxy.port, breaker=breaker, call_timeout=DEADLINE
        ) as etcd,
        aetcd.Client(raw_proxy.host, raw_proxy.port, timeout=DEADLINE) as raw,
    ):
        proxies = (fault_proxy, raw_proxy)
        # Both clients go through the same faults at the same time, each
        # through a proxy of its own so that their requests are told apart.
        schedule: list[tuple[Action, Action]] = [
            (
                lambda: [p.black_hole() for p in proxies],
                lambda: [p.pass_through() for p in proxies],
            ),
            (etcd_server.kill, etcd_server.arestart),
            (
                lambda: [p.reset_connections() for p in proxies],
                lambda: [p.pass_through() for p in proxies],
            ),
            (etcd_server.pause, etcd_server.resume),
            (
                lambda: [p.delay(0.2) for p in proxies],
                lambda: [p.pass_through() for p in proxies],
            ),
        ]
        assert await tally.call(lambda: etcd.put(KEY, VALUE)) == "ok"
        before = [p.requests for p in proxies]

        with capture_logs() as logs, anyio.fail_after(HANG + FLAP * 10):
            async with anyio.create_task_group() as tg:
                for _ in range(WORKERS):
                    tg.start_soon(guarded_worker, etcd)
                    tg.start_soon(raw_worker, raw)
                for fault, heal in schedule:
                    healthy = False
                    await act(fault)
                    await anyio.sleep(FLAP)
                    await act(heal)
                    healthy = True
                    await anyio.sleep(FLAP)
                while breaker.state is not State.CLOSED:
                    await anyio.sleep(POLL)
                stop.set()
        requests = [p.requests - b for p, b in zip(proxies, before, strict=True)]
        metrics = breaker.metrics()
        trials = breaker.trials_in_flight

    with anyio.fail_after(HANG):
        # The proxy of the fixture drops its links once their clients closed.
        gc.collect()
        while leftover := asyncio.all_tasks() - tasks_before:
            await anyio.sleep(POLL)

    changes = transitions(logs)
    path = ["closed", *(to for _, to, _ in changes)]
    assert [start for start, _, _ in changes] == path[:-1]
    assert {(a, b) for a, b, _ in changes} <= LEGAL
    assert changes and changes[-1][1] == "closed"
    assert (metrics.state, trials) == (State.CLOSED, 0)
    assert leftover == set()
    seen = tally.outcomes
    assert (
        metrics.calls
        == seen["ok"] + seen["failed"] + seen["timed_out"] + seen["ignored"]
    )
    assert metrics.successes == seen["ok"]
    assert metrics.rejected == seen["rejected"]
    assert metrics.failures == seen["failed"] + seen["timed_out"]
    assert metrics.ignored == seen["ignored"]
    assert metrics.calls + metrics.rejected == tally.calls
    opened = sum(1 for _, to, _ in changes if to == "open")
    report(
        request,
        f"6c. Flapping etcd: 5 faults of {FLAP:g} s, {WORKERS} tasks a client, "
        "deadline 0.3 s",
        [
            Side(
                "raw aetcd",
                raw_tally,
                requests[1],
                failed_after_heal=failed_healthy["raw"],
            ),
            Side(
                "breaker",
                tally,
                requests[0],
                failed_after_heal=failed_healthy["breaker"],
                extra=f"{len(changes)} state changes, opened {opened} times, "
                f"{etcd.reconnects} reconnects",
            ),
        ],
        "Faults in turn: black hole, kill and restart, connection resets, "
        "SIGSTOP, 0.4 s latency. Failed after heal: calls made and ended while "
        "etcd was healthy. Requests lost with a killed etcd are not counted.",
    )


# -- 7. no busy waiting ------------------------------------------------------

IDLE = 3.0
"""Seconds the idle-service test measures CPU over."""
WAITERS = 5


async def cpu_over(seconds: float) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) over a sleep of ``seconds``."""
    cpu, wall = time.process_time(), time.perf_counter()
    await anyio.sleep(seconds)
    return time.process_time() - cpu, time.perf_counter() - wall


async def test_open_breaker_and_its_waiters_use_no_cpu_while_idle(
    etcd_server: EtcdServer, request: pytest.FixtureRequest
) -> None:
    etcd_server.kill()

    # Without a breaker, tasks that need etcd back can only poll it.
    raw_tally = Tally()
    async with aetcd.Client(
        etcd_server.host, etcd_server.port, timeout=DEADLINE
    ) as raw:
        stop = anyio.Event()

        async def poll() -> None:
            while not stop.is_set():
                await raw_tally.call(lambda: raw.get(KEY))
                await anyio.sleep(0.1)

        async with anyio.create_task_group() as tg:
            for _ in range(WAITERS):
                tg.start_soon(poll)
            raw_cpu, raw_wall = await cpu_over(IDLE / 2)
            stop.set()

    breaker = breaker_of("idle", reset_timeout=60.0)
    tally = Tally()
    woken: list[int] = []

    async def wait(waiter: int) -> None:
        await breaker.wait_ready()
        woken.append(waiter)

    async with BreakerClient(
        etcd_server.host, etcd_server.port, breaker=breaker, call_timeout=DEADLINE
    ) as etcd:
        with capture_logs() as logs, anyio.fail_after(HANG):
            for _ in range(2):
                await tally.call(lambda: etcd.get(KEY))
            async with anyio.create_task_group() as tg:
                for waiter in range(WAITERS):
                    tg.start_soon(wait, waiter)
                cpu, wall = await cpu_over(IDLE)
                tg.cancel_scope.cancel()

    assert tally.seen() == {"failed": 2}
    assert transitions(logs) == [TRIPPED]
    assert woken == []
    assert cpu < 0.3 * wall
    report(
        request,
        f"7. Idle with etcd dead: {WAITERS} tasks waiting for it",
        [
            Side(
                "raw aetcd",
                raw_tally,
                extra=f"polling every 0.1 s: {raw_cpu / raw_wall:.1%} of a CPU",
            ),
            Side(
                "breaker",
                tally,
                extra=f"open, tasks in wait_ready(): {cpu / wall:.1%} of a CPU",
            ),
        ],
    )
