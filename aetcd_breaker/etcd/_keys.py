"""The key-value, transaction and watch operations of BreakerClient."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aetcd
from aetcd.utils import prefix_range_end

from ..core import InvalidSettingTypeError
from . import _ops as ops
from ._options import DEFAULT, WRITE, run
from ._reads import ReadOps
from ._session import check_timeout
from .objects import Lease
from .retry import Retry
from .watch import Watch, WatchSpec, first_event, open_watch

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["KeyOps"]


def _prefix_end(key_prefix: object) -> bytes:
    """The end of a watched prefix's range; a prefix not bytes is named.

    Checked here, since working out the end would otherwise fail first with
    a bare TypeError (a str), or make a range of zero bytes (an int).
    """
    if not isinstance(key_prefix, bytes):
        raise InvalidSettingTypeError("key_prefix", key_prefix, "bytes")
    end: bytes = prefix_range_end(key_prefix)
    return end


class KeyOps(ReadOps):
    """Keys, transactions and watches; mixed into :class:`BreakerClient`.

    Besides ``call_timeout``, each call but the watches takes ``retry``
    (a :class:`Retry`, ``True`` for the client's policy, ``False`` for none)
    and ``fallback`` (a value, or a function of the error); see _options.py
    for which client-wide options apply where.
    """

    __slots__ = ()

    _session: Session
    transactions: aetcd.Transactions

    async def put(
        self,
        key: bytes,
        value: bytes,
        lease: int | Lease | aetcd.Lease | None = None,
        prev_kv: bool = False,
        *,
        call_timeout: float | None = None,
        retry: Retry | bool | None = None,
        fallback: Any = DEFAULT,
    ) -> aetcd.Put:
        """Set ``key`` to ``value``, attached to ``lease`` if given.

        A lease this client knows to be lost raises ``LeaseLostError``.
        """
        if lease is not None and isinstance(lease, Lease):
            lease.check()
        s = self._session
        args = (key, value, lease, prev_kv)
        if s.plain and retry is None and fallback is DEFAULT:
            return await s.call(ops.PUT, call_timeout, *args)
        return await run(s, ops.PUT, WRITE, call_timeout, retry, fallback, *args)

    async def delete(
        self,
        key: bytes,
        prev_kv: bool = False,
        *,
        call_timeout: float | None = None,
        retry: Retry | bool | None = None,
        fallback: Any = DEFAULT,
    ) -> aetcd.Delete | None:
        """Delete one key; ``None`` if it did not exist."""
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            return await s.call(ops.DELETE, call_timeout, key, prev_kv)
        return await run(
            s, ops.DELETE, WRITE, call_timeout, retry, fallback, key, prev_kv
        )

    async def delete_prefix(
        self,
        key_prefix: bytes,
        prev_kv: bool = False,
        *,
        call_timeout: float | None = None,
        retry: Retry | bool | None = None,
        fallback: Any = DEFAULT,
    ) -> aetcd.DeleteRange:
        """Delete the keys that start with ``key_prefix``."""
        s = self._session
        args = (key_prefix, prev_kv)
        if s.plain and retry is None and fallback is DEFAULT:
            return await s.call(ops.DELETE_PREFIX, call_timeout, *args)
        return await run(
            s, ops.DELETE_PREFIX, WRITE, call_timeout, retry, fallback, *args
        )

    async def delete_range(
        self,
        range_start: bytes,
        range_end: bytes,
        prev_kv: bool = False,
        *,
        call_timeout: float | None = None,
        retry: Retry | bool | None = None,
        fallback: Any = DEFAULT,
    ) -> aetcd.DeleteRange:
        """Delete the keys in ``[range_start, range_end)``."""
        s = self._session
        args = (range_start, range_end, prev_kv)
        if s.plain and retry is None and fallback is DEFAULT:
            return await s.call(ops.DELETE_RANGE, call_timeout, *args)
        return await run(
            s, ops.DELETE_RANGE, WRITE, call_timeout, retry, fallback, *args
        )

    async def replace(
        self,
        key: bytes,
        initial_value: bytes,
        new_value: bytes,
        lease: int | Lease | aetcd.Lease | None = None,
        *,
        call_timeout: float | None = None,
        retry: Retry | bool | None = None,
        fallback: Any = DEFAULT,
    ) -> bool:
        """Set ``key`` to ``new_value`` if it holds ``initial_value``; say if so."""
        if lease is not None and isinstance(lease, Lease):
            lease.check()
        s = self._session
        args = (key, initial_value, new_value, lease)
        if s.plain and retry is None and fallback is DEFAULT:
            return await s.call(ops.REPLACE, call_timeout, *args)
        return await run(s, ops.REPLACE, WRITE, call_timeout, retry, fallback, *args)

    async def transaction(
        self,
        compare: list[Any],
        success: list[Any] | None = None,
        failure: list[Any] | None = None,
        *,
        call_timeout: float | None = None,
        retry: Retry | bool | None = None,
        fallback: Any = DEFAULT,
    ) -> tuple[bool, list[Any]]:
        """Run a transaction; build its parts with :attr:`transactions`."""
        s = self._session
        args = (compare, success, failure)
        if s.plain and retry is None and fallback is DEFAULT:
            return await s.call(ops.TRANSACTION, call_timeout, *args)
        return await run(
            s, ops.TRANSACTION, WRITE, call_timeout, retry, fallback, *args
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
            _prefix_end(key_prefix),
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
        if timeout is not None:
            check_timeout(timeout, "timeout")
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
            _prefix_end(key_prefix),
            start_revision,
            progress_notify,
            kind,
            prev_kv,
            watch_id,
            fragment,
            call_timeout=call_timeout,
        )
