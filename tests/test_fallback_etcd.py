"""Fallbacks and stale reads: answers while etcd is away, marked for what they are."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aetcd
import anyio
import pytest

from aetcd_breaker.core import CircuitBreaker, InvalidSettingTypeError, State
from aetcd_breaker.etcd import (
    NO_FALLBACK,
    BreakerClient,
    EtcdCallTimeoutError,
    EtcdCircuitOpenError,
    Stale,
    StaleCache,
    StaleGet,
    StaleGetRange,
)
from aetcd_breaker.testing import EtcdServer, FaultProxy

pytestmark = [pytest.mark.anyio, pytest.mark.etcd]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", autouse=True)
async def one_event_loop() -> AsyncIterator[None]:
    """One loop for the module: gRPC may complete a closed call late."""
    yield
    await anyio.sleep(0.1)


def client_of(server: EtcdServer | FaultProxy, **kwargs: Any) -> BreakerClient:
    return BreakerClient(server.host, server.port, **kwargs)


async def test_fallback_value_answers_a_rejected_call(
    etcd_server_session: EtcdServer,
) -> None:
    async with client_of(etcd_server_session) as etcd:
        etcd.breaker.force_open()

        limit = await etcd.get(b"/fallback/limit", fallback=b"100")
        missing = await etcd.get(b"/fallback/limit", fallback=None)
        with pytest.raises(EtcdCircuitOpenError):
            await etcd.get(b"/fallback/limit")

    assert (limit, missing) == (b"100", None)
    assert etcd.fallbacks == 2


async def test_async_fallback_receives_the_counted_failure(
    etcd_server: EtcdServer,
) -> None:
    seen: list[Exception] = []

    async def defaults(error: Exception) -> bytes:
        seen.append(error)
        await anyio.lowlevel.checkpoint()
        return b"default"

    async with client_of(etcd_server) as etcd:
        await etcd.put(b"/fallback/k", b"v")
        etcd_server.kill()

        got = await etcd.get(b"/fallback/k", fallback=defaults)
        metrics = etcd.breaker.metrics()

    assert got == b"default"
    assert isinstance(seen[0], aetcd.ConnectionFailedError)
    assert metrics.failures == 1


async def test_fallback_answers_a_call_past_its_deadline(
    fault_proxy: FaultProxy,
) -> None:
    async with client_of(fault_proxy) as etcd:
        await etcd.get(b"/fallback/slow")
        fault_proxy.black_hole()

        with anyio.fail_after(20):
            got = await etcd.get(
                b"/fallback/slow", call_timeout=0.2, fallback=lambda e: type(e)
            )
        fault_proxy.pass_through()

    assert got is EtcdCallTimeoutError


async def test_answers_of_etcd_are_not_replaced_by_a_fallback(
    etcd_server_session: EtcdServer,
) -> None:
    async with client_of(etcd_server_session, fallback=b"x") as etcd:
        with pytest.raises(aetcd.ClientError) as info:
            await etcd.put(b"/fallback/lease", b"v", lease=0x7FFF_0000_4321, fallback=1)
        with pytest.raises(aetcd.InvalidArgumentError):
            await etcd.get_range(b"", b"")

    assert "not found" in str(info.value.__cause__.details())
    assert etcd.fallbacks == 0


async def test_a_call_cut_off_by_closing_the_client_falls_back_to_nothing(
    etcd_server: EtcdServer,
) -> None:
    # Like a call made after the close: raised, uncounted, neither a
    # fallback nor a stale answer.
    async with FaultProxy(etcd_server.host, etcd_server.port) as proxy:
        etcd = client_of(
            proxy,
            call_timeout=30,
            fallback=b"fallback",
            stale_reads=StaleCache(max_entries=10),
        )
        async with etcd:
            await etcd.put(b"/fallback/cut", b"v")
            await etcd.get(b"/fallback/cut")
            proxy.black_hole()
            async with anyio.create_task_group() as tg:
                outcomes: list[object] = []

                async def read(**options: Any) -> None:
                    try:
                        outcomes.append(await etcd.get(b"/fallback/cut", **options))
                    except aetcd.ConnectionFailedError as exc:
                        outcomes.append(type(exc))

                tg.start_soon(read)
                tg.start_soon(lambda: read(retry=True))
                await anyio.sleep(0.2)
                await etcd.close()

    assert outcomes == [aetcd.ConnectionFailedError] * 2
    assert etcd.fallbacks == etcd.stale_answers == 0
    assert etcd.breaker.metrics().failures == 0


async def test_client_fallback_applies_to_key_reads_only(
    etcd_server_session: EtcdServer,
) -> None:
    async with client_of(etcd_server_session, fallback=b"default") as etcd:
        etcd.breaker.force_open()

        reads = [
            await etcd.get(b"/fallback/a"),
            await etcd.get_prefix(b"/fallback/"),
            await etcd.get_range(b"/fallback/a", b"/fallback/b"),
            await etcd.get_all(),
        ]
        for call in (etcd.put(b"/fallback/a", b"v"), etcd.status()):
            with pytest.raises(EtcdCircuitOpenError):
                await call
        with pytest.raises(EtcdCircuitOpenError):
            await etcd.get(b"/fallback/a", fallback=NO_FALLBACK)
        written = await etcd.put(b"/fallback/a", b"v", fallback="written later")

    assert reads == [b"default"] * 4
    assert written == "written later"


async def test_stale_reads_answer_with_the_last_value_marked_stale(
    etcd_server: EtcdServer,
) -> None:
    cache = StaleCache(max_entries=3)
    breaker = CircuitBreaker(name="etcd", failure_threshold=3, reset_timeout=60)
    async with client_of(etcd_server, breaker=breaker, stale_reads=cache) as etcd:
        for name in (b"a", b"b", b"c"):
            await etcd.put(b"/stale/" + name, name * 2)
        fresh = await etcd.get(b"/stale/a")
        await etcd.get(b"/stale/b")
        prefix = await etcd.get_prefix(b"/stale/")
        await etcd.get(b"/stale/c")
        missing = await etcd.get(b"/stale/none")
        read_done = breaker.clock.now()
        etcd_server.kill()

        b = await etcd.get(b"/stale/b")
        listed = await etcd.get_prefix(b"/stale/")
        with pytest.raises(aetcd.ConnectionFailedError) as evicted:
            await etcd.get(b"/stale/a")
        with pytest.raises(EtcdCircuitOpenError):
            await etcd.get(b"/stale/none")
        rejected_then = breaker.state
        c = await etcd.get(b"/stale/c")

    assert not isinstance(evicted.value, EtcdCircuitOpenError)
    assert fresh is not None and not isinstance(fresh, Stale)
    assert not hasattr(fresh, "stale") and not hasattr(prefix, "stale")
    assert missing is None
    assert isinstance(b, StaleGet) and isinstance(b, aetcd.Get)
    assert (b.value, b.stale) == (b"bb", True)
    assert b.read_at <= read_done and b.age >= 0
    assert isinstance(listed, StaleGetRange) and listed.stale
    assert [kv.value for kv in listed] == [b"aa", b"bb", b"cc"]
    # Served while the breaker rejected the read outright.
    assert rejected_then is State.OPEN
    assert isinstance(c, StaleGet) and c.value == b"cc"
    assert (len(cache), cache.evictions) == (3, 1)
    assert etcd.stale_answers == 3


async def test_stale_answer_comes_before_the_fallback(
    etcd_server_session: EtcdServer,
) -> None:
    cache = StaleCache(max_entries=10)
    server = etcd_server_session
    async with client_of(server, stale_reads=cache, fallback=b"fb") as etcd:
        await etcd.put(b"/stale-fb/known", b"v")
        await etcd.get(b"/stale-fb/known")
        etcd.breaker.force_open()

        known = await etcd.get(b"/stale-fb/known")
        unknown = await etcd.get(b"/stale-fb/unknown")
        counts = (etcd.stale_answers, etcd.fallbacks)

    assert isinstance(known, StaleGet) and known.value == b"v"
    assert unknown == b"fb"
    assert counts == (1, 1)


async def test_a_stale_answer_shows_its_key_and_value_when_printed(
    etcd_server_session: EtcdServer,
) -> None:
    server = etcd_server_session
    async with client_of(server, stale_reads=StaleCache()) as etcd:
        await etcd.put(b"/stale-repr/key", b"value")
        fresh = await etcd.get(b"/stale-repr/key")
        etcd.breaker.force_open()
        stale = await etcd.get(b"/stale-repr/key")

    assert isinstance(stale, StaleGet)
    shown = repr(stale)
    assert shown.startswith("StaleGet[")
    assert repr(fresh)[len("Get[") :].rstrip("]") in shown
    assert f"read_at={stale.read_at}" in shown and f"age={stale.age}" in shown


def test_bad_client_options_are_refused() -> None:
    with pytest.raises(InvalidSettingTypeError, match="stale_reads"):
        BreakerClient(stale_reads={})  # type: ignore[arg-type]
    with pytest.raises(InvalidSettingTypeError, match="max_entries"):
        StaleCache(max_entries="10")  # type: ignore[arg-type]
