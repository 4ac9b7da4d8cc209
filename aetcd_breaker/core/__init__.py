"""The breaker core: the state machine, its rules, windows, clock and errors.

Pure anyio: it runs on asyncio and trio and knows nothing of etcd.
"""

from ._clock import Clock, FakeClock, MonotonicClock, TimerHandle
from .breaker import CircuitBreaker
from .errors import (
    BreakerError,
    CallTimeoutError,
    CircuitOpenError,
    InvalidSettingError,
    InvalidSettingTypeError,
)
from .events import Counts, Metrics, State, StateChange, StateChangeHook
from .guard import Guard, Permit
from .policies import (
    ConsecutiveFailures,
    ExponentialBackoff,
    FailureRate,
    FixedDuration,
    OpenDuration,
    SlowCallRate,
    TripRule,
)
from .registry import BreakerRegistry, registry
from .windows import CountWindow, TimeWindow, Window

__all__ = [
    "BreakerError",
    "BreakerRegistry",
    "CallTimeoutError",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "ConsecutiveFailures",
    "CountWindow",
    "Counts",
    "ExponentialBackoff",
    "FailureRate",
    "FakeClock",
    "FixedDuration",
    "Guard",
    "InvalidSettingError",
    "InvalidSettingTypeError",
    "Metrics",
    "MonotonicClock",
    "OpenDuration",
    "Permit",
    "SlowCallRate",
    "State",
    "StateChange",
    "StateChangeHook",
    "TimeWindow",
    "TimerHandle",
    "TripRule",
    "Window",
    "registry",
]
