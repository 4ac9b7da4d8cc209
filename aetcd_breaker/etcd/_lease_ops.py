"""The lease and lock operations of BreakerClient."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aetcd

from ..core import InvalidSettingTypeError
from . import _ops as ops
from ._connection import check_lease_id, check_ttl
from ._options import DEFAULT, IDEMPOTENT, WRITE, run
from .leases import LeaseKeeper, LostHook
from .objects import Lease
from .retry import Retry

if TYPE_CHECKING:
    from ._session import Session
    from .client import BreakerClient
    from .lock import Lock

__all__ = ["LeaseOps"]

Retrying = Retry | bool | None


class LeaseOps:
    """Leases, kept leases and locks; mixed into BreakerClient through ClusterOps.

    Granting and revoking are writes, never retried unless the call asks;
    refreshing and reading a lease's time to live are reads.
    """

    __slots__ = ()

    _session: Session

    async def lease(
        self,
        ttl: int,
        lease_id: int | None = None,
        *,
        call_timeout: float | None = None,
        retry: Retrying = None,
        fallback: Any = DEFAULT,
    ) -> Lease:
        """Grant a lease of ``ttl`` seconds, bound to this client."""
        check_ttl(ttl)
        check_lease_id(lease_id)
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            raw = await s.call(ops.LEASE, call_timeout, ttl, lease_id)
        else:
            raw = await run(
                s, ops.LEASE, WRITE, call_timeout, retry, fallback, ttl, lease_id
            )
        return Lease(raw.id, raw.ttl, self) if isinstance(raw, aetcd.Lease) else raw

    def lease_keeper(
        self,
        ttl: int,
        *,
        on_lost: LostHook | None = None,
        cancel_on_lost: bool = False,
        call_timeout: float | None = None,
    ) -> LeaseKeeper:
        """``async with etcd.lease_keeper(ttl) as lease:`` keeps a new lease alive.

        The lease is granted on entry, refreshed in the background while the
        block runs, and revoked on exit. See :class:`LeaseKeeper` for how a
        loss is reported and what happens while the breaker is open.
        """
        return LeaseKeeper(
            self,
            ttl=ttl,
            on_lost=on_lost,
            cancel_on_lost=cancel_on_lost,
            call_timeout=call_timeout,
        )

    async def revoke_lease(
        self,
        lease_id: int,
        *,
        call_timeout: float | None = None,
        retry: Retrying = None,
        fallback: Any = DEFAULT,
    ) -> None:
        """Revoke a lease; a gone one raises a bare ``aetcd.ClientError``."""
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            await s.call(ops.REVOKE_LEASE, call_timeout, lease_id)
        else:
            await run(
                s, ops.REVOKE_LEASE, WRITE, call_timeout, retry, fallback, lease_id
            )

    async def refresh_lease(
        self,
        lease_id: int,
        *,
        call_timeout: float | None = None,
        retry: Retrying = None,
        fallback: Any = DEFAULT,
    ) -> Any:
        """Refresh a lease; etcd's keep-alive answer (``TTL`` 0: gone)."""
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            return await s.call(ops.REFRESH_LEASE, call_timeout, lease_id)
        return await run(
            s, ops.REFRESH_LEASE, IDEMPOTENT, call_timeout, retry, fallback, lease_id
        )

    async def get_lease_info(
        self,
        lease_id: int,
        *,
        keys: bool = True,
        call_timeout: float | None = None,
        retry: Retrying = None,
        fallback: Any = DEFAULT,
    ) -> Any:
        """etcd's time-to-live answer for a lease (``TTL`` -1: gone)."""
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            return await s.call(ops.GET_LEASE_INFO, call_timeout, lease_id, keys)
        return await run(
            s,
            ops.GET_LEASE_INFO,
            IDEMPOTENT,
            call_timeout,
            retry,
            fallback,
            lease_id,
            keys,
        )

    def lock(
        self,
        key: bytes,
        ttl: int = 60,
        *,
        timeout: float | None = 10.0,
        on_lost: LostHook | None = None,
        cancel_on_lost: bool = False,
    ) -> Lock:
        """A :class:`Lock` on ``key`` whose etcd calls go through this client.

        ``async with`` never runs its block without the lock: it raises when
        the lock is not acquired within ``timeout`` seconds or etcd fails.
        """
        from .lock import Lock

        if not isinstance(key, bytes):
            raise InvalidSettingTypeError("key", key, "bytes")
        client: BreakerClient = self  # type: ignore[assignment]
        return Lock(
            client,
            key,
            ttl,
            timeout=timeout,
            on_lost=on_lost,
            cancel_on_lost=cancel_on_lost,
        )
