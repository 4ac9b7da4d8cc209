"""Leases, locks and their hooks refuse bad settings by name; fallbacks for lists."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest

from aetcd_breaker import BreakerClient, InvalidSettingError, InvalidSettingTypeError
from aetcd_breaker.testing import EtcdServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    ("ttl", "error"),
    [
        (0, InvalidSettingError),
        (-5, InvalidSettingError),
        (1.5, InvalidSettingTypeError),
        # etcd's MaxLeaseTTL is 9e9 s; 2**63 does not fit its int64 field.
        (9_000_000_001, InvalidSettingError),
        (2**63, InvalidSettingError),
        # A keeper of a new lease needs one: not an AssertionError on entry.
        (None, InvalidSettingTypeError),
    ],
)
async def test_a_bad_ttl_is_refused_before_any_call(ttl: Any, error: type) -> None:
    client = BreakerClient("127.0.0.1", 1)

    with pytest.raises(error, match=r"^ttl must be"):
        await client.lease(ttl)
    with pytest.raises(error, match=r"^ttl must be"):
        client.lease_keeper(ttl)
    with pytest.raises(error, match=r"^ttl must be"):
        client.lock(b"/lock", ttl=ttl)

    assert client.breaker.metrics().calls == 0


@pytest.mark.parametrize("timeout", [-1, math.nan, math.inf, "10", 2**2000])
async def test_a_bad_lock_timeout_is_refused(timeout: Any) -> None:
    client = BreakerClient("127.0.0.1", 1)

    with pytest.raises((InvalidSettingError, InvalidSettingTypeError), match="timeout"):
        client.lock(b"/lock", timeout=timeout)
    with pytest.raises((InvalidSettingError, InvalidSettingTypeError), match="timeout"):
        await client.lock(b"/lock").acquire(timeout)


@pytest.mark.parametrize(
    ("lease_id", "error"),
    [
        (-1, InvalidSettingError),
        (2**70, InvalidSettingError),
        ("7", InvalidSettingTypeError),
    ],
)
async def test_a_bad_lease_id_is_refused_before_any_call(
    lease_id: Any, error: type
) -> None:
    client = BreakerClient("127.0.0.1", 1)

    with pytest.raises(error, match=r"^lease_id must be"):
        await client.lease(5, lease_id)
    assert client.breaker.metrics().calls == 0


def test_a_lock_key_that_is_not_bytes_is_refused_at_once() -> None:
    client = BreakerClient("127.0.0.1", 1)

    with pytest.raises(InvalidSettingTypeError, match=r"^key must be bytes"):
        client.lock("/lock")  # type: ignore[arg-type]


async def test_an_async_on_lost_hook_is_refused_rather_than_never_awaited() -> None:
    async def on_lost(error: Exception) -> None:
        raise AssertionError("never runs")

    client = BreakerClient("127.0.0.1", 1)

    with pytest.raises(InvalidSettingTypeError, match=r"^on_lost must be a plain"):
        client.lease_keeper(5, on_lost=on_lost)
    with pytest.raises(InvalidSettingTypeError, match=r"^on_lost must be a plain"):
        client.lock(b"/lock", on_lost=on_lost)


async def test_an_on_lost_object_with_an_async_call_is_refused_too() -> None:
    class OnLost:
        async def __call__(self, error: Exception) -> None:
            raise AssertionError("never runs")

    client = BreakerClient("127.0.0.1", 1)

    with pytest.raises(InvalidSettingTypeError, match=r"^on_lost must be a plain"):
        client.lease_keeper(5, on_lost=OnLost())


async def test_a_members_fallback_yields_its_items_as_given() -> None:
    client = BreakerClient("127.0.0.1", 1)
    client.breaker.force_open()

    found = [m async for m in client.members(fallback=["member-a", "member-b"])]

    assert found == ["member-a", "member-b"]


@pytest.mark.parametrize("fallback", [None, 5, lambda error: None])
async def test_a_list_fallback_that_is_no_list_is_named(fallback: Any) -> None:
    # Not a bare "'NoneType' object is not iterable" from inside the loop.
    client = BreakerClient("127.0.0.1", 1)
    client.breaker.force_open()

    with pytest.raises(InvalidSettingTypeError, match=r"^fallback must be"):
        [m async for m in client.members(fallback=fallback)]
    with pytest.raises(InvalidSettingTypeError, match=r"^fallback must be"):
        [a async for a in client.list_alarms(fallback=fallback)]


@pytest.mark.etcd
async def test_acquire_without_a_timeout_uses_the_locks_own(
    etcd_server: EtcdServer,
) -> None:
    async with BreakerClient(etcd_server.host, etcd_server.port) as etcd:
        holder = etcd.lock(b"/lock", ttl=30)
        waiter = etcd.lock(b"/lock", ttl=30, timeout=0.3)
        assert await holder.acquire()

        with anyio.fail_after(5):
            assert await waiter.acquire() is False

        await holder.release()


@pytest.mark.parametrize("value", ["no", 1, None, math.nan])
async def test_a_yes_or_no_setting_that_is_not_a_bool_is_refused_by_name(
    value: Any,
) -> None:
    # cancel_on_lost="no" would otherwise cancel the block on a loss.
    client = BreakerClient("127.0.0.1", 1)
    makers = {
        "cancel_on_lost": [
            lambda: client.lease_keeper(5, cancel_on_lost=value),
            lambda: client.lock(b"/lock", cancel_on_lost=value),
        ],
        "close_client": [
            lambda: BreakerClient.wrap(
                client._session.channels.current.client, close_client=value
            ),
        ],
    }
    for setting, made in makers.items():
        for make in made:
            with pytest.raises(InvalidSettingTypeError) as info:
                make()
            assert str(info.value).startswith(f"{setting} must be True or False")
    for setting in ("progress_notify", "prev_kv", "fragment"):
        for watch in (client.watch, client.watch_prefix, client.watch_once):
            with pytest.raises(InvalidSettingTypeError) as info:
                await watch(b"/key", **{setting: value})
            assert str(info.value).startswith(f"{setting} must be True or False")
    assert client.breaker.metrics().calls == 0


@pytest.mark.parametrize("key", ["/key", 7, None])
async def test_a_watch_key_that_is_not_bytes_is_refused_before_any_call(
    key: Any,
) -> None:
    client = BreakerClient("127.0.0.1", 1)

    for watch in (client.watch, client.watch_once):
        with pytest.raises(InvalidSettingTypeError, match=r"^key must be bytes"):
            await watch(key)
    if key is not None:  # None is no range end: the watch of one key
        with pytest.raises(InvalidSettingTypeError, match=r"^range_end must be"):
            await client.watch(b"/a", key)
    assert client.breaker.metrics().calls == 0


@pytest.mark.parametrize("prefix", ["/key", 7, None, bytearray(b"/key")])
async def test_a_watched_prefix_that_is_not_bytes_is_refused_by_name(
    prefix: Any,
) -> None:
    # Not a bare TypeError from working out the range end, nor (an int) a
    # watch of a range of zero bytes.
    client = BreakerClient("127.0.0.1", 1)

    for watch in (client.watch_prefix, client.watch_prefix_once):
        with pytest.raises(InvalidSettingTypeError, match=r"^key_prefix must be bytes"):
            await watch(prefix)
    assert client.breaker.metrics().calls == 0
