"""The etcd layer: a guarded aetcd client and the table of what counts as failure."""

from __future__ import annotations

from ._options import NO_FALLBACK
from .client import DEFAULT_CALL_TIMEOUT, SLOW_CALL_TIMEOUT, BreakerClient
from .errors import (
    CLOSED,
    EXPIRED,
    GONE,
    ClientClosedError,
    EtcdCallTimeoutError,
    EtcdCircuitOpenError,
    LeaseLostError,
    LockNotAcquiredError,
    WatchCompactedError,
)
from .leases import LeaseKeeper
from .lock import Lock
from .objects import LEASE_LOST, Lease, Member
from .outcomes import COUNTED_CODES, COUNTED_ERRORS, is_etcd_failure
from .retry import Retry
from .stale import Stale, StaleCache, StaleGet, StaleGetRange
from .watch import Watch

__all__ = [
    "CLOSED",
    "COUNTED_CODES",
    "COUNTED_ERRORS",
    "DEFAULT_CALL_TIMEOUT",
    "EXPIRED",
    "GONE",
    "LEASE_LOST",
    "NO_FALLBACK",
    "SLOW_CALL_TIMEOUT",
    "BreakerClient",
    "ClientClosedError",
    "EtcdCallTimeoutError",
    "EtcdCircuitOpenError",
    "Lease",
    "LeaseKeeper",
    "LeaseLostError",
    "Lock",
    "LockNotAcquiredError",
    "Member",
    "Retry",
    "Stale",
    "StaleCache",
    "StaleGet",
    "StaleGetRange",
    "Watch",
    "WatchCompactedError",
    "is_etcd_failure",
]
