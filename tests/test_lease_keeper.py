"""Kept leases against a real etcd: alive through an open breaker, lost loudly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import aetcd
import anyio
import pytest
import structlog
from etcd_helpers import lease_ids, move_to_fresh_channel, slow_keeper_stop
from structlog.testing import capture_logs

from aetcd_breaker.core import CircuitBreaker, State
from aetcd_breaker.etcd import (
    CLOSED,
    EXPIRED,
    GONE,
    LEASE_LOST,
    BreakerClient,
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


def client_of(server: EtcdServer, **kwargs: Any) -> BreakerClient:
    return BreakerClient(server.host, server.port, **kwargs)


@contextlib.asynccontextmanager
async def raw_client(server: EtcdServer) -> AsyncIterator[aetcd.Client]:
    """A plain aetcd client: another party, outside any breaker."""
    client = aetcd.Client(server.host, server.port)
    try:
        yield client
    finally:
        await client.close()


def lease_lost_logs(logs: list[MutableMapping[str, Any]]) -> list[Any]:
    return [entry for entry in logs if entry["event"] == LEASE_LOST]


async def test_keeper_keeps_the_lease_alive_while_the_breaker_is_forced_open(
    etcd_server_session: EtcdServer,
) -> None:
    server = etcd_server_session
    async with client_of(server) as etcd, raw_client(server) as raw:
        async with etcd.lease_keeper(TTL) as lease:
            await etcd.put(b"/kept/open", b"v", lease=lease)
            etcd.breaker.force_open()
            before = etcd.breaker.metrics()

            # Twice the TTL: the lease would be gone without a refresh.
            await anyio.sleep(2 * TTL)
            info = await raw.get_lease_info(lease.id)
            key = await raw.get(b"/kept/open")
            after = etcd.breaker.metrics()
            etcd.breaker.reset()

        assert info.TTL > 0
        assert key is not None and key.value == b"v"
        assert not lease.lost.is_set() and lease.lost_reason is None
        # The keeper tried through the breaker first; what it sent around
        # the breaker was neither admitted nor counted.
        assert after.rejected > before.rejected
        assert (after.successes, after.failures) == (before.successes, 0)
        assert (await raw.get_lease_info(lease.id)).TTL == -1


async def test_keeper_refreshes_through_the_breaker_while_it_is_closed(
    etcd_server_session: EtcdServer,
) -> None:
    async with client_of(etcd_server_session) as etcd:
        async with etcd.lease_keeper(TTL) as lease:
            start = etcd.breaker.metrics().successes
            await anyio.sleep(TTL)
            refreshed = etcd.breaker.metrics().successes - start

        assert refreshed >= 2
        assert not lease.lost.is_set()


async def test_lease_lost_while_etcd_was_down_is_reported_at_once_and_on_use(
    etcd_server: EtcdServer,
) -> None:
    breaker = CircuitBreaker(name="etcd", failure_threshold=2, reset_timeout=0.2)
    told: list[LeaseLostError] = []
    async with client_of(etcd_server, breaker=breaker) as etcd:
        with capture_logs() as logs:
            async with etcd.lease_keeper(TTL, on_lost=told.append) as lease:
                etcd_server.kill()
                with anyio.fail_after(HANG):
                    await lease.lost.wait()
                await etcd_server.arestart()
                with pytest.raises(LeaseLostError) as on_refresh:
                    await lease.refresh()
                with pytest.raises(LeaseLostError):
                    await etcd.put(b"/kept/lost", b"v", lease=lease)
                with pytest.raises(LeaseLostError):
                    await lease.remaining_ttl()
                with anyio.fail_after(HANG):
                    while breaker.state is not State.CLOSED:
                        await breaker.wait_ready()
                        with contextlib.suppress(aetcd.ClientError):
                            await etcd.get(b"/kept/probe")
        async with raw_client(etcd_server) as raw:
            # etcd revives leases when it restarts; leaving the block revoked
            # the one that nobody could rely on any more.
            revived = await raw.get_lease_info(lease.id)

    assert [error.reason for error in told] == [EXPIRED]
    assert on_refresh.value.lease_id == lease.id
    assert on_refresh.value.reason == EXPIRED
    assert lease.lost_reason == EXPIRED
    assert lease_lost_logs(logs) == [
        {
            "event": LEASE_LOST,
            "log_level": "warning",
            "breaker": "etcd",
            "lease_id": lease.id,
            "reason": EXPIRED,
        }
    ]
    assert revived.TTL == -1


async def test_failed_refreshes_back_off_until_the_lease_is_lost(
    etcd_server: EtcdServer,
) -> None:
    # Disabled: the breaker never opens, so only the keeper's own backoff
    # spaces the refreshes that fail while etcd is down.
    breaker = CircuitBreaker(name="etcd", initial_state="disabled")
    etcd = client_of(etcd_server, breaker=breaker)
    async with etcd, etcd.lease_keeper(TTL) as lease:
        before = breaker.metrics().failures
        etcd_server.kill()
        with anyio.fail_after(HANG):
            await lease.lost.wait()
        failed = breaker.metrics().failures - before

    assert lease.lost_reason == EXPIRED
    # Pauses of 0.1, 0.2, then TTL / 6 s between attempts: about six fit in
    # what is left of the TTL. Without them the keeper would send refreshes
    # in a busy loop.
    assert 1 <= failed <= 12


async def test_lease_revoked_by_someone_else_cancels_the_block_when_asked(
    etcd_server_session: EtcdServer,
) -> None:
    server = etcd_server_session
    ran_on = False
    async with client_of(server) as etcd, raw_client(server) as raw:
        with capture_logs() as logs, pytest.raises(LeaseLostError) as info:
            async with etcd.lease_keeper(TTL, cancel_on_lost=True) as lease:
                await raw.revoke_lease(lease.id)
                with anyio.fail_after(HANG):
                    await anyio.sleep_forever()
                ran_on = True

    assert not ran_on
    assert (info.value.lease_id, info.value.reason) == (lease.id, GONE)
    assert lease.lost.is_set()
    assert [entry["reason"] for entry in lease_lost_logs(logs)] == [GONE]


async def test_revoked_lease_is_told_apart_from_one_revoked_through_itself(
    etcd_server_session: EtcdServer,
) -> None:
    server = etcd_server_session
    async with client_of(server) as etcd, raw_client(server) as raw:
        theirs = await etcd.lease(30)
        ours = await etcd.lease(30)
        await raw.revoke_lease(theirs.id)
        await ours.revoke()

        with capture_logs() as logs:
            # Two reads under way at once both find it gone: lost once.
            found = await asyncio.gather(
                theirs.remaining_ttl(), theirs.granted_ttl(), return_exceptions=True
            )
            with pytest.raises(LeaseLostError):
                await theirs.keys()
        remaining = await ours.remaining_ttl()

    assert [type(error) for error in found] == [LeaseLostError] * 2
    assert all(error.reason == GONE for error in found)  # type: ignore[union-attr]
    assert theirs.lost.is_set() and theirs.lost_reason == GONE
    assert len(lease_lost_logs(logs)) == 1
    assert remaining == -1 and not ours.lost.is_set()


async def test_keep_alive_of_a_lease_you_hold_refreshes_on_entry(
    etcd_server_session: EtcdServer,
) -> None:
    server = etcd_server_session
    async with client_of(server) as etcd, raw_client(server) as raw:
        kept = await etcd.lease(TTL)
        gone = await etcd.lease(TTL)
        await raw.revoke_lease(gone.id)

        async with kept.keep_alive() as lease:
            held = await raw.get_lease_info(lease.id)
        after = await raw.get_lease_info(kept.id)
        with pytest.raises(LeaseLostError) as info:
            async with gone.keep_alive():
                pytest.fail("the block ran with a lost lease")
        await kept.revoke()

    assert lease is kept and held.TTL > 0
    # keep_alive() leaves a lease you hold to you: it is not revoked on exit.
    assert after.TTL > 0
    assert info.value.reason == GONE


async def test_lease_keeper_revokes_its_lease_on_exit_even_when_cancelled(
    etcd_server_session: EtcdServer,
) -> None:
    server = etcd_server_session
    async with client_of(server) as etcd, raw_client(server) as raw:
        with anyio.move_on_after(0.2):
            async with etcd.lease_keeper(30) as lease:
                await anyio.sleep_forever()
        info = await raw.get_lease_info(lease.id)

    assert info.TTL == -1
    assert not lease.lost.is_set()


async def test_a_task_cancelled_while_its_keeper_revokes_on_exit_leaks_no_lease(
    etcd_server_session: EtcdServer,
) -> None:
    # A plain asyncio cancellation (a timeout, a task group) that lands while
    # the exit revokes: anyio's shield does not hold it back, so the revoke
    # must go on without the task rather than be cut off with it.
    server = etcd_server_session
    async with (
        FaultProxy(server.host, server.port) as proxy,
        client_of(proxy, call_timeout=5) as etcd,
        raw_client(server) as raw,
    ):
        leases: list[Any] = []

        async def keep() -> None:
            async with etcd.lease_keeper(60) as lease:
                leases.append(lease)
                proxy.delay(0.3)

        task = asyncio.create_task(keep())
        with anyio.fail_after(HANG):
            while not leases:
                await anyio.sleep(0.01)
        # The exit's revoke is on its way through the slow proxy.
        await anyio.sleep(0.15)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        proxy.pass_through()

        with anyio.fail_after(HANG):
            while (await raw.get_lease_info(leases[0].id)).TTL != -1:
                await anyio.sleep(0.05)


async def test_a_task_cancelled_while_its_keeper_stops_on_exit_leaks_no_lease(
    etcd_server_session: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The keeper's task takes a moment to end, and a plain asyncio
    # cancellation lands then: the exit must still revoke the lease.
    slow_keeper_stop(monkeypatch)
    server = etcd_server_session
    async with client_of(server) as etcd, raw_client(server) as raw:
        leases: list[Any] = []

        async def keep() -> None:
            async with etcd.lease_keeper(60) as lease:
                leases.append(lease)

        task = asyncio.create_task(keep())
        with anyio.fail_after(HANG):
            while not leases:
                await anyio.sleep(0.01)
        await anyio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

        with anyio.fail_after(HANG):
            while (await raw.get_lease_info(leases[0].id)).TTL != -1:
                await anyio.sleep(0.05)


async def test_a_keeper_cancelled_while_its_grant_is_answered_leaks_no_lease(
    etcd_server_session: EtcdServer,
) -> None:
    # etcd grants the lease, its answer is on the way, the entry is
    # cancelled: the lease must go now, not linger for its whole TTL.
    server = etcd_server_session
    async with (
        FaultProxy(server.host, server.port) as proxy,
        client_of(proxy) as etcd,
        raw_client(server) as raw,
    ):
        await etcd.put(b"/keeper/cancelled", b"connected")
        before = await lease_ids(raw)
        proxy.delay(0.3)
        keeper = etcd.lease_keeper(60)
        with anyio.move_on_after(0.45):
            await keeper.__aenter__()
            raise AssertionError("the grant's answer came early")
        proxy.pass_through()

        with anyio.fail_after(HANG):
            while not await lease_ids(raw) <= before:
                await anyio.sleep(0.05)


async def test_a_keeper_cancelled_while_its_grant_is_held_up_leaks_no_lease(
    etcd_server_session: EtcdServer,
) -> None:
    # The grant is held up on its way to etcd; the entry is cancelled and the
    # revoke, on a fresh channel, overtakes it: etcd does not know the lease
    # yet. When the grant lands, the lease must still go.
    server = etcd_server_session
    async with (
        FaultProxy(server.host, server.port) as proxy,
        client_of(proxy) as etcd,
        raw_client(server) as raw,
    ):
        await etcd.put(b"/keeper/overtaken", b"connected")
        before = await lease_ids(raw)
        proxy.delay(0.5)
        entering = asyncio.create_task(etcd.lease_keeper(60).__aenter__())
        await asyncio.sleep(0.1)
        move_to_fresh_channel(etcd, server)
        entering.cancel()
        with pytest.raises(asyncio.CancelledError):
            await entering

        # Once the grant has landed, nothing may be left of it.
        await anyio.sleep(1.0)
        with anyio.fail_after(2.0):
            while not await lease_ids(raw) <= before:
                await anyio.sleep(0.05)


async def test_lease_revoked_through_itself_in_the_block_is_not_lost(
    etcd_server_session: EtcdServer,
) -> None:
    told: list[LeaseLostError] = []
    async with client_of(etcd_server_session) as etcd:
        with capture_logs() as logs:
            async with etcd.lease_keeper(TTL, on_lost=told.append) as lease:
                await lease.revoke()
                # Long enough for the keeper's next refresh to find it gone.
                await anyio.sleep(TTL / 2)

    assert told == [] and lease_lost_logs(logs) == []
    assert not lease.lost.is_set()


async def test_a_broken_log_pipeline_neither_breaks_a_close_nor_hides_the_loss(
    etcd_server_session: EtcdServer,
) -> None:
    # Closing reports each kept lease lost: the log entry failing must not
    # skip the holder's hook, nor end the close before the channels close.
    def broken_processor(*_: object) -> dict[str, object]:
        raise BrokenPipeError("the log sink went away")

    lost: list[LeaseLostError] = []
    etcd = client_of(etcd_server_session)
    async with etcd.lease_keeper(30, on_lost=lost.append) as lease:
        inner = etcd._session.channels.current
        structlog.configure(processors=[broken_processor])
        try:
            await etcd.close()
        finally:
            structlog.reset_defaults()

        assert [error.reason for error in lost] == [CLOSED]
        assert lease.lost_reason == CLOSED
    assert inner.closed


async def test_a_refresh_around_an_open_breaker_that_runs_out_of_time_is_tried_again(
    etcd_server: EtcdServer,
) -> None:
    # TTL 3: the open breaker rejects the refresh at 1 s, the keeper goes
    # around it at 2 s and the lease ends at 3 s. etcd hangs from 1.5 s to
    # 2.5 s, so that refresh runs out of its 0.3 s: the keeper must take it
    # as a failed refresh and try again, not end. (The refresh cut off may
    # still reach etcd as it wakes and renew the lease once, to 5.5 s.)
    ttl = 3
    server = etcd_server
    async with (
        client_of(server, call_timeout=0.3) as etcd,
        raw_client(server) as raw,
        etcd.lease_keeper(ttl) as lease,
    ):
        etcd.breaker.force_open()
        await anyio.sleep(1.5)
        server.pause()
        try:
            await anyio.sleep(1)
        finally:
            server.resume()
        # Past any renewal the cut-off refresh could have made, and
        # etcd's half-second rounds of expiring leases.
        await anyio.sleep(4.5)
        info = await raw.get_lease_info(lease.id)
        assert not lease.lost.is_set() and lease.lost_reason is None
        etcd.breaker.reset()

    assert info.TTL > 0
