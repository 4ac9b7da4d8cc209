"""Keeping a lease alive in the background, also while the breaker is open.

Design note. A keeper refreshes its lease a third of the TTL after the last
refresh that got through. The lease's deadline is the moment that refresh
was sent plus the TTL etcd answered: past it, etcd may have let it go.

- A refresh runs under the breaker like any call. One that fails is tried
  again with backoff for as long as the deadline allows, each attempt's own
  deadline cut to the lease's remaining time.
- A refresh the breaker rejects waits for the breaker (``wait_ready()``),
  but only until the lease's safety point, a third of the TTL before its
  deadline. From then on a rejected refresh is sent anyway, outside the
  breaker (not admitted, not counted), on a fresh channel if the current one
  waits out gRPC's reconnect backoff. So an open breaker never lets a lease
  expire while etcd is healthy, and a breaker that recovers in time costs
  etcd no extra call.
- The lease is lost when its deadline passes before a refresh got through
  (``expired``: etcd may still hold it, after a restart say, but nobody can
  rely on it any more) or when etcd answers TTL 0 (``gone``). The keeper
  stops; the lease's ``lost`` is set, its hooks run, ``aetcd_breaker.lease_lost``
  is logged once, and every later use raises :class:`LeaseLostError`.
- Closing the client ends every keeper it runs, revokes the leases they
  would revoke on exit (waiting at most a second for etcd's answer; when it
  does not come, the lease expires by its TTL), and reports them lost
  (``closed``): nothing keeps them alive any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Final

import aetcd
import anyio
from aetcd import rpc

from ..core import CircuitOpenError
from ..core._clock import scope_until
from . import _ops as ops
from ._connection import check_flag, check_hook, check_ttl
from .errors import CLOSED, EXPIRED, GONE, ClientClosedError, LeaseLostError
from .objects import Lease

if TYPE_CHECKING:
    from ._lease_ops import LeaseOps
    from ._session import Session

__all__ = [
    "KeepAlive",
    "LeaseKeeper",
    "grant",
    "new_lease_id",
    "revoke_on_close",
    "revoke_quietly",
    "start_revoke",
]

LostHook = Callable[[LeaseLostError], object]

# The first pause after a failed refresh; it doubles up to a sixth of the TTL.
_FIRST_PAUSE: Final = 0.1
# How long closing the client waits for etcd to answer a keeper's revocation.
_CLOSE_REVOKE: Final = 1.0
# How long the revoke of a grant cut off waits before trying once more when
# etcd does not know the lease: the grant may still be on its way.
_LATE_GRANT: Final = 1.0
# etcd lease ids are positive int64; 62 random bits make a clash negligible,
# and a clash is answered (DuplicateLeaseError) rather than harmful.
_ID_BITS: Final = 62

# Revokes that outlived the entry or acquisition that started them; the loop
# keeps only a weak reference to a task.
_revoking: set[asyncio.Task[None]] = set()


def new_lease_id() -> int:
    """A lease id of our own: a grant cut off on its way can still be revoked."""
    return secrets.randbits(_ID_BITS) + 1


async def grant(
    client: LeaseOps, ttl: int, lease_id: int | None, call_timeout: float | None
) -> tuple[Lease, float]:
    """Grant a lease through ``client``; the lease and its deadline."""
    sent = client._session.clock.now()
    lease = await client.lease(ttl, lease_id, call_timeout=call_timeout)
    return lease, sent + lease.ttl


async def _refresh(
    lease: Lease, session: Session, expires: float, ttl: float
) -> tuple[float, float] | None:
    """Refresh once, trying until the deadline; the new deadline and TTL."""
    clock = session.clock
    safety = expires - ttl / 3
    failures = 0
    while True:
        now = clock.now()
        left = expires - now
        if left <= 0:
            lease._lose(EXPIRED)
            return None
        seconds = min(session.timeout, left)
        try:
            try:
                reply = await session.call(ops.REFRESH_LEASE, seconds, lease.id)
            except CircuitOpenError:
                if now < safety:
                    with scope_until(clock, safety):
                        await session.breaker.wait_ready()
                    continue
                reply = await session.direct(ops.REFRESH_LEASE, seconds, lease.id)
        except ClientClosedError:
            # Started as the client closed: nothing may keep the lease now.
            lease._lose(CLOSED)
            return None
        except Exception:
            failures += 1
            pause = min(_FIRST_PAUSE * 2 ** (failures - 1), ttl / 6)
            await clock.sleep_until(min(clock.now() + pause, expires))
            continue
        if reply.TTL <= 0:
            lease._lose(GONE)
            return None
        return now + reply.TTL, float(reply.TTL)


class KeepAlive:
    """The background task that keeps one lease alive until stopped or lost.

    It belongs to the session: closing the client ends it (:meth:`halt`),
    and revokes the lease if ``revoke`` says so.
    """

    __slots__ = ("_expires", "_lease", "_revoke", "_session", "_task", "_ttl")

    def __init__(
        self,
        lease: Lease,
        session: Session,
        expires: float,
        ttl: float,
        *,
        revoke: bool = True,
    ) -> None:
        self._lease = lease
        self._session = session
        self._expires = expires
        self._ttl = ttl
        self._revoke = revoke
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._session.closed:
            # Granted as the client closed: nothing may keep it now; it
            # expires by its TTL.
            self._lease._lose(CLOSED)
            return
        task = asyncio.get_running_loop().create_task(self._run())
        self._task = task
        keepers = self._session.keepers
        keepers.add(self)
        task.add_done_callback(lambda _: keepers.discard(self))

    async def _run(self) -> None:
        clock = self._session.clock
        expires, ttl = self._expires, self._ttl
        while True:
            await clock.sleep_until(expires - 2 * ttl / 3)
            refreshed = await _refresh(self._lease, self._session, expires, ttl)
            if refreshed is None:
                return
            expires, ttl = refreshed

    async def stop(self) -> None:
        """Stop refreshing; no refresh is sent once this returns."""
        task, self._task = self._task, None
        if task is None:
            return
        self._session.keepers.discard(self)
        task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait({task})
        if not task.cancelled():
            task.result()

    def halt(self) -> Lease | None:
        """The client is closing: stop now and report the lease lost.

        No await, so that a close cancelled half-way has told every holder.
        Returns the lease to revoke, if this keeper revokes on exit.
        """
        task, self._task = self._task, None
        if task is not None:
            task.add_done_callback(_quiet)
            task.cancel()
        self._session.keepers.discard(self)
        lease = self._lease
        if lease.lost_reason is not None or lease._released:
            return None
        lease._lose(CLOSED)
        return lease if self._revoke else None


def _quiet(task: asyncio.Task[None]) -> None:
    # A keeper halted by a close ends unawaited: fetch whatever it raised.
    if not task.cancelled():
        task.exception()


async def revoke_on_close(session: Session, leases: list[Lease]) -> None:
    """Revoke ``leases`` together, within a second; the rest expire by TTL."""
    seconds = min(session.timeout, _CLOSE_REVOKE)

    async def revoke(lease: Lease) -> None:
        # Quiet: when etcd cannot answer in time, the lease expires.
        with contextlib.suppress(Exception):
            await session.call(ops.REVOKE_LEASE, seconds, lease.id)

    await asyncio.gather(*(revoke(lease) for lease in leases))


class LeaseKeeper:
    """Keeps a lease alive while an ``async with`` block runs; gives the lease.

    Made by ``etcd.lease_keeper(ttl)``, which grants a lease on entry and
    revokes it on exit, or by ``lease.keep_alive()``, which keeps a lease
    you have (refreshing it once on entry, so a lost one raises there).

    The holder learns of a loss at once: ``lease.lost`` is set, ``on_lost``
    is called with the :class:`LeaseLostError`, and every later use of the
    lease raises it. With ``cancel_on_lost``, the block itself is cancelled
    and the ``async with`` raises :class:`LeaseLostError`.
    """

    __slots__ = (
        "_cancel_on_lost",
        "_client",
        "_hook",
        "_keeping",
        "_lease",
        "_on_lost",
        "_revoke",
        "_scope",
        "_timeout",
        "_ttl",
    )

    def __init__(
        self,
        client: LeaseOps,
        *,
        ttl: int | None = None,
        lease: Lease | None = None,
        on_lost: LostHook | None = None,
        cancel_on_lost: bool = False,
        revoke: bool = True,
        call_timeout: float | None = None,
    ) -> None:
        self._client = client
        # A keeper of a new lease needs its TTL; one of a lease you hold reads it.
        self._ttl = None if lease is not None and ttl is None else check_ttl(ttl)
        self._lease = lease
        self._on_lost = check_hook(on_lost)
        self._cancel_on_lost = check_flag("cancel_on_lost", cancel_on_lost)
        self._revoke = check_flag("revoke", revoke)
        self._timeout = call_timeout
        self._keeping: KeepAlive | None = None
        self._scope: anyio.CancelScope | None = None
        self._hook: LostHook | None = None

    async def __aenter__(self) -> Lease:
        if self._keeping is not None:
            raise RuntimeError("a lease keeper keeps one block; make another")
        session = self._client._session
        if self._lease is None:
            assert self._ttl is not None
            lease_id = new_lease_id()
            try:
                lease, expires = await grant(
                    self._client, self._ttl, lease_id, self._timeout
                )
            except (CircuitOpenError, aetcd.DuplicateLeaseError):
                raise  # not granted, or someone else's id
            except BaseException:
                start_revoke(
                    Lease(lease_id, self._ttl, self._client),
                    self._timeout,
                    cut_off=True,
                )
                raise
            self._lease = lease
            ttl = float(lease.ttl)
        else:
            lease = self._lease
            sent = session.clock.now()
            reply = await lease.refresh(call_timeout=self._timeout)
            ttl = float(reply.TTL)
            expires = sent + ttl
        if self._on_lost is not None:
            lease._hooks.append(self._on_lost)
        if self._cancel_on_lost:
            scope = self._scope = anyio.CancelScope()
            self._hook = lambda _: scope.cancel()
            lease._hooks.append(self._hook)
            scope.__enter__()
        self._keeping = KeepAlive(lease, session, expires, ttl, revoke=self._revoke)
        self._keeping.start()
        return lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lease = self._lease
        assert lease is not None and self._keeping is not None
        stopped = False
        try:
            await self._keeping.stop()
            stopped = True
        finally:
            if not stopped and self._revoke:
                # A plain asyncio cancellation, which anyio's shield does not
                # hold back, cut the stop short: the lease must go all the same.
                start_revoke(lease, self._timeout)
            for hook in (self._on_lost, self._hook):
                if hook is not None and hook in lease._hooks:
                    lease._hooks.remove(hook)
            cancelled = False
            if self._scope is not None:
                cancelled = bool(self._scope.__exit__(exc_type, exc, tb))
        if self._revoke:
            await revoke_quietly(lease, self._timeout)
        if cancelled and lease.lost_reason is not None:
            raise LeaseLostError(lease.id, lease.lost_reason) from None


def start_revoke(
    lease: Lease, call_timeout: float | None, *, cut_off: bool = False
) -> asyncio.Task[None] | None:
    """Start revoking a lease that is no longer needed, if etcd may still hold
    it; the task that does, or ``None``.

    A task of its own: no cancellation of the caller's cuts it off (anyio's
    shield does not hold back a plain asyncio one, a timeout or a task
    group). It is quiet: when etcd cannot be reached the lease expires by
    itself within its TTL. A lease lost to the client's close was revoked
    then, if it could be. ``cut_off`` says that the lease's grant was cut off
    on its way: when etcd does not know the lease, the revoke may have
    overtaken it, and is tried once more later.
    """
    if lease.lost_reason in (GONE, CLOSED) or lease._released:
        return None
    task = asyncio.get_running_loop().create_task(_revoke(lease, call_timeout, cut_off))
    _revoking.add(task)
    task.add_done_callback(_revoking.discard)
    return task


async def revoke_quietly(lease: Lease, call_timeout: float | None) -> None:
    """Revoke a lease as :func:`start_revoke` does, and wait for it; a
    cancellation of the caller's ends only the wait."""
    revoking = start_revoke(lease, call_timeout)
    if revoking is not None:
        with anyio.CancelScope(shield=True):
            await asyncio.shield(revoking)


async def _revoke(lease: Lease, call_timeout: float | None, cut_off: bool) -> None:
    with contextlib.suppress(Exception):
        try:
            await lease.revoke(call_timeout=call_timeout)
        except aetcd.ClientError as exc:
            if not (cut_off and _not_found(exc)):
                raise
            clock = lease._client._session.clock
            await clock.sleep_until(clock.now() + _LATE_GRANT)
            await lease.revoke(call_timeout=call_timeout)


def _not_found(exc: aetcd.ClientError) -> bool:
    """Whether etcd answered that it knows no such lease."""
    cause = exc.__cause__
    return (
        isinstance(cause, rpc.AioRpcError) and cause.code() == rpc.StatusCode.NOT_FOUND
    )
