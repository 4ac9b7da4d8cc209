"""The etcd layer: a guarded aetcd client and the table of what counts as failure."""

from __future__ import annotations

from .client import DEFAULT_CALL_TIMEOUT, SLOW_CALL_TIMEOUT, BreakerClient
from .errors import EtcdCallTimeoutError, EtcdCircuitOpenError
from .objects import Lease, Member
from .outcomes import COUNTED_CODES, COUNTED_ERRORS, is_etcd_failure
from .watch import Watch

__all__ = [
    "COUNTED_CODES",
    "COUNTED_ERRORS",
    "DEFAULT_CALL_TIMEOUT",
    "SLOW_CALL_TIMEOUT",
    "BreakerClient",
    "EtcdCallTimeoutError",
    "EtcdCircuitOpenError",
    "Lease",
    "Member",
    "Watch",
    "is_etcd_failure",
]
