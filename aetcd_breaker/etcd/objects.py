"""Leases and cluster members that talk to etcd through the guarded client.

aetcd builds its ``Lease`` and ``Member`` around the raw client that made
them, so their calls would bypass the breaker. BreakerClient hands out these
instead, bound to itself. A lease also keeps track of its own loss, which
etcd reports only as a TTL of 0 (refresh) or -1 (info), never as an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import aetcd
import anyio
import structlog

from ..core.events import HOOK_FAILED
from .errors import GONE, LeaseLostError

if TYPE_CHECKING:
    from ._cluster import ClusterOps
    from ._lease_ops import LeaseOps
    from .leases import LeaseKeeper

__all__ = ["LEASE_LOST", "Lease", "Member"]

LEASE_LOST: Final = "aetcd_breaker.lease_lost"
"""The log event of a lost lease; keys ``breaker``, ``lease_id``, ``reason``."""

_log = structlog.get_logger("aetcd_breaker")


class Lease:
    """A lease granted through a :class:`BreakerClient`.

    Accepted wherever aetcd takes a lease (``put(..., lease=lease)``). etcd
    reports a lost lease (expired, or revoked by someone else) only through
    its TTL; this lease turns that into :class:`LeaseLostError`: a refresh
    that finds it gone, and every use after, raises it. ``lost`` is set, and
    ``aetcd_breaker.lease_lost`` logged, the moment a loss is seen. After
    :meth:`revoke` through this object it answers as aetcd does (TTL -1).
    Keep it alive with :meth:`keep_alive`.
    """

    __slots__ = ("_client", "_event", "_hooks", "_released", "id", "lost_reason", "ttl")

    def __init__(self, lease_id: int, ttl: int, client: LeaseOps) -> None:
        self.id = lease_id
        self.ttl = ttl
        self._client = client
        self.lost_reason: str | None = None
        self._released = False
        self._event: anyio.Event | None = None
        self._hooks: list[Callable[[LeaseLostError], object]] = []

    @property
    def lost(self) -> anyio.Event:
        """Set once the lease is known to be lost."""
        if self._event is None:
            self._event = anyio.Event()
            if self.lost_reason is not None:
                self._event.set()
        return self._event

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if the lease is known to be lost."""
        if self.lost_reason is not None:
            raise LeaseLostError(self.id, self.lost_reason)

    def keep_alive(
        self,
        *,
        on_lost: Callable[[LeaseLostError], object] | None = None,
        cancel_on_lost: bool = False,
        revoke: bool = False,
    ) -> LeaseKeeper:
        """Keep this lease alive while an ``async with`` block runs.

        See :class:`LeaseKeeper`; entering refreshes the lease once, so a
        lease that is already gone raises there.
        """
        from .leases import LeaseKeeper

        return LeaseKeeper(
            self._client,
            lease=self,
            on_lost=on_lost,
            cancel_on_lost=cancel_on_lost,
            revoke=revoke,
        )

    async def revoke(self, *, call_timeout: float | None = None) -> None:
        """Revoke this lease."""
        await self._client.revoke_lease(self.id, call_timeout=call_timeout)
        self._released = True

    async def refresh(self, *, call_timeout: float | None = None) -> Any:
        """Refresh the lease; etcd's keep-alive answer.

        Raises :class:`LeaseLostError` when the lease is gone (etcd answers
        TTL 0) or was already known to be lost.
        """
        self.check()
        reply = await self._client.refresh_lease(self.id, call_timeout=call_timeout)
        if reply.TTL <= 0 and not self._released:
            raise self._lose(GONE)
        return reply

    async def remaining_ttl(self, *, call_timeout: float | None = None) -> int:
        """Seconds the lease has left; -1 once revoked through this object."""
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
        self.check()
        client = self._client
        info = await client.get_lease_info(
            self.id, keys=keys, call_timeout=call_timeout
        )
        if info.TTL == -1 and not self._released:
            raise self._lose(GONE)
        return info

    def _lose(self, reason: str) -> LeaseLostError:
        """Record the loss once: set ``lost``, log, run the hooks; the error.

        A lease revoked through this object is released, not lost.
        """
        error = LeaseLostError(self.id, reason)
        if self.lost_reason is not None or self._released:
            return error
        self.lost_reason = reason
        if self._event is not None:
            self._event.set()
        # A broken log pipeline must not stop the holders hearing of the
        # loss, nor a close that reports it part-way through.
        with contextlib.suppress(Exception):
            _log.warning(
                LEASE_LOST,
                breaker=self._client._session.breaker.name,
                lease_id=self.id,
                reason=reason,
            )
        for hook in tuple(self._hooks):
            try:
                hook(error)
            except Exception as exc:  # a hook must never break the keeper
                with contextlib.suppress(Exception):
                    _log.error(
                        HOOK_FAILED,
                        breaker=self._client._session.breaker.name,
                        hook=getattr(hook, "__qualname__", repr(hook)),
                        error=repr(exc),
                        exc_info=exc,
                    )
        return error

    def __repr__(self) -> str:
        lost = "" if self.lost_reason is None else f" lost={self.lost_reason}"
        return f"<Lease id={self.id} ttl={self.ttl}{lost}>"


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
