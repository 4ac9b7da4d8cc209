"""The etcd outcome table: which errors of an etcd call count as failures.

A failure is etcd not answering: the connection failed, the call ran out of
time, or the server broke. An answer, even an unwelcome one (a bad argument,
a failed precondition, a missing lease, a denied permission), shows that etcd
works, so it is not counted: it neither trips the breaker nor fails a trial.

aetcd maps six gRPC codes to its own error classes and raises a bare
``aetcd.ClientError`` for the rest, with the gRPC error as ``__cause__``;
``members()`` lets the raw ``grpc.aio.AioRpcError`` through. The table reads
the code in all three shapes. Anything that is not an etcd error (a
``TypeError`` from a bad argument, say) is the caller's bug and not counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from aetcd import exceptions as aetcd_errors
from aetcd import rpc

from ..core.errors import CallTimeoutError, CircuitOpenError

__all__ = ["COUNTED_CODES", "COUNTED_ERRORS", "is_etcd_failure"]

_Code = rpc.StatusCode

COUNTED_CODES: Mapping[rpc.StatusCode, bool] = MappingProxyType(
    {
        # No answer, or a broken server.
        _Code.UNAVAILABLE: True,
        _Code.DEADLINE_EXCEEDED: True,
        _Code.INTERNAL: True,
        _Code.RESOURCE_EXHAUSTED: True,
        _Code.UNKNOWN: True,
        _Code.DATA_LOSS: True,
        # etcd answered.
        _Code.INVALID_ARGUMENT: False,
        _Code.FAILED_PRECONDITION: False,
        _Code.NOT_FOUND: False,
        _Code.OUT_OF_RANGE: False,
        _Code.ALREADY_EXISTS: False,
        _Code.PERMISSION_DENIED: False,
        _Code.UNAUTHENTICATED: False,
        _Code.ABORTED: False,
        _Code.UNIMPLEMENTED: False,
        # The call was cancelled, by its caller or by the client closing; the
        # client layer tells an unasked-for cancellation apart on its own.
        _Code.CANCELLED: False,
    }
)
"""Every gRPC status code other than OK, mapped to whether it counts."""

COUNTED_ERRORS: Mapping[type[Exception], bool] = MappingProxyType(
    {
        aetcd_errors.ConnectionFailedError: True,
        aetcd_errors.ConnectionTimeoutError: True,
        aetcd_errors.InternalError: True,
        # aetcd raises it only when watch creation was not answered within
        # the client's ``timeout``; BreakerClient never guards the wait for a
        # watch event, where it means something else.
        aetcd_errors.WatchTimeoutError: True,
        aetcd_errors.InvalidArgumentError: False,
        aetcd_errors.PreconditionFailedError: False,
        aetcd_errors.DuplicateLeaseError: False,
        aetcd_errors.UnauthenticatedError: False,
        aetcd_errors.RevisionCompactedError: False,
    }
)
"""aetcd's error classes, mapped to whether they count."""

_COUNTED: tuple[type[BaseException], ...] = (
    CallTimeoutError,
    *(cls for cls, counted in COUNTED_ERRORS.items() if counted),
)
_ANSWERS: tuple[type[BaseException], ...] = tuple(
    cls for cls, counted in COUNTED_ERRORS.items() if not counted
)
_ClientError = aetcd_errors.ClientError
_RpcError = rpc.AioRpcError


def is_etcd_failure(exc: BaseException) -> bool:
    """Tell whether an error of an etcd call counts as a failure.

    Counted: aetcd's connection, timeout and internal errors, the gRPC codes
    marked True in :data:`COUNTED_CODES` (wrapped or raw), and a guarded
    call's own deadline. A rejection by a breaker is never counted: no call
    was made.
    """
    if isinstance(exc, CircuitOpenError):
        return False
    if isinstance(exc, _COUNTED):
        return True
    error: object = exc
    if isinstance(exc, _ClientError):
        if isinstance(exc, _ANSWERS):
            return False
        error = exc.__cause__
    if isinstance(error, _RpcError):
        return COUNTED_CODES.get(error.code(), False)
    return False
