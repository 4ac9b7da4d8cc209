"""Validation of breaker settings: a bad value is named in a clear error."""

from __future__ import annotations

import inspect
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


def is_async(fn: object) -> bool:
    """Whether calling ``fn`` gives a coroutine: an async def, a partial of
    one, or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(fn):
        return True
    return callable(fn) and inspect.iscoroutinefunction(type(fn).__call__)


def _plain(setting: str, fn: object, expected: str) -> None:
    # The breaker calls these and never awaits them: a coroutine left
    # unawaited is true, so a rule would fire on every outcome, a classifier
    # count every error, and a hook would never run.
    if not callable(fn) or isinstance(fn, type) or is_async(fn):
        raise InvalidSettingTypeError(setting, fn, expected)


def optional_seconds(setting: str, value: object) -> float | None:
    if value is None:
        return None
    return check_number(setting, value, strict=True)


def open_duration(value: object) -> OpenDuration:
    if isinstance(value, FixedDuration | ExponentialBackoff):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return FixedDuration(check_number("reset_timeout", value))
    if callable(value) and not isinstance(value, type) and not is_async(value):
        return value
    raise InvalidSettingTypeError(
        "reset_timeout", value, "seconds or an open-duration policy (not async)"
    )


def rules(rules: object) -> tuple[TripRule, ...]:
    if callable(rules) and not isinstance(rules, type):
        checked: tuple[Any, ...] = (rules,)
    elif isinstance(rules, str | bytes) or not isinstance(rules, Iterable):
        raise InvalidSettingTypeError("trip_rules", rules, "an iterable of callables")
    else:
        checked = tuple(rules)
    for rule in checked:
        # A class (FailureRate rather than FailureRate(0.5)) is callable too.
        _plain("trip_rules", rule, "a plain function of Counts (not async)")
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
    if value is not None:
        _plain(setting, value, "a plain function (not async) or None")
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
    if callable(hooks) or isinstance(hooks, type):
        checked: tuple[Any, ...] = (hooks,)
    elif isinstance(hooks, str | bytes) or not isinstance(hooks, Iterable):
        raise InvalidSettingTypeError(
            "on_state_change", hooks, "a callable or callables"
        )
    else:
        checked = tuple(hooks)
    for hook in checked:
        _plain("on_state_change", hook, "a plain function (not async)")
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
