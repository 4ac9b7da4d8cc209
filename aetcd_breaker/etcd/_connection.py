"""Validation of the etcd layer's arguments, before aetcd or gRPC misread them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core import InvalidSettingError, InvalidSettingTypeError
from ..core._settings import is_async
from ..core.policies import check_count, finite
from ._session import check_timeout

__all__ = [
    "check_connection",
    "check_flag",
    "check_hook",
    "check_lease_id",
    "check_ttl",
    "check_wait",
]

_GRPC_MAX_TIMEOUT = 1e9
"""The longest gRPC deadline taken, in seconds: about 31 years."""
_MAX_TTL = 9_000_000_000
"""etcd's largest lease TTL (MaxLeaseTTL), in seconds."""


def _seconds(setting: str, value: object, *, optional: bool) -> float | None:
    if value is None and optional:
        return None
    return check_timeout(value, setting)


def check_connection(
    host: object,
    port: object,
    username: object,
    password: object,
    timeout: object,
    options: object,
    connect_wait_timeout: object,
) -> dict[str, Any]:
    """Check ``aetcd.Client``'s arguments; return the gRPC options as a dict.

    gRPC wraps a port above 65535 round to another port and aetcd turns a
    negative ``timeout`` into an immediate DEADLINE_EXCEEDED, which the
    breaker would count as an outage: a typo must fail here, by name.
    """
    if not isinstance(host, str):
        raise InvalidSettingTypeError("host", host, "a str")
    if not host:
        raise InvalidSettingError("host", host, "a host name or address")
    if isinstance(port, bool) or not isinstance(port, int):
        raise InvalidSettingTypeError("port", port, "an int")
    if not 0 < port < 65536:
        raise InvalidSettingError("port", port, "a port number from 1 to 65535")
    for setting, value in (("username", username), ("password", password)):
        if value is not None and not isinstance(value, str):
            raise InvalidSettingTypeError(setting, value, "a str or None")
    if (username is None) != (password is None):
        missing = "password" if password is None else "username"
        raise InvalidSettingError(
            missing, None, "given too: username and password go together"
        )
    seconds = _seconds("timeout", timeout, optional=True)
    if seconds is not None and seconds > _GRPC_MAX_TIMEOUT:
        # gRPC's deadline, in nanoseconds, overflows past about 9.2e9 s and
        # every request then fails at once with DEADLINE_EXCEEDED.
        raise InvalidSettingError(
            "timeout", timeout, f"at most {_GRPC_MAX_TIMEOUT:g} seconds"
        )
    _seconds("connect_wait_timeout", connect_wait_timeout, optional=False)
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidSettingTypeError("options", options, "a mapping of gRPC options")
    return dict(options)


def check_flag(setting: str, value: object) -> bool:
    """A yes-or-no setting: a bool, not whatever happens to be truthy."""
    if not isinstance(value, bool):
        raise InvalidSettingTypeError(setting, value, "True or False")
    return value


def check_ttl(value: object) -> int:
    """A lease's time to live: whole seconds, at least 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSettingTypeError("ttl", value, "an int of seconds")
    if not 1 <= value <= _MAX_TTL:
        raise InvalidSettingError(
            "ttl", value, f"from 1 to {_MAX_TTL:,} seconds (etcd's limit)"
        )
    return value


def check_lease_id(value: object) -> int | None:
    """A lease id to ask etcd for: None (etcd picks one) or a positive int64."""
    if value is None:
        return None
    lease_id = check_count("lease_id", value)
    if lease_id >= 2**63:
        raise InvalidSettingError("lease_id", value, "from 1 to 2**63 - 1")
    return lease_id


def check_wait(value: object) -> float | None:
    """How long a lock may wait: None (no limit) or a finite number >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSettingTypeError("timeout", value, "a number of seconds or None")
    if not (value >= 0 and finite(value)):
        raise InvalidSettingError("timeout", value, "a finite number of 0 or more")
    return float(value)


def check_hook(value: Any) -> Any:
    """An ``on_lost`` hook: a plain function, called at once with the error."""
    if value is None:
        return None
    if not callable(value) or is_async(value):
        raise InvalidSettingTypeError(
            "on_lost",
            value,
            "a plain function (it is called at once; start a task from it "
            "for async work)",
        )
    return value
