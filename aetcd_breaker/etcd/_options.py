"""Per-call options: the path a call takes when retries, fallbacks or stale reads apply.

A call with none of them in effect never comes here: each operation checks
one flag of the session and two of its own arguments, then goes straight to
``Session.call``.

Which client-wide option applies to which operation:

- ``retry``: the idempotent ones (reads, status, members, hash, alarms
  listed, lease info and refresh); writes, transactions and lease grants only
  when the call asks with ``retry=``.
- ``fallback``: the key reads (``get``, ``get_prefix``, ``get_range``,
  ``get_all``); any other operation only when the call passes ``fallback=``.
- ``stale_reads``: ``get`` and ``get_prefix``.
"""

from __future__ import annotations

import enum
import inspect
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ..core import CircuitOpenError, InvalidSettingTypeError
from .retry import Retry, call_retrying
from .stale import StaleCache

if TYPE_CHECKING:
    from ._session import Op, Session

__all__ = [
    "DEFAULT",
    "IDEMPOTENT",
    "KEY_READ",
    "NO_FALLBACK",
    "STALE_READ",
    "WRITE",
    "configure",
    "run",
]

T = TypeVar("T")


class _Sentinel(enum.Enum):
    DEFAULT = "DEFAULT"
    NO_FALLBACK = "NO_FALLBACK"

    def __repr__(self) -> str:
        return self.value


DEFAULT: Final = _Sentinel.DEFAULT
"""A call's ``fallback=`` default: the client's fallback, where it applies."""

NO_FALLBACK: Final = _Sentinel.NO_FALLBACK
"""No fallback: errors reach the caller (a client's default)."""

WRITE: Final = 0
IDEMPOTENT: Final = 1
KEY_READ: Final = 3
STALE_READ: Final = 7
_KEYS: Final = 2
_STALE: Final = 4

DEFAULT_RETRY: Final = Retry()


def configure(session: Session, retry: object, fallback: object, stale: object) -> None:
    """Check and set the client-wide options of ``session``."""
    if retry is not None and not isinstance(retry, Retry):
        raise InvalidSettingTypeError("retry", retry, "a Retry or None")
    if stale is not None and not isinstance(stale, StaleCache):
        raise InvalidSettingTypeError("stale_reads", stale, "a StaleCache or None")
    if fallback is DEFAULT:
        raise InvalidSettingTypeError("fallback", fallback, "a value or a function")
    session.retry = retry
    session.fallback = fallback
    session.stale = stale
    session.plain = retry is None and fallback is NO_FALLBACK and stale is None


def _policy(session: Session, retry: object, kind: int) -> Retry | None:
    if retry is None:
        return session.retry if kind & IDEMPOTENT else None
    if retry is True:
        return session.retry or DEFAULT_RETRY
    if retry is False:
        return None
    if isinstance(retry, Retry):
        return retry
    raise InvalidSettingTypeError("retry", retry, "a Retry, True, False or None")


async def run(
    session: Session,
    op: Op[T],
    kind: int,
    call_timeout: object,
    retry: object,
    fallback: object,
    /,
    *args: Any,
) -> T:
    """Run one operation with the options of the call and of the client."""
    policy = _policy(session, retry, kind)
    if fallback is DEFAULT:
        fallback = session.fallback if kind & _KEYS else NO_FALLBACK
    stale = session.stale if kind & _STALE else None
    try:
        if policy is None:
            result = await session.call(op, call_timeout, *args)
        else:
            result = await call_retrying(session, policy, op, call_timeout, args)
    except Exception as exc:
        # Only rejections and failures that count: an answer of etcd (a bad
        # argument, a failed precondition) is the caller's to handle, and so
        # is a call that closing the client cut off, uncounted.
        if not isinstance(exc, CircuitOpenError) and (
            session.closed or not session.counts(exc)
        ):
            raise
        if stale is not None:
            answer = stale.answer((op, *args), session.clock.now())
            if answer is not None:
                session.stale_answers += 1
                return answer  # type: ignore[return-value]
        if fallback is NO_FALLBACK:
            raise
        session.fallbacks += 1
        return await _fall_back(fallback, exc)  # type: ignore[no-any-return]
    if stale is not None:
        stale.store((op, *args), result, session.clock.now())
    return result


async def _fall_back(fallback: Any, exc: Exception) -> Any:
    if not callable(fallback):
        return fallback
    value = fallback(exc)
    if inspect.isawaitable(value):
        value = await value
    return value
