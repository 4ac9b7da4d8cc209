"""Every operation of aetcd.Client exists on BreakerClient, and is really guarded.

The client here points at a port nothing listens on: an unguarded call would
fail with ``aetcd.ConnectionFailedError``, a guarded one on a forced-open
breaker with its subclass ``EtcdCircuitOpenError``, counted as rejected.
"""

from __future__ import annotations

import inspect
import io
import math
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aetcd
import grpc  # type: ignore[import-untyped]
import pytest

from aetcd_breaker.core import (
    CircuitBreaker,
    InvalidSettingError,
    InvalidSettingTypeError,
)
from aetcd_breaker.etcd import (
    BreakerClient,
    EtcdCircuitOpenError,
    Lease,
    Member,
    Retry,
)
from aetcd_breaker.etcd._options import DEFAULT

pytestmark = pytest.mark.anyio

NOT_OPERATIONS = {"connect", "close", "__aenter__", "__aexit__"}
WATCHES = {"watch", "watch_prefix", "watch_once", "watch_prefix_once"}
PEER = "http://127.0.0.1:1"
ARGS: dict[str, tuple[Any, ...]] = {
    "get": (b"k",),
    "get_prefix": (b"k",),
    "get_range": (b"a", b"b"),
    "get_all": (),
    "put": (b"k", b"v"),
    "delete": (b"k",),
    "delete_prefix": (b"k",),
    "delete_range": (b"a", b"b"),
    "replace": (b"k", b"a", b"b"),
    "transaction": ([], [], []),
    "watch": (b"k",),
    "watch_prefix": (b"k",),
    "watch_once": (b"k",),
    "watch_prefix_once": (b"k",),
    "lease": (10,),
    "revoke_lease": (1,),
    "refresh_lease": (1,),
    "get_lease_info": (1,),
    "status": (),
    "add_member": ([PEER],),
    "remove_member": (1,),
    "update_member": (1, [PEER]),
    "members": (),
    "compact": (1,),
    "defragment": (),
    "hash": (),
    "create_alarm": (),
    "list_alarms": (),
    "disarm_alarm": (),
    "snapshot": (io.BytesIO(),),
}


def aetcd_operations() -> list[str]:
    names = []
    for name, member in inspect.getmembers(aetcd.Client):
        if name.startswith("_") or name in NOT_OPERATIONS:
            continue
        if inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member):
            names.append(name)
    return sorted([*names, "lock"])


OPERATIONS = aetcd_operations()


def shape(parameters: Iterator[inspect.Parameter]) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in parameters if p.name != "self"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def etcd() -> AsyncIterator[BreakerClient]:
    async with BreakerClient("127.0.0.1", closed_port()) as client:
        yield client


async def run(client: BreakerClient, name: str, *args: Any, **kwargs: Any) -> None:
    """Call an operation the way its kind wants to be called."""
    if name == "lock":
        await client.lock(b"lock-key", ttl=5).acquire(timeout=1)
        return
    method = getattr(client, name)
    if inspect.isasyncgenfunction(method):
        async for _ in method(*args, **kwargs):
            pass
    else:
        await method(*args, **kwargs)


def test_operations_list_is_complete() -> None:
    assert len(OPERATIONS) >= 31
    assert set(OPERATIONS) == {*ARGS, "lock"}


@pytest.mark.parametrize("name", OPERATIONS)
def test_operation_keeps_aetcd_signature_plus_keyword_only_options(name: str) -> None:
    ours = inspect.signature(getattr(BreakerClient, name)).parameters.values()
    theirs = inspect.signature(getattr(aetcd.Client, name)).parameters.values()
    added = [p for p in ours if p.name not in {q.name for q in theirs}]
    options = {p.name: p.default for p in added}

    assert shape(p for p in ours if p not in added) == shape(iter(theirs))
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in added)
    if name == "lock":
        assert list(options) == ["timeout", "on_lost", "cancel_on_lost"]
    elif name in WATCHES:
        assert options["call_timeout"] is None
    else:
        assert options == {"call_timeout": None, "retry": None, "fallback": DEFAULT}
    original = getattr(aetcd.Client, name)
    method = getattr(BreakerClient, name)
    assert inspect.isasyncgenfunction(method) == inspect.isasyncgenfunction(original)
    assert inspect.iscoroutinefunction(method) == inspect.iscoroutinefunction(original)


def test_constructor_takes_aetcd_connection_arguments() -> None:
    ours = inspect.signature(BreakerClient).parameters.values()
    theirs = inspect.signature(aetcd.Client).parameters.values()
    keyword_only = [p.name for p in ours if p.kind is inspect.Parameter.KEYWORD_ONLY]

    assert shape(p for p in ours if p.kind is not p.KEYWORD_ONLY) == shape(iter(theirs))
    assert keyword_only == [
        "breaker",
        "call_timeout",
        "is_failure",
        "retry",
        "fallback",
        "stale_reads",
    ]


async def test_port_is_closed_so_an_unguarded_call_would_fail_otherwise(
    etcd: BreakerClient,
) -> None:
    with pytest.raises(aetcd.ConnectionFailedError) as info:
        await etcd.get(b"k")

    assert not isinstance(info.value, EtcdCircuitOpenError)


@pytest.mark.parametrize("name", OPERATIONS)
async def test_operation_is_rejected_when_the_breaker_is_open(
    etcd: BreakerClient, name: str
) -> None:
    etcd.breaker.force_open()

    with pytest.raises(EtcdCircuitOpenError):
        await run(etcd, name, *ARGS.get(name, ()))

    assert etcd.breaker.metrics().rejected == 1


# The operations a client-wide retry policy applies to (see _options.py).
RETRIED_BY_DEFAULT = {
    "get",
    "get_prefix",
    "get_range",
    "get_all",
    "status",
    "members",
    "hash",
    "list_alarms",
    "refresh_lease",
    "get_lease_info",
}


@pytest.mark.parametrize(
    "name", [name for name in OPERATIONS if name not in WATCHES and name != "lock"]
)
async def test_a_client_retry_policy_retries_the_idempotent_operations_only(
    name: str,
) -> None:
    breaker = CircuitBreaker(name="etcd", initial_state="disabled")
    policy = Retry(attempts=3, base=0.01, jitter=0)
    async with BreakerClient(
        "127.0.0.1", closed_port(), breaker=breaker, retry=policy
    ) as etcd:
        # members() lets gRPC's own error through, as aetcd's does.
        with pytest.raises((aetcd.ConnectionFailedError, grpc.aio.AioRpcError)):
            await run(etcd, name, *ARGS.get(name, ()))

    assert etcd.retries == (2 if name in RETRIED_BY_DEFAULT else 0)


async def test_objects_handed_out_call_through_the_guarded_client(
    etcd: BreakerClient,
) -> None:
    lease = Lease(1, 10, etcd)
    member = Member(1, "m", [PEER], [], etcd)
    calls = [
        lease.revoke(),
        lease.refresh(),
        lease.remaining_ttl(),
        lease.granted_ttl(),
        lease.keys(),
        member.remove(),
        member.update([PEER]),
        member.active_alarms(),
    ]
    etcd.breaker.force_open()

    for call in calls:
        with pytest.raises(EtcdCircuitOpenError):
            await call

    assert etcd.breaker.metrics().rejected == len(calls)


@pytest.mark.parametrize("value", [0, -1, "x", math.nan, math.inf, True])
def test_bad_client_call_timeout_is_named_in_the_error(value: object) -> None:
    with pytest.raises((InvalidSettingError, InvalidSettingTypeError)) as info:
        BreakerClient(call_timeout=value)  # type: ignore[arg-type]

    assert "call_timeout" in str(info.value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", [0, -1, "x", math.nan, -math.inf, False, 2**2000])
async def test_bad_call_timeout_of_a_call_is_refused_before_it_runs(
    etcd: BreakerClient, value: object
) -> None:
    with pytest.raises((InvalidSettingError, InvalidSettingTypeError)) as info:
        await etcd.get(b"k", call_timeout=value)  # type: ignore[arg-type]

    assert "call_timeout" in str(info.value)
    assert repr(value) in str(info.value)
    metrics = etcd.breaker.metrics()
    assert (metrics.calls, metrics.rejected) == (0, 0)


@pytest.mark.parametrize(
    ("arguments", "setting", "value"),
    [
        ({"timeout": math.nan}, "timeout", math.nan),
        ({"timeout": -1}, "timeout", -1),
        ({"timeout": "5"}, "timeout", "5"),
        ({"start_revision": -5}, "start_revision", -5),
        ({"start_revision": 2.0}, "start_revision", 2.0),
        ({"start_revision": True}, "start_revision", True),
    ],
)
async def test_bad_watch_once_argument_is_refused_before_any_call(
    etcd: BreakerClient, arguments: dict[str, Any], setting: str, value: object
) -> None:
    for wait in (etcd.watch_once, etcd.watch_prefix_once):
        with pytest.raises((InvalidSettingError, InvalidSettingTypeError)) as info:
            await wait(b"/bad", **arguments)

        assert str(info.value).startswith(f"{setting} must be")
        assert str(info.value).endswith(repr(value))
    assert etcd.breaker.metrics().calls == 0


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("start_revision", 2**63),
        ("start_revision", 2**70),
        ("watch_id", 2**63),
        ("watch_id", -1),
        ("watch_id", "7"),
    ],
)
async def test_a_revision_or_watch_id_outside_int64_is_refused_by_name(
    etcd: BreakerClient, setting: str, value: object
) -> None:
    # Not a bare ValueError from protobuf, deep inside the call.
    for watch in (etcd.watch, etcd.watch_prefix, etcd.watch_once):
        with pytest.raises((InvalidSettingError, InvalidSettingTypeError)) as info:
            await watch(b"/bad", **{setting: value})

        assert str(info.value).startswith(f"{setting} must be")
        assert str(info.value).endswith(repr(value))
    assert etcd.breaker.metrics().calls == 0


async def test_a_negative_start_revision_of_a_watch_is_refused(
    etcd: BreakerClient,
) -> None:
    # Not reported later as history lost to a compaction.
    with pytest.raises(InvalidSettingError, match=r"^start_revision must be"):
        await etcd.watch(b"/bad", start_revision=-5)
    assert etcd.breaker.metrics().calls == 0


def test_wrap_refuses_what_is_not_an_aetcd_client() -> None:
    with pytest.raises(InvalidSettingTypeError, match="client"):
        BreakerClient.wrap(object())


def test_default_breaker_is_named_etcd() -> None:
    assert BreakerClient().breaker.name == "etcd"
    breaker = CircuitBreaker(name="mine")
    assert BreakerClient(breaker=breaker).breaker is breaker
