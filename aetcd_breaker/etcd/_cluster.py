"""The lease, lock, cluster and maintenance operations of BreakerClient."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import IO, TYPE_CHECKING, Any

import aetcd

from . import _ops as ops
from .objects import Lease, Member

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["ClusterOps"]


class ClusterOps:
    """Leases, locks, members, alarms and maintenance; mixed into BreakerClient.

    ``snapshot``, ``defragment`` and ``compact(physical=True)`` take long by
    nature: without a ``call_timeout`` of the call or the client, their
    deadline is ``SLOW_CALL_TIMEOUT``, not the breaker's.
    """

    __slots__ = ()

    _session: Session

    async def lease(
        self,
        ttl: int,
        lease_id: int | None = None,
        *,
        call_timeout: float | None = None,
    ) -> Lease:
        """Grant a lease of ``ttl`` seconds, bound to this client."""
        raw = await self._session.call(ops.LEASE, call_timeout, ttl, lease_id)
        return Lease(raw.id, raw.ttl, self)

    async def revoke_lease(
        self, lease_id: int, *, call_timeout: float | None = None
    ) -> None:
        """Revoke a lease; a gone one raises a bare ``aetcd.ClientError``."""
        await self._session.call(ops.REVOKE_LEASE, call_timeout, lease_id)

    async def refresh_lease(
        self, lease_id: int, *, call_timeout: float | None = None
    ) -> Any:
        """Refresh a lease; etcd's keep-alive answer (``TTL`` 0: gone)."""
        return await self._session.call(ops.REFRESH_LEASE, call_timeout, lease_id)

    async def get_lease_info(
        self, lease_id: int, *, keys: bool = True, call_timeout: float | None = None
    ) -> Any:
        """etcd's time-to-live answer for a lease (``TTL`` -1: gone)."""
        return await self._session.call(
            ops.GET_LEASE_INFO, call_timeout, lease_id, keys
        )

    def lock(self, key: bytes, ttl: int = 60) -> aetcd.Lock:
        """An ``aetcd.Lock`` on ``key`` whose etcd calls go through this client.

        Only its calls are guarded: waiting for the holder is not. aetcd's
        lock runs the body of ``async with`` even when acquiring failed.
        """
        return aetcd.Lock(self, key, ttl)

    async def status(self, *, call_timeout: float | None = None) -> aetcd.Status:
        """The status of the member that answers, with the leader as a Member."""
        status = await self._session.call(ops.STATUS, call_timeout)
        if status.leader is not None:
            status.leader = Member.bind(status.leader, self)
        return status

    async def add_member(
        self, urls: list[str], *, call_timeout: float | None = None
    ) -> Member:
        """Add a member with peer URLs ``urls`` to the cluster."""
        raw = await self._session.call(ops.ADD_MEMBER, call_timeout, urls)
        return Member.bind(raw, self)

    async def remove_member(
        self, member_id: int, *, call_timeout: float | None = None
    ) -> None:
        """Remove a member from the cluster."""
        await self._session.call(ops.REMOVE_MEMBER, call_timeout, member_id)

    async def update_member(
        self, member_id: int, peer_urls: list[str], *, call_timeout: float | None = None
    ) -> None:
        """Give a member new peer URLs."""
        await self._session.call(ops.UPDATE_MEMBER, call_timeout, member_id, peer_urls)

    async def members(
        self, *, call_timeout: float | None = None
    ) -> AsyncIterator[Member]:
        """Every cluster member; the list is fetched whole under one guard."""
        found = await self._session.call(ops.MEMBERS, call_timeout)
        for raw in found:
            yield Member.bind(raw, self)

    async def compact(
        self,
        revision: int,
        physical: bool = False,
        *,
        call_timeout: float | None = None,
    ) -> None:
        """Compact the history up to ``revision``."""
        session = self._session
        timeout = session.slow(call_timeout) if physical else call_timeout
        await session.call(ops.COMPACT, timeout, revision, physical)

    async def defragment(self, *, call_timeout: float | None = None) -> None:
        """Defragment the answering member's database (slow by nature)."""
        session = self._session
        await session.call(ops.DEFRAGMENT, session.slow(call_timeout))

    async def hash(self, *, call_timeout: float | None = None) -> int:
        """The hash of the answering member's key-value state."""
        return await self._session.call(ops.HASH, call_timeout)

    async def create_alarm(
        self, member_id: int = 0, *, call_timeout: float | None = None
    ) -> list[aetcd.Alarm]:
        """Raise a no-space alarm on a member (0: every member)."""
        return await self._session.call(ops.CREATE_ALARM, call_timeout, member_id)

    async def list_alarms(
        self,
        member_id: int = 0,
        alarm_type: str = "none",
        *,
        call_timeout: float | None = None,
    ) -> AsyncIterator[aetcd.Alarm]:
        """The active alarms; the list is fetched whole under one guard."""
        found = await self._session.call(
            ops.LIST_ALARMS, call_timeout, member_id, alarm_type
        )
        for alarm in found:
            yield alarm

    async def disarm_alarm(
        self, member_id: int = 0, *, call_timeout: float | None = None
    ) -> list[aetcd.Alarm]:
        """Clear the alarms of a member (0: every member)."""
        return await self._session.call(ops.DISARM_ALARM, call_timeout, member_id)

    async def snapshot(
        self, file_obj: IO[bytes], *, call_timeout: float | None = None
    ) -> None:
        """Write a snapshot of the database to ``file_obj`` (slow by nature)."""
        session = self._session
        await session.call(ops.SNAPSHOT, session.slow(call_timeout), file_obj)
