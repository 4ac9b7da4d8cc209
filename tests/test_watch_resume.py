"""Watches against a real etcd: outages, compaction, silence, and stopping."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aetcd
import anyio
import pytest

from aetcd_breaker.core import BreakerError, CircuitBreaker
from aetcd_breaker.etcd import BreakerClient, EtcdCircuitOpenError
from aetcd_breaker.etcd.watch import (
    PROGRESS_INTERVAL,
    PROGRESS_TIMEOUT,
    Watch,
    WatchCompactedError,
)
from aetcd_breaker.testing import EtcdServer, FaultProxy

pytestmark = [pytest.mark.anyio, pytest.mark.etcd]

# Bounds that only turn a hang into a failure; no test relies on them.
HANG = 30.0
PREFIX = b"/resume/"
END = PREFIX + b"end"
QUICK = {"progress_interval": 0.2, "progress_timeout": 0.3}

Seen = tuple[bytes, bytes, int, str]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", autouse=True)
async def one_event_loop() -> AsyncIterator[None]:
    """Run the module on one loop: gRPC hands late completions to their loop."""
    yield
    await anyio.sleep(0.1)


def quick_breaker() -> CircuitBreaker:
    return CircuitBreaker(name="etcd", failure_threshold=2, reset_timeout=0.2)


def raw_client(server: EtcdServer) -> aetcd.Client:
    options = {"grpc.use_local_subchannel_pool": 1}
    return aetcd.Client(server.host, server.port, timeout=0.5, options=options)


def seen(event: aetcd.Event) -> Seen:
    return (event.kv.key, event.kv.value, event.kv.mod_revision, event.kind)


def etcd_watchers(server: EtcdServer) -> int:
    """The watchers etcd holds, from its own metrics."""
    url = f"http://{server.endpoint}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        body = answer.read().decode()
    for line in body.splitlines():
        if line.startswith("etcd_debugging_mvcc_watcher_total "):
            return int(float(line.split()[1]))
    raise AssertionError("etcd reports no watcher count")


async def others_gone(before: set[asyncio.Task[Any]]) -> None:
    """Wait until every task started since ``before`` has ended."""
    with anyio.fail_after(HANG):
        while {t for t in asyncio.all_tasks() if not t.done()} - before:
            await asyncio.sleep(0.01)


async def history(server: EtcdServer, last_key: bytes) -> list[Seen]:
    """etcd's own record of the prefix, read by a fresh raw watch from revision 1."""
    async with raw_client(server) as raw:
        events: list[Seen] = []
        watch = await raw.watch_prefix(PREFIX, start_revision=1)
        with anyio.fail_after(HANG):
            async for event in watch:
                events.append(seen(event))
                if event.kv.key == last_key:
                    break
        await watch.cancel()
        return events


async def write(server: EtcdServer, stop: anyio.Event) -> int:
    """Write keys until ``stop``, every third time three in one transaction.

    A failed write is tried again on a fresh client; one whose answer was
    lost may be applied twice, which etcd's history then shows twice too.
    Returns how many writes were made.
    """
    raw = raw_client(server)
    n = 0
    while not stop.is_set():
        n += 1
        keys = [PREFIX + b"%04d-%d" % (n, i) for i in range(3 if n % 3 == 0 else 1)]
        while True:
            try:
                if len(keys) == 1:
                    await raw.put(keys[0], b"%d" % n)
                else:
                    puts = [raw.transactions.put(k, b"%d" % n) for k in keys]
                    await raw.transaction(compare=[], success=puts, failure=[])
                break
            except aetcd.ClientError:
                with contextlib.suppress(Exception):
                    await raw.close()
                await anyio.sleep(0.02)
        await anyio.sleep(0.005)
    while True:
        try:
            await raw.put(END, b"")
            break
        except aetcd.ClientError:
            with contextlib.suppress(Exception):
                await raw.close()
            await anyio.sleep(0.02)
    await raw.close()
    return n


async def test_watch_sees_etcd_history_once_in_order_through_outages(
    etcd_server: EtcdServer, fault_proxy: FaultProxy
) -> None:
    breaker = quick_breaker()
    etcd = BreakerClient(
        fault_proxy.host, fault_proxy.port, breaker=breaker, call_timeout=0.5
    )
    received: list[Seen] = []
    writes: list[int] = []
    stop = anyio.Event()

    async def consume(watch: Watch) -> None:
        async for event in watch:
            received.append(seen(event))
            if event.kv.key == END:
                break

    async def writer() -> None:
        writes.append(await write(etcd_server, stop))

    async with etcd:
        watch = await etcd.watch_prefix(PREFIX, **QUICK)
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume, watch)
                tg.start_soon(writer)
                for _ in range(2):
                    await anyio.sleep(0.3)
                    etcd_server.kill()
                    await anyio.sleep(0.3)
                    await etcd_server.arestart()
                    await anyio.sleep(0.3)
                    etcd_server.pause()
                    await anyio.sleep(1.0)
                    etcd_server.resume()
                    await anyio.sleep(0.3)
                    fault_proxy.black_hole()
                    await anyio.sleep(1.0)
                    fault_proxy.pass_through()
                await anyio.sleep(0.3)
                stop.set()

    expected = await history(etcd_server, END)
    assert received == expected
    assert len({(key, rev) for key, _, rev, _ in received}) == len(received)
    # Several keys of one transaction share a revision.
    assert any(a[2] == b[2] for a, b in itertools.pairwise(received))
    assert writes[0] > 20
    # Every outage was noticed: at least two failures each time it tripped.
    assert breaker.metrics().failures >= 6


async def test_a_failed_stream_counts_and_the_watch_goes_on(
    etcd_server: EtcdServer,
) -> None:
    breaker = quick_breaker()
    etcd = BreakerClient(etcd_server.host, etcd_server.port, breaker=breaker)
    async with etcd:
        watch = await etcd.watch(b"/killed", **QUICK)
        pending = asyncio.ensure_future(anext(aiter(watch)))
        etcd_server.kill()
        with anyio.fail_after(HANG):
            while breaker.metrics().failures == 0:
                await anyio.sleep(0.01)
            await etcd_server.arestart()
            async with raw_client(etcd_server) as raw:
                await raw.put(b"/killed", b"back")
            event = await pending

        assert not pending.cancelled()
        assert event.kv.value == b"back"


async def test_reopening_a_stream_backs_off_while_the_breaker_keeps_admitting(
    etcd_server: EtcdServer,
) -> None:
    # Disabled: the breaker never opens, so only the pump's own pauses space
    # its attempts to reopen the stream while etcd is down.
    breaker = CircuitBreaker(name="etcd", initial_state="disabled")
    etcd = BreakerClient(etcd_server.host, etcd_server.port, breaker=breaker)
    async with etcd:
        watch = await etcd.watch(b"/backoff", **QUICK)
        pending = asyncio.ensure_future(anext(aiter(watch)))
        etcd_server.kill()
        with anyio.fail_after(HANG):
            while breaker.metrics().failures == 0:
                await anyio.sleep(0.01)
        before = breaker.metrics().failures
        await anyio.sleep(2)
        failed = breaker.metrics().failures - before
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending

    # Pauses of 0.1, 0.2, 0.4, ... s between attempts: about five fit in
    # 2 s. Without them the pump would reopen in a busy loop.
    assert 1 <= failed <= 20


async def test_a_resumed_stream_keeps_the_watchs_kind_filter_and_prev_kv(
    etcd_server: EtcdServer,
) -> None:
    breaker = quick_breaker()
    key = b"/options"
    etcd = BreakerClient(etcd_server.host, etcd_server.port, breaker=breaker)
    received: list[tuple[str, bytes, bytes | None]] = []

    async def take(watch: Watch, count: int) -> None:
        async for event in watch:
            prev = None if event.prev_kv is None else event.prev_kv.value
            received.append((event.kind, event.kv.value, prev))
            if len(received) == count:
                return

    async with etcd:
        puts = await etcd.watch(key, kind=aetcd.EventKind.PUT, prev_kv=True, **QUICK)
        every = await etcd.watch(key, **QUICK)
        with anyio.fail_after(HANG):
            async with raw_client(etcd_server) as raw:
                await raw.put(key, b"1")
                await raw.put(key, b"2")
            await take(puts, 2)
            etcd_server.kill()
            pending = asyncio.ensure_future(take(puts, 4))
            while breaker.metrics().failures == 0:
                await anyio.sleep(0.01)
            await etcd_server.arestart()
            async with raw_client(etcd_server) as raw:
                await raw.put(key, b"3")
                await raw.delete(key)
                await raw.put(key, b"4")
            await pending
            plain = [(e.kind, e.kv.value, e.prev_kv) async for e in first(every, 5)]
        await puts.cancel()
        await every.cancel()

    assert breaker.metrics().failures >= 1
    # Only puts, each with the value it replaced, on both sides of the outage
    # (an empty one, as aetcd gives it, where the key did not exist).
    assert received == [
        ("PUT", b"1", b""),
        ("PUT", b"2", b"1"),
        ("PUT", b"3", b"2"),
        ("PUT", b"4", b""),
    ]
    # A watch that asked for neither gets the delete, and no previous values.
    assert plain == [
        ("PUT", b"1", None),
        ("PUT", b"2", None),
        ("PUT", b"3", None),
        ("DELETE", b"", None),
        ("PUT", b"4", None),
    ]


async def first(watch: Watch, count: int) -> AsyncIterator[aetcd.Event]:
    """The first ``count`` events of ``watch``."""
    n = 0
    async for event in watch:
        yield event
        n += 1
        if n == count:
            return


async def test_compaction_during_a_partition_raises_and_never_skips(
    etcd_server: EtcdServer, fault_proxy: FaultProxy
) -> None:
    breaker = quick_breaker()
    etcd = BreakerClient(
        fault_proxy.host, fault_proxy.port, breaker=breaker, call_timeout=0.5
    )
    async with etcd, raw_client(etcd_server) as raw:
        watch = await etcd.watch_prefix(PREFIX, **QUICK)
        events = aiter(watch)
        first = (await raw.put(PREFIX + b"a", b"1")).header.revision
        with anyio.fail_after(HANG):
            assert (await anext(events)).kv.mod_revision == first

            fault_proxy.black_hole()
            while breaker.metrics().failures == 0:
                await anyio.sleep(0.01)
            await raw.put(PREFIX + b"b", b"2")
            last = (await raw.put(PREFIX + b"c", b"3")).header.revision
            await raw.compact(last)
            fault_proxy.pass_through()

            with pytest.raises(WatchCompactedError) as info:
                await anext(events)

    error = info.value
    assert (error.compacted_revision, error.revision) == (last, first + 1)
    assert isinstance(error, aetcd.RevisionCompactedError)
    assert isinstance(error, BreakerError)


async def test_a_silent_stream_is_noticed_and_the_watch_resumes(
    etcd_server: EtcdServer, fault_proxy: FaultProxy
) -> None:
    breaker = quick_breaker()
    etcd = BreakerClient(
        fault_proxy.host, fault_proxy.port, breaker=breaker, call_timeout=0.5
    )
    async with etcd, raw_client(etcd_server) as raw:
        # The default probe settings: silence is noticed within their sum.
        watch = await etcd.watch(b"/silent")
        events = aiter(watch)
        with anyio.fail_after(HANG):
            await raw.put(b"/silent", b"1")
            await anext(events)

            fault_proxy.black_hole()
            started = time.monotonic()
            pending = asyncio.ensure_future(anext(events))
            while breaker.metrics().failures == 0:
                await anyio.sleep(0.01)
            noticed = time.monotonic() - started
            fault_proxy.pass_through()
            await raw.put(b"/silent", b"2")
            event = await pending

    print(f"silence noticed after {noticed:.2f} s")
    assert event.kv.value == b"2"
    assert noticed < 3 * (PROGRESS_INTERVAL + PROGRESS_TIMEOUT)


async def test_an_idle_watch_outlives_the_call_deadline(
    etcd_server_session: EtcdServer,
) -> None:
    server = etcd_server_session
    async with BreakerClient(server.host, server.port, call_timeout=0.1) as etcd:
        watch = await etcd.watch(b"/idle", progress_interval=0.05)
        events = aiter(watch)
        pending = asyncio.ensure_future(anext(events))
        # Ten deadlines of silence, each answered by a probe.
        await anyio.sleep(1.0)
        await etcd.put(b"/idle", b"late")
        with anyio.fail_after(HANG):
            event = await pending
        await watch.cancel()

        assert event.kv.value == b"late"
        assert etcd.breaker.metrics().failures == 0


async def test_an_open_breaker_rejects_a_new_watch(
    etcd_server_session: EtcdServer,
) -> None:
    server = etcd_server_session
    async with BreakerClient(server.host, server.port) as etcd:
        etcd.breaker.force_open()
        with pytest.raises(EtcdCircuitOpenError):
            await etcd.watch(b"/rejected")
        assert etcd.breaker.metrics().rejected == 1


async def test_a_running_watch_waits_for_the_breaker_without_calling_etcd(
    etcd_server: EtcdServer, fault_proxy: FaultProxy
) -> None:
    breaker = quick_breaker()
    etcd = BreakerClient(
        fault_proxy.host, fault_proxy.port, breaker=breaker, call_timeout=0.5
    )
    async with etcd, raw_client(etcd_server) as raw:
        watch = await etcd.watch(b"/held", **QUICK)
        events = aiter(watch)
        pending = asyncio.ensure_future(anext(events))
        breaker.force_open()
        fault_proxy.reset_connections()
        with anyio.fail_after(HANG):
            while breaker.metrics().failures == 0:
                await anyio.sleep(0.01)
        fault_proxy.pass_through()
        requests = fault_proxy.requests
        await raw.put(b"/held", b"1")
        await anyio.sleep(0.5)

        assert not pending.done()
        assert fault_proxy.requests == requests
        breaker.reset()
        with anyio.fail_after(HANG):
            event = await pending
        assert event.kv.value == b"1"


async def test_leaving_the_loop_stops_the_stream_and_every_task(
    etcd_server: EtcdServer,
) -> None:
    before = set(asyncio.all_tasks())
    async with BreakerClient(etcd_server.host, etcd_server.port) as etcd:
        watch = await etcd.watch(b"/leave")
        await etcd.put(b"/leave", b"1")
        with anyio.fail_after(HANG):
            async for _ in watch:
                break
        await others_gone(before)
        assert etcd_watchers(etcd_server) == 0

        # The next loop starts a new stream, from after the event delivered.
        await etcd.put(b"/leave", b"2")
        with anyio.fail_after(HANG):
            event = await anext(aiter(watch))
        assert event.kv.value == b"2"
        await watch.cancel()
        await others_gone(before)


async def test_a_watch_dropped_before_any_iteration_ends_its_stream(
    etcd_server: EtcdServer,
) -> None:
    async with BreakerClient(etcd_server.host, etcd_server.port) as etcd:
        for n in range(5):
            await etcd.watch(b"/dropped/%d" % n)
        kept = await etcd.watch(b"/kept")
        gc.collect()

        with anyio.fail_after(HANG):
            while etcd_watchers(etcd_server) > 1:
                await asyncio.sleep(0.05)
        # The watch still referenced keeps its watcher, and works.
        await etcd.put(b"/kept", b"1")
        with anyio.fail_after(HANG):
            event = await anext(aiter(kept))

    assert event.kv.value == b"1"


async def test_cancelling_the_consuming_task_stops_everything(
    etcd_server: EtcdServer,
) -> None:
    before = set(asyncio.all_tasks())
    async with BreakerClient(etcd_server.host, etcd_server.port) as etcd:
        watch = await etcd.watch(b"/cancel")
        iterating = anyio.Event()

        async def consume() -> None:
            async for _ in watch:
                iterating.set()

        with anyio.fail_after(HANG):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await etcd.put(b"/cancel", b"1")
                await iterating.wait()
                assert etcd_watchers(etcd_server) == 1
                tg.cancel_scope.cancel()
        await others_gone(before)
        assert etcd_watchers(etcd_server) == 0


async def test_cancel_from_another_task_ends_the_iteration(
    etcd_server: EtcdServer,
) -> None:
    before = set(asyncio.all_tasks())
    ended = anyio.Event()
    async with BreakerClient(etcd_server.host, etcd_server.port) as etcd:
        watch = await etcd.watch(b"/stop")

        iterating = anyio.Event()

        async def consume() -> None:
            async for _ in watch:
                iterating.set()
            ended.set()

        with anyio.fail_after(HANG):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await etcd.put(b"/stop", b"1")
                await iterating.wait()
                await watch.aclose()
        assert ended.is_set()
        await others_gone(before)
        async for _ in watch:
            raise AssertionError("a cancelled watch delivers nothing")


@pytest.mark.parametrize("owned", [True, False])
async def test_closing_the_client_ends_a_watch_waiting_out_an_outage(
    etcd_server: EtcdServer, owned: bool
) -> None:
    before = set(asyncio.all_tasks())
    raw = raw_client(etcd_server)
    breaker = CircuitBreaker(name="etcd", failure_threshold=1, reset_timeout=60)
    etcd = (
        BreakerClient(etcd_server.host, etcd_server.port, breaker=breaker)
        if owned
        else BreakerClient.wrap(raw, breaker=breaker)
    )
    ended = anyio.Event()
    watch = await etcd.watch(b"/closing")

    async def consume() -> None:
        async for _ in watch:
            pass
        ended.set()

    with anyio.fail_after(HANG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            etcd_server.kill()
            while breaker.metrics().failures == 0:
                await anyio.sleep(0.01)
            await etcd.close()
    await raw.close()

    assert ended.is_set()
    await others_gone(before)
