"""The key reads of BreakerClient, where stale reads and client fallbacks apply."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aetcd

from . import _ops as ops
from ._options import DEFAULT, KEY_READ, STALE_READ, run
from .retry import Retry

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["ReadOps"]


class ReadOps:
    """``get``, ``get_prefix``, ``get_range``, ``get_all``; mixed into KeyOps.

    Each call checks one flag of the session and its own two options before
    taking the plain guarded path: nothing else is added to it.
    """

    __slots__ = ()

    _session: Session

    async def get(
        self,
        key: bytes,
        serializable: bool = False,
        *,
        call_timeout: float | None = None,
        retry: Retry | bool | None = None,
        fallback: Any = DEFAULT,
    ) -> aetcd.Get | None:
        """Get one key; ``None`` if it does not exist."""
        s = self._session
        if s.plain and retry is None and fallback is DEFAULT:
            return await s.call(ops.GET, call_timeout, key, serializable)
        return await run(
            s, ops.GET, STALE_READ, call_timeout, retry, fallback, key, serializable
        )

    async def get_prefix(
        self,
        key_prefix: bytes,
        sort_order: str | None = None,
        sort_target: str = "key",
        keys_only: bool = False,
        *,
        call_timeout: float | None = None,
        retry: Retry | bool | None = None,
        fallback: Any = DEFAULT,
    ) -> aetcd.GetRange:
        """Get the keys that start with ``key_prefix``."""
        s = self._session
        args = (key_prefix, sort_order, sort_target, keys_only)
        if s.plain and retry is None and fallback is DEFAULT:
            return await s.call(ops.GET_PREFIX, call_timeout, *args)
        return await run(
            s, ops.GET_PREFIX, STALE_READ, call_timeout, retry, fallback, *args
        )

    async def get_range(
        self,
        range_start: bytes,
        range_end: bytes,
        sort_order: str | None = None,
        sort_target: str = "key",
        *,
        call_timeout: float | None = None,
        retry: Retry | bool | None = None,
        fallback: Any = DEFAULT,
    ) -> aetcd.GetRange:
        """Get the keys in ``[range_start, range_end)``."""
        s = self._session
        args = (range_start, range_end, sort_order, sort_target)
        if s.plain and retry is None and fallback is DEFAULT:
            return await s.call(ops.GET_RANGE, call_timeout, *args)
        return await run(
            s, ops.GET_RANGE, KEY_READ, call_timeout, retry, fallback, *args
        )

    async def get_all(
        self,
        sort_order: str | None = None,
        sort_target: str = "key",
        keys_only: bool = False,
        *,
        call_timeout: float | None = None,
        retry: Retry | bool | None = None,
        fallback: Any = DEFAULT,
    ) -> aetcd.GetRange:
        """Get every key."""
        s = self._session
        args = (sort_order, sort_target, keys_only)
        if s.plain and retry is None and fallback is DEFAULT:
            return await s.call(ops.GET_ALL, call_timeout, *args)
        return await run(s, ops.GET_ALL, KEY_READ, call_timeout, retry, fallback, *args)
