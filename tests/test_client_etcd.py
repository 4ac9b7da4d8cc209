"""BreakerClient against a real etcd: healthy, killed, paused, restarted, closed."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aetcd
import anyio
import grpc  # type: ignore[import-untyped]
import pytest
import structlog

from aetcd_breaker.core import CircuitBreaker, FakeClock, State
from aetcd_breaker.etcd import (
    DEFAULT_CALL_TIMEOUT,
    SLOW_CALL_TIMEOUT,
    BreakerClient,
    EtcdCallTimeoutError,
    EtcdCircuitOpenError,
    Lease,
    Member,
    Retry,
)
from aetcd_breaker.testing import EtcdServer

pytestmark = [pytest.mark.anyio, pytest.mark.etcd]

# Bounds that only turn a hang into a failure; no test relies on them.
HANG = 20.0


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", autouse=True)
async def one_event_loop() -> AsyncIterator[None]:
    """Run the module's tests on one event loop.

    gRPC hands the completions of a closed channel's calls to the loop they
    started on, sometimes after the call returned; once that loop is closed,
    they surface as errors in the next test's loop.
    """
    yield
    # Let late completions of the last test reach this loop while it runs.
    await anyio.sleep(0.1)


def client_of(server: EtcdServer, **kwargs: Any) -> BreakerClient:
    return BreakerClient(server.host, server.port, **kwargs)


def quick_breaker(**kwargs: Any) -> CircuitBreaker:
    return CircuitBreaker(name="etcd", failure_threshold=2, reset_timeout=0.2, **kwargs)


async def until_closed(
    breaker: CircuitBreaker, call: Callable[[], Awaitable[Any]]
) -> None:
    """Make calls as soon as the breaker admits them until it closes."""
    while breaker.state is not State.CLOSED:
        await breaker.wait_ready()
        with contextlib.suppress(aetcd.ClientError):
            await call()


async def test_key_value_and_transaction_calls_pass_through(
    etcd_server_session: EtcdServer,
) -> None:
    async with client_of(etcd_server_session) as etcd:
        await etcd.put(b"/kv/a", b"1")
        await etcd.put(b"/kv/b", b"2")
        got = await etcd.get(b"/kv/a")
        prefix = await etcd.get_prefix(b"/kv/")
        ranged = await etcd.get_range(b"/kv/a", b"/kv/b")
        everything = await etcd.get_all()
        replaced = await etcd.replace(b"/kv/a", b"1", b"3")
        not_replaced = await etcd.replace(b"/kv/a", b"1", b"4")
        txn = etcd.transactions
        succeeded, responses = await etcd.transaction(
            compare=[txn.value(b"/kv/a") == b"3"],
            success=[txn.get(b"/kv/a")],
            failure=[],
        )
        deleted = await etcd.delete(b"/kv/a", prev_kv=True)
        await etcd.put(b"/kv/c", b"5")
        by_range = await etcd.delete_range(b"/kv/c", b"/kv/d")
        by_prefix = await etcd.delete_prefix(b"/kv/")

        assert got is not None and got.value == b"1"
        assert [kv.value for kv in prefix] == [b"1", b"2"]
        assert [kv.value for kv in ranged] == [b"1"]
        assert len(everything) >= 2
        assert (replaced, not_replaced) == (True, False)
        assert succeeded and responses[0][0][0] == b"3"
        assert deleted is not None and deleted.prev_kv.value == b"3"
        assert (by_range.deleted, by_prefix.deleted) == (1, 1)
        assert await etcd.get(b"/kv/a") is None
        metrics = etcd.breaker.metrics()
        assert (metrics.successes, metrics.failures) == (14, 0)


async def test_lease_and_its_methods_go_through_the_client(
    etcd_server_session: EtcdServer,
) -> None:
    async with client_of(etcd_server_session) as etcd:
        lease = await etcd.lease(30)
        await etcd.put(b"/lease/key", b"v", lease=lease)
        before = etcd.breaker.metrics().successes

        remaining = await lease.remaining_ttl()
        granted = await lease.granted_ttl()
        keys = await lease.keys()
        refreshed = await lease.refresh()
        info = await etcd.get_lease_info(lease.id, keys=False)
        await lease.revoke()

        assert isinstance(lease, Lease)
        assert 0 < remaining <= 30 and granted == 30
        assert keys == [b"/lease/key"]
        assert refreshed.TTL == 30 and info.TTL > 0
        assert await lease.remaining_ttl() == -1
        assert await etcd.get(b"/lease/key") is None
        assert etcd.breaker.metrics().successes == before + 8


async def test_cluster_and_maintenance_calls_pass_through(
    etcd_server: EtcdServer,
) -> None:
    async with client_of(etcd_server) as etcd:
        put = await etcd.put(b"/m/key", b"v")
        status = await etcd.status()
        members = [member async for member in etcd.members()]
        member = members[0]
        await etcd.update_member(member.id, member.peer_urls)
        raised = await etcd.create_alarm(member.id)
        alarms = [alarm async for alarm in etcd.list_alarms()]
        member_alarms = await member.active_alarms()
        await etcd.disarm_alarm(member.id)
        left = [alarm async for alarm in etcd.list_alarms()]
        digest = await etcd.hash()
        await etcd.compact(put.header.revision, physical=True)
        await etcd.defragment()
        snapshot = io.BytesIO()
        await etcd.snapshot(snapshot)

        assert isinstance(status.leader, Member) and status.leader.id == member.id
        assert all(isinstance(m, Member) for m in members) and len(members) == 1
        assert [a.member_id for a in raised] == [member.id]
        assert [a.member_id for a in alarms] == [member.id]
        assert [a.member_id for a in member_alarms] == [member.id]
        assert left == []
        assert isinstance(digest, int)
        assert len(snapshot.getvalue()) > 0
        assert etcd.breaker.metrics().failures == 0


async def test_watches_deliver_events(etcd_server_session: EtcdServer) -> None:
    async with client_of(etcd_server_session) as etcd:
        watch = await etcd.watch(b"/w/key")
        by_prefix = await etcd.watch_prefix(b"/w/")
        # The one-shot watches start at the write's revision, so they see it
        # even when it lands before etcd has created them.
        start = (await etcd.put(b"/w-marker", b"")).header.revision + 1
        found: list[aetcd.Event] = []

        async def wait(waiter: Awaitable[aetcd.Event]) -> None:
            found.append(await waiter)

        with anyio.fail_after(HANG):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait, etcd.watch_once(b"/w/key", start_revision=start))
                tg.start_soon(
                    wait, etcd.watch_prefix_once(b"/w/", start_revision=start)
                )
                await etcd.put(b"/w/key", b"1")
            event = await anext(aiter(watch))
            prefix_event = await anext(aiter(by_prefix))
        await watch.cancel()
        await by_prefix.cancel()

        values = [e.kv.value for e in (event, prefix_event, *found)]
        assert values == [b"1"] * 4
        assert watch.watch_id is not None


async def test_lock_is_acquired_and_released_through_the_client(
    etcd_server_session: EtcdServer,
) -> None:
    async with client_of(etcd_server_session) as etcd:
        with anyio.fail_after(HANG):
            async with etcd.lock(b"/lock/a", ttl=10) as lock:
                held = await lock.is_acquired()
                # Contention: the second lock waits for the holder, which is
                # not a call to etcd, then gives up without tripping anything.
                other = await etcd.lock(b"/lock/a", ttl=10).acquire(timeout=0.2)
            released = await lock.is_acquired()

        assert (held, other, released) == (True, False, False)
        assert etcd.breaker.metrics().failures == 0


async def test_killed_etcd_opens_the_breaker_which_rejects_without_calling(
    etcd_server: EtcdServer,
) -> None:
    breaker = CircuitBreaker(name="etcd", failure_threshold=3, reset_timeout=60)
    async with client_of(etcd_server, breaker=breaker) as etcd:
        await etcd.put(b"k", b"v")
        etcd_server.kill()

        errors = []
        for _ in range(3):
            with pytest.raises(aetcd.ConnectionFailedError) as info:
                await etcd.get(b"k")
            errors.append(info.value)
        opened = breaker.metrics()
        with pytest.raises(EtcdCircuitOpenError) as rejected:
            await etcd.get(b"k")
        after = breaker.metrics()

        assert not any(isinstance(e, EtcdCircuitOpenError) for e in errors)
        assert opened.state is State.OPEN and opened.failures == 3
        assert (after.rejected, after.failures) == (1, 3)
        assert rejected.value.breaker == "etcd"
        assert rejected.value.retry_after is not None


async def test_restarted_etcd_closes_the_breaker_through_a_trial(
    etcd_server: EtcdServer,
) -> None:
    breaker = quick_breaker()
    async with client_of(etcd_server, breaker=breaker) as etcd:
        await etcd.put(b"k", b"v")
        etcd_server.kill()
        for _ in range(2):
            with pytest.raises(aetcd.ConnectionFailedError):
                await etcd.get(b"k")
        assert breaker.state is State.OPEN

        await etcd_server.arestart()
        with anyio.fail_after(HANG):
            await until_closed(breaker, lambda: etcd.get(b"k"))
        got = await etcd.get(b"k")

        assert got is not None and got.value == b"v"


async def test_paused_etcd_calls_end_at_their_deadline_and_count(
    etcd_server: EtcdServer,
) -> None:
    breaker = quick_breaker()
    async with client_of(etcd_server, breaker=breaker, call_timeout=0.2) as etcd:
        await etcd.put(b"k", b"v")
        etcd_server.pause()

        errors = []
        with anyio.fail_after(HANG):
            for _ in range(2):
                with pytest.raises(EtcdCallTimeoutError) as info:
                    await etcd.get(b"k")
                errors.append(info.value)
        opened = breaker.metrics()
        etcd_server.resume()
        with anyio.fail_after(HANG):
            await until_closed(breaker, lambda: etcd.get(b"k"))

        assert all(isinstance(e, aetcd.ConnectionTimeoutError) for e in errors)
        assert [e.timeout for e in errors] == [0.2, 0.2]
        assert opened.state is State.OPEN and opened.failures == 2


async def test_caller_cancellation_is_not_counted_and_propagates(
    etcd_server: EtcdServer,
) -> None:
    async with client_of(etcd_server, call_timeout=30) as etcd:
        await etcd.put(b"k", b"v")
        etcd_server.pause()

        with anyio.fail_after(HANG):
            with anyio.move_on_after(0.1) as scope:
                await etcd.get(b"k")
            task = asyncio.ensure_future(etcd.get(b"k"))
            await anyio.wait_all_tasks_blocked()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        metrics = etcd.breaker.metrics()
        etcd_server.resume()

        assert scope.cancelled_caught
        assert (metrics.successes, metrics.failures, metrics.ignored) == (1, 0, 0)
        assert metrics.state is State.CLOSED


async def test_answers_of_etcd_are_not_counted(
    etcd_server_session: EtcdServer,
) -> None:
    breaker = CircuitBreaker(name="etcd", failure_threshold=1)
    async with client_of(etcd_server_session, breaker=breaker) as etcd:
        errors = []
        for call in (
            etcd.revoke_lease(0x7FFF_0000_1234),
            etcd.put(b"/answers/k", b"v", lease=0x7FFF_0000_1234),
            etcd.remove_member(0x7FFF_0000_1234),
        ):
            with pytest.raises(aetcd.ClientError) as info:
                await call
            errors.append(info.value)

        codes = [e.__cause__.code() for e in errors]
        assert codes == [grpc.StatusCode.NOT_FOUND] * 3
        metrics = breaker.metrics()
        assert (metrics.state, metrics.failures, metrics.ignored) == (
            State.CLOSED,
            0,
            3,
        )


async def test_a_broken_classifier_with_a_broken_log_pipeline_still_ends_the_trial(
    etcd_server_session: EtcdServer,
) -> None:
    # As for breaker.call: the classifier's log entry failing must neither
    # replace the call's own error nor leave the trial holding its permit.
    def broken_processor(*_: object) -> dict[str, object]:
        raise BrokenPipeError("the log sink went away")

    def broken_classifier(exc: BaseException) -> bool:
        raise ZeroDivisionError("classifier broke")

    clock = FakeClock()
    breaker = CircuitBreaker(
        name="etcd", reset_timeout=1, initial_state="open", clock=clock
    )
    clock.advance(1)
    async with client_of(
        etcd_server_session, breaker=breaker, is_failure=broken_classifier
    ) as etcd:
        assert breaker.state is State.HALF_OPEN
        structlog.configure(processors=[broken_processor])
        try:
            with pytest.raises(aetcd.ClientError):
                await etcd.revoke_lease(0x7FFF_0000_4321)
        finally:
            structlog.reset_defaults()

        # A classifier that breaks counts the error as a failure.
        assert breaker.state is State.OPEN
        assert breaker.metrics().failures == 1


class _AnswerThenDeadline:
    """A KV stub whose Range gets etcd's real answer and hands it over in the
    same loop step as the call's deadline fires, keeping the answer over the
    cancellation: a race real etcd cannot time on demand."""

    def __init__(self, stub: Any, clock: FakeClock) -> None:
        self._stub = stub
        self._clock = clock

    async def Range(self, *args: Any, **kwargs: Any) -> Any:
        response = await self._stub.Range(*args, **kwargs)
        answered = asyncio.get_running_loop().create_future()

        def answer_then_expire() -> None:
            answered.set_result(None)
            self._clock.advance(1000)

        asyncio.get_running_loop().call_soon(answer_then_expire)
        with contextlib.suppress(asyncio.CancelledError):
            await answered
        return response


async def test_a_deadline_firing_as_the_call_returns_leaves_no_cancel_behind(
    etcd_server_session: EtcdServer,
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(name="etcd", clock=clock)
    inner = aetcd.Client(etcd_server_session.host, etcd_server_session.port)
    async with BreakerClient.wrap(inner, breaker=breaker, close_client=True) as etcd:
        await etcd.put(b"/late-deadline", b"v")
        inner.kvstub = _AnswerThenDeadline(inner.kvstub, clock)

        got = await etcd.get(b"/late-deadline", call_timeout=1)

        # The answer came: the caller gets it, and the deadline's request to
        # cancel the task is taken back, not delivered at its next await.
        assert got is not None and got.value == b"v"
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0
        await asyncio.sleep(0)
        assert breaker.metrics().successes == 2
        assert breaker.metrics().failures == 0


async def test_call_timeout_of_a_call_overrides_the_client(
    etcd_server: EtcdServer,
) -> None:
    async with client_of(etcd_server, call_timeout=30) as etcd:
        await etcd.put(b"k", b"v")
        etcd_server.pause()

        with anyio.fail_after(HANG), pytest.raises(EtcdCallTimeoutError) as info:
            await etcd.get(b"k", call_timeout=0.1)
        etcd_server.resume()

        assert info.value.timeout == 0.1


async def deadline_of(clock: FakeClock, call: Awaitable[Any]) -> float:
    """The deadline a call to a paused etcd ends at, read from its error."""
    found: list[float] = []

    async def run() -> None:
        with pytest.raises(EtcdCallTimeoutError) as info:
            await call
        found.append(info.value.timeout)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        clock.advance(1000)
    return found[0]


@pytest.mark.parametrize(
    ("client_timeout", "breaker_timeout", "expected"),
    [
        (None, None, (DEFAULT_CALL_TIMEOUT, SLOW_CALL_TIMEOUT)),
        (None, 3.0, (3.0, SLOW_CALL_TIMEOUT)),
        (2.0, 3.0, (2.0, 2.0)),
    ],
)
async def test_deadline_comes_from_the_client_then_the_breaker_then_defaults(
    etcd_server: EtcdServer,
    client_timeout: float | None,
    breaker_timeout: float | None,
    expected: tuple[float, float],
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(name="etcd", clock=clock, call_timeout=breaker_timeout)
    etcd = client_of(etcd_server, breaker=breaker, call_timeout=client_timeout)
    async with etcd:
        await etcd.put(b"k", b"v")
        etcd_server.pause()

        with anyio.fail_after(HANG):
            ordinary = await deadline_of(clock, etcd.get(b"k"))
            slow = [
                await deadline_of(clock, etcd.snapshot(io.BytesIO())),
                await deadline_of(clock, etcd.defragment()),
                await deadline_of(clock, etcd.compact(1, physical=True)),
            ]
            not_slow = await deadline_of(clock, etcd.compact(1))
        etcd_server.resume()

    assert (ordinary, not_slow) == (expected[0], expected[0])
    assert slow == [expected[1]] * 3


async def test_waiting_for_events_is_not_under_the_call_deadline(
    etcd_server_session: EtcdServer,
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(name="etcd", clock=clock)
    async with client_of(etcd_server_session, breaker=breaker, call_timeout=1) as etcd:
        watch = await etcd.watch(b"/idle/key")
        found: list[aetcd.Event] = []

        async def wait_once() -> None:
            found.append(await etcd.watch_once(b"/idle/key"))

        with anyio.fail_after(HANG):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_once)
                # Once its watch is created, watch_once only waits for an event.
                while breaker.metrics().successes < 2:
                    await anyio.sleep(0.001)
                # Far past every call deadline: an idle watch and a wait for
                # an event must both survive it.
                clock.advance(100)
                await anyio.wait_all_tasks_blocked()
                await etcd.put(b"/idle/key", b"late")
            streamed = await anext(aiter(watch))
            with pytest.raises(aetcd.WatchTimeoutError) as info:
                await etcd.watch_once(b"/idle/none", timeout=0.1)

        assert found[0].kv.value == streamed.kv.value == b"late"
        assert type(info.value) is aetcd.WatchTimeoutError
        assert etcd.breaker.metrics().failures == 0


async def test_leaving_the_session_ends_a_running_watch(
    etcd_server_session: EtcdServer,
) -> None:
    ended = anyio.Event()

    async def consume(watch: Any) -> None:
        async for _ in watch:
            pass
        ended.set()

    with anyio.fail_after(HANG):
        async with anyio.create_task_group() as tg:
            etcd = client_of(etcd_server_session)
            async with etcd:
                watch = await etcd.watch(b"/session/key")
                tg.start_soon(consume, watch)
                await anyio.wait_all_tasks_blocked()
        await watch.cancel()

    assert ended.is_set()


async def test_closing_cuts_off_calls_and_watch_creation_without_counting(
    etcd_server: EtcdServer,
) -> None:
    etcd = client_of(etcd_server, call_timeout=30)
    await etcd.put(b"k", b"v")
    errors: list[BaseException] = []

    async def expect_closed(call: Awaitable[Any]) -> None:
        with pytest.raises(aetcd.ConnectionFailedError) as info:
            await call
        errors.append(info.value)

    etcd_server.pause()
    with anyio.fail_after(HANG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(expect_closed, etcd.get(b"k"))
            tg.start_soon(expect_closed, etcd.watch(b"w"))
            await anyio.wait_all_tasks_blocked()
            await etcd.close()
    etcd_server.resume()

    assert len(errors) == 2
    assert all("closed" in str(e) for e in errors)
    metrics = etcd.breaker.metrics()
    assert (metrics.failures, metrics.ignored) == (0, 0)


async def test_call_cut_off_by_someone_closing_the_channel_counts(
    etcd_server: EtcdServer,
) -> None:
    raw = aetcd.Client(etcd_server.host, etcd_server.port)
    etcd = BreakerClient.wrap(raw, call_timeout=30)
    await etcd.put(b"k", b"v")
    etcd_server.pause()

    with anyio.fail_after(HANG):
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                with pytest.raises(aetcd.ConnectionFailedError, match="cut off"):
                    await etcd.get(b"k")

            tg.start_soon(call)
            await anyio.wait_all_tasks_blocked()
            await raw.close()
    etcd_server.resume()

    assert etcd.breaker.metrics().failures == 1


async def test_wrapped_client_is_closed_only_on_request(
    etcd_server_session: EtcdServer,
) -> None:
    raw = aetcd.Client(etcd_server_session.host, etcd_server_session.port)
    async with BreakerClient.wrap(raw, call_timeout=2) as etcd:
        await etcd.put(b"/wrap/k", b"1")
        etcd.breaker.force_open()
        with pytest.raises(EtcdCircuitOpenError):
            await etcd.get(b"/wrap/k")
    # Not closed (aetcd would reconnect on the next call, hiding a close that
    # cut off the owner's own calls running on the channel).
    assert raw.channel is not None
    still_open = await raw.get(b"/wrap/k")
    async with BreakerClient.wrap(raw, close_client=True) as etcd:
        await etcd.get(b"/wrap/k")

    assert still_open is not None and still_open.value == b"1"
    assert raw.channel is None


@pytest.mark.parametrize("retry", [None, Retry(attempts=2)], ids=["plain", "retried"])
async def test_after_an_outage_a_trial_moves_to_a_fresh_channel(
    etcd_server: EtcdServer, retry: Retry | None
) -> None:
    # Retried reads take their own path through the breaker: their trials
    # must move to a fresh channel too.
    breaker = quick_breaker()
    etcd = client_of(etcd_server, breaker=breaker, call_timeout=1, retry=retry)
    async with etcd:
        await etcd.put(b"k", b"v")
        first = etcd._session.channels.current.client
        etcd_server.kill()
        with anyio.fail_after(HANG + 10):
            # Long enough for gRPC's reconnect backoff to grow past a second.
            end = anyio.current_time() + 6
            while anyio.current_time() < end:
                with contextlib.suppress(aetcd.ClientError):
                    await etcd.get(b"k")
                await anyio.sleep(0.05)
            await etcd_server.arestart()
            failed_before = breaker.metrics().failures
            await until_closed(breaker, lambda: etcd.get(b"k"))
        failed_after_restart = breaker.metrics().failures - failed_before
        got = await etcd.get(b"k")

        assert failed_after_restart <= 2
        assert etcd.reconnects >= 1
        assert got is not None and got.value == b"v"
        # The client left behind is closed once no call runs on it (in the
        # background), not kept open until the BreakerClient closes.
        with anyio.fail_after(HANG):
            while first.channel is not None:
                await anyio.sleep(0.01)
