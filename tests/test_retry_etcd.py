"""Retries inside one permit, against a real etcd behind a fault proxy."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import aetcd
import anyio
import pytest

from aetcd_breaker.core import (
    CircuitBreaker,
    FakeClock,
    InvalidSettingError,
    InvalidSettingTypeError,
    State,
)
from aetcd_breaker.etcd import (
    BreakerClient,
    EtcdCallTimeoutError,
    EtcdCircuitOpenError,
    Retry,
)
from aetcd_breaker.testing import EtcdServer, FaultProxy

pytestmark = [pytest.mark.anyio, pytest.mark.etcd]

# Bounds that only turn a hang into a failure; no test relies on them.
HANG = 20.0
QUICK = Retry(attempts=3, base=0.01, jitter=0)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", autouse=True)
async def one_event_loop() -> AsyncIterator[None]:
    """One loop for the module: gRPC may complete a closed call late."""
    yield
    await anyio.sleep(0.1)


def client_of(server: EtcdServer | FaultProxy, **kwargs: Any) -> BreakerClient:
    return BreakerClient(server.host, server.port, **kwargs)


async def through_a_reset(proxy: FaultProxy, call: Any) -> Any:
    """Run ``call`` while its first request is cut off after reaching etcd."""
    sent = proxy.requests
    proxy.delay(0.3)
    task = asyncio.ensure_future(call)
    with anyio.fail_after(HANG):
        await proxy.wait_for_requests(sent + 1)
    proxy.reset_connections()
    proxy.pass_through()
    with anyio.fail_after(HANG):
        return await task


async def test_read_cut_off_by_a_reset_is_retried_inside_one_permit(
    fault_proxy: FaultProxy,
) -> None:
    async with client_of(fault_proxy, retry=QUICK) as etcd:
        await etcd.put(b"/retry/read", b"v")
        before = etcd.breaker.metrics()
        sent = fault_proxy.requests

        got = await through_a_reset(fault_proxy, etcd.get(b"/retry/read"))
        after = etcd.breaker.metrics()

    assert got is not None and got.value == b"v"
    assert fault_proxy.requests - sent == 2
    assert etcd.retries == 1
    assert after.successes - before.successes == 1
    assert after.failures == before.failures == 0


async def test_write_is_not_retried_unless_the_call_asks(
    fault_proxy: FaultProxy,
) -> None:
    async with client_of(fault_proxy, retry=QUICK) as etcd:
        await etcd.get(b"/retry/write")
        sent = fault_proxy.requests

        with pytest.raises(aetcd.ConnectionFailedError):
            await through_a_reset(fault_proxy, etcd.put(b"/retry/write", b"1"))
        once = fault_proxy.requests - sent
        sent = fault_proxy.requests
        await through_a_reset(fault_proxy, etcd.put(b"/retry/write", b"2", retry=True))
        twice = fault_proxy.requests - sent
        got = await etcd.get(b"/retry/write")
        metrics = etcd.breaker.metrics()

    assert (once, twice) == (1, 2)
    assert got is not None and got.value == b"2"
    assert metrics.failures == 1


async def test_retry_false_turns_the_client_policy_off_for_a_call(
    fault_proxy: FaultProxy,
) -> None:
    async with client_of(fault_proxy, retry=QUICK) as etcd:
        await etcd.get(b"/retry/off")
        sent = fault_proxy.requests

        with pytest.raises(aetcd.ConnectionFailedError):
            await through_a_reset(fault_proxy, etcd.get(b"/retry/off", retry=False))

    assert fault_proxy.requests - sent == 1
    assert etcd.retries == 0


async def test_answers_of_etcd_are_never_retried(fault_proxy: FaultProxy) -> None:
    async with client_of(fault_proxy) as etcd:
        await etcd.get(b"/retry/answer")
        sent = fault_proxy.requests

        with pytest.raises(aetcd.InvalidArgumentError):
            await etcd.put(b"", b"v", retry=Retry(attempts=5, base=0.01))
        metrics = etcd.breaker.metrics()

    assert fault_proxy.requests - sent == 1
    assert (metrics.failures, metrics.ignored) == (0, 1)


async def test_retries_end_within_the_call_deadline_with_one_outcome(
    etcd_server: EtcdServer,
) -> None:
    breaker = CircuitBreaker(name="etcd", failure_threshold=1, reset_timeout=60)
    policy = Retry(attempts=1000, base=0.02, factor=1, jitter=0)
    async with client_of(etcd_server, breaker=breaker) as etcd:
        await etcd.put(b"/retry/deadline", b"v")
        etcd_server.kill()

        with anyio.fail_after(HANG), pytest.raises(aetcd.ConnectionFailedError) as info:
            await etcd.get(b"/retry/deadline", retry=policy, call_timeout=0.3)
        metrics = breaker.metrics()

    assert not isinstance(info.value, EtcdCircuitOpenError)
    assert etcd.retries >= 2
    assert (metrics.failures, metrics.successes) == (1, 1)


async def test_retry_ends_with_the_rejection_once_another_call_opened_the_breaker(
    etcd_server: EtcdServer,
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        name="etcd", failure_threshold=1, reset_timeout=60, clock=clock
    )
    errors: list[BaseException] = []
    async with client_of(etcd_server, breaker=breaker) as etcd:
        await etcd.put(b"/retry/open", b"v")
        etcd_server.kill()

        async def retrying() -> None:
            policy = Retry(attempts=5, base=1, jitter=0)
            with pytest.raises(EtcdCircuitOpenError) as info:
                await etcd.get(b"/retry/open", retry=policy)
            errors.append(info.value)

        with anyio.fail_after(HANG):
            async with anyio.create_task_group() as group:
                group.start_soon(retrying)
                # Its deadline and its pause before the retry.
                await clock.wait_for_sleepers(2)
                with pytest.raises(aetcd.ConnectionFailedError):
                    await etcd.get(b"/retry/open")
                clock.advance(1)
        metrics = breaker.metrics()

    assert isinstance(errors[0].__cause__, aetcd.ConnectionFailedError)
    assert etcd.retries == 0
    assert (metrics.failures, metrics.rejected) == (2, 0)


async def test_a_retry_failing_once_another_call_opened_the_breaker_is_rejected_now(
    fault_proxy: FaultProxy,
) -> None:
    # The breaker opens while the retried call's first attempt is on its
    # way; that attempt then fails. It must end with the rejection without
    # first waiting out its pause (the fake clock never moves here).
    clock = FakeClock()
    breaker = CircuitBreaker(
        name="etcd", failure_threshold=1, reset_timeout=60, clock=clock
    )
    async with client_of(fault_proxy, breaker=breaker) as etcd:
        await etcd.put(b"/retry/opened", b"v")
        fault_proxy.black_hole()
        policy = Retry(attempts=5, base=1, jitter=0)
        retried = asyncio.ensure_future(
            etcd.get(b"/retry/opened", retry=policy, call_timeout=100)
        )
        other = asyncio.ensure_future(etcd.get(b"/retry/opened", call_timeout=1))
        with anyio.fail_after(HANG):
            await clock.wait_for_sleepers(2)
            clock.advance(1)
            with pytest.raises(EtcdCallTimeoutError):
                await other
        assert breaker.state is State.OPEN
        fault_proxy.reset_connections()
        with anyio.fail_after(HANG), pytest.raises(EtcdCircuitOpenError) as info:
            await retried
        fault_proxy.pass_through()

    assert isinstance(info.value.__cause__, aetcd.ConnectionFailedError)
    assert etcd.retries == 0


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("attempts", 0),
        ("base", -1),
        ("factor", 0.5),
        ("cap", math.inf),
        ("jitter", 1.5),
    ],
)
def test_bad_retry_setting_is_named_in_the_error(setting: str, value: Any) -> None:
    with pytest.raises(InvalidSettingError) as info:
        Retry(**{setting: value})

    assert info.value.setting == setting


def test_retry_waits_grow_to_the_cap_within_the_jitter() -> None:
    policy = Retry(attempts=9, base=0.1, factor=2, cap=0.5, jitter=0.5)

    waits = [policy.delay(n) for n in range(1, 6)]
    plain = [Retry(base=0.1, factor=2, cap=0.5, jitter=0).delay(n) for n in (1, 2, 5)]

    assert plain == [0.1, 0.2, 0.5]
    assert 0.05 <= waits[0] <= 0.1 and 0.25 <= waits[4] <= 0.5


async def test_bad_retry_option_is_refused(fault_proxy: FaultProxy) -> None:
    with pytest.raises(InvalidSettingTypeError, match="retry"):
        client_of(fault_proxy, retry=True)
    async with client_of(fault_proxy) as etcd:
        with pytest.raises(InvalidSettingTypeError, match="retry"):
            await etcd.get(b"k", retry=3)  # type: ignore[arg-type]


def test_retry_waits_past_float_range_stay_at_the_cap() -> None:
    # factor ** (n - 1) overflows a float long before attempts runs out.
    steep = Retry(attempts=5, base=0.001, factor=1e200, cap=0.01, jitter=0)
    flat = Retry(attempts=100_000, base=0, jitter=0)

    assert [steep.delay(n) for n in (1, 2, 3, 4)] == [0.001, 0.01, 0.01, 0.01]
    assert flat.delay(2_000) == 0.0


async def quiet_for(seconds: float) -> bool:
    """Whether the task got through ``seconds`` without a stray cancellation."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        return False
    return True


@pytest.mark.parametrize(
    "policy",
    [
        Retry(attempts=5, base=0.001, factor=1e200, cap=0.01, jitter=0),
        Retry(attempts=100_000, base=0, jitter=0),
    ],
    ids=["steep", "many"],
)
async def test_retries_past_float_range_end_with_one_outcome_and_deadline(
    etcd_server: EtcdServer, policy: Retry
) -> None:
    breaker = CircuitBreaker(name="etcd", failure_threshold=None)
    async with client_of(etcd_server, breaker=breaker) as etcd:
        await etcd.put(b"/retry/overflow", b"v")
        etcd_server.kill()

        with anyio.fail_after(HANG), pytest.raises(aetcd.ConnectionFailedError):
            await etcd.get(b"/retry/overflow", retry=policy, call_timeout=0.5)
        metrics = breaker.metrics()
        # The call's deadline was stopped with it: it cancels nothing later.
        quiet = await quiet_for(0.7)

    assert etcd.retries >= 2
    assert (metrics.calls, metrics.failures) == (2, 1)
    assert quiet


class Fatal(BaseException):
    """Neither an Exception nor a cancellation: a KeyboardInterrupt's kind."""


class FatalRange:
    """Stands in for aetcd's key-value stub; every read raises :class:`Fatal`.

    Real etcd cannot make aetcd raise a BaseException on demand.
    """

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def Range(self, *args: Any, **kwargs: Any) -> Any:
        raise Fatal


async def refused() -> None:
    raise ConnectionError("refused")


async def test_retried_trial_ending_in_a_base_exception_gives_its_permit_back(
    etcd_server: EtcdServer,
) -> None:
    breaker = CircuitBreaker(name="etcd", failure_threshold=1, reset_timeout=0.05)
    async with client_of(etcd_server, breaker=breaker, call_timeout=0.5) as etcd:
        await etcd.put(b"/retry/fatal", b"v")
        with pytest.raises(ConnectionError):
            await breaker.call(refused)
        await asyncio.sleep(0.1)
        inner = etcd._session.channels.current.client
        real = inner.kvstub
        inner.kvstub = FatalRange(real)
        try:
            with pytest.raises(Fatal):
                await etcd.get(b"/retry/fatal", retry=QUICK)
        finally:
            inner.kvstub = real
        in_flight = breaker.trials_in_flight
        quiet = await quiet_for(0.7)
        with anyio.fail_after(HANG):
            got = await etcd.get(b"/retry/fatal")

    assert in_flight == 0
    assert quiet
    assert got is not None and got.value == b"v"
    assert breaker.state.value == "closed"
