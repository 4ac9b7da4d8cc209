"""Tests of the etcd outcome table and of the etcd layer's errors."""

from __future__ import annotations

import asyncio
import pickle

import aetcd
import grpc  # type: ignore[import-untyped]
import pytest
from aetcd import exceptions as aetcd_errors

from aetcd_breaker import etcd
from aetcd_breaker.core import BreakerError, CallTimeoutError, CircuitOpenError, State
from aetcd_breaker.etcd import (
    COUNTED_CODES,
    COUNTED_ERRORS,
    GONE,
    ClientClosedError,
    EtcdCallTimeoutError,
    EtcdCircuitOpenError,
    LeaseLostError,
    LockNotAcquiredError,
    WatchCompactedError,
    is_etcd_failure,
)

FAILURE_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
}
ERROR_CODES = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]


def rpc_error(code: grpc.StatusCode, details: str = "details") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details
    )


def as_aetcd_raises(error: grpc.aio.AioRpcError) -> Exception:
    """What aetcd raises to its caller for a gRPC error."""
    try:
        aetcd_errors._handle_exception(error)
    except Exception as exc:
        return exc
    raise AssertionError("aetcd did not raise")


def test_namespace_exports_exactly_the_etcd_layer() -> None:
    assert set(etcd.__all__) == {
        "COUNTED_CODES",
        "COUNTED_ERRORS",
        "DEFAULT_CALL_TIMEOUT",
        "SLOW_CALL_TIMEOUT",
        "BreakerClient",
        "ClientClosedError",
        "EtcdCallTimeoutError",
        "EtcdCircuitOpenError",
        "Lease",
        "Member",
        "Watch",
        "WatchCompactedError",
        "is_etcd_failure",
        # Leases, locks, retries, fallbacks and stale reads.
        "CLOSED",
        "EXPIRED",
        "GONE",
        "LEASE_LOST",
        "NO_FALLBACK",
        "LeaseKeeper",
        "LeaseLostError",
        "Lock",
        "LockNotAcquiredError",
        "Retry",
        "Stale",
        "StaleCache",
        "StaleGet",
        "StaleGetRange",
    }
    for name in etcd.__all__:
        assert getattr(etcd, name) is not None


def test_table_names_every_grpc_error_code_and_counts_only_the_failures() -> None:
    assert set(COUNTED_CODES) == set(ERROR_CODES)
    assert {code for code, counted in COUNTED_CODES.items() if counted} == (
        FAILURE_CODES
    )


@pytest.mark.parametrize("code", ERROR_CODES, ids=lambda code: code.name)
def test_code_counts_alike_raw_or_as_aetcd_raises_it(code: grpc.StatusCode) -> None:
    raw = rpc_error(code)
    wrapped = as_aetcd_raises(raw)

    assert isinstance(wrapped, aetcd.ClientError)
    assert is_etcd_failure(raw) is (code in FAILURE_CODES)
    assert is_etcd_failure(wrapped) is (code in FAILURE_CODES)


def test_duplicate_lease_is_an_answer() -> None:
    raw = rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "lease already exists")
    wrapped = as_aetcd_raises(raw)

    assert isinstance(wrapped, aetcd_errors.DuplicateLeaseError)
    assert not is_etcd_failure(wrapped)


def test_aetcd_error_classes_count_as_the_table_says() -> None:
    counted = {cls for cls, flag in COUNTED_ERRORS.items() if flag}
    assert counted == {
        aetcd.ConnectionFailedError,
        aetcd.ConnectionTimeoutError,
        aetcd.InternalError,
        aetcd.WatchTimeoutError,
    }
    for cls, flag in COUNTED_ERRORS.items():
        error = cls(5) if cls is aetcd.RevisionCompactedError else cls("message")
        assert is_etcd_failure(error) is flag, cls


def test_our_deadline_counts_and_a_rejection_does_not() -> None:
    assert is_etcd_failure(EtcdCallTimeoutError("etcd", 1.0))
    assert is_etcd_failure(CallTimeoutError("other", 1.0))
    assert not is_etcd_failure(EtcdCircuitOpenError("etcd", State.OPEN, 1.0))
    assert not is_etcd_failure(CircuitOpenError("other", State.OPEN, 1.0))


@pytest.mark.parametrize(
    "error",
    [
        TypeError("bad argument"),
        ValueError("unknown sort order"),
        aetcd.ClientError("no gRPC cause"),
        aetcd.ClientError(TypeError("wrapped non-gRPC error")),
        asyncio.CancelledError(),
        KeyboardInterrupt(),
    ],
    ids=repr,
)
def test_errors_that_are_not_etcd_failures_are_not_counted(
    error: BaseException,
) -> None:
    assert not is_etcd_failure(error)


def test_rejection_error_is_also_an_aetcd_connection_error() -> None:
    error = EtcdCircuitOpenError("etcd", State.OPEN, 1.5)

    assert isinstance(error, CircuitOpenError)
    assert isinstance(error, aetcd.ConnectionFailedError)
    assert isinstance(error, aetcd.ClientError)
    assert not isinstance(error, aetcd.WatchTimeoutError)
    assert (error.breaker, error.state, error.retry_after) == ("etcd", State.OPEN, 1.5)
    assert str(error) == "circuit 'etcd' is open; a trial call is allowed in 1.500 s"


def test_timeout_error_is_also_an_aetcd_timeout_error() -> None:
    error = EtcdCallTimeoutError("etcd", 0.25)

    assert isinstance(error, CallTimeoutError)
    assert isinstance(error, TimeoutError)
    assert isinstance(error, aetcd.ConnectionTimeoutError)
    assert not isinstance(error, aetcd.WatchTimeoutError)
    assert (error.breaker, error.timeout) == ("etcd", 0.25)
    assert "0.25 s" in str(error)


def test_the_other_errors_sit_in_the_tree_errors_py_documents() -> None:
    # Code written against raw aetcd catches them where it caught aetcd's.
    closed = ClientClosedError()
    lost = LeaseLostError(7, GONE)
    compacted = WatchCompactedError(10, 3)
    not_acquired = LockNotAcquiredError(b"/lock", 1.0)

    assert isinstance(closed, BreakerError)
    assert isinstance(closed, aetcd.ConnectionFailedError)
    assert isinstance(lost, BreakerError)
    assert isinstance(lost, aetcd.ClientError)
    assert isinstance(compacted, BreakerError)
    assert isinstance(compacted, aetcd.RevisionCompactedError)
    assert isinstance(not_acquired, BreakerError)
    assert isinstance(not_acquired, TimeoutError)
    for error in (closed, lost, compacted, not_acquired):
        assert not isinstance(error, aetcd.WatchTimeoutError)


def test_errors_survive_pickling() -> None:
    rejected = pickle.loads(pickle.dumps(EtcdCircuitOpenError("etcd", State.OPEN, 2)))
    timed_out = pickle.loads(pickle.dumps(EtcdCallTimeoutError("etcd", 0.5)))

    assert type(rejected) is EtcdCircuitOpenError
    assert rejected.retry_after == 2
    assert type(timed_out) is EtcdCallTimeoutError
    assert timed_out.timeout == 0.5
