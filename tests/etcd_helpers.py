"""Small pieces the lease and lock tests share: etcd's list of leases, a
channel swap as a half-open trial makes, and a keeper slow to stop."""

from __future__ import annotations

import asyncio

import aetcd
import anyio
import pytest
from aetcd import rpc

from aetcd_breaker.etcd import BreakerClient
from aetcd_breaker.etcd._channel import Inner
from aetcd_breaker.etcd.leases import KeepAlive
from aetcd_breaker.testing import EtcdServer


async def lease_ids(raw: aetcd.Client) -> set[int]:
    """The ids of every lease etcd holds now."""
    await raw.connect()
    found = await raw.leasestub.LeaseLeases(rpc.LeaseLeasesRequest())
    return {lease.ID for lease in found.leases}


def move_to_fresh_channel(etcd: BreakerClient, server: EtcdServer) -> None:
    """Send the calls from now on straight to ``server``, on a fresh channel,
    as a half-open trial does; the calls running keep their own."""
    channels = etcd._session.channels
    old = channels.current
    channels.current = Inner(aetcd.Client(server.host, server.port), owned=True)
    old.retired = True
    channels._retired.add(old)


def slow_keeper_stop(monkeypatch: pytest.MonkeyPatch, seconds: float = 0.3) -> None:
    """Make a keeper's task take ``seconds`` more to end once stopped: a
    window for a cancellation to land in."""
    original = KeepAlive.stop

    async def slow_stop(self: KeepAlive) -> None:
        await original(self)
        with anyio.CancelScope(shield=True):
            await asyncio.sleep(seconds)

    monkeypatch.setattr(KeepAlive, "stop", slow_stop)
