"""Leases and cluster members that talk to etcd through the guarded client.

aetcd builds its ``Lease`` and ``Member`` around the raw client that made
them, so their calls would bypass the breaker. BreakerClient hands out these
instead, bound to itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aetcd

if TYPE_CHECKING:
    from ._cluster import ClusterOps

__all__ = ["Lease", "Member"]


class Lease:
    """A lease granted through a :class:`BreakerClient`.

    Accepted wherever aetcd takes a lease (``put(..., lease=lease)``). An
    expired or revoked lease gives no error on refresh: read the TTL.
    """

    __slots__ = ("_client", "id", "ttl")

    def __init__(self, lease_id: int, ttl: int, client: ClusterOps) -> None:
        self.id = lease_id
        self.ttl = ttl
        self._client = client

    async def revoke(self, *, call_timeout: float | None = None) -> None:
        """Revoke this lease."""
        await self._client.revoke_lease(self.id, call_timeout=call_timeout)

    async def refresh(self, *, call_timeout: float | None = None) -> Any:
        """Refresh the lease; etcd's keep-alive answer (``TTL`` 0: gone)."""
        return await self._client.refresh_lease(self.id, call_timeout=call_timeout)

    async def remaining_ttl(self, *, call_timeout: float | None = None) -> int:
        """Seconds the lease has left; -1 once it expired or was revoked."""
        info = await self._info(False, call_timeout)
        ttl: int = info.TTL
        return ttl

    async def granted_ttl(self, *, call_timeout: float | None = None) -> int:
        """The TTL the lease was granted with."""
        info = await self._info(False, call_timeout)
        ttl: int = info.grantedTTL
        return ttl

    async def keys(self, *, call_timeout: float | None = None) -> list[bytes]:
        """The keys attached to this lease."""
        info = await self._info(True, call_timeout)
        return list(info.keys)

    async def _info(self, keys: bool, call_timeout: float | None) -> Any:
        client = self._client
        return await client.get_lease_info(
            self.id, keys=keys, call_timeout=call_timeout
        )

    def __repr__(self) -> str:
        return f"<Lease id={self.id} ttl={self.ttl}>"


class Member:
    """A cluster member, as listed through a :class:`BreakerClient`."""

    __slots__ = ("_client", "client_urls", "id", "name", "peer_urls")

    def __init__(
        self,
        member_id: int,
        name: str,
        peer_urls: list[str],
        client_urls: list[str],
        client: ClusterOps,
    ) -> None:
        self.id = member_id
        self.name = name
        self.peer_urls = peer_urls
        self.client_urls = client_urls
        self._client = client

    @classmethod
    def bind(cls, member: aetcd.Member, client: ClusterOps) -> Member:
        """Rebuild one of aetcd's members around a guarded client."""
        return cls(member.id, member.name, member.peer_urls, member.client_urls, client)

    async def remove(self, *, call_timeout: float | None = None) -> None:
        """Remove this member from the cluster."""
        await self._client.remove_member(self.id, call_timeout=call_timeout)

    async def update(
        self, peer_urls: list[str], *, call_timeout: float | None = None
    ) -> None:
        """Give this member new peer URLs."""
        await self._client.update_member(self.id, peer_urls, call_timeout=call_timeout)

    async def active_alarms(
        self, *, call_timeout: float | None = None
    ) -> list[aetcd.Alarm]:
        """The alarms raised on this member."""
        alarms = self._client.list_alarms(self.id, call_timeout=call_timeout)
        return [alarm async for alarm in alarms]

    def __str__(self) -> str:
        return (
            f"Cluster member with ID: {self.id}, peer URLs: {self.peer_urls}, "
            f"client URLs: {self.client_urls}"
        )

    def __repr__(self) -> str:
        return f"<Member id={self.id} name={self.name!r}>"
