"""Every error the breaker core raises.

The tree, so that callers can see what to catch::

    BreakerError                      base of every error this library raises
    ├── CircuitOpenError              rejected without running the call
    ├── CallTimeoutError              the call ran past its deadline (also TimeoutError)
    ├── InvalidSettingError           a setting has a bad value (also ValueError)
    └── InvalidSettingTypeError       a setting has the wrong type (also TypeError)

The etcd layer adds subclasses that are also ``aetcd.ClientError``, so code
that already catches aetcd's errors keeps catching ours.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .events import State

__all__ = [
    "BreakerError",
    "CallTimeoutError",
    "CircuitOpenError",
    "InvalidSettingError",
    "InvalidSettingTypeError",
]


class BreakerError(Exception):
    """Base class of every error raised by aetcd_breaker."""


class CircuitOpenError(BreakerError):
    """A call was rejected at once, without running, because the circuit is open.

    Attributes:
        breaker: the name of the breaker that rejected the call.
        state: the breaker's state at the rejection.
        retry_after: seconds until a trial call will be admitted, or ``None``
            when no time is known (forced open, or half-open with every
            trial permit in use).
    """

    # No __init__ of our own: rejections are the hot path of an open breaker,
    # and BaseException stores the three arguments in ``args`` for free.
    args: tuple[str, State, float | None]

    @property
    def breaker(self) -> str:
        return self.args[0]

    @property
    def state(self) -> State:
        return self.args[1]

    @property
    def retry_after(self) -> float | None:
        return self.args[2]

    def __str__(self) -> str:
        return _open_message(*self.args)


def _open_message(breaker: str, state: State, retry_after: float | None) -> str:
    head = f"circuit {breaker!r} is {state.value}"
    if retry_after is not None:
        return f"{head}; a trial call is allowed in {retry_after:.3f} s"
    if state.value == "forced_open":
        return f"{head}; calls are rejected until reset()"
    if state.value == "half_open":
        return f"{head}; every trial permit is in use"
    return head


class CallTimeoutError(BreakerError, TimeoutError):
    """A guarded call ran past its deadline; it was cancelled and counted as failed.

    Attributes:
        breaker: the name of the breaker that guarded the call.
        timeout: the deadline in seconds.
    """

    def __init__(self, breaker: str, timeout: float) -> None:
        self.breaker = breaker
        self.timeout = timeout
        super().__init__(
            f"call guarded by {breaker!r} did not finish within {timeout:g} s"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.breaker, self.timeout))


def _shown(value: object) -> str:
    """``repr(value)`` for a message, or a description where repr fails.

    An int past 4300 digits has no repr (Python refuses the conversion), and
    an object of the caller's may have a broken ``__repr__``: the error must
    still name the setting rather than fail inside its own message.
    """
    try:
        return repr(value)
    except Exception:
        if isinstance(value, int):
            return f"<an int of {value.bit_length()} bits>"
        return f"<a {type(value).__name__} whose repr() fails>"


class InvalidSettingError(BreakerError, ValueError):
    """A setting has a value outside its allowed range."""

    def __init__(self, setting: str, value: object, expected: str) -> None:
        self.setting = setting
        self.value = value
        self.expected = expected
        super().__init__(f"{setting} must be {expected}, got {_shown(value)}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.setting, self.value, self.expected))


class InvalidSettingTypeError(BreakerError, TypeError):
    """A setting has a value of the wrong type."""

    def __init__(self, setting: str, value: object, expected: str) -> None:
        self.setting = setting
        self.value = value
        self.expected = expected
        super().__init__(
            f"{setting} must be {expected}, got {type(value).__name__} {_shown(value)}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.setting, self.value, self.expected))
