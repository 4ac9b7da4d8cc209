"""Name the argument of an etcd call that aetcd could not put in a request.

aetcd passes keys, values and numbers straight to protobuf, which refuses a
bad one with an error that names neither the argument nor, often, the value
("expected bytes, str found"). Checking every argument before every call
would cost each call its time; so the check runs only after aetcd refused
one, on the error path, and turns that refusal into an error naming the
argument and its value.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any, Final

from ..core import BreakerError, InvalidSettingError, InvalidSettingTypeError

__all__ = ["check_urls", "name_refused"]

_BYTES: Final = frozenset(
    {"key", "key_prefix", "range_start", "range_end", "value"}
    | {"initial_value", "new_value"}
)
_BOOLS: Final = frozenset({"serializable", "prev_kv", "keys_only", "physical", "keys"})
_INT64: Final = 2**63
_UINT64: Final = 2**64
# Whole numbers etcd keeps in 64 bits: the least and the bound of each.
_SIGNED: Final = (-_INT64, _INT64, "an int from -2**63 to 2**63 - 1")
_WHOLE: Final = {
    "revision": (0, _INT64, "an int from 0 to 2**63 - 1"),
    "lease_id": _SIGNED,
    "ttl": _SIGNED,
    "member_id": (0, _UINT64, "an int from 0 to 2**64 - 1"),
}
_REFUSALS: Final = (TypeError, ValueError, OverflowError)


@functools.cache
def _parameters(op: Any) -> tuple[str, ...]:
    # The first parameter is the inner client the call runs on.
    return tuple(inspect.signature(op).parameters)[1:]


def _check_whole(name: str, value: object, low: int, bound: int, text: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSettingTypeError(name, value, "an int")
    if not low <= value < bound:
        raise InvalidSettingError(name, value, text)


def _check(name: str, value: object) -> None:
    if name in _BYTES:
        if not isinstance(value, bytes):
            raise InvalidSettingTypeError(name, value, "bytes")
    elif name in _BOOLS:
        # protobuf takes any int of int64 for a bool (1 is true): such a flag
        # is no refusal, and blaming it would hide the argument that was.
        if not isinstance(value, int) or not -_INT64 <= value < _INT64:
            raise InvalidSettingTypeError(name, value, "a bool")
    elif name in _WHOLE:
        _check_whole(name, value, *_WHOLE[name])
    elif name == "lease":
        # A lease object stands for its id.
        if value is not None:
            _check_whole(name, getattr(value, "id", value), *_WHOLE["lease_id"])
    elif name in ("urls", "peer_urls"):
        check_urls(name, value)


def check_urls(name: str, value: object) -> None:
    """A member's peer URLs: a sequence of str, never a lone str (sent a char a URL)."""
    if (
        isinstance(value, str | bytes | bytearray)
        or not isinstance(value, Sequence)
        or not all(isinstance(url, str) for url in value)
    ):
        raise InvalidSettingTypeError(name, value, "a list of str")


def name_refused(op: Any, args: tuple[Any, ...], exc: BaseException) -> None:
    """Raise an error naming the bad argument, if ``exc`` was aetcd refusing one.

    ``op`` was awaited with an inner client and ``args``. Returns quietly
    when ``exc`` is no such refusal or no argument is to blame: the caller
    then raises ``exc`` as it is.
    """
    if not isinstance(exc, _REFUSALS) or isinstance(exc, BreakerError):
        return
    try:
        names = _parameters(op)
    except (TypeError, ValueError):
        return
    for name, value in zip(names, args, strict=False):
        try:
            _check(name, value)
        except BreakerError as named:
            raise named from exc
