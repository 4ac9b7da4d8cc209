"""Validation of breaker settings: a bad value is named in a clear error."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._clock import Clock, MonotonicClock
from .errors import InvalidSettingError, InvalidSettingTypeError
from .events import State, StateChangeHook
from .policies import (
    ExponentialBackoff,
    FixedDuration,
    OpenDuration,
    TripRule,
    check_number,
)
from .windows import CountWindow, TimeWindow, Window


def optional_seconds(setting: str, value: object) -> float | None:
    if value is None:
        return None
    return check_number(setting, value, strict=True)


def open_duration(value: object) -> OpenDuration:
    if isinstance(value, FixedDuration | ExponentialBackoff):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return FixedDuration(check_number("reset_timeout", value))
    if callable(value) and not isinstance(value, type):
        return value
    raise InvalidSettingTypeError(
        "reset_timeout", value, "seconds or an open-duration policy"
    )


def rules(rules: object) -> tuple[TripRule, ...]:
    if callable(rules) and not isinstance(rules, type):
        return (rules,)
    if isinstance(rules, str | bytes) or not isinstance(rules, Iterable):
        raise InvalidSettingTypeError("trip_rules", rules, "an iterable of callables")
    checked = tuple(rules)
    for rule in checked:
        # A class (FailureRate rather than FailureRate(0.5)) is callable too.
        if not callable(rule) or isinstance(rule, type):
            raise InvalidSettingTypeError("trip_rules", rule, "a callable of Counts")
    return checked


def window(window: object) -> Window | None:
    if window is None:
        return None
    needed = ("needs_time", "record", "totals", "clear")
    if isinstance(window, type) or not all(hasattr(window, a) for a in needed):
        raise InvalidSettingTypeError("window", window, "a CountWindow or TimeWindow")
    # A window holds outcomes: breakers made from one dict of settings must
    # not count each other's calls (or clear each other's counts), so each
    # gets a window of its own. The breaker clears it at once anyway.
    if type(window) is CountWindow:
        return CountWindow(window.size)
    if type(window) is TimeWindow:
        return TimeWindow(window.seconds, window.buckets)
    return window  # type: ignore[return-value]


def callable_or_none(setting: str, value: Any) -> Any:
    # A class is callable too: is_failure=TimeoutError would call every
    # exception a failure, since TimeoutError(exc) is always true.
    if value is not None and (not callable(value) or isinstance(value, type)):
        raise InvalidSettingTypeError(setting, value, "a function or None")
    return value


def clock(clock: object) -> Clock:
    if clock is None:
        return MonotonicClock()
    if isinstance(clock, type) or not isinstance(clock, Clock):
        raise InvalidSettingTypeError(
            "clock", clock, "an object with now(), sleep_until() and call_at()"
        )
    return clock


def hooks(hooks: object) -> tuple[StateChangeHook, ...]:
    if isinstance(hooks, type):
        raise InvalidSettingTypeError("on_state_change", hooks, "a callable")
    if callable(hooks):
        return (hooks,)
    if isinstance(hooks, str | bytes) or not isinstance(hooks, Iterable):
        raise InvalidSettingTypeError(
            "on_state_change", hooks, "a callable or callables"
        )
    checked = tuple(hooks)
    for hook in checked:
        if not callable(hook) or isinstance(hook, type):
            raise InvalidSettingTypeError("on_state_change", hook, "a callable")
    return checked


def initial_state(value: object) -> State:
    expected = "one of closed, open, forced_open, disabled"
    if not isinstance(value, str):
        raise InvalidSettingTypeError("initial_state", value, "a State or its name")
    try:
        state = State(value)
    except ValueError:
        raise InvalidSettingError("initial_state", value, expected) from None
    if state is State.HALF_OPEN:
        raise InvalidSettingError("initial_state", value, expected)
    return state
