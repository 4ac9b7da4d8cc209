"""Closing a BreakerClient against a real etcd: nothing it started runs on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aetcd
import anyio
import pytest
from structlog.testing import capture_logs

from aetcd_breaker.etcd import (
    CLOSED,
    LEASE_LOST,
    BreakerClient,
    ClientClosedError,
    LeaseLostError,
)
from aetcd_breaker.testing import EtcdServer, FaultProxy

pytestmark = [pytest.mark.anyio, pytest.mark.etcd]

# Bounds that only turn a hang into a failure; no test relies on them.
HANG = 20.0
TTL = 2


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", autouse=True)
async def one_event_loop() -> AsyncIterator[None]:
    """One loop for the module: gRPC may complete a closed call late."""
    yield
    await anyio.sleep(0.1)


@pytest.fixture
async def proxy(etcd_server_session: EtcdServer) -> AsyncIterator[FaultProxy]:
    """A pass-through proxy: it counts the requests and connections to etcd."""
    server = etcd_server_session
    async with FaultProxy(server.host, server.port) as proxy:
        yield proxy


@pytest.fixture
async def other(etcd_server_session: EtcdServer) -> AsyncIterator[BreakerClient]:
    """Another party, straight to etcd, open for the whole test."""
    server = etcd_server_session
    async with BreakerClient(server.host, server.port, call_timeout=2) as client:
        yield client


def client_of(proxy: FaultProxy, **kwargs: Any) -> BreakerClient:
    return BreakerClient(proxy.host, proxy.port, call_timeout=2, **kwargs)


async def connections_gone(proxy: FaultProxy) -> bool:
    """Whether every connection through ``proxy`` closes within a second."""
    with anyio.move_on_after(1.0):
        while proxy.connections:
            await anyio.sleep(0.01)
    return proxy.connections == 0


async def finish(task: Any) -> None:
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


async def test_closing_revokes_a_kept_lease_and_no_refresh_follows(
    proxy: FaultProxy, other: BreakerClient
) -> None:
    told: list[LeaseLostError] = []
    ready = anyio.Event()
    kept: list[Any] = []

    async def keep(etcd: BreakerClient) -> None:
        async with etcd.lease_keeper(TTL, on_lost=told.append) as lease:
            kept.append(lease)
            await etcd.put(b"/close/kept", b"v", lease=lease)
            ready.set()
            await anyio.sleep_forever()

    with anyio.fail_after(HANG):
        etcd = client_of(proxy)
        async with etcd:
            task = asyncio.create_task(keep(etcd))
            await ready.wait()
            with capture_logs() as logs:
                await etcd.close()
        sent = proxy.requests

        assert logs == [
            {
                "event": LEASE_LOST,
                "log_level": "warning",
                "breaker": "etcd",
                "lease_id": kept[0].id,
                "reason": CLOSED,
            }
        ]
        assert await other.get(b"/close/kept") is None
        assert (await other.get_lease_info(kept[0].id)).TTL == -1
        assert [error.reason for error in told] == [CLOSED]
        # Past the time of the keeper's next refresh: none was sent.
        await anyio.sleep(TTL)
        assert proxy.requests == sent
        assert await connections_gone(proxy)

        # Leaving the keeper's block after the close reaches no etcd either.
        await finish(task)
        assert proxy.requests == sent
        assert await connections_gone(proxy)


async def test_closing_frees_a_held_lock_at_once_and_reports_it_lost(
    proxy: FaultProxy, other: BreakerClient
) -> None:
    told: list[LeaseLostError] = []
    ready = anyio.Event()

    async def hold(etcd: BreakerClient) -> None:
        async with etcd.lock(b"/close/lock", ttl=30, on_lost=told.append):
            ready.set()
            await anyio.sleep_forever()

    with anyio.fail_after(HANG):
        etcd = client_of(proxy)
        async with etcd:
            task = asyncio.create_task(hold(etcd))
            await ready.wait()
        sent = proxy.requests

        successor = other.lock(b"/close/lock", ttl=5, timeout=0)
        assert await successor.acquire()
        await successor.release()
        assert [error.reason for error in told] == [CLOSED]

        # The block's release after the close reaches no etcd.
        await finish(task)
        assert proxy.requests == sent
        assert await connections_gone(proxy)


async def test_a_second_close_meanwhile_lets_the_first_revoke_its_leases(
    proxy: FaultProxy, other: BreakerClient
) -> None:
    # An explicit close() racing the exit of `async with`: the second must
    # not close the channel under the first one's revocations.
    with anyio.fail_after(HANG):
        etcd = client_of(proxy)
        keeper = etcd.lease_keeper(30)
        lease = await keeper.__aenter__()
        holder = etcd.lock(b"/close/twice", ttl=30)
        assert await holder.acquire()
        await asyncio.gather(etcd.close(), etcd.close())

        assert (await other.get_lease_info(lease.id)).TTL == -1
        assert await other.get(b"/close/twice") is None
        await keeper.__aexit__(None, None, None)


async def test_a_lock_waiter_cut_off_by_closing_leaves_no_channel_behind(
    proxy: FaultProxy, other: BreakerClient
) -> None:
    holder = other.lock(b"/close/wait", ttl=30)
    assert await holder.acquire()
    try:
        with anyio.fail_after(HANG):
            etcd = client_of(proxy)
            waiter = etcd.lock(b"/close/wait", ttl=10, timeout=None)
            async with etcd:
                task = asyncio.create_task(waiter.acquire())
                # Its grant, its attempt, and the watch on the holder,
                # running by the time the close comes.
                await proxy.wait_for_requests(3)
                await asyncio.sleep(0.3)
            sent = proxy.requests

            with pytest.raises(aetcd.ConnectionFailedError):
                await task
            assert proxy.requests == sent
            assert await connections_gone(proxy)
            assert waiter.lease is None
            assert etcd._session.keepers == set()
            # Its watch on the holder was cut off by the close, not by etcd.
            assert etcd.breaker.metrics().failures == 0
    finally:
        await holder.release()


async def test_a_lock_waiter_behind_a_holder_of_the_same_client_is_cut_off_by_a_close(
    proxy: FaultProxy, other: BreakerClient
) -> None:
    # Closing revokes the holder's lease, so the key goes and the wait ends;
    # the waiter must still see a connection failure, not a lost lease.
    with anyio.fail_after(HANG):
        etcd = client_of(proxy)
        async with etcd:
            holder = etcd.lock(b"/close/same", ttl=30)
            assert await holder.acquire()
            waiters = [
                etcd.lock(b"/close/same", ttl=30, timeout=None) for _ in range(3)
            ]
            tasks = [asyncio.create_task(waiter.acquire()) for waiter in waiters]
            # The holder's grant and attempt; each waiter's grant and attempt,
            # then the watches on the holder.
            await proxy.wait_for_requests(2 + 2 * len(waiters))
            await asyncio.sleep(0.3)

        for task in tasks:
            with pytest.raises(aetcd.ConnectionFailedError):
                await task
        assert all(waiter.lease is None for waiter in waiters)
        # The key is free: the holder's lease was revoked, no waiter took it.
        assert await other.get(b"/close/same") is None


async def test_a_call_after_close_fails_at_once_uncounted_until_reopened(
    proxy: FaultProxy,
) -> None:
    with anyio.fail_after(HANG):
        etcd = client_of(proxy)
        async with etcd:
            await etcd.put(b"/close/call", b"v")
        before = etcd.breaker.metrics()
        sent = proxy.requests

        with pytest.raises(ClientClosedError):
            await etcd.get(b"/close/call")
        with pytest.raises(ClientClosedError):
            await etcd.get(b"/close/call", retry=True, fallback=b"fallback")
        with pytest.raises(ClientClosedError):
            await etcd.watch(b"/close/call")
        with pytest.raises(ClientClosedError):
            async with etcd.lease_keeper(TTL):
                pass

        metrics = etcd.breaker.metrics()
        assert (metrics.calls, metrics.rejected) == (before.calls, before.rejected)
        assert etcd.retries == etcd.fallbacks == 0
        assert proxy.requests == sent
        assert await connections_gone(proxy)

        async with etcd:
            found = await etcd.get(b"/close/call")
        assert found is not None and found.value == b"v"
        await etcd.connect()
        assert await etcd.get(b"/close/call") is not None
        await etcd.close()


async def test_closing_stops_keeping_a_lease_it_must_not_revoke(
    proxy: FaultProxy, other: BreakerClient
) -> None:
    told: list[LeaseLostError] = []
    ready = anyio.Event()

    async def keep(etcd: BreakerClient) -> None:
        lease = await etcd.lease(TTL)
        kept.append(lease)
        async with lease.keep_alive(on_lost=told.append):
            ready.set()
            await anyio.sleep_forever()

    kept: list[Any] = []
    with anyio.fail_after(HANG):
        etcd = client_of(proxy)
        async with etcd:
            task = asyncio.create_task(keep(etcd))
            await ready.wait()
        sent = proxy.requests

        assert (await other.get_lease_info(kept[0].id)).TTL > 0
        assert [error.reason for error in told] == [CLOSED]
        await finish(task)
        # Not refreshed any more: etcd lets it expire by its TTL.
        with anyio.fail_after(TTL + 2):
            while (await other.get_lease_info(kept[0].id)).TTL != -1:
                await anyio.sleep(0.1)
        assert proxy.requests == sent


async def test_a_close_cancelled_while_revoking_has_told_every_holder(
    proxy: FaultProxy,
) -> None:
    told: list[LeaseLostError] = []
    with anyio.fail_after(HANG):
        etcd = client_of(proxy)
        keeper = etcd.lease_keeper(30, on_lost=told.append)
        lease = await keeper.__aenter__()
        proxy.black_hole()
        try:
            # The revocation waits on etcd; the caller stops waiting first.
            closing = asyncio.create_task(etcd.close())
            await asyncio.sleep(0.2)
            closing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await closing

            assert [error.reason for error in told] == [CLOSED]
            assert lease.lost_reason == CLOSED
            assert etcd._session.keepers == set()
            with pytest.raises(ClientClosedError):
                await etcd.get(b"/close/cancelled")
        finally:
            proxy.pass_through()
        await keeper.__aexit__(None, None, None)


async def test_entering_while_a_close_revokes_waits_for_it_and_stays_open(
    proxy: FaultProxy,
) -> None:
    with anyio.fail_after(HANG):
        etcd = client_of(proxy)
        keeper = etcd.lease_keeper(30)
        await keeper.__aenter__()
        proxy.black_hole()
        try:
            # The close waits on the revocation; another task enters meanwhile.
            closing = asyncio.create_task(etcd.close())
            await asyncio.sleep(0.2)
            async with etcd:
                proxy.pass_through()
                # Once the close is over, the block's calls still get through.
                await closing
                await etcd.put(b"/close/reentered", b"v")
                found = await etcd.get(b"/close/reentered")
                assert found is not None and found.value == b"v"
        finally:
            proxy.pass_through()
        await keeper.__aexit__(None, None, None)


async def test_a_keeper_granted_while_the_client_closes_is_told_at_once(
    proxy: FaultProxy, other: BreakerClient
) -> None:
    told: list[LeaseLostError] = []
    with anyio.fail_after(HANG):
        etcd = client_of(proxy)
        first = etcd.lease_keeper(30)
        await first.__aenter__()
        # etcd slow: the close waits on the first lease's revocation while
        # the late grant's answer comes in.
        proxy.delay(0.4)
        late = etcd.lease_keeper(30, on_lost=told.append)
        entering = asyncio.create_task(late.__aenter__())
        await asyncio.sleep(0.1)
        await etcd.close()
        lease = await entering
        proxy.pass_through()

        assert [error.reason for error in told] == [CLOSED]
        assert lease.lost_reason == CLOSED
        assert etcd._session.keepers == set()
        # Nothing refreshes it: it expires by its TTL (not waited for here).
        sent = proxy.requests
        await anyio.sleep(1.0)
        assert proxy.requests == sent
        await late.__aexit__(None, None, None)
        await first.__aexit__(None, None, None)


async def test_a_wrapped_client_left_open_keeps_leases_and_locks_after_a_close(
    etcd_server_session: EtcdServer, other: BreakerClient
) -> None:
    server = etcd_server_session
    raw = aetcd.Client(server.host, server.port)
    try:
        with anyio.fail_after(HANG):
            etcd = BreakerClient.wrap(raw, call_timeout=2)
            async with etcd:
                await etcd.put(b"/close/wrapped", b"v")
            # Its aetcd client is still open, and so is the BreakerClient.
            assert await etcd.get(b"/close/wrapped") is not None
            async with etcd.lease_keeper(TTL) as lease:
                # Past the first refresh: the keeper keeps the lease.
                await anyio.sleep(TTL / 3 + 0.5)
                assert lease.lost_reason is None
                info = await other.get_lease_info(lease.id)
                assert info.TTL > 0
            async with etcd.lock(b"/close/wrapped-lock", ttl=TTL, timeout=5) as lock:
                assert await lock.is_acquired()
            await etcd.close()
    finally:
        await raw.close()


async def test_close_closes_a_channel_retired_while_a_call_still_ran_on_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A half-open trial moves to a fresh channel when the old one waits out
    # gRPC's reconnect backoff; a call still running on the old one keeps it
    # open until it ends. Closing the client must close it all the same.
    from aetcd_breaker.core import CircuitBreaker, FakeClock
    from aetcd_breaker.etcd._channel import Inner

    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, reset_timeout=1.0, failure_threshold=1)
    etcd = BreakerClient("127.0.0.1", 1, breaker=breaker)
    session = etcd._session
    old = session.channels.current
    closed: list[aetcd.Client] = []
    close = aetcd.Client.close

    async def record_close(client: aetcd.Client) -> None:
        closed.append(client)
        await close(client)

    monkeypatch.setattr(aetcd.Client, "close", record_close)
    monkeypatch.setattr(Inner, "failing", lambda inner: inner is old)

    async def hang(client: aetcd.Client) -> None:
        await asyncio.get_running_loop().create_future()

    async def fail(client: aetcd.Client) -> None:
        raise aetcd.ConnectionFailedError()

    async def answer(client: aetcd.Client) -> aetcd.Client:
        return client

    with anyio.fail_after(HANG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.call, hang, 100)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(aetcd.ConnectionFailedError):
                await session.call(fail, 100)
            clock.advance(5)
            trial_ran_on = await session.call(answer, 100)
            assert trial_ran_on is not old.client
            assert old.retired and old.calls == 1

            await etcd.close()
            tg.cancel_scope.cancel()

    assert old.client in closed
