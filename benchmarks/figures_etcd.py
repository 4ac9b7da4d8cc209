"""Figures 5-6: BreakerClient against raw aetcd on a real etcd, healthy and failing."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any

import aetcd
from _harness import (
    Mode,
    Result,
    interleave,
    median,
    median_interval,
    overhead,
    paired_ratios,
    percentile,
    rotated,
)
from aetcd import rpc
from contenders import OURS

import aetcd_breaker
from aetcd_breaker.core import CircuitBreaker, State, StateChange
from aetcd_breaker.etcd import BreakerClient, EtcdCircuitOpenError
from aetcd_breaker.testing import EtcdServer, FaultProxy

RAW = f"aetcd {version('aetcd')}"
GUARDED = f"{OURS} BreakerClient"
CONTROL = f"{RAW}, second client (A/A control)"
CALL_TIMEOUT = 5.0
RAW_DEADLINE = f"{RAW}, timeout={CALL_TIMEOUT:g} (gRPC deadline)"
RAW_TIMER = f"{RAW}, one loop timer pending"
RAW_LAYERS = f"{RAW}, through two empty coroutine layers"
KEY = b"/bench/key"
VALUE = b"v" * 64
# The raw client gets the channel option BreakerClient sets on its own inner
# client, so that the two differ by the guarded layer alone.
CHANNEL = {"grpc.use_local_subchannel_pool": 1}
ETCD_TASKS = 64

OUTAGE_TIMEOUT = 1.0
"""Seconds either client waits for etcd during an outage before giving up."""
OPEN_FOR = 2.0
FAILURES_TO_OPEN = 5
LOAD_TASKS = 4
RECOVERY_WAIT = OPEN_FOR + 10 * OUTAGE_TIMEOUT
LOAD_PAUSE = 0.002
"""Seconds each load task rests between calls, as a busy service would."""

Op = Callable[[Any], Awaitable[object]]


async def _get(client: Any) -> object:
    return await client.get(KEY)


async def _put(client: Any) -> object:
    return await client.put(KEY, VALUE)


async def _block(client: Any, op: Op, tasks: int, calls: int) -> tuple[float, float]:
    """Client CPU seconds a call and calls a second, for one block of calls."""

    async def worker(n: int) -> None:
        for _ in range(n):
            await op(client)

    # Each block pays for the young garbage it makes itself, not its neighbour.
    gc.collect(0)
    cpu, wall = time.process_time(), time.perf_counter()
    if tasks == 1:
        await worker(calls)
    else:
        async with asyncio.TaskGroup() as group:
            for _ in range(tasks):
                group.create_task(worker(calls // tasks))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / calls, calls / wall


async def healthy_etcd(mode: Mode) -> list[Result]:
    """Figure 5: client CPU per call and throughput, raw aetcd against ours.

    Short blocks of each client take turns for a fixed time, so that the
    drift of a shared machine and of etcd itself falls on all alike; the
    figure is the median of the ratios of BreakerClient's block to raw
    aetcd's in the same turn. A second raw client takes its turns too: its
    ratio to the first is the method's noise floor. So does a raw client
    with aetcd's own timeout, the deadline a user has without the breaker.
    """
    seconds = mode.reps(100.0, 20.0)
    results: list[Result] = []
    async with EtcdServer() as etcd:
        clients = {
            RAW: aetcd.Client(etcd.host, etcd.port, options=dict(CHANNEL)),
            CONTROL: aetcd.Client(etcd.host, etcd.port, options=dict(CHANNEL)),
            # What a deadline costs without the breaker: aetcd's own timeout.
            RAW_DEADLINE: aetcd.Client(
                etcd.host, etcd.port, timeout=CALL_TIMEOUT, options=dict(CHANNEL)
            ),
            # What asyncio itself adds per loop turn while any timer is
            # pending, as BreakerClient's deadlines keep one while calls run.
            RAW_TIMER: aetcd.Client(etcd.host, etcd.port, options=dict(CHANNEL)),
            # What any wrapper shaped like BreakerClient costs, doing nothing:
            # a method that awaits a helper that awaits aetcd.
            RAW_LAYERS: _TwoLayers(
                aetcd.Client(etcd.host, etcd.port, options=dict(CHANNEL))
            ),
            GUARDED: BreakerClient(etcd.host, etcd.port, call_timeout=CALL_TIMEOUT),
        }
        await clients[RAW].put(KEY, VALUE)
        try:
            for op_name, op in (("get", _get), ("put", _put)):
                for tasks in (1, ETCD_TASKS):
                    label = f"{op_name}, {tasks} task{'s' if tasks > 1 else ''}"
                    results += await _turns(clients, label, op, tasks, seconds)
                results += await _bytecodes(clients, op_name, op)
        finally:
            for client in clients.values():
                await client.close()

    for op_name, op in (("get", _get), ("put", _put)):
        # The cheapest real call, many tasks at once, is what the layer's
        # own cost is held against.
        real = next(
            r.value
            for r in results
            if r.contender == RAW
            and r.name == f"5. etcd {op_name}, {ETCD_TASKS} tasks: client CPU per call"
        )
        results += await _layer_cost(mode, op_name, op, real)
    return results


async def _turns(
    clients: dict[str, Any], label: str, op: Op, tasks: int, seconds: float
) -> list[Result]:
    calls = 100 if tasks == 1 else 10 * tasks
    for client in clients.values():
        await _block(client, op, tasks, calls)

    cpu: dict[str, list[float]] = {name: [] for name in clients}
    rate: dict[str, list[float]] = {name: [] for name in clients}
    end = time.monotonic() + seconds
    turns = 0
    loop = asyncio.get_running_loop()
    while time.monotonic() < end or turns < 3:
        for name in rotated(list(clients), turns):
            timer = loop.call_later(3600, _nothing) if name == RAW_TIMER else None
            block_cpu, block_rate = await _block(clients[name], op, tasks, calls)
            if timer is not None:
                timer.cancel()
            cpu[name].append(block_cpu)
            rate[name].append(block_rate)
        turns += 1

    blocks = f"{turns} turns of {calls} calls each"
    results = []
    checks: list[tuple[str, str, dict[str, list[float]], str, Callable[[float], bool]]]
    checks = [
        ("client CPU per call", "us", cpu, "<= 1.02 x raw", lambda r: r <= 1.02),
        ("throughput", "calls/s", rate, ">= 0.97 x raw", lambda r: r >= 0.97),
    ]
    for what, unit, values, target, better in checks:
        scale = 1e6 if unit == "us" else 1.0
        med = {name: median(v) * scale for name, v in values.items()}
        # Each block against the raw block of the same turn, a few seconds
        # apart at most: the machine's drift cancels within a pair.
        ratios = paired_ratios(values[GUARDED], values[RAW])
        ratio = median(ratios)
        low, high = median_interval(ratios)
        name = f"5. etcd {label}: {what}"
        results += [
            Result(
                name,
                GUARDED,
                med[GUARDED],
                unit,
                target=target,
                met=better(ratio),
                note=f"{ratio:.3f} x raw (95% interval {low:.3f}-{high:.3f}), "
                f"the median of per-turn ratios over {blocks}",
            ),
            Result(name, RAW, med[RAW], unit),
        ]
        results += [
            Result(
                name,
                other,
                med[other],
                unit,
                note=f"{median(paired_ratios(values[other], values[RAW])):.3f} "
                "x raw, the same way",
            )
            for other in (CONTROL, RAW_DEADLINE, RAW_TIMER, RAW_LAYERS)
        ]
    return results


def _nothing() -> None:
    return None


class _TwoLayers:
    """aetcd behind two coroutine layers that do nothing else (the reference)."""

    def __init__(self, client: aetcd.Client) -> None:
        self._client = client

    async def get(self, key: bytes) -> object:
        return await self._call(self._client.get, key)

    async def put(self, key: bytes, value: bytes) -> object:
        return await self._call(self._client.put, key, value)

    async def _call(
        self, method: Callable[..., Awaitable[object]], *args: Any
    ) -> object:
        return await method(*args)

    async def close(self) -> None:
        await self._client.close()


class _AnswerAtOnce:
    """Stands in for aetcd's gRPC key-value stub: every request answered at once."""

    async def Range(self, request: object, **kwargs: object) -> object:
        return rpc.RangeResponse()

    async def Put(self, request: object, **kwargs: object) -> object:
        return rpc.PutResponse()


async def _no_network() -> aetcd.Client:
    client = aetcd.Client("127.0.0.1", 9, options=dict(CHANNEL))
    # connect() only builds the channel and stubs; nothing goes on the wire.
    await client.connect()
    client.kvstub = _AnswerAtOnce()
    return client


async def _layer_cost(mode: Mode, op_name: str, op: Op, real: float) -> list[Result]:
    """What BreakerClient's own code costs a call, with no network to hide it.

    Both clients run aetcd's own request and response handling around a stub
    that answers at once, so the difference is the guarded layer alone.
    """
    raw = await _no_network()
    ours = BreakerClient.wrap(
        await _no_network(), call_timeout=CALL_TIMEOUT, close_client=True
    )
    async with raw, ours:

        async def loop(client: Any, n: int) -> None:
            for _ in range(n):
                await op(client)

        samples = await interleave(
            {
                "added": lambda: overhead(
                    lambda n: loop(ours, n), lambda n: loop(raw, n), 5_000
                )
            },
            mode.reps(31, 11),
        )
    added = median(samples["added"]) * 1e6
    share = 100 * added / real
    name = f"5. etcd {op_name}: CPU BreakerClient's own code adds per call"
    return [
        Result(
            name, GUARDED, added, "us", note="aetcd over a stub that answers at once"
        ),
        Result(
            f"5. etcd {op_name}: that added CPU against a raw call's",
            GUARDED,
            share,
            "%",
            note=f"against {real:.0f} us, raw aetcd's CPU a call with "
            f"{ETCD_TASKS} tasks above; hot caches make this a lower bound, "
            "the target is on the whole calls above",
        ),
    ]


_PACKAGE = str(Path(aetcd_breaker.__file__).parent)


class _OpcodeCounter:
    """Counts the Python bytecodes this thread runs, and those of our package."""

    def __init__(self) -> None:
        self.count = 0
        self.ours = 0

    def __call__(self, frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            self.count += 1
            if frame.f_code.co_filename.startswith(_PACKAGE):
                self.ours += 1
        return self


async def _bytecodes(clients: dict[str, Any], op_name: str, op: Op) -> list[Result]:
    """Python bytecodes a call runs, 64 tasks at once: BreakerClient's own.

    Unlike time, this does not move with the machine's load: it is the work
    BreakerClient asks of the interpreter (gRPC's own work is the same with
    or without it). The whole count, the event loop's included, varies by a
    few percent with how many completions each turn of the loop collects.
    """
    calls = 10 * ETCD_TASKS
    counters = {}
    for name in (GUARDED, RAW):
        counter = counters[name] = _OpcodeCounter()
        sys.settrace(counter)
        try:
            await _block(clients[name], op, ETCD_TASKS, calls)
        finally:
            sys.settrace(None)
    ours = counters[GUARDED].ours / calls
    raw = counters[RAW].count / calls
    return [
        Result(
            f"5. etcd {op_name}, {ETCD_TASKS} tasks: "
            "Python bytecodes BreakerClient's own code runs per call",
            GUARDED,
            ours,
            "bytecodes",
            note=f"{100 * ours / raw:.1f} % of the {raw:,.0f} a raw aetcd call "
            "runs, the event loop's included",
        )
    ]


OK, FAILED, REJECTED = "ok", "failed", "rejected"


@dataclass(frozen=True, slots=True)
class _Call:
    started: float
    seconds: float
    outcome: str
    state: State | None


class _Load:
    """Tasks calling ``get`` in a loop, each call's latency and outcome noted."""

    def __init__(self, client: Any, breaker: CircuitBreaker | None) -> None:
        self._client = client
        self._breaker = breaker
        self._going = asyncio.Event()
        self._going.set()
        self._stopped = False
        self._busy = 0
        self.calls: list[_Call] = []
        self._tasks = [asyncio.create_task(self._work()) for _ in range(LOAD_TASKS)]

    async def _work(self) -> None:
        client, breaker = self._client, self._breaker
        while not self._stopped:
            await self._going.wait()
            state = None if breaker is None else breaker.state
            self._busy += 1
            started = time.monotonic()
            try:
                await client.get(KEY)
                outcome = OK
            except EtcdCircuitOpenError:
                outcome = REJECTED
            except Exception:
                outcome = FAILED
            finally:
                self._busy -= 1
            self.calls.append(
                _Call(started, time.monotonic() - started, outcome, state)
            )
            await asyncio.sleep(LOAD_PAUSE)

    async def hold(self) -> None:
        """Let the calls in flight end, and start no new ones until `go`."""
        self._going.clear()
        while self._busy:
            await asyncio.sleep(0.005)

    def go(self) -> None:
        self._going.set()

    async def stop(self) -> None:
        self._stopped = True
        self._going.set()
        await asyncio.gather(*self._tasks)


@dataclass
class _Outage:
    """What one outage showed, for both clients."""

    raw: list[_Call]
    ours: list[_Call]
    to_open: float
    to_closed: float
    open_left: float
    raw_recovered: float
    unexplained: int


async def _one_outage(etcd: EtcdServer, fault: str, seconds: float) -> _Outage:
    changes: list[tuple[float, State]] = []
    closed = asyncio.Event()

    def noted(change: StateChange) -> None:
        changes.append((time.monotonic(), change.to_state))
        if change.to_state is State.CLOSED:
            closed.set()

    breaker = CircuitBreaker(
        name="etcd",
        failure_threshold=FAILURES_TO_OPEN,
        reset_timeout=OPEN_FOR,
        on_state_change=noted,
    )
    async with (
        FaultProxy(etcd.host, etcd.port) as raw_proxy,
        FaultProxy(etcd.host, etcd.port) as our_proxy,
    ):
        proxies = (raw_proxy, our_proxy)
        raw = aetcd.Client(
            raw_proxy.host, raw_proxy.port, timeout=OUTAGE_TIMEOUT, options=CHANNEL
        )
        ours = BreakerClient(
            our_proxy.host,
            our_proxy.port,
            breaker=breaker,
            call_timeout=OUTAGE_TIMEOUT,
        )
        async with raw, ours:
            raw_load, our_load = _Load(raw, None), _Load(ours, breaker)
            loads = (raw_load, our_load)
            await asyncio.sleep(0.5)

            # Quiet at the fault and at the end, so that every request the
            # proxy forwards in between belongs to a call started in between.
            for load in loads:
                await load.hold()
            await asyncio.sleep(0.05)
            requests = our_proxy.requests
            fault_at = time.monotonic()
            if fault == "pause":
                etcd.pause()
            else:
                for proxy in proxies:
                    proxy.black_hole()
            for load in loads:
                load.go()

            await asyncio.sleep(seconds)
            heal_at = time.monotonic()
            open_left = breaker.retry_after or 0.0
            closed.clear()
            if fault == "pause":
                etcd.resume()
            else:
                for proxy in proxies:
                    proxy.pass_through()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECOVERY_WAIT):
                    await closed.wait()
                    while not _first_success(raw_load.calls, heal_at):
                        await asyncio.sleep(0.01)

            await asyncio.sleep(0.2)
            for load in loads:
                await load.hold()
            await asyncio.sleep(0.05)
            admitted = sum(
                1
                for c in our_load.calls
                if c.started >= fault_at and c.outcome != REJECTED
            )
            unexplained = our_proxy.requests - requests - admitted
            for load in loads:
                await load.stop()

    # A move that never came is reported as the whole wait: a target missed.
    never = heal_at + RECOVERY_WAIT
    opened = min(
        (t for t, s in changes if s is State.OPEN and t >= fault_at), default=never
    )
    closed_at = min(
        (t for t, s in changes if s is State.CLOSED and t >= heal_at), default=never
    )
    recovered = _first_success(raw_load.calls, heal_at) or never
    return _Outage(
        raw=[c for c in raw_load.calls if fault_at <= c.started < heal_at],
        ours=[c for c in our_load.calls if fault_at <= c.started < heal_at],
        to_open=opened - fault_at,
        to_closed=closed_at - heal_at,
        open_left=open_left,
        raw_recovered=recovered - heal_at,
        unexplained=unexplained,
    )


def _first_success(calls: list[_Call], since: float) -> float | None:
    """When the first call started at or after ``since`` returned, if one did."""
    return min(
        (
            c.started + c.seconds
            for c in calls
            if c.outcome == OK and c.started >= since
        ),
        default=None,
    )


async def outages(mode: Mode) -> list[Result]:
    """Figure 6: raw aetcd with a timeout against ours, through two outages."""
    # Both fall inside an open period, after one failed trial in the full run.
    seconds = mode.reps(6.0, 3.0)
    repeats = mode.reps(3, 1)
    results: list[Result] = []
    async with EtcdServer() as etcd:
        for fault, label in (("black_hole", "black hole"), ("pause", "etcd paused")):
            runs = [await _one_outage(etcd, fault, seconds) for _ in range(repeats)]
            results += _outage_results(label, runs)
    return results


def _outage_results(label: str, runs: list[_Outage]) -> list[Result]:
    name = f"6. {label}: latency of a call during the outage"
    results = []
    for contender, calls in (
        (GUARDED, [c for run in runs for c in run.ours]),
        (RAW + f", timeout={OUTAGE_TIMEOUT:g}", [c for run in runs for c in run.raw]),
    ):
        seconds = [c.seconds * 1e3 for c in calls]
        for q in (50, 99):
            results.append(
                Result(f"{name}, p{q}", contender, percentile(seconds, q), "ms")
            )
        results.append(Result(f"{name}, max", contender, max(seconds), "ms"))

    while_open = [
        c.seconds * 1e3 for run in runs for c in run.ours if c.state is State.OPEN
    ]
    # A breaker that never opened has no such calls: the target is missed.
    p99 = percentile(while_open, 99) if while_open else float(RECOVERY_WAIT * 1e3)
    to_closed = median([run.to_closed for run in runs])
    beyond = max(run.to_closed - run.open_left for run in runs)
    open_left = median([run.open_left for run in runs])
    unexplained = sum(run.unexplained for run in runs)
    results += [
        Result(
            f"6. {label}: p99 latency of a call while open",
            GUARDED,
            p99,
            "ms",
            target="< 0.2 ms",
            met=p99 < 0.2,
            note=f"{len(while_open)} calls made while open",
        ),
        Result(
            f"6. {label}: requests reaching etcd while open",
            GUARDED,
            unexplained,
            "requests",
            target="0",
            met=unexplained == 0,
            note="requests the proxy forwarded during the outage beyond the calls "
            "the breaker admitted",
        ),
        Result(
            f"6. {label}: fault to open",
            GUARDED,
            median([run.to_open for run in runs]),
            "s",
        ),
        Result(
            f"6. {label}: etcd healthy again to closed",
            GUARDED,
            to_closed,
            "s",
            target=f"<= 1 s + open time left ({open_left:.2f} s)",
            met=beyond <= 1.0,
            note=f"worst of {len(runs)}: {beyond:.3f} s beyond the open time left",
        ),
        Result(
            f"6. {label}: etcd healthy again to a successful call",
            RAW + f", timeout={OUTAGE_TIMEOUT:g}",
            median([run.raw_recovered for run in runs]),
            "s",
        ),
    ]
    return results


FIGURES: dict[str, Callable[[Mode], Awaitable[list[Result]]]] = {
    "5": healthy_etcd,
    "6": outages,
}
