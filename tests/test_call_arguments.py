"""A bad argument of an etcd call is named, with its value, not left to protobuf."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import pytest

from aetcd_breaker import (
    BreakerClient,
    InvalidSettingError,
    InvalidSettingTypeError,
    Retry,
)
from aetcd_breaker.testing import EtcdServer

pytestmark = [pytest.mark.anyio, pytest.mark.etcd]

V, T = InvalidSettingError, InvalidSettingTypeError
Call = Callable[[BreakerClient], Awaitable[object]]

BAD_CALLS: list[tuple[str, Call, type[Exception], str, object]] = [
    ("get, str key", lambda c: c.get("/k"), T, "key", "/k"),
    ("get, bool serializable", lambda c: c.get(b"/k", "yes"), T, "serializable", "yes"),
    ("put, str value", lambda c: c.put(b"/k", "v"), T, "value", "v"),
    ("put, int key", lambda c: c.put(5, b"v"), T, "key", 5),
    ("put, nan lease", lambda c: c.put(b"/k", b"v", lease=math.nan), T, "lease", None),
    (
        "put, lease past int64",
        lambda c: c.put(b"/k", b"v", lease=2**70),
        V,
        "lease",
        2**70,
    ),
    ("delete, int key", lambda c: c.delete(5), T, "key", 5),
    ("delete_prefix, str", lambda c: c.delete_prefix("/p"), T, "key_prefix", "/p"),
    ("get_range, str end", lambda c: c.get_range(b"/a", "/b"), T, "range_end", "/b"),
    ("replace, str new", lambda c: c.replace(b"/k", b"a", "b"), T, "new_value", "b"),
    ("compact, bool", lambda c: c.compact(True), T, "revision", True),
    ("compact, past int64", lambda c: c.compact(2**70), V, "revision", 2**70),
    ("revoke_lease, past int64", lambda c: c.revoke_lease(2**70), V, "lease_id", 2**70),
    ("refresh_lease, str", lambda c: c.refresh_lease("1"), T, "lease_id", "1"),
    ("remove_member, negative", lambda c: c.remove_member(-1), V, "member_id", -1),
]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    ("call", "error", "argument", "value"),
    [case[1:] for case in BAD_CALLS],
    ids=[case[0] for case in BAD_CALLS],
)
async def test_a_bad_argument_is_named_with_its_value_and_counts_nothing(
    etcd_server_session: EtcdServer,
    call: Call,
    error: type[Exception],
    argument: str,
    value: object,
) -> None:
    server = etcd_server_session
    async with BreakerClient(server.host, server.port, call_timeout=5) as client:
        with pytest.raises(error) as raised:
            await call(client)

        assert raised.value.setting == argument  # type: ignore[attr-defined]
        assert str(raised.value).startswith(f"{argument} must be")
        if value is not None:
            assert raised.value.value == value  # type: ignore[attr-defined]
        # protobuf's own refusal stays attached, for whoever wants it.
        assert isinstance(raised.value.__cause__, TypeError | ValueError)
        metrics = client.breaker.metrics()
        assert (metrics.failures, metrics.ignored, metrics.successes) == (0, 1, 0)
        # The client is as good as before.
        assert await client.put(b"/args/after", b"ok") is not None


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda c: c.add_member("http://127.0.0.1:1"), "urls"),
        (lambda c: c.add_member([b"http://127.0.0.1:1"]), "urls"),
        (lambda c: c.update_member(1, "http://127.0.0.1:1"), "peer_urls"),
        (lambda c: c.snapshot("/tmp/snapshot.db"), "file_obj"),
    ],
    ids=[
        "add_member, a str",
        "add_member, bytes in the list",
        "update_member, a str",
        "snapshot, a path instead of a file",
    ],
)
async def test_peer_urls_or_a_snapshot_file_of_the_wrong_kind_are_refused_up_front(
    call: Call, argument: str
) -> None:
    # A lone str would reach etcd as one URL a character.
    client = BreakerClient("127.0.0.1", 1)

    with pytest.raises(InvalidSettingTypeError, match=rf"^{argument} must be a"):
        await call(client)

    assert client.breaker.metrics().calls == 0


async def test_a_bad_argument_under_a_retry_policy_is_named_and_not_retried(
    etcd_server_session: EtcdServer,
) -> None:
    server = etcd_server_session
    async with BreakerClient(
        server.host, server.port, retry=Retry(attempts=3)
    ) as client:
        with pytest.raises(InvalidSettingTypeError, match=r"^key must be bytes"):
            await client.get("/k")

        assert client.retries == 0


async def test_an_error_with_good_arguments_is_left_as_it_is(
    etcd_server_session: EtcdServer,
) -> None:
    # aetcd's own refusal of a sort order already names it: kept unchanged.
    server = etcd_server_session
    async with BreakerClient(server.host, server.port) as client:
        with pytest.raises(ValueError) as raised:
            await client.get_prefix(b"/p", sort_order="sideways")

    assert not isinstance(raised.value, InvalidSettingError)
    assert "sideways" in str(raised.value) or "sort_order" in str(raised.value)


async def test_an_int_flag_that_protobuf_takes_is_not_blamed_for_another_refusal(
    etcd_server_session: EtcdServer,
) -> None:
    # keys_only=1 is a flag protobuf takes (the call below goes through): the
    # refusal of the sort order must reach the caller as it is, not as a
    # complaint about keys_only.
    server = etcd_server_session
    async with BreakerClient(server.host, server.port) as client:
        await client.get_prefix(b"/p", keys_only=1)  # type: ignore[arg-type]
        with pytest.raises(ValueError) as raised:
            await client.get_prefix(
                b"/p",
                sort_order="sideways",
                keys_only=1,  # type: ignore[arg-type]
            )

    assert not isinstance(raised.value, InvalidSettingError | InvalidSettingTypeError)
    assert "sideways" in str(raised.value)
