"""Checks of the fault kit's arguments: a bad one is named where it is given.

Plain ``TypeError`` and ``ValueError``, as ``FaultProxy.delay`` has always
raised: the kit stays apart from the breaker's own errors.
"""

from __future__ import annotations

from ..core.policies import finite

__all__ = ["check_args", "check_host", "check_port", "check_seconds"]


def check_seconds(setting: str, value: object, *, zero: bool = False) -> float:
    """A finite number of seconds, above 0 (or at least 0 with ``zero``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{setting} must be a number of seconds, got {value!r}")
    low = "at least 0" if zero else "above 0"
    if not ((value >= 0 if zero else value > 0) and finite(value)):
        raise ValueError(f"{setting} must be a finite number {low}, got {value!r}")
    return float(value)


def check_host(setting: str, value: object) -> str:
    """A host name or address."""
    if not isinstance(value, str):
        raise TypeError(f"{setting} must be a str, got {value!r}")
    if not value:
        raise ValueError(f"{setting} must be a host name or address, got {value!r}")
    return value


def check_port(setting: str, value: object) -> int:
    """A TCP port number."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{setting} must be an int, got {value!r}")
    if not 1 <= value <= 65535:
        raise ValueError(f"{setting} must be a port from 1 to 65535, got {value!r}")
    return value


def check_args(setting: str, value: object) -> tuple[str, ...]:
    """Command-line arguments: a sequence of str (a lone str would be split
    into letters)."""
    if isinstance(value, str | bytes):
        raise TypeError(f"{setting} must be a list of str, not one str: {value!r}")
    try:
        given = list(value)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{setting} must be a list of str, got {value!r}") from None
    args = []
    for arg in given:
        if not isinstance(arg, str):
            raise TypeError(f"{setting} must hold only str, got {arg!r} in {value!r}")
        args.append(arg)
    return tuple(args)
