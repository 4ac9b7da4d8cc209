"""A process-wide registry of named breakers, held weakly."""

from __future__ import annotations

import weakref
from typing import Any

from .breaker import CircuitBreaker
from .errors import InvalidSettingTypeError
from .events import Metrics

__all__ = ["BreakerRegistry", "registry"]


def _checked(name: object) -> str:
    # Not a bare "unhashable type" from the dict, nor None for a name that
    # can never be there.
    if not isinstance(name, str):
        raise InvalidSettingTypeError("name", name, "a str")
    return name


class BreakerRegistry:
    """Find breakers by name; a breaker nobody else holds drops out by itself."""

    def __init__(self) -> None:
        self._breakers: weakref.WeakValueDictionary[str, CircuitBreaker] = (
            weakref.WeakValueDictionary()
        )

    def get_or_create(self, name: str, **settings: Any) -> CircuitBreaker:
        """The breaker called ``name``; made with ``settings`` if there is none.

        Settings are used only when the breaker is made; an existing breaker
        is returned as it is.
        """
        breaker = self._breakers.get(_checked(name))
        if breaker is None:
            breaker = CircuitBreaker(name=name, **settings)
            self._breakers[name] = breaker
        return breaker

    def register(self, breaker: CircuitBreaker) -> CircuitBreaker:
        """Add a breaker made elsewhere; its name must be free."""
        if not isinstance(breaker, CircuitBreaker):
            raise InvalidSettingTypeError("breaker", breaker, "a CircuitBreaker")
        held = self._breakers.get(breaker.name)
        if held is not None and held is not breaker:
            raise ValueError(f"a breaker named {breaker.name!r} is already registered")
        self._breakers[breaker.name] = breaker
        return breaker

    def get(self, name: str) -> CircuitBreaker | None:
        """The breaker called ``name``, or ``None`` if there is none."""
        return self._breakers.get(_checked(name))

    def names(self) -> list[str]:
        return sorted(self._breakers.keys())

    def metrics(self) -> dict[str, Metrics]:
        """A snapshot of every registered breaker, by name."""
        return {name: b.metrics() for name, b in sorted(self._breakers.items())}

    def __len__(self) -> int:
        return len(self._breakers)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._breakers


registry = BreakerRegistry()
"""The process-wide registry."""
