"""aetcd_breaker: a hand-written circuit breaker between asyncio services and etcd.

The public names live here. Three layers sit behind them: ``aetcd_breaker.core``
(the breaker, pure anyio), ``aetcd_breaker.etcd`` (the guarded aetcd client) and
``aetcd_breaker.testing`` (the fault kit: a real etcd and a fault proxy).
"""

from .core import (
    BreakerError,
    BreakerRegistry,
    CallTimeoutError,
    CircuitBreaker,
    CircuitOpenError,
    Clock,
    ConsecutiveFailures,
    Counts,
    CountWindow,
    ExponentialBackoff,
    FailureRate,
    FakeClock,
    FixedDuration,
    Guard,
    InvalidSettingError,
    InvalidSettingTypeError,
    Metrics,
    MonotonicClock,
    Permit,
    SlowCallRate,
    State,
    StateChange,
    TimeWindow,
    registry,
)
from .etcd import (
    BreakerClient,
    ClientClosedError,
    EtcdCallTimeoutError,
    EtcdCircuitOpenError,
    LeaseLostError,
    LockNotAcquiredError,
    Retry,
    StaleCache,
    WatchCompactedError,
    is_etcd_failure,
)

__version__ = "0.1.0"

__all__ = [
    "BreakerClient",
    "BreakerError",
    "BreakerRegistry",
    "CallTimeoutError",
    "CircuitBreaker",
    "CircuitOpenError",
    "ClientClosedError",
    "Clock",
    "ConsecutiveFailures",
    "CountWindow",
    "Counts",
    "EtcdCallTimeoutError",
    "EtcdCircuitOpenError",
    "ExponentialBackoff",
    "FailureRate",
    "FakeClock",
    "FixedDuration",
    "Guard",
    "InvalidSettingError",
    "InvalidSettingTypeError",
    "LeaseLostError",
    "LockNotAcquiredError",
    "Metrics",
    "MonotonicClock",
    "Permit",
    "Retry",
    "SlowCallRate",
    "StaleCache",
    "State",
    "StateChange",
    "TimeWindow",
    "WatchCompactedError",
    "is_etcd_failure",
    "registry",
]
