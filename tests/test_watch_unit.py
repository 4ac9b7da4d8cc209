"""Watches without etcd: scripted streams, the position, and the silence probe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aetcd
import anyio
import grpc  # type: ignore[import-untyped]
import pytest
from aetcd import rpc
from hypothesis import given, settings
from hypothesis import strategies as st

from aetcd_breaker.core import CircuitBreaker, FakeClock, State
from aetcd_breaker.etcd import BreakerClient, is_etcd_failure
from aetcd_breaker.etcd._watch_position import Position
from aetcd_breaker.etcd._watch_stream import Stream, StreamSilentError
from aetcd_breaker.etcd.watch import Watch, WatchCompactedError, WatchSpec

pytestmark = pytest.mark.anyio

HANG = 10.0
PUT = rpc.Event.EventType.PUT
HOLD = object()
"""In a script: the stream stays silent from here on."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def response(*events: tuple[int, bytes], fragment: bool = False) -> Any:
    raw = [
        rpc.Event(type=PUT, kv=rpc.KeyValue(key=key, value=key, mod_revision=rev))
        for rev, key in events
    ]
    return rpc.WatchResponse(watch_id=0, events=raw, fragment=fragment)


def progress(revision: int, watch_id: int = 0) -> Any:
    header = rpc.ResponseHeader(revision=revision)
    return rpc.WatchResponse(watch_id=watch_id, header=header)


class ScriptedStream:
    """Plays a list of responses and errors, then holds, like a quiet stream."""

    def __init__(self, start: int | None, script: list[Any]) -> None:
        self.start = start
        self.watch_id = 0
        self.created_revision = 9
        self.inner = None
        self.closed = False
        self._script = iter(script)

    async def next(self) -> Any:
        step = next(self._script, HOLD)
        if step is HOLD:
            await asyncio.get_running_loop().create_future()
        if isinstance(step, Exception):
            raise step
        return step

    def close(self) -> list[asyncio.Future[Any]]:
        self.closed = True
        return []


class Script:
    """Opens the scripted streams one after the other, as guarded calls."""

    def __init__(self, etcd: BreakerClient, *scripts: list[Any] | Exception) -> None:
        self._session = etcd._session
        self._scripts = iter(scripts)
        self.starts: list[int | None] = []
        self.streams: list[ScriptedStream] = []

    async def __call__(self, start: int | None) -> Any:
        return await self._session.call(self._open, None, start)

    async def _open(self, client: aetcd.Client, start: int | None) -> Any:
        self.starts.append(start)
        script = next(self._scripts, [HOLD])
        if isinstance(script, Exception):
            raise script
        stream = ScriptedStream(start, script)
        self.streams.append(stream)
        return stream

    async def watch(self, done: int) -> Watch:
        spec = WatchSpec.of(b"k", None, done + 1, False, None, False, None, True)
        first = await self(done + 1)
        return Watch(self._session, spec, self, Position(done), first)


@pytest.fixture
async def etcd() -> AsyncIterator[BreakerClient]:
    # Nothing listens there; the scripted streams never touch the network.
    async with BreakerClient("127.0.0.1", 1) as client:
        yield client


async def take(watch: Watch, count: int) -> list[bytes]:
    keys: list[bytes] = []
    with anyio.fail_after(HANG):
        async for event in watch:
            keys.append(event.kv.key)
            if len(keys) == count:
                break
    return keys


async def test_a_break_inside_a_revision_delivers_each_event_once(
    etcd: BreakerClient,
) -> None:
    script = Script(
        etcd,
        # Revision 10 writes a, b and c; the stream breaks after a.
        [response((10, b"a"), fragment=True), aetcd.ConnectionFailedError()],
        [response((10, b"a"), (10, b"b"), (10, b"c")), response((11, b"d"))],
    )
    watch = await script.watch(done=9)
    before = asyncio.all_tasks()

    keys = await take(watch, 4)

    assert keys == [b"a", b"b", b"c", b"d"]
    assert script.starts == [10, 10]
    assert etcd.breaker.metrics().failures == 1
    await watch.cancel()
    assert all(stream.closed for stream in script.streams)
    assert asyncio.all_tasks() == before


async def test_an_error_that_does_not_count_ends_the_watch_when_it_resumes(
    etcd: BreakerClient,
) -> None:
    refused = aetcd.InvalidArgumentError("refused")
    script = Script(
        etcd,
        [response((10, b"a")), aetcd.ConnectionFailedError()],
        refused,
        [response((11, b"b"))],
    )
    watch = await script.watch(done=9)

    keys = await take(watch, 1)
    with anyio.fail_after(HANG), pytest.raises(aetcd.InvalidArgumentError) as raised:
        await take(watch, 1)

    assert keys == [b"a"]
    assert raised.value is refused
    # Not tried again: the refusal says nothing about etcd's health.
    assert script.starts == [10, 11]
    assert etcd.breaker.metrics().failures == 1


async def test_leaving_the_loop_inside_a_revision_and_coming_back(
    etcd: BreakerClient,
) -> None:
    whole = [response((10, b"a"), (10, b"b"), (10, b"c")), response((11, b"d"))]
    script = Script(etcd, whole, whole)
    watch = await script.watch(done=9)

    first = await take(watch, 1)
    rest = await take(watch, 3)

    assert (first, rest) == ([b"a"], [b"b", b"c", b"d"])
    assert script.starts == [10, 10]
    assert etcd.breaker.metrics().failures == 0


async def test_a_finished_revision_is_not_asked_for_again(
    etcd: BreakerClient,
) -> None:
    script = Script(
        etcd,
        [response((10, b"a"), (10, b"b")), aetcd.ConnectionFailedError()],
        [response((11, b"c"))],
    )
    watch = await script.watch(done=9)

    assert await take(watch, 3) == [b"a", b"b", b"c"]
    assert script.starts == [10, 11]


@pytest.mark.parametrize(("watch_id", "resumed_at"), [(0, 21), (-1, 10)])
async def test_only_the_watchers_own_progress_moves_the_resume_point(
    etcd: BreakerClient, watch_id: int, resumed_at: int
) -> None:
    # Answers to probes (watch id -1) may overtake events before etcd 3.5.8.
    script = Script(
        etcd,
        [progress(20, watch_id), aetcd.ConnectionFailedError()],
        [response((resumed_at, b"a"))],
    )
    watch = await script.watch(done=9)

    assert await take(watch, 1) == [b"a"]
    assert script.starts == [10, resumed_at]


async def test_compacted_history_raises_with_both_revisions(
    etcd: BreakerClient,
) -> None:
    compacted = rpc.WatchResponse(watch_id=0, canceled=True, compact_revision=15)
    script = Script(
        etcd,
        [response((12, b"a")), aetcd.ConnectionFailedError()],
        [compacted],
    )
    watch = await script.watch(done=9)

    keys: list[bytes] = []
    with anyio.fail_after(HANG), pytest.raises(WatchCompactedError) as info:
        async for event in watch:
            keys.append(event.kv.key)
    with pytest.raises(WatchCompactedError) as again:
        await anext(aiter(watch))

    assert keys == [b"a"]
    error = info.value
    assert (error.compacted_revision, error.revision) == (15, 13)
    assert isinstance(error, aetcd.RevisionCompactedError)
    assert "13" in str(error) and "15" in str(error)
    assert again.value is not error
    assert (again.value.compacted_revision, again.value.revision) == (15, 13)
    # etcd answered: not a failure of etcd.
    assert etcd.breaker.metrics().failures == 1


async def test_etcd_cancelling_a_running_watch_ends_it_with_the_reason(
    etcd: BreakerClient,
) -> None:
    # etcd cancels a running watcher only in rare cases (none on demand).
    cancelled = rpc.WatchResponse(
        watch_id=0, canceled=True, cancel_reason="permission denied"
    )
    script = Script(etcd, [response((10, b"a")), cancelled, response((11, b"b"))])
    watch = await script.watch(done=9)

    keys: list[bytes] = []
    with anyio.fail_after(HANG), pytest.raises(aetcd.ClientError) as info:
        async for event in watch:
            keys.append(event.kv.key)

    assert keys == [b"a"]
    assert "permission denied" in str(info.value)
    # No new stream, and etcd answered: not a failure of etcd.
    assert script.starts == [10]
    assert etcd.breaker.metrics().failures == 0


async def test_an_open_breaker_holds_the_watch_back_until_a_trial() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        name="etcd", failure_threshold=1, reset_timeout=10, clock=clock
    )
    async with BreakerClient("127.0.0.1", 1, breaker=breaker) as etcd:
        script = Script(etcd, [aetcd.ConnectionFailedError()], [response((10, b"a"))])
        watch = await script.watch(done=9)
        keys: list[bytes] = []

        async def consume() -> None:
            keys.extend(await take(watch, 1))

        with anyio.fail_after(HANG):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await anyio.wait_all_tasks_blocked()
                assert breaker.state is State.OPEN
                assert script.starts == [10]

                clock.advance(10)

        assert keys == [b"a"]
        assert script.starts == [10, 10]
        assert breaker.state is State.CLOSED


class SilentCall:
    """A gRPC call that never answers, or answers once probed."""

    def __init__(self, *, answer_probe: bool) -> None:
        self.written: list[Any] = []
        self.cancelled = False
        self._answer = answer_probe
        self._reply: asyncio.Future[Any] | None = None

    async def read(self) -> Any:
        self._reply = asyncio.get_running_loop().create_future()
        return await self._reply

    async def write(self, request: Any) -> None:
        self.written.append(request)
        if self._answer and self._reply is not None:
            self._reply.set_result(progress(5, -1))

    def cancel(self) -> None:
        self.cancelled = True


@pytest.mark.parametrize("answer_probe", [False, True])
async def test_a_silent_stream_is_probed_then_given_up(answer_probe: bool) -> None:
    call = SilentCall(answer_probe=answer_probe)
    stream = Stream(call, None, progress(4), 0.01, 0.01)

    with anyio.fail_after(HANG):
        if answer_probe:
            assert (await stream.next()).header.revision == 5
        else:
            with pytest.raises(StreamSilentError):
                await stream.next()
        ending = stream.close()
        if ending:
            await asyncio.wait(ending)

    assert [request.WhichOneof("request_union") for request in call.written] == [
        "progress_request"
    ]
    assert call.cancelled


class EndedCall(SilentCall):
    """A gRPC call that the server ended cleanly: its read gives EOF."""

    async def read(self) -> Any:
        return grpc.aio.EOF


async def test_a_stream_ended_by_etcd_fails_as_a_counted_error() -> None:
    # A clean end of the stream is no response: the watch must resume.
    stream = Stream(EndedCall(answer_probe=False), None, progress(4), 1, 1)

    with anyio.fail_after(HANG), pytest.raises(aetcd.ConnectionFailedError) as info:
        await stream.next()

    assert is_etcd_failure(info.value)


def histories() -> st.SearchStrategy[list[int]]:
    """Events per revision: a revision of a transaction holds several."""
    return st.lists(st.integers(1, 3), min_size=1, max_size=12)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(sizes=histories(), cuts=st.lists(st.integers(0, 40), max_size=6))
def test_position_delivers_a_history_once_whatever_the_breaks(
    sizes: list[int], cuts: list[int]
) -> None:
    events = [(rev, i) for rev, size in enumerate(sizes, 10) for i in range(size)]
    position = Position(9)
    delivered: list[tuple[int, int]] = []
    for cut in [*cuts, len(events)]:
        # A new stream lists every event from its start revision on, and
        # stops after ``cut`` of them, perhaps inside a revision.
        stream = object()
        start = position.resume_revision()
        replay = [event for event in events if event[0] >= start][:cut]
        for n, (rev, i) in enumerate(replay):
            if position.admit(stream, rev):
                delivered.append((rev, i))
            last_of_revision = n + 1 == len(replay) or replay[n + 1][0] != rev
            if last_of_revision and i == sizes[rev - 10] - 1:
                position.complete(rev)

    assert delivered == events


def test_position_resumes_inside_a_cut_revision() -> None:
    position = Position(9)
    assert position.admit("s1", 10)
    assert position.resume_revision() == 10
    position.complete(10)
    assert position.resume_revision() == 11
    assert not position.admit("s2", 10)


async def test_a_wait_cut_short_resumes_on_a_new_stream(etcd: BreakerClient) -> None:
    script = Script(etcd, [response((10, b"a"))], [response((10, b"a"), (11, b"b"))])
    watch = await script.watch(done=9)
    events = aiter(watch)

    with anyio.fail_after(HANG):
        assert (await anext(events)).kv.key == b"a"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(events), 0.05)
        assert (await anext(events)).kv.key == b"b"

    assert script.starts == [10, 11]
    assert script.streams[0].closed
    assert etcd.breaker.metrics().failures == 0


async def test_a_new_iteration_takes_over_from_the_last(etcd: BreakerClient) -> None:
    whole = [response((10, b"a"), (10, b"b")), response((11, b"c"))]
    script = Script(etcd, whole, whole)
    watch = await script.watch(done=9)
    first = aiter(watch)

    with anyio.fail_after(HANG):
        assert (await anext(first)).kv.key == b"a"
        second = aiter(watch)
        assert (await anext(second)).kv.key == b"b"
        with pytest.raises(StopAsyncIteration):
            await anext(first)
        assert (await anext(second)).kv.key == b"c"

    assert script.starts == [10, 10]


async def test_reopen_pauses_grow_in_an_outage_and_start_over_after_a_response(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The pauses between attempts to reopen a stream double up to a cap
    # while etcd is away; a stream that answered again starts them over.
    import aetcd_breaker.etcd._watch_pump as pump

    pauses: list[float] = []
    sleep = asyncio.sleep

    async def record(seconds: float) -> None:
        pauses.append(seconds)
        await sleep(0)

    monkeypatch.setattr(pump.asyncio, "sleep", record)
    breaker = CircuitBreaker(failure_threshold=None)
    async with BreakerClient("127.0.0.1", 1, breaker=breaker) as etcd:
        script = Script(
            etcd,
            [response((10, b"a")), aetcd.ConnectionFailedError()],
            *[aetcd.ConnectionFailedError() for _ in range(8)],
            [response((11, b"b")), aetcd.ConnectionFailedError()],
            [response((12, b"c")), aetcd.ConnectionFailedError()],
            [response((13, b"d"))],
        )
        watch = await script.watch(done=9)
        keys = await take(watch, 4)
        await watch.cancel()

    assert keys == [b"a", b"b", b"c", b"d"]
    # Each break after a response reopens at once, as the first one did.
    assert pauses == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
