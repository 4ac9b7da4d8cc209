"""Tests of FaultProxy between aetcd and a real etcd."""

from __future__ import annotations

import asyncio
import itertools

import aetcd
import anyio
import pytest

from aetcd_breaker.testing import EtcdServer, FaultProxy, Mode
from aetcd_breaker.testing._frames import PREFACE, StreamCounter

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client_of(proxy: FaultProxy, timeout: float = 2.0) -> aetcd.Client:
    # A local subchannel pool keeps a new client from inheriting the reconnect
    # backoff of an earlier client to the same address.
    options = {"grpc.use_local_subchannel_pool": 1}
    return aetcd.Client(proxy.host, proxy.port, timeout=timeout, options=options)


def frame(kind: int, stream: int, payload: bytes = b"") -> bytes:
    header = len(payload).to_bytes(3) + bytes([kind, 0]) + stream.to_bytes(4)
    return header + payload


def test_stream_counter_counts_new_streams_however_bytes_are_split() -> None:
    data = b"".join(
        [
            PREFACE,
            frame(0x4, 0, b"\0" * 12),  # SETTINGS
            frame(0x1, 1, b"h" * 30),  # HEADERS: new stream
            frame(0x0, 1, b"d" * 70_000),  # DATA
            frame(0x1, 1, b"t" * 5),  # trailers on a known stream
            frame(0x1, 3, b"h" * 9),  # HEADERS: new stream
            frame(0x8, 0, b"w" * 4),  # WINDOW_UPDATE
            frame(0x1, 5),  # HEADERS: new stream, empty
        ]
    )
    for cut in itertools.chain(range(0, 80), range(len(data) - 40, len(data))):
        counter = StreamCounter()
        assert counter.feed(data[:cut]) + counter.feed(data[cut:]) == 3

    bytewise = StreamCounter()
    assert sum(bytewise.feed(data[i : i + 1]) for i in range(200)) == 1


def test_stream_counter_ignores_a_connection_that_is_not_http2() -> None:
    counter = StreamCounter()
    assert counter.feed(b"GET /health HTTP/1.1\r\n\r\n" + frame(0x1, 1)) == 0


async def test_pass_through_forwards_and_counts_each_request(
    fault_proxy: FaultProxy,
) -> None:
    async with client_of(fault_proxy) as client:
        await client.put(b"key", b"value")
        before = fault_proxy.requests

        for _ in range(10):
            result = await client.get(b"key")
            assert result is not None
            assert result.value == b"value"

        assert fault_proxy.requests - before == 10
        assert fault_proxy.connections == 1
        assert fault_proxy.mode is Mode.PASS_THROUGH


async def test_two_hundred_concurrent_gets_all_succeed_and_are_counted(
    fault_proxy: FaultProxy,
) -> None:
    results: list[bytes] = []

    async def get(client: aetcd.Client) -> None:
        result = await client.get(b"key")
        assert result is not None
        results.append(result.value)

    async with client_of(fault_proxy, timeout=10) as client:
        await client.put(b"key", b"value")
        before = fault_proxy.requests

        async with anyio.create_task_group() as group:
            for _ in range(200):
                group.start_soon(get, client)

    assert results == [b"value"] * 200
    assert fault_proxy.requests - before == 200


async def test_black_hole_hangs_calls_without_forwarding_them(
    fault_proxy: FaultProxy,
) -> None:
    async with client_of(fault_proxy, timeout=0.5) as client:
        await client.put(b"key", b"value")
        before = fault_proxy.requests

        fault_proxy.black_hole()
        with pytest.raises(aetcd.ConnectionTimeoutError):
            await client.get(b"key")
        async with client_of(fault_proxy, timeout=0.5) as newcomer:
            with pytest.raises(aetcd.ConnectionTimeoutError):
                await newcomer.get(b"key")

        assert fault_proxy.requests == before
        assert fault_proxy.connections == 2

        fault_proxy.pass_through()
        assert await client.get(b"key") is not None


async def test_black_hole_keeps_a_raw_connection_open_and_silent(
    fault_proxy: FaultProxy,
) -> None:
    fault_proxy.black_hole()
    reader, writer = await asyncio.open_connection(fault_proxy.host, fault_proxy.port)
    writer.write(PREFACE)
    await writer.drain()

    with anyio.move_on_after(0.2) as scope:
        await reader.read(1)
    assert scope.cancelled_caught
    assert not reader.at_eof()

    writer.close()


async def test_delay_times_out_short_deadlines_and_serves_long_ones(
    fault_proxy: FaultProxy,
) -> None:
    async with (
        client_of(fault_proxy, timeout=0.1) as hasty,
        client_of(fault_proxy, timeout=5) as patient,
    ):
        await hasty.put(b"key", b"value")
        await patient.put(b"key", b"value")

        fault_proxy.delay(0.3)

        with pytest.raises(aetcd.ConnectionTimeoutError):
            await hasty.get(b"key")
        assert await patient.get(b"key") is not None


async def test_random_delay_keeps_every_connection_in_order(
    fault_proxy: FaultProxy,
) -> None:
    async def put_and_get(client: aetcd.Client, n: int) -> None:
        await client.put(f"key{n}".encode(), f"value{n}".encode())
        result = await client.get(f"key{n}".encode())
        assert result is not None
        assert result.value == f"value{n}".encode()

    fault_proxy.delay(0.0, 0.05)
    async with (
        client_of(fault_proxy, timeout=10) as client,
        anyio.create_task_group() as group,
    ):
        for n in range(50):
            group.start_soon(put_and_get, client, n)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "named"),
    [
        (("127.0.0.1", "2379"), {}, TypeError, "upstream_port"),
        (("127.0.0.1", True), {}, TypeError, "upstream_port"),
        (("127.0.0.1", 70000), {}, ValueError, "upstream_port"),
        (("127.0.0.1", 0), {}, ValueError, "upstream_port"),
        ((None, 2379), {}, TypeError, "upstream_host"),
        (("", 2379), {}, ValueError, "upstream_host"),
        (("127.0.0.1", 2379), {"host": 1}, TypeError, "host"),
    ],
)
def test_bad_upstream_or_host_is_named_at_construction(
    args: tuple[object, ...], kwargs: dict[str, object], error: type, named: str
) -> None:
    # Not at each connection, as a reset the client cannot explain.
    with pytest.raises(error, match=named):
        FaultProxy(*args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("0.1",), TypeError),
        ((True,), TypeError),
        ((0.1, "0.2"), TypeError),
        ((float("inf"),), ValueError),
        ((0.1, float("inf")), ValueError),
    ],
)
def test_delay_names_a_delay_that_is_no_number_of_seconds(
    args: tuple[object, ...], error: type
) -> None:
    # An infinite delay would come out as no delay at all.
    proxy = FaultProxy("127.0.0.1", 1)
    with pytest.raises(error, match="delay"):
        proxy.delay(*args)  # type: ignore[arg-type]


def test_delay_rejects_a_range_upside_down() -> None:
    proxy = FaultProxy("127.0.0.1", 1)
    with pytest.raises(ValueError):
        proxy.delay(0.5, 0.1)


async def test_reset_fails_a_call_in_flight(
    etcd_server: EtcdServer, fault_proxy: FaultProxy
) -> None:
    async with client_of(fault_proxy, timeout=5) as client:
        await client.put(b"key", b"value")
        before = fault_proxy.requests
        etcd_server.pause()
        try:
            call = asyncio.ensure_future(client.get(b"key"))
            await fault_proxy.wait_for_requests(before + 1)
            fault_proxy.reset_connections()
            with pytest.raises(aetcd.ConnectionFailedError):
                await call
        finally:
            etcd_server.resume()


async def test_reset_mode_fails_new_calls_until_healed(
    fault_proxy: FaultProxy,
) -> None:
    fault_proxy.reset_connections()
    async with client_of(fault_proxy) as client:
        with pytest.raises(aetcd.ConnectionFailedError):
            await client.get(b"key")

    fault_proxy.pass_through()
    async with client_of(fault_proxy) as client:
        assert await client.get(b"key") is None


async def test_reset_reaches_a_raw_client_as_connection_reset(
    fault_proxy: FaultProxy,
) -> None:
    reader, writer = await asyncio.open_connection(fault_proxy.host, fault_proxy.port)
    fault_proxy.reset_connections()

    with pytest.raises(ConnectionResetError):
        await reader.read(1)
    writer.close()

    # The reset of a new connection can beat the end of the client's connect.
    with pytest.raises(ConnectionResetError):
        reader, writer = await asyncio.open_connection(
            fault_proxy.host, fault_proxy.port
        )
        await reader.read(1)


async def test_refuse_fails_new_connections_but_keeps_open_ones(
    fault_proxy: FaultProxy,
) -> None:
    async with client_of(fault_proxy) as connected:
        await connected.put(b"key", b"value")

        fault_proxy.refuse()

        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(fault_proxy.host, fault_proxy.port)
        async with client_of(fault_proxy) as newcomer:
            with pytest.raises(aetcd.ConnectionFailedError):
                await newcomer.get(b"key")
        assert await connected.get(b"key") is not None

        fault_proxy.pass_through()
        async with client_of(fault_proxy) as newcomer:
            assert await newcomer.get(b"key") is not None


async def test_stop_closes_every_connection(fault_proxy: FaultProxy) -> None:
    async with client_of(fault_proxy) as client:
        await client.put(b"key", b"value")

        await fault_proxy.stop()

        assert fault_proxy.connections == 0
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(fault_proxy.host, fault_proxy.port)
        with pytest.raises(aetcd.ConnectionFailedError):
            await client.get(b"key")


async def test_dead_upstream_reaches_the_client_as_a_failed_call(
    etcd_server: EtcdServer, fault_proxy: FaultProxy
) -> None:
    etcd_server.kill()
    async with client_of(fault_proxy) as client:
        with pytest.raises(aetcd.ConnectionFailedError):
            await client.get(b"key")
