"""The errors the etcd layer adds: breaker errors that are also aetcd errors.

The tree, so that callers can see what to catch::

    aetcd.ClientError
    ├── aetcd.ConnectionFailedError
    │   └── EtcdCircuitOpenError     rejected at once: the circuit is open
    └── aetcd.ConnectionTimeoutError
        └── EtcdCallTimeoutError     the call ran past its deadline

    BreakerError
    ├── CircuitOpenError
    │   └── EtcdCircuitOpenError
    └── CallTimeoutError (also TimeoutError)
        └── EtcdCallTimeoutError

Code written against raw aetcd that catches ``aetcd.ClientError`` keeps
working. Neither error is an ``aetcd.WatchTimeoutError``: aetcd's lock code
swallows that one, and a rejected lock attempt must not look like a holder
that did not let go in time.
"""

from __future__ import annotations

import aetcd

from ..core.errors import CallTimeoutError, CircuitOpenError

__all__ = ["EtcdCallTimeoutError", "EtcdCircuitOpenError"]


# aetcd ships no type information, so mypy sees its classes as Any.
class EtcdCircuitOpenError(CircuitOpenError, aetcd.ConnectionFailedError):  # type: ignore[misc]
    """An etcd call was rejected without running because the circuit is open."""


class EtcdCallTimeoutError(CallTimeoutError, aetcd.ConnectionTimeoutError):  # type: ignore[misc]
    """An etcd call ran past its deadline; it was cancelled and counted as failed."""
