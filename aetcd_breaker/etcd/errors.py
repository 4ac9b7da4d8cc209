"""The errors the etcd layer adds: breaker errors, most of them also aetcd errors.

The tree, so that callers can see what to catch::

    aetcd.ClientError
    ├── aetcd.ConnectionFailedError
    │   └── EtcdCircuitOpenError     rejected at once: the circuit is open
    ├── aetcd.ConnectionTimeoutError
    │   └── EtcdCallTimeoutError     the call ran past its deadline
    └── LeaseLostError               a lease (or the lock it held) is gone

    BreakerError
    ├── CircuitOpenError
    │   └── EtcdCircuitOpenError
    ├── CallTimeoutError (also TimeoutError)
    │   └── EtcdCallTimeoutError
    ├── LeaseLostError
    └── LockNotAcquiredError (also TimeoutError)

Code written against raw aetcd that catches ``aetcd.ClientError`` keeps
working. Neither error of a call is an ``aetcd.WatchTimeoutError``: aetcd's
lock code swallows that one, and a rejected lock attempt must not look like
a holder that did not let go in time.
"""

from __future__ import annotations

from typing import Any, Final

import aetcd

from ..core.errors import BreakerError, CallTimeoutError, CircuitOpenError

__all__ = [
    "EXPIRED",
    "GONE",
    "EtcdCallTimeoutError",
    "EtcdCircuitOpenError",
    "LeaseLostError",
    "LockNotAcquiredError",
]

EXPIRED: Final = "expired"
"""Why a lease was lost: no refresh got through before its time ran out."""

GONE: Final = "gone"
"""Why a lease was lost: etcd reports it no longer exists (revoked by someone,
or expired on etcd's side)."""

_WHY: Final = {
    EXPIRED: "no refresh got through before its time ran out",
    GONE: "etcd reports it no longer exists",
}


# aetcd ships no type information, so mypy sees its classes as Any.
class EtcdCircuitOpenError(CircuitOpenError, aetcd.ConnectionFailedError):  # type: ignore[misc]
    """An etcd call was rejected without running because the circuit is open."""


class EtcdCallTimeoutError(CallTimeoutError, aetcd.ConnectionTimeoutError):  # type: ignore[misc]
    """An etcd call ran past its deadline; it was cancelled and counted as failed."""


class LeaseLostError(BreakerError, aetcd.ClientError):  # type: ignore[misc]
    """A lease, or the lock that held it, is lost: its keys are gone or going.

    Attributes:
        lease_id: the id of the lease.
        reason: :data:`EXPIRED` or :data:`GONE`.
    """

    def __init__(self, lease_id: int, reason: str) -> None:
        self.lease_id = lease_id
        self.reason = reason
        why = _WHY.get(reason, reason)
        super().__init__(f"lease {lease_id} was lost ({reason}): {why}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.lease_id, self.reason))


class LockNotAcquiredError(BreakerError, TimeoutError):
    """A lock was not acquired in time: another holder did not let go.

    Attributes:
        key: the lock's key.
        timeout: the seconds it waited.
    """

    def __init__(self, key: bytes, timeout: float | None) -> None:
        self.key = key
        self.timeout = timeout
        super().__init__(f"lock {key!r} was not acquired within {timeout} s")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.timeout))
