"""The key-value, transaction and watch operations of BreakerClient."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aetcd
from aetcd.utils import prefix_range_end

from . import _ops as ops
from .watch import Watch, WatchSpec, first_event, open_watch

if TYPE_CHECKING:
    from ._session import Session
    from .objects import Lease

__all__ = ["KeyOps"]


class KeyOps:
    """Keys, transactions and watches; mixed into :class:`BreakerClient`."""

    __slots__ = ()

    _session: Session
    transactions: aetcd.Transactions

    async def get(
        self,
        key: bytes,
        serializable: bool = False,
        *,
        call_timeout: float | None = None,
    ) -> aetcd.Get | None:
        """Get one key; ``None`` if it does not exist."""
        return await self._session.call(ops.GET, call_timeout, key, serializable)

    async def get_prefix(
        self,
        key_prefix: bytes,
        sort_order: str | None = None,
        sort_target: str = "key",
        keys_only: bool = False,
        *,
        call_timeout: float | None = None,
    ) -> aetcd.GetRange:
        """Get the keys that start with ``key_prefix``."""
        return await self._session.call(
            ops.GET_PREFIX, call_timeout, key_prefix, sort_order, sort_target, keys_only
        )

    async def get_range(
        self,
        range_start: bytes,
        range_end: bytes,
        sort_order: str | None = None,
        sort_target: str = "key",
        *,
        call_timeout: float | None = None,
    ) -> aetcd.GetRange:
        """Get the keys in ``[range_start, range_end)``."""
        return await self._session.call(
            ops.GET_RANGE, call_timeout, range_start, range_end, sort_order, sort_target
        )

    async def get_all(
        self,
        sort_order: str | None = None,
        sort_target: str = "key",
        keys_only: bool = False,
        *,
        call_timeout: float | None = None,
    ) -> aetcd.GetRange:
        """Get every key."""
        return await self._session.call(
            ops.GET_ALL, call_timeout, sort_order, sort_target, keys_only
        )

    async def put(
        self,
        key: bytes,
        value: bytes,
        lease: int | Lease | aetcd.Lease | None = None,
        prev_kv: bool = False,
        *,
        call_timeout: float | None = None,
    ) -> aetcd.Put:
        """Set ``key`` to ``value``, attached to ``lease`` if given."""
        return await self._session.call(
            ops.PUT, call_timeout, key, value, lease, prev_kv
        )

    async def delete(
        self,
        key: bytes,
        prev_kv: bool = False,
        *,
        call_timeout: float | None = None,
    ) -> aetcd.Delete | None:
        """Delete one key; ``None`` if it did not exist."""
        return await self._session.call(ops.DELETE, call_timeout, key, prev_kv)

    async def delete_prefix(
        self,
        key_prefix: bytes,
        prev_kv: bool = False,
        *,
        call_timeout: float | None = None,
    ) -> aetcd.DeleteRange:
        """Delete the keys that start with ``key_prefix``."""
        return await self._session.call(
            ops.DELETE_PREFIX, call_timeout, key_prefix, prev_kv
        )

    async def delete_range(
        self,
        range_start: bytes,
        range_end: bytes,
        prev_kv: bool = False,
        *,
        call_timeout: float | None = None,
    ) -> aetcd.DeleteRange:
        """Delete the keys in ``[range_start, range_end)``."""
        return await self._session.call(
            ops.DELETE_RANGE, call_timeout, range_start, range_end, prev_kv
        )

    async def replace(
        self,
        key: bytes,
        initial_value: bytes,
        new_value: bytes,
        lease: int | Lease | aetcd.Lease | None = None,
        *,
        call_timeout: float | None = None,
    ) -> bool:
        """Set ``key`` to ``new_value`` if it holds ``initial_value``; say if so."""
        return await self._session.call(
            ops.REPLACE, call_timeout, key, initial_value, new_value, lease
        )

    async def transaction(
        self,
        compare: list[Any],
        success: list[Any] | None = None,
        failure: list[Any] | None = None,
        *,
        call_timeout: float | None = None,
    ) -> tuple[bool, list[Any]]:
        """Run a transaction; build its parts with :attr:`transactions`."""
        return await self._session.call(
            ops.TRANSACTION, call_timeout, compare, success, failure
        )

    async def watch(
        self,
        key: bytes,
        range_end: bytes | None = None,
        start_revision: int | None = None,
        progress_notify: bool = False,
        kind: aetcd.EventKind | None = None,
        prev_kv: bool = False,
        watch_id: int | None = None,
        fragment: bool = False,
        *,
        call_timeout: float | None = None,
        progress_interval: float | None = None,
        progress_timeout: float | None = None,
    ) -> Watch:
        """Watch ``key`` (or ``[key, range_end)``): a :class:`Watch` that
        survives outages; see there for what it guarantees and the settings."""
        return await open_watch(
            self._session,
            WatchSpec.of(
                key,
                range_end,
                start_revision,
                progress_notify,
                kind,
                prev_kv,
                watch_id,
                fragment,
            ),
            call_timeout,
            progress_interval,
            progress_timeout,
        )

    async def watch_prefix(
        self,
        key_prefix: bytes,
        range_end: bytes | None = None,
        start_revision: int | None = None,
        progress_notify: bool = False,
        kind: aetcd.EventKind | None = None,
        prev_kv: bool = False,
        watch_id: int | None = None,
        fragment: bool = False,
        *,
        call_timeout: float | None = None,
        progress_interval: float | None = None,
        progress_timeout: float | None = None,
    ) -> Watch:
        """:meth:`watch` over the keys that start with ``key_prefix``.

        As in aetcd, ``range_end`` is ignored: the prefix sets the range.
        """
        return await self.watch(
            key_prefix,
            prefix_range_end(key_prefix),
            start_revision,
            progress_notify,
            kind,
            prev_kv,
            watch_id,
            fragment,
            call_timeout=call_timeout,
            progress_interval=progress_interval,
            progress_timeout=progress_timeout,
        )

    async def watch_once(
        self,
        key: bytes,
        timeout: float | None = None,
        range_end: bytes | None = None,
        start_revision: int | None = None,
        progress_notify: bool = False,
        kind: aetcd.EventKind | None = None,
        prev_kv: bool = False,
        watch_id: int | None = None,
        fragment: bool = False,
        *,
        call_timeout: float | None = None,
    ) -> aetcd.Event:
        """Wait for the first event on ``key`` and return it.

        Creating the watch is guarded; the wait is not. With no event within
        ``timeout`` seconds, raise ``aetcd.WatchTimeoutError``, as aetcd does.
        """
        watch = await self.watch(
            key,
            range_end,
            start_revision,
            progress_notify,
            kind,
            prev_kv,
            watch_id,
            fragment,
            call_timeout=call_timeout,
        )
        return await first_event(watch, timeout, self._session.timeout)

    async def watch_prefix_once(
        self,
        key_prefix: bytes,
        timeout: float | None = None,
        range_end: bytes | None = None,
        start_revision: int | None = None,
        progress_notify: bool = False,
        kind: aetcd.EventKind | None = None,
        prev_kv: bool = False,
        watch_id: int | None = None,
        fragment: bool = False,
        *,
        call_timeout: float | None = None,
    ) -> aetcd.Event:
        """:meth:`watch_once` over the keys that start with ``key_prefix``."""
        return await self.watch_once(
            key_prefix,
            timeout,
            prefix_range_end(key_prefix),
            start_revision,
            progress_notify,
            kind,
            prev_kv,
            watch_id,
            fragment,
            call_timeout=call_timeout,
        )
