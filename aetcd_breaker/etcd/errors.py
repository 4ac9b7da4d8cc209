"""The errors the etcd layer adds: breaker errors, most of them also aetcd errors.

The tree, so that callers can see what to catch::

    aetcd.ClientError
    ├── aetcd.ConnectionFailedError
    │   ├── EtcdCircuitOpenError     rejected at once: the circuit is open
    │   └── ClientClosedError        the BreakerClient is closed
    ├── aetcd.ConnectionTimeoutError
    │   └── EtcdCallTimeoutError     the call ran past its deadline
    ├── aetcd.RevisionCompactedError
    │   └── WatchCompactedError      a watch cannot resume: history compacted
    └── LeaseLostError               a lease (or the lock it held) is gone

    BreakerError
    ├── CircuitOpenError
    │   └── EtcdCircuitOpenError
    ├── ClientClosedError
    ├── CallTimeoutError (also TimeoutError)
    │   └── EtcdCallTimeoutError
    ├── LeaseLostError
    ├── LockNotAcquiredError (also TimeoutError)
    └── WatchCompactedError

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
    "CLOSED",
    "EXPIRED",
    "GONE",
    "ClientClosedError",
    "EtcdCallTimeoutError",
    "EtcdCircuitOpenError",
    "LeaseLostError",
    "LockNotAcquiredError",
    "WatchCompactedError",
]

EXPIRED: Final = "expired"
"""Why a lease was lost: no refresh got through before its time ran out."""

GONE: Final = "gone"
"""Why a lease was lost: etcd reports it no longer exists (revoked by someone,
or expired on etcd's side)."""

CLOSED: Final = "closed"
"""Why a lease was lost: the BreakerClient that kept it alive was closed."""

_WHY: Final = {
    EXPIRED: "no refresh got through before its time ran out",
    GONE: "etcd reports it no longer exists",
    CLOSED: "the client keeping it alive was closed",
}


# aetcd ships no type information, so mypy sees its classes as Any.
class EtcdCircuitOpenError(CircuitOpenError, aetcd.ConnectionFailedError):  # type: ignore[misc]
    """An etcd call was rejected without running because the circuit is open."""


class EtcdCallTimeoutError(CallTimeoutError, aetcd.ConnectionTimeoutError):  # type: ignore[misc]
    """An etcd call ran past its deadline; it was cancelled and counted as failed."""


class ClientClosedError(BreakerError, aetcd.ConnectionFailedError):  # type: ignore[misc]
    """A call was made on a closed BreakerClient; it did not reach etcd.

    Open the client again with ``async with`` or ``connect()``.
    """

    def __init__(self) -> None:
        super().__init__(
            "the BreakerClient is closed; open it again with `async with` or connect()"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), ())


class LeaseLostError(BreakerError, aetcd.ClientError):  # type: ignore[misc]
    """A lease, or the lock that held it, is lost: its keys are gone or going.

    Attributes:
        lease_id: the id of the lease.
        reason: :data:`EXPIRED`, :data:`GONE` or :data:`CLOSED`.
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


class WatchCompactedError(BreakerError, aetcd.RevisionCompactedError):  # type: ignore[misc]
    """A watch cannot go on: etcd compacted the revision it had to resume from.

    Events between the watch's last delivered revision and
    ``compacted_revision`` are gone for good. Read the current state, then
    watch again from the revision of that read plus one.

    Attributes:
        compacted_revision: the oldest revision etcd still keeps.
        revision: the revision the watch needed to go on from.
    """

    def __init__(self, compacted_revision: int, revision: int) -> None:
        self.compacted_revision = compacted_revision
        self.revision = revision
        Exception.__init__(
            self,
            f"cannot watch from revision {revision}: etcd compacted its history "
            f"below revision {compacted_revision}",
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.compacted_revision, self.revision))
