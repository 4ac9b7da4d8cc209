"""The cluster, alarm and maintenance operations of BreakerClient."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import IO, TYPE_CHECKING, Any

import aetcd

from ..core import InvalidSettingTypeError
from . import _ops as ops
from ._arguments import check_urls
from ._lease_ops import LeaseOps, Retrying
from ._options import DEFAULT, IDEMPOTENT, WRITE, run
from .objects import Member

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["ClusterOps"]


def _listed(found: Any) -> Iterator[Any]:
    """The items to yield of a list that may be a fallback's value."""
    try:
        return iter(found)
    except TypeError:
        raise InvalidSettingTypeError(
            "fallback", found, "a list of the items to yield"
        ) from None


class ClusterOps(LeaseOps):
    """Members, alarms and maintenance, plus LeaseOps; mixed into BreakerClient.

    ``snapshot``, ``defragment`` and ``compact(physical=True)`` take long by
    nature: without a ``call_timeout`` of the call or the client, their
    deadline is ``SLOW_CALL_TIMEOUT``, not the breaker's. ``retry`` and
    ``fallback`` work as for the key operations; the client's retry policy
    applies to the reads among these, its fallback to none of them.
    """

    __slots__ = ()

    _session: Session

    async def status(
        self,
        *,
        call_timeout: float | None = None,
        retry: Retrying = None,
        fallback: Any = DEFAULT,
    ) -> aetcd.Status:
        """The status of the member that answers, with the leader as a Member."""
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            status = await s.call(ops.STATUS, call_timeout)
        else:
            status = await run(s, ops.STATUS, IDEMPOTENT, call_timeout, retry, fallback)
        leader = getattr(status, "leader", None)
        if isinstance(leader, aetcd.Member):
            status.leader = Member.bind(leader, self)
        return status

    async def add_member(
        self,
        urls: list[str],
        *,
        call_timeout: float | None = None,
        retry: Retrying = None,
        fallback: Any = DEFAULT,
    ) -> Member:
        """Add a member with peer URLs ``urls`` to the cluster."""
        check_urls("urls", urls)
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            raw = await s.call(ops.ADD_MEMBER, call_timeout, urls)
        else:
            raw = await run(
                s, ops.ADD_MEMBER, WRITE, call_timeout, retry, fallback, urls
            )
        return Member.bind(raw, self) if isinstance(raw, aetcd.Member) else raw

    async def remove_member(
        self,
        member_id: int,
        *,
        call_timeout: float | None = None,
        retry: Retrying = None,
        fallback: Any = DEFAULT,
    ) -> None:
        """Remove a member from the cluster."""
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            await s.call(ops.REMOVE_MEMBER, call_timeout, member_id)
        else:
            await run(
                s, ops.REMOVE_MEMBER, WRITE, call_timeout, retry, fallback, member_id
            )

    async def update_member(
        self,
        member_id: int,
        peer_urls: list[str],
        *,
        call_timeout: float | None = None,
        retry: Retrying = None,
        fallback: Any = DEFAULT,
    ) -> None:
        """Give a member new peer URLs."""
        check_urls("peer_urls", peer_urls)
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            await s.call(ops.UPDATE_MEMBER, call_timeout, member_id, peer_urls)
        else:
            await run(
                s,
                ops.UPDATE_MEMBER,
                WRITE,
                call_timeout,
                retry,
                fallback,
                member_id,
                peer_urls,
            )

    async def members(
        self,
        *,
        call_timeout: float | None = None,
        retry: Retrying = None,
        fallback: Any = DEFAULT,
    ) -> AsyncIterator[Member]:
        """Every cluster member; the list is fetched whole under one guard.

        A fallback gives the list of members to yield.
        """
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            found = await s.call(ops.MEMBERS, call_timeout)
        else:
            found = await run(s, ops.MEMBERS, IDEMPOTENT, call_timeout, retry, fallback)
        for raw in _listed(found):
            # A fallback's items are yielded as given.
            yield Member.bind(raw, self) if isinstance(raw, aetcd.Member) else raw

    async def compact(
        self,
        revision: int,
        physical: bool = False,
        *,
        call_timeout: float | None = None,
        retry: Retrying = None,
        fallback: Any = DEFAULT,
    ) -> None:
        """Compact the history up to ``revision``."""
        timeout = self._session.slow(call_timeout) if physical else call_timeout
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            await s.call(ops.COMPACT, timeout, revision, physical)
        else:
            await run(
                s, ops.COMPACT, WRITE, timeout, retry, fallback, revision, physical
            )

    async def defragment(
        self,
        *,
        call_timeout: float | None = None,
        retry: Retrying = None,
        fallback: Any = DEFAULT,
    ) -> None:
        """Defragment the answering member's database (slow by nature)."""
        timeout = self._session.slow(call_timeout)
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            await s.call(ops.DEFRAGMENT, timeout)
        else:
            await run(s, ops.DEFRAGMENT, WRITE, timeout, retry, fallback)

    async def hash(
        self,
        *,
        call_timeout: float | None = None,
        retry: Retrying = None,
        fallback: Any = DEFAULT,
    ) -> int:
        """The hash of the answering member's key-value state."""
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            found: int = await s.call(ops.HASH, call_timeout)
        else:
            found = await run(s, ops.HASH, IDEMPOTENT, call_timeout, retry, fallback)
        return found

    async def create_alarm(
        self,
        member_id: int = 0,
        *,
        call_timeout: float | None = None,
        retry: Retrying = None,
        fallback: Any = DEFAULT,
    ) -> list[aetcd.Alarm]:
        """Raise a no-space alarm on a member (0: every member)."""
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            found: list[aetcd.Alarm] = await s.call(
                ops.CREATE_ALARM, call_timeout, member_id
            )
        else:
            found = await run(
                s, ops.CREATE_ALARM, WRITE, call_timeout, retry, fallback, member_id
            )
        return found

    async def list_alarms(
        self,
        member_id: int = 0,
        alarm_type: str = "none",
        *,
        call_timeout: float | None = None,
        retry: Retrying = None,
        fallback: Any = DEFAULT,
    ) -> AsyncIterator[aetcd.Alarm]:
        """The active alarms; the list is fetched whole under one guard.

        A fallback gives the list of alarms to yield.
        """
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            found = await s.call(ops.LIST_ALARMS, call_timeout, member_id, alarm_type)
        else:
            found = await run(
                s,
                ops.LIST_ALARMS,
                IDEMPOTENT,
                call_timeout,
                retry,
                fallback,
                member_id,
                alarm_type,
            )
        for alarm in _listed(found):
            yield alarm

    async def disarm_alarm(
        self,
        member_id: int = 0,
        *,
        call_timeout: float | None = None,
        retry: Retrying = None,
        fallback: Any = DEFAULT,
    ) -> list[aetcd.Alarm]:
        """Clear the alarms of a member (0: every member)."""
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            found: list[aetcd.Alarm] = await s.call(
                ops.DISARM_ALARM, call_timeout, member_id
            )
        else:
            found = await run(
                s, ops.DISARM_ALARM, WRITE, call_timeout, retry, fallback, member_id
            )
        return found

    async def snapshot(
        self,
        file_obj: IO[bytes],
        *,
        call_timeout: float | None = None,
        retry: Retrying = None,
        fallback: Any = DEFAULT,
    ) -> None:
        """Write a snapshot of the database to ``file_obj`` (slow by nature).

        Think twice before ``retry=``: a failed attempt may have written part
        of the snapshot already.
        """
        if not callable(getattr(file_obj, "write", None)):
            raise InvalidSettingTypeError(
                "file_obj", file_obj, "a binary file open for writing"
            )
        timeout = self._session.slow(call_timeout)
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            await s.call(ops.SNAPSHOT, timeout, file_obj)
        else:
            await run(s, ops.SNAPSHOT, WRITE, timeout, retry, fallback, file_obj)
