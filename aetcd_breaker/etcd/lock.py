"""A distributed lock that never runs its block without holding the lock.

aetcd's own lock runs the body of ``async with`` when acquiring failed, and
grants a lease on every attempt that it never revokes. This one:

- grants one lease per acquisition, with an id it picks itself, and keeps it
  alive while it waits and while it holds; an acquisition that gives up,
  fails or is cancelled revokes that id, even when the grant's answer never
  arrived, waiting for the revoke only within its timeout (the revoke goes
  on in the background; if etcd cannot be reached, the lease expires within
  its TTL);
- makes each attempt one transaction: put its uuid if the key does not
  exist, else read the holder (finding its own uuid there means it holds);
- waits for the holder's delete event with a watch of its own: creating it
  is a guarded call, waiting is not, so a long wait never trips the breaker
  (a watch that fails because etcd went away is counted, and raised);
- releases by deleting the key only while it still holds its uuid;
- reports a lost lease at once, as :class:`LeaseKeeper` does, and fails an
  acquisition whose lease is lost before it holds (also when the loss came
  while its transaction was on the way).

Its calls go through the session without the client-wide options: a lock
must never act on a stale read or a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import aetcd
import anyio

from ..core import CircuitOpenError
from ..core._clock import scope_until
from . import _ops as ops
from ._connection import check_flag, check_hook, check_ttl, check_wait
from ._holder import wait_for_delete
from ._session import check_timeout
from .errors import (
    CLOSED,
    EtcdCallTimeoutError,
    LeaseLostError,
    LockNotAcquiredError,
)
from .leases import KeepAlive, LostHook, new_lease_id, start_revoke
from .objects import Lease

if TYPE_CHECKING:
    from ._session import Session
    from .client import BreakerClient

__all__ = ["Lock"]


_LOCK_TIMEOUT: Any = object()
_CLOSED_WHILE_ACQUIRING: Final = (
    "the BreakerClient was closed while the lock was acquired"
)


class _OutOfTime(Exception):
    """The lock's timeout ran out during a call that it had cut short."""


@contextlib.contextmanager
def _cut_short(session: Session, cut: bool) -> Iterator[None]:
    """Run the block's calls on the lock's time when ``cut``.

    Their deadline is then what is left of the lock's timeout, shorter than
    the call timeout: its expiry says that the lock ran out of time, not that
    etcd failed, so the session records no outcome and the lock gives up.
    """
    if not cut:
        yield
        return
    task = asyncio.current_task()
    assert task is not None
    session.budgeted.add(task)
    try:
        yield
    except EtcdCallTimeoutError:
        raise _OutOfTime from None
    finally:
        session.budgeted.discard(task)


class Lock:
    """A lock on ``key`` held through a lease of ``ttl`` seconds.

    ``async with lock:`` acquires within ``timeout`` seconds (``None``: no
    limit) or raises: :class:`LockNotAcquiredError` when the holder did not
    let go in time, the etcd error when etcd failed. While held, ``lost`` is
    set and ``on_lost`` called the moment its lease is lost; with
    ``cancel_on_lost`` the block is cancelled and raises
    :class:`LeaseLostError`. Leaving the block releases the lock; if that
    fails (etcd away), the lease is no longer refreshed and the lock frees
    itself within ``ttl``.
    """

    __slots__ = (
        "_busy",
        "_cancel_on_lost",
        "_client",
        "_event",
        "_granting",
        "_held",
        "_keeping",
        "_lost",
        "_on_lost",
        "_scope",
        "_waiting",
        "key",
        "lease",
        "revision",
        "timeout",
        "ttl",
        "uuid",
    )

    def __init__(
        self,
        client: BreakerClient,
        key: bytes,
        ttl: int = 60,
        *,
        timeout: float | None = 10.0,
        on_lost: LostHook | None = None,
        cancel_on_lost: bool = False,
    ) -> None:
        self._client = client
        self.key = key
        self.ttl = check_ttl(ttl)
        self.timeout = check_wait(timeout)
        self.uuid = uuid.uuid4().bytes
        self.lease: Lease | None = None
        self.revision: int | None = None
        self._lost: LeaseLostError | None = None
        self._on_lost = check_hook(on_lost)
        self._cancel_on_lost = check_flag("cancel_on_lost", cancel_on_lost)
        self._granting: int | None = None
        # Acquiring or releasing: the lease and keeper are in flux.
        self._busy = False
        self._held = False
        # The wait for the holder to let go, which a lost lease cuts short.
        self._waiting: anyio.CancelScope | None = None
        self._keeping: KeepAlive | None = None
        self._event: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None

    @property
    def lost(self) -> anyio.Event:
        """Set once the lease of the held lock is lost."""
        if self._event is None:
            self._event = anyio.Event()
            if self._lost is not None:
                self._event.set()
        return self._event

    @property
    def lost_reason(self) -> str | None:
        """Why the held lock's lease was lost, or ``None``."""
        return None if self._lost is None else self._lost.reason

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if the lock's lease was lost."""
        lost = self._lost
        if lost is not None:
            raise LeaseLostError(lost.lease_id, lost.reason)

    async def acquire(
        self,
        timeout: float | None = _LOCK_TIMEOUT,
        *,
        call_timeout: float | None = None,
    ) -> bool:
        """Acquire the lock; ``False`` if the holder did not let go in time.

        ``timeout`` (by default the lock's own) bounds the whole acquisition,
        calls included; the first attempt is always made (``timeout=0`` tries
        once). Errors of etcd and rejections by the breaker are raised, and
        :class:`LeaseLostError` when the lease is lost before the lock holds.
        """
        timeout = self.timeout if timeout is _LOCK_TIMEOUT else check_wait(timeout)
        if self._held and self._lost is not None and not self._busy:
            raise RuntimeError(
                f"lock {self.key!r} was lost ({self._lost.reason}) but not "
                "released: release() it before acquiring it again"
            )
        if self._held or self._busy:
            # A second acquisition would share, and then revoke or orphan,
            # the lease and keeper of the first.
            raise RuntimeError(
                f"lock {self.key!r} is already held, or being acquired or "
                "released, by this object"
            )
        clock = self._client._session.clock
        give_up = None if timeout is None else clock.now() + timeout
        acquired = False
        waits = True
        self._busy = True
        try:
            acquired = await self._attempts(give_up, call_timeout)
        except _OutOfTime:
            pass
        except asyncio.CancelledError:
            # asyncio delivers a cancellation once: a wait for the revoke
            # would not be cut short, so a cancelled acquisition waits none.
            waits = False
            raise
        finally:
            try:
                if not acquired:
                    await self._abandon(call_timeout, give_up, wait=waits)
            finally:
                self._busy = False
        return acquired

    def _seconds(
        self, call_timeout: float | None, give_up: float | None
    ) -> tuple[float, bool]:
        """A call's deadline, cut to the time left (0: no time left); cut?"""
        session = self._client._session
        seconds = (
            session.timeout if call_timeout is None else check_timeout(call_timeout)
        )
        if give_up is None:
            return seconds, False
        left = give_up - session.clock.now()
        if left < seconds:
            return max(0.0, left), True
        return seconds, False

    async def _attempts(
        self, give_up: float | None, call_timeout: float | None
    ) -> bool:
        session = self._client._session
        first = True
        while True:
            seconds, cut = self._seconds(call_timeout, give_up)
            if seconds == 0:
                if not first:
                    return False
                seconds, cut = self._seconds(call_timeout, None)
            if self.lease is None:
                with _cut_short(session, cut):
                    await self._grant(seconds)
                continue
            self._check_lease()
            txn = self._client.transactions
            try:
                with _cut_short(session, cut):
                    succeeded, responses = await session.call(
                        ops.TRANSACTION,
                        seconds,
                        [txn.create(self.key) == 0],
                        [txn.put(self.key, self.uuid, lease=self.lease.id)],
                        [txn.get(self.key)],
                    )
            except aetcd.ClientError:
                # etcd's "lease not found", once the keeper knows it lost it.
                self._check_lease()
                raise
            first = False
            if succeeded:
                self.revision = responses[0].response_put.header.revision
                return self._hold()
            if responses and responses[0]:
                value, holder = responses[0][0]
                if value == self.uuid:
                    # An earlier attempt went through but its answer was lost.
                    self.revision = holder.mod_revision
                    return self._hold()
                await self._wait(holder.header.revision + 1, give_up, call_timeout)

    async def _grant(self, seconds: float) -> None:
        session = self._client._session
        lease_id = new_lease_id()
        self._granting = lease_id
        sent = session.clock.now()
        try:
            raw = await session.call(ops.LEASE, seconds, self.ttl, lease_id)
        except (CircuitOpenError, aetcd.DuplicateLeaseError):
            # Not granted (or someone else's id): nothing of ours to revoke.
            self._granting = None
            raise
        lease = self.lease = Lease(raw.id, raw.ttl, self._client)
        lease._hooks.append(self._lease_lost)
        self._keeping = KeepAlive(lease, session, sent + raw.ttl, float(raw.ttl))
        self._keeping.start()

    async def _wait(
        self, start_revision: int, give_up: float | None, call_timeout: float | None
    ) -> None:
        seconds, cut = self._seconds(call_timeout, give_up)
        if seconds:
            session = self._client._session
            # A lost lease ends the wait; the next attempt raises the loss.
            with anyio.CancelScope() as self._waiting, _cut_short(session, cut):
                try:
                    await wait_for_delete(
                        session, self.key, start_revision, seconds, give_up
                    )
                finally:
                    self._waiting = None

    def _hold(self) -> bool:
        # The keeper may have given the lease up while the transaction was on
        # its way: the key is then bound to a lease nobody can rely on, and
        # the lock is not held (abandoning revokes the lease, and the key).
        self._check_lease()
        self._held = True
        self._lost = None
        self._event = None
        self._granting = None
        return True

    def _check_lease(self) -> None:
        """Raise the loss of the lease of an acquisition in progress.

        Closing the client cuts an acquisition off like every call it cuts
        off, as a connection failure: also when the close, revoking the
        holder's lease, let the wait end first.
        """
        lease = self.lease
        assert lease is not None
        if lease.lost_reason == CLOSED:
            raise aetcd.ConnectionFailedError(_CLOSED_WHILE_ACQUIRING)
        lease.check()

    def _lease_lost(self, error: LeaseLostError) -> None:
        # While acquiring, the next attempt finds the loss through check().
        if not self._held:
            # Closing the client cuts the wait off itself, as a connection
            # failure like every call it cuts off.
            if self._waiting is not None and error.reason != CLOSED:
                self._waiting.cancel()
            return
        self._lost = error
        if self._event is not None:
            self._event.set()
        if self._scope is not None:
            self._scope.cancel()
        if self._on_lost is not None:
            self._on_lost(error)

    async def _abandon(
        self,
        call_timeout: float | None,
        give_up: float | None = None,
        *,
        wait: bool = True,
    ) -> None:
        """Stop keeping the lease and revoke it, if it may exist.

        The revoke is a task of its own, waited for (if ``wait``) until
        ``give_up``, since the lock's timeout bounds its clean-up too, or
        until the caller is cancelled; then it goes on alone. If etcd cannot
        be reached, the lease expires within its TTL.
        """
        keeping, self._keeping = self._keeping, None
        try:
            if keeping is not None:
                await keeping.stop()
        finally:
            # Also when a plain asyncio cancellation, which anyio's shield
            # does not hold back, cut the stop short.
            revoking = self._revoke(call_timeout)
        if revoking is None or not wait:
            return
        with scope_until(self._client._session.clock, give_up):
            await asyncio.shield(revoking)

    def _revoke(self, call_timeout: float | None) -> asyncio.Task[None] | None:
        """Start revoking the lease, if it may exist; the task that does."""
        lease, self.lease = self.lease, None
        lease_id, self._granting = self._granting, None
        cut_off = False
        if lease is None and lease_id is not None:
            # The grant may have reached etcd even though its answer did not,
            # or may reach it yet.
            lease = Lease(lease_id, self.ttl, self._client)
            cut_off = True
        if lease is None:
            return None
        return start_revoke(lease, call_timeout, cut_off=cut_off)

    async def release(self, *, call_timeout: float | None = None) -> bool:
        """Let go; ``True`` if the key still held this lock and was deleted.

        The lease is revoked too (quietly: if etcd is away it expires).
        """
        if self._busy:
            raise RuntimeError(
                f"lock {self.key!r} is being acquired or released by another task"
            )
        self._held = False
        self._busy = True
        txn = self._client.transactions
        try:
            succeeded, _ = await self._client._session.call(
                ops.TRANSACTION,
                call_timeout,
                [txn.value(self.key) == self.uuid],
                [txn.delete(self.key)],
                [],
            )
        finally:
            try:
                await self._abandon(call_timeout)
            finally:
                self._busy = False
        return bool(succeeded)

    async def refresh(self, *, call_timeout: float | None = None) -> Any:
        """Refresh the lock's lease at once (the keeper does so anyway)."""
        if self.lease is None:
            raise ValueError(f"no lease associated with this lock: {self.key!r}")
        return await self.lease.refresh(call_timeout=call_timeout)

    async def is_acquired(self, *, call_timeout: float | None = None) -> bool:
        """Whether etcd says this lock holds the key now."""
        found = await self._client._session.call(ops.GET, call_timeout, self.key, False)
        return found is not None and found.value == self.uuid

    async def __aenter__(self) -> Self:
        if not await self.acquire(self.timeout):
            raise LockNotAcquiredError(self.key, self.timeout)
        if self._cancel_on_lost:
            self._scope = anyio.CancelScope()
            self._scope.__enter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope, self._scope = self._scope, None
        cancelled = scope is not None and bool(scope.__exit__(exc_type, exc, tb))
        # A failed release is not raised over the block's outcome: the lease
        # is no longer refreshed, so etcd frees the lock within its TTL.
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await self.release()
        if cancelled:
            self.check()
