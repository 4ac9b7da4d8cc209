"""BreakerClient's calls and deadlines across event loops, against a real etcd.

A guarded call finds its task in the loop of the previous call instead of
asking asyncio for the running loop (which costs a system call), so these
tests pin both halves: no lookup once bound, and a correct rebinding when the
client is used from a new loop.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from aetcd_breaker.core import CircuitBreaker, FakeClock, State
from aetcd_breaker.etcd import BreakerClient, EtcdCallTimeoutError, _session
from aetcd_breaker.testing import EtcdServer

pytestmark = pytest.mark.etcd

HANG = 20.0


class CountingLookup:
    """Stands in for asyncio's running-loop lookup and counts its uses."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> asyncio.AbstractEventLoop | None:
        self.calls += 1
        return asyncio.get_running_loop()


def test_calls_after_the_first_in_a_loop_look_up_no_loop(
    etcd_server_session: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookup = CountingLookup()
    monkeypatch.setattr(_session, "_running_loop", lookup)
    server = etcd_server_session

    async def main() -> int:
        async with BreakerClient(server.host, server.port) as etcd:
            await etcd.put(b"/loops/key", b"v")
            first = lookup.calls
            for _ in range(20):
                assert (await etcd.get(b"/loops/key")) is not None
            return lookup.calls - first

    assert asyncio.run(main()) == 0
    assert lookup.calls == 1


def test_a_client_used_from_a_new_loop_rebinds_its_deadlines(
    etcd_server: EtcdServer,
) -> None:
    etcd = BreakerClient(
        etcd_server.host,
        etcd_server.port,
        breaker=CircuitBreaker(name="etcd", failure_threshold=10),
        call_timeout=0.2,
    )

    async def healthy() -> None:
        async with asyncio.timeout(HANG):
            await etcd.put(b"/loops/key", b"v")
        # aetcd's channel belongs to this loop: the next loop needs a new one.
        await etcd.close()

    async def paused() -> EtcdCallTimeoutError:
        # Closed on the last loop: a closed client opens again only when asked.
        await etcd.connect()
        etcd_server.pause()
        try:
            async with asyncio.timeout(HANG):
                with pytest.raises(EtcdCallTimeoutError) as info:
                    await etcd.get(b"/loops/key")
        finally:
            etcd_server.resume()
        async with asyncio.timeout(HANG):
            found = await etcd.get(b"/loops/key")
        await etcd.close()
        assert found is not None and found.value == b"v"
        return info.value

    asyncio.run(healthy())
    error = asyncio.run(paused())

    assert error.timeout == 0.2
    metrics = etcd.breaker.metrics()
    assert (metrics.successes, metrics.failures) == (2, 1)
    assert metrics.state is State.CLOSED


def test_a_fake_clock_deadline_fires_only_when_the_clock_reaches_it(
    etcd_server: EtcdServer,
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(name="etcd", clock=clock)
    etcd = BreakerClient(
        etcd_server.host, etcd_server.port, breaker=breaker, call_timeout=3.0
    )

    async def main() -> tuple[bool, int, int]:
        async with etcd:
            await etcd.put(b"/loops/key", b"v")
            # A call that ended leaves no timer on the clock.
            after_success = clock.sleepers
            etcd_server.pause()
            try:
                call = asyncio.ensure_future(etcd.get(b"/loops/key"))
                async with asyncio.timeout(HANG):
                    await clock.wait_for_sleepers(1)
                clock.advance(2.9)
                await asyncio.sleep(0.05)
                early = call.done()
                clock.advance(0.1)
                async with asyncio.timeout(HANG):
                    with pytest.raises(EtcdCallTimeoutError):
                        await call
            finally:
                etcd_server.resume()
            return early, after_success, clock.sleepers

    early, after_success, left = asyncio.run(main())

    assert not early
    assert (after_success, left) == (0, 0)
    assert breaker.metrics().failures == 1


def test_a_trial_with_a_deadline_beyond_float_range_closes_the_circuit(
    etcd_server: EtcdServer,
) -> None:
    breaker = CircuitBreaker(name="etcd", failure_threshold=1, reset_timeout=0.1)
    etcd = BreakerClient(
        etcd_server.host, etcd_server.port, breaker=breaker, call_timeout=0.2
    )

    async def main() -> tuple[State, State, bytes | None]:
        async with etcd:
            await etcd.put(b"/loops/key", b"v")
            etcd_server.pause()
            try:
                with pytest.raises(EtcdCallTimeoutError):
                    await etcd.get(b"/loops/key")
            finally:
                etcd_server.resume()
            await asyncio.sleep(0.2)
            before = breaker.state
            # Finite, so valid; a moment 1e308 seconds ahead is not a float.
            async with asyncio.timeout(HANG):
                found = await etcd.get(b"/loops/key", call_timeout=1e308)
            return before, breaker.state, None if found is None else found.value

    assert asyncio.run(main()) == (State.HALF_OPEN, State.CLOSED, b"v")


def test_a_call_from_another_thread_times_out_its_own_task_only(
    etcd_server_session: EtcdServer,
) -> None:
    # Not a supported use (aetcd's channel belongs to one loop), but a
    # deadline must never cancel a task of another thread's loop.
    server = etcd_server_session
    etcd = BreakerClient(server.host, server.port, call_timeout=HANG)
    session = etcd._session
    bound = threading.Event()
    done = threading.Event()
    other: dict[str, str] = {}

    async def quick(inner: object) -> str:
        return "quick"

    async def hangs(inner: object) -> str:
        await asyncio.sleep(HANG)
        return "late"

    async def busy_elsewhere() -> None:
        # Binds the session to this thread's loop, then stays that loop's
        # current task (blocking it) while the other thread makes its call.
        await session.call(quick, None)
        bound.set()
        done.wait(HANG)
        try:
            await asyncio.sleep(0.1)
            other["task"] = "finished"
        except asyncio.CancelledError:
            other["task"] = "cancelled"

    thread = threading.Thread(target=asyncio.run, args=(busy_elsewhere(),))
    thread.start()
    try:
        assert bound.wait(HANG)

        async def here() -> EtcdCallTimeoutError:
            with pytest.raises(EtcdCallTimeoutError) as info:
                async with asyncio.timeout(2):
                    await session.call(hangs, 0.05)
            return info.value

        error = asyncio.run(here())
    finally:
        done.set()
        thread.join(HANG)

    assert error.timeout == 0.05
    assert other == {"task": "finished"}
