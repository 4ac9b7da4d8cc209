"""Our lock against a real etcd: it holds before its block runs, and leaks nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aetcd
import anyio
import pytest
from etcd_helpers import lease_ids, move_to_fresh_channel, slow_keeper_stop

from aetcd_breaker.core import CircuitBreaker
from aetcd_breaker.etcd import (
    EXPIRED,
    GONE,
    BreakerClient,
    EtcdCircuitOpenError,
    LeaseLostError,
    Lock,
    LockNotAcquiredError,
)
from aetcd_breaker.testing import EtcdServer, FaultProxy

pytestmark = [pytest.mark.anyio, pytest.mark.etcd]

# Bounds that only turn a hang into a failure; no test relies on them.
HANG = 20.0


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", autouse=True)
async def one_event_loop() -> AsyncIterator[None]:
    """One loop for the module: gRPC may complete a closed call late."""
    yield
    await anyio.sleep(0.1)


@pytest.fixture
async def raw(etcd_server_session: EtcdServer) -> AsyncIterator[aetcd.Client]:
    """A plain aetcd client: another party, outside any breaker."""
    server = etcd_server_session
    client = aetcd.Client(server.host, server.port)
    try:
        yield client
    finally:
        await client.close()


def client_of(server: EtcdServer | FaultProxy, **kwargs: Any) -> BreakerClient:
    return BreakerClient(server.host, server.port, **kwargs)


async def leases_back_to(raw: aetcd.Client, before: set[int]) -> set[int]:
    """The leases once none but those of ``before`` is left.

    A lock whose acquisition ended revokes its lease in the background;
    with a TTL longer than HANG, only that revoke can make the lease go.
    """
    with anyio.fail_after(HANG):
        while not (now := await lease_ids(raw)) <= before:
            await anyio.sleep(0.05)
    return now


async def lease_gone(raw: aetcd.Client, lease_id: int) -> bool:
    """Whether the lease went within HANG (see :func:`leases_back_to`)."""
    with anyio.move_on_after(HANG):
        while lease_id in await lease_ids(raw):
            await anyio.sleep(0.05)
        return True
    return False


async def test_second_contender_waits_for_the_holder_without_counting_it(
    etcd_server_session: EtcdServer, raw: aetcd.Client
) -> None:
    server = etcd_server_session
    order: list[str] = []
    async with (
        client_of(server) as first,
        FaultProxy(server.host, server.port) as proxy,
        client_of(proxy) as second,
    ):
        async with first.lock(b"/lock/two", ttl=10) as held:
            waiter = second.lock(b"/lock/two", ttl=10, timeout=HANG)

            async def contend() -> None:
                async with waiter:
                    order.append("second holds")
                    assert await waiter.is_acquired()

            async with anyio.create_task_group() as group:
                group.start_soon(contend)
                # A lease, a transaction and a watch: the waiter now waits.
                await proxy.wait_for_requests(3)
                assert await held.is_acquired()
                order.append("first releases")
                await held.release()
        metrics = second.breaker.metrics()

    assert order == ["first releases", "second holds"]
    assert (metrics.failures, metrics.rejected) == (0, 0)
    assert not await raw.get(b"/lock/two")


async def test_acquire_that_times_out_leaks_no_lease(
    etcd_server_session: EtcdServer, raw: aetcd.Client
) -> None:
    async with client_of(etcd_server_session) as etcd:
        async with etcd.lock(b"/lock/timeout", ttl=10) as held:
            assert held.lease is not None
            held_id = held.lease.id
            before = await lease_ids(raw)
            contender = etcd.lock(b"/lock/timeout", ttl=60, timeout=0.3)
            acquired = await contender.acquire(timeout=0.3)
            entered = False
            with pytest.raises(LockNotAcquiredError) as info:
                async with contender:
                    entered = True
            during = await leases_back_to(raw, before)
        after = await lease_ids(raw)
        failures = etcd.breaker.metrics().failures

    # Leases of other tests may expire meanwhile; none may appear.
    assert during <= before and after <= before
    assert held_id in before and held_id not in after
    assert (acquired, entered) == (False, False)
    assert (info.value.key, info.value.timeout) == (b"/lock/timeout", 0.3)
    assert failures == 0


async def test_block_never_runs_when_etcd_is_down(etcd_server: EtcdServer) -> None:
    breaker = CircuitBreaker(name="etcd", failure_threshold=3, reset_timeout=60)
    entered = []
    async with client_of(etcd_server, breaker=breaker) as etcd:
        await etcd.put(b"/lock/down-probe", b"v")
        etcd_server.kill()
        errors = []
        for _ in range(3):
            with pytest.raises(aetcd.ClientError) as info:
                async with etcd.lock(b"/lock/down", ttl=5):
                    entered.append(True)
            errors.append(info.value)

    assert entered == []
    assert isinstance(errors[0], aetcd.ConnectionFailedError)
    assert isinstance(errors[-1], EtcdCircuitOpenError)


async def test_a_waiter_whose_holder_watch_fails_with_etcd_counts_and_raises(
    etcd_server: EtcdServer,
) -> None:
    breaker = CircuitBreaker(name="etcd", failure_threshold=None)
    async with client_of(etcd_server, breaker=breaker) as etcd:
        holder = etcd.lock(b"/lock/watch-fails", ttl=60)
        assert await holder.acquire()
        waiter = etcd.lock(b"/lock/watch-fails", ttl=60, timeout=HANG)
        waiting = asyncio.ensure_future(waiter.acquire())
        with anyio.fail_after(HANG):
            # Two grants, two transactions, then the watch on the holder.
            while breaker.metrics().successes < 5:
                await anyio.sleep(0.01)
            before = breaker.metrics().failures
            etcd_server.kill()
            with pytest.raises(aetcd.ClientError):
                await waiting
            failed = breaker.metrics().failures - before

    # Two outcomes: the stream that failed because etcd went away, and the
    # revoke of the waiter's lease, which could not reach etcd either.
    assert failed == 2


async def test_an_attempt_that_finds_its_own_uuid_holds_the_lock(
    etcd_server_session: EtcdServer, raw: aetcd.Client
) -> None:
    async with client_of(etcd_server_session) as etcd:
        lock = etcd.lock(b"/lock/own", ttl=10, timeout=0.5)
        # As left by an earlier attempt that went through, its answer lost.
        await raw.put(b"/lock/own", lock.uuid)
        acquired = await lock.acquire()
        held = await lock.is_acquired()
        released = await lock.release()

    assert (acquired, held, released) == (True, True, True)
    assert await raw.get(b"/lock/own") is None


async def test_rejected_acquire_raises_without_granting_or_revoking(
    etcd_server_session: EtcdServer,
) -> None:
    async with client_of(etcd_server_session) as etcd:
        etcd.breaker.force_open()
        lock = etcd.lock(b"/lock/rejected", ttl=5)
        with pytest.raises(EtcdCircuitOpenError):
            await lock.acquire(timeout=1)
        metrics = etcd.breaker.metrics()

    assert (metrics.rejected, metrics.calls) == (1, 0)


async def test_release_deletes_the_key_only_while_this_lock_holds_it(
    etcd_server_session: EtcdServer, raw: aetcd.Client
) -> None:
    async with client_of(etcd_server_session) as etcd:
        first = etcd.lock(b"/lock/owner", ttl=10)
        assert await first.acquire()
        assert first.lease is not None
        await raw.revoke_lease(first.lease.id)
        second = etcd.lock(b"/lock/owner", ttl=10)
        assert await second.acquire(timeout=HANG)

        released = await first.release()
        still = await second.is_acquired()
        await second.release()

    assert (released, still) == (False, True)


async def test_lock_lost_while_held_is_reported_and_cancels_the_block(
    etcd_server_session: EtcdServer, raw: aetcd.Client
) -> None:
    told: list[LeaseLostError] = []
    ran_on = False
    async with client_of(etcd_server_session) as etcd:
        lock = etcd.lock(b"/lock/lost", ttl=2, on_lost=told.append, cancel_on_lost=True)
        with pytest.raises(LeaseLostError) as info:
            async with lock:
                assert lock.lease is not None
                lease_id = lock.lease.id
                await raw.revoke_lease(lease_id)
                with anyio.fail_after(HANG):
                    await anyio.sleep_forever()
                ran_on = True

    assert not ran_on
    assert lock.lost.is_set() and lock.lost_reason == GONE
    assert [(e.lease_id, e.reason) for e in told] == [(lease_id, GONE)]
    assert (info.value.lease_id, info.value.reason) == (lease_id, GONE)
    with pytest.raises(LeaseLostError):
        lock.check()


async def test_lock_lease_is_kept_alive_while_held(
    etcd_server_session: EtcdServer, raw: aetcd.Client
) -> None:
    etcd = client_of(etcd_server_session)
    async with etcd, etcd.lock(b"/lock/kept", ttl=1) as lock:
        # Past the TTL: only the keeper keeps the key.
        await anyio.sleep(2)
        found = await raw.get(b"/lock/kept")

    assert found is not None and found.value == lock.uuid
    assert not lock.lost.is_set()


async def test_a_lock_object_is_not_acquired_twice(
    etcd_server_session: EtcdServer,
) -> None:
    async with client_of(etcd_server_session) as etcd:
        lock = etcd.lock(b"/lock/twice", ttl=5)
        assert isinstance(lock, Lock)
        async with lock:
            with pytest.raises(RuntimeError, match="already held"):
                await lock.acquire()
        with contextlib.suppress(LockNotAcquiredError):
            async with lock:
                again = await lock.is_acquired()

    assert again


async def test_a_lock_object_refuses_a_second_acquire_while_acquiring(
    etcd_server_session: EtcdServer, raw: aetcd.Client
) -> None:
    server = etcd_server_session
    before = await lease_ids(raw)
    async with (
        client_of(server) as other,
        FaultProxy(server.host, server.port) as proxy,
        client_of(proxy) as etcd,
    ):
        holder = other.lock(b"/lock/shared", ttl=30)
        assert await holder.acquire()
        lock = etcd.lock(b"/lock/shared", ttl=30)
        async with anyio.create_task_group() as group:
            group.start_soon(lock.acquire, HANG)
            # A lease, a transaction and a watch: the first acquisition waits.
            await proxy.wait_for_requests(3)
            with pytest.raises(RuntimeError, match="being acquired"):
                await lock.acquire()
            assert await holder.release()
        assert lock.lease is not None
        lease_id = lock.lease.id
        during = await lease_ids(raw)
        assert await lock.release()
        after = await lease_ids(raw)

    # Leases of other tests may expire meanwhile; only ours may appear.
    assert during - before == {lease_id}
    assert after <= before


async def test_a_lease_lost_while_the_acquiring_transaction_runs_is_not_entered(
    etcd_server_session: EtcdServer, raw: aetcd.Client
) -> None:
    server = etcd_server_session
    breaker = CircuitBreaker(name="etcd", failure_threshold=100)
    told: list[LeaseLostError] = []
    entered = False
    async with (
        FaultProxy(server.host, server.port) as proxy,
        client_of(proxy, breaker=breaker, call_timeout=5.0) as etcd,
    ):
        await etcd.get(b"/lock/slow-probe")
        # Each call takes 2 s: the grant answers with 1 s of its 3 s left, the
        # keeper's refresh runs out with it, the transaction lands after that.
        proxy.delay(1.0)
        lock = etcd.lock(
            b"/lock/slow", ttl=3, timeout=HANG, on_lost=told.append, cancel_on_lost=True
        )
        with pytest.raises(LeaseLostError) as info:
            async with lock:
                entered = True
        proxy.pass_through()
        found = await raw.get(b"/lock/slow")

    assert not entered
    assert info.value.reason == EXPIRED
    # The key went with the lease it was bound to.
    assert found is None
    assert lock.lease is None and lock.lost_reason is None and told == []


async def test_a_call_cut_short_by_the_lock_timeout_is_no_etcd_failure(
    etcd_server_session: EtcdServer,
) -> None:
    server = etcd_server_session
    breaker = CircuitBreaker(name="etcd", failure_threshold=1)
    async with (
        FaultProxy(server.host, server.port) as proxy,
        client_of(proxy, breaker=breaker, call_timeout=HANG) as etcd,
    ):
        await etcd.get(b"/lock/cut-probe")
        # Slow but healthy: each call takes 1 s, longer than the lock's time.
        proxy.delay(0.5)
        lock = etcd.lock(b"/lock/cut", ttl=10, timeout=0.3)
        acquired = await lock.acquire()
        with pytest.raises(LockNotAcquiredError):
            async with lock:
                pass
        metrics = breaker.metrics()

    assert acquired is False
    assert (metrics.state, metrics.failures) == ("closed", 0)


async def test_the_lock_timeout_bounds_the_clean_up_in_a_partition(
    etcd_server_session: EtcdServer, raw: aetcd.Client
) -> None:
    server = etcd_server_session
    async with (
        client_of(server) as other,
        FaultProxy(server.host, server.port) as proxy,
        # Calls that would outlast HANG: only the lock's timeout can end them.
        client_of(proxy, call_timeout=HANG * 3) as etcd,
    ):
        await etcd.get(b"/lock/partition-probe")
        proxy.black_hole()
        # A shielded clean-up would not be cut by the bound: check it fired.
        with anyio.move_on_after(HANG) as first, pytest.raises(LockNotAcquiredError):
            async with etcd.lock(b"/lock/partition", ttl=5, timeout=0.5):
                pass

        proxy.pass_through()
        holder = other.lock(b"/lock/partition", ttl=60)
        assert await holder.acquire()
        waiter = etcd.lock(b"/lock/partition", ttl=60)
        requests = proxy.requests
        async with anyio.create_task_group() as group:

            async def wait() -> None:
                with anyio.move_on_after(HANG) as bound:
                    acquired.append(await waiter.acquire(timeout=1))
                acquired.append(bound.cancel_called)

            acquired: list[bool] = []
            group.start_soon(wait)
            # A lease, a transaction and a watch: the waiter waits; then the
            # partition comes.
            await proxy.wait_for_requests(requests + 3)
            assert waiter.lease is not None
            lease_id = waiter.lease.id
            proxy.black_hole()
        assert acquired == [False, False]

        # The revoke, held up by the partition, goes on once it heals. (The
        # first lock's grant, cut off unanswered, may reach etcd after its
        # revoke: that lease is left to its TTL.)
        proxy.pass_through()
        assert await holder.release()
        gone = await lease_gone(raw, lease_id)

    assert not first.cancel_called
    assert gone


async def test_a_cancelled_acquire_returns_at_once_in_a_partition(
    etcd_server_session: EtcdServer, raw: aetcd.Client
) -> None:
    server = etcd_server_session
    async with (
        client_of(server) as other,
        FaultProxy(server.host, server.port) as proxy,
        client_of(proxy, call_timeout=HANG * 3) as etcd,
    ):
        holder = other.lock(b"/lock/cancelled", ttl=60)
        assert await holder.acquire()
        waiter = etcd.lock(b"/lock/cancelled", ttl=60, timeout=None)
        with anyio.fail_after(HANG):
            async with anyio.create_task_group() as group:
                group.start_soon(waiter.acquire)
                await proxy.wait_for_requests(3)
                assert waiter.lease is not None
                lease_id = waiter.lease.id
                proxy.black_hole()
                group.cancel_scope.cancel()

        # The revoke, held up by the partition, goes on once it heals.
        proxy.pass_through()
        assert await holder.release()
        gone = await lease_gone(raw, lease_id)

    assert gone


async def test_a_cancelled_acquire_whose_grant_lands_after_its_revoke_leaks_no_lease(
    etcd_server_session: EtcdServer, raw: aetcd.Client
) -> None:
    # The grant is held up on its way to etcd; the acquisition is cancelled
    # and the revoke, on a fresh channel, overtakes it: etcd does not know
    # the lease yet. When the grant lands, the lease must still go.
    server = etcd_server_session
    async with (
        FaultProxy(server.host, server.port) as proxy,
        client_of(proxy) as etcd,
    ):
        await etcd.put(b"/lock/overtaken/connected", b"v")
        before = await lease_ids(raw)
        proxy.delay(0.5)
        acquiring = asyncio.create_task(etcd.lock(b"/lock/overtaken", ttl=60).acquire())
        await asyncio.sleep(0.1)
        move_to_fresh_channel(etcd, server)
        acquiring.cancel()
        with pytest.raises(asyncio.CancelledError):
            await acquiring

        # Once the grant has landed, nothing may be left of it.
        await anyio.sleep(1.0)
        with anyio.fail_after(2.0):
            while not await lease_ids(raw) <= before:
                await anyio.sleep(0.05)


async def test_a_lease_that_etcd_no_longer_knows_when_the_transaction_lands_is_lost(
    etcd_server_session: EtcdServer,
) -> None:
    # Slow link, short TTL: the lease expires in etcd while the acquiring
    # transaction travels, and etcd answers "lease not found".
    server = etcd_server_session
    breaker = CircuitBreaker(name="etcd", failure_threshold=None)
    outcomes: list[str] = []

    async def try_lock(etcd: BreakerClient, n: int) -> None:
        lock = etcd.lock(b"/lock/expired-in-flight/%d" % n, ttl=2, timeout=None)
        try:
            async with lock:
                outcomes.append("entered")
        except LeaseLostError:
            outcomes.append("lost")
        except aetcd.ClientError as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")

    async with (
        FaultProxy(server.host, server.port) as proxy,
        client_of(proxy, breaker=breaker, call_timeout=8.0) as etcd,
    ):
        await etcd.get(b"/lock/expired-probe")
        proxy.delay(1.5, 2.5)
        with anyio.fail_after(3 * HANG):
            async with anyio.create_task_group() as tg:
                for n in range(3):
                    tg.start_soon(try_lock, etcd, n)
        proxy.pass_through()

    assert outcomes == ["lost"] * 3


async def waiting(lock: Lock) -> asyncio.Task[bool]:
    """Start ``lock.acquire()`` and return once its lease is granted."""
    acquiring = asyncio.create_task(lock.acquire())
    with anyio.fail_after(HANG):
        while lock.lease is None:
            await asyncio.sleep(0.01)
    return acquiring


async def test_release_from_another_task_while_acquiring_is_refused(
    etcd_server_session: EtcdServer, raw: aetcd.Client
) -> None:
    holder = client_of(etcd_server_session)
    async with holder, client_of(etcd_server_session) as etcd:
        held = holder.lock(b"/lock/busy-release", ttl=30)
        assert await held.acquire()
        lock = etcd.lock(b"/lock/busy-release", ttl=30, timeout=HANG)
        acquiring = await waiting(lock)

        with pytest.raises(RuntimeError, match="being acquired or released"):
            await lock.release()
        assert lock.lease is not None
        # The refused release left the waiting acquisition's lease alone.
        waiting_ttl = (await raw.get_lease_info(lock.lease.id)).TTL
        await held.release()
        with anyio.fail_after(HANG):
            acquired = await acquiring
        assert acquired
        assert lock.lost_reason is None
        await lock.release()

    assert waiting_ttl > 0


async def test_a_lease_revoked_while_waiting_for_the_holder_ends_the_wait(
    etcd_server_session: EtcdServer, raw: aetcd.Client
) -> None:
    holder = client_of(etcd_server_session)
    async with holder, client_of(etcd_server_session) as etcd:
        held = holder.lock(b"/lock/revoked-waiter", ttl=30)
        assert await held.acquire()
        try:
            lock = etcd.lock(b"/lock/revoked-waiter", ttl=3, timeout=HANG)
            acquiring = await waiting(lock)
            await asyncio.sleep(0.2)
            await raw.revoke_lease(lock.lease.id)

            # Seen at the keeper's next refresh (a third of the TTL), long
            # before the lock's timeout.
            with anyio.fail_after(HANG / 2):
                with pytest.raises(LeaseLostError) as info:
                    await acquiring
        finally:
            await held.release()

    assert info.value.reason == GONE


async def test_a_lock_lost_to_a_close_says_so_when_acquired_again_unreleased(
    etcd_server_session: EtcdServer,
) -> None:
    etcd = client_of(etcd_server_session)
    async with etcd:
        lock = etcd.lock(b"/lock/lost-then-again", ttl=5)
        assert await lock.acquire()
    assert lock.lost_reason == "closed"

    async with etcd:
        with pytest.raises(RuntimeError, match=r"was lost \(closed\).*release\(\)"):
            await lock.acquire()
        await lock.release()
        assert await lock.acquire()
        assert await lock.is_acquired()
        await lock.release()


async def test_a_task_cancelled_while_its_lock_stops_keeping_leaks_no_lease(
    etcd_server_session: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The keeper's task takes a moment to end, and a plain asyncio
    # cancellation lands then: the release must still revoke the lease.
    slow_keeper_stop(monkeypatch)
    server = etcd_server_session
    async with client_of(server) as etcd, client_of(server) as other:
        leases: list[Any] = []

        async def hold() -> None:
            async with etcd.lock(b"/lock/cancelled-stop", ttl=60) as lock:
                leases.append(lock.lease)

        task = asyncio.create_task(hold())
        with anyio.fail_after(HANG):
            while not leases:
                await anyio.sleep(0.01)
        await anyio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

        with anyio.fail_after(HANG):
            while (await other.get_lease_info(leases[0].id)).TTL != -1:
                await anyio.sleep(0.05)
