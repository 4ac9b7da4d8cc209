"""Stale reads: the last answer of each read, served marked when etcd is away.

Opt-in, per client (``BreakerClient(stale_reads=StaleCache(...))``). A
successful ``get`` or ``get_prefix`` stores its answer; when the same read is
rejected by the breaker or fails in a way that counts, the stored answer is
returned instead, as a :class:`StaleGet` or :class:`StaleGetRange` (both
:class:`Stale`), so the caller can tell. A missing key is never answered from
the cache: the error reaches the caller. Memory is bounded by the number of
entries, the least recently used going first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, ClassVar

import aetcd

from ..core.policies import check_count

__all__ = ["Stale", "StaleCache", "StaleGet", "StaleGetRange"]


class Stale:
    """Marks an answer that came from the stale-read cache, not from etcd.

    Attributes:
        stale: always ``True`` (fresh answers have no such attribute).
        read_at: when the answer was read from etcd, on the breaker's clock.
        age: how many seconds old the answer was when it was served.
    """

    __slots__ = ()

    stale: ClassVar[bool] = True
    read_at: float
    age: float


class StaleGet(Stale, aetcd.Get):  # type: ignore[misc]
    """An ``aetcd.Get`` served from the stale-read cache."""

    __slots__ = ("age", "read_at")

    def __repr__(self) -> str:
        # aetcd's repr lists the slots of the class itself: here only ours,
        # which would hide the key and the value.
        names = (*aetcd.Get.__slots__, *StaleGet.__slots__)
        shown = ", ".join(f"{name}={getattr(self, name)}" for name in names)
        return f"{type(self).__name__}[{shown}]"


class StaleGetRange(Stale, aetcd.GetRange):  # type: ignore[misc]
    """An ``aetcd.GetRange`` served from the stale-read cache."""


def _mark(result: Any, read_at: float, now: float) -> Stale:
    marked: Stale
    if isinstance(result, aetcd.Get):
        marked = StaleGet.__new__(StaleGet)
        for name in aetcd.Get.__slots__:
            setattr(marked, name, getattr(result, name))
    else:
        marked = StaleGetRange.__new__(StaleGetRange)
        marked.__dict__.update(result.__dict__)
    marked.read_at = read_at
    marked.age = now - read_at
    return marked


class StaleCache:
    """The last good answer per read, at most ``max_entries`` of them (LRU).

    Give each client its own: entries are keyed by the read and its
    arguments, not by the cluster.
    """

    __slots__ = ("_entries", "_max", "evictions")

    def __init__(self, max_entries: int = 1000) -> None:
        self._max = check_count("max_entries", max_entries)
        self._entries: OrderedDict[Hashable, tuple[Any, float]] = OrderedDict()
        self.evictions = 0

    @property
    def max_entries(self) -> int:
        return self._max

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<StaleCache {len(self)}/{self._max} entries>"

    def store(self, key: Hashable, result: Any, now: float) -> None:
        """Remember ``result`` as the answer of ``key``; a miss forgets it."""
        entries = self._entries
        if result is None:
            entries.pop(key, None)
            return
        entries[key] = (result, now)
        entries.move_to_end(key)
        if len(entries) > self._max:
            entries.popitem(last=False)
            self.evictions += 1

    def answer(self, key: Hashable, now: float) -> Stale | None:
        """The stored answer of ``key``, marked stale; ``None`` if there is none."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        result, read_at = entry
        return _mark(result, read_at, now)

    def clear(self) -> None:
        """Forget every stored answer."""
        self._entries.clear()
