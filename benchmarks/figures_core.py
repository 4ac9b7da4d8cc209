"""Figures 1-4: what a breaker costs with no network in the way, against peers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

from _harness import (
    Block,
    Mode,
    Result,
    cpu_time,
    gc_paused,
    interleave,
    median,
    overhead,
    per_call,
    retained_bytes,
)
from contenders import (
    OURS,
    Bare,
    Caller,
    Contender,
    Fn,
    Ours,
    cannot_guard,
    is_open,
    must_not_run,
    noop,
    peers,
)

from aetcd_breaker.core import CircuitOpenError, State

FIG1 = "1. closed, async no-op, 1 task: overhead per call"
FIG2 = "2. open: cost of a rejected call"
FIG2_MEM = "2. open: memory kept per rejected call"
FIG3 = "3. closed, 1,000 tasks inside at once: overhead per call"
FIG3_SCALE = "3. closed: overhead per call by tasks inside at once"
FIG4 = "4. memory per breaker (10,000 breakers)"

US = 1e6
TASKS = (1, 100, 1_000, 10_000)
BLOCK_CALLS = 2_000
BREAKERS = 10_000
NA = "n/a: cannot guard a coroutine"


def _tasks(count: int) -> str:
    return "1 task" if count == 1 else f"{count:,} tasks"


def _limited(value: str | None) -> str | None:
    return None if value is None else f"{NA}: {value}"


def _half_of_fastest(
    name: str, values: dict[str, float], usable: list[str], unit: str
) -> Result:
    peer = min(usable, key=values.__getitem__)
    best, ours = values[peer], values[OURS]
    return Result(
        name,
        OURS,
        ours,
        unit,
        target=f"<= 0.5 x fastest peer ({peer}: {best:.3g} {unit})",
        met=ours <= 0.5 * best,
    )


async def closed_overhead(mode: Mode) -> list[Result]:
    """Figure 1: a guarded no-op against a bare ``await``, one task."""
    contenders: list[Contender] = [
        Ours(),
        Ours(f"{OURS}, call_timeout=5", call_timeout=5.0),
        Ours(f"{OURS}, CountWindow(100)+FailureRate", window=100),
        *peers(),
    ]
    limits = {c.name: await cannot_guard(c) for c in contenders}
    n = mode.reps(20_000, 10_000)
    bare = Bare()

    def measure(c: Contender) -> Callable[[], Awaitable[float]]:
        return lambda: overhead(_calls(c, noop), _calls(bare, noop), n)

    samples = await interleave(
        {c.name: measure(c) for c in contenders}, mode.reps(61, 21)
    )
    values = {name: median(s) * US for name, s in samples.items()}

    peer_names = [c.name for c in contenders[3:]]
    usable = [name for name in peer_names if limits[name] is None]
    deadline, window = contenders[1].name, contenders[2].name
    results = [
        _half_of_fastest(FIG1, values, usable, "us"),
        Result(
            FIG1,
            deadline,
            values[deadline],
            "us",
            target="<= 4 us",
            met=values[deadline] <= 4.0,
        ),
        Result(FIG1, window, values[window], "us"),
    ]
    results += [
        Result(FIG1, name, values[name], "us", note=_limited(limits[name]))
        for name in peer_names
    ]
    return results


def _calls(contender: Caller, fn: Fn) -> Block:
    return lambda n: contender.loop(fn, n)


async def open_rejections(mode: Mode) -> list[Result]:
    """Figure 2: a call to an open breaker, its cost and the memory it keeps."""
    contenders: list[Contender] = [Ours(), *peers()]
    n = mode.reps(20_000, 10_000)

    def measure(c: Contender) -> Callable[[], Awaitable[float]]:
        async def rejected(k: int) -> None:
            if await c.loop(must_not_run, k) != k:
                raise RuntimeError(f"{c.name} let a call through while open")

        async def run() -> float:
            # A fresh trip each time: one peer's memory grows with every
            # rejection, and it must not carry that from round to round.
            await _open(c)
            return await per_call(rejected, n)

        return run

    floor = _RaiseOnly()

    async def floor_run() -> float:
        return await per_call(partial(floor.loop, must_not_run), n)

    measures = {c.name: measure(c) for c in contenders}
    measures[floor.name] = floor_run
    samples = await interleave(measures, mode.reps(61, 21))
    costs = {name: median(s) * US for name, s in samples.items()}
    peer_names = [c.name for c in contenders[1:]]
    results = [_half_of_fastest(FIG2, costs, peer_names, "us")]
    results += [Result(FIG2, name, costs[name], "us") for name in peer_names]
    results.append(
        Result(
            FIG2,
            floor.name,
            costs[floor.name],
            "us",
            note="no breaker: an async function that raises CircuitOpenError "
            "at once, awaited and caught; any breaker whose call is a coroutine "
            "costs at least this",
        )
    )

    rejections = mode.reps(20_000, 5_000)
    for c in contenders:
        await _open(c)
        await c.loop(must_not_run, 1_000)
        kept = await retained_bytes(partial(c.loop, must_not_run, rejections))
        per_rejection = kept / rejections
        if c.name == OURS:
            target, met = "0 B (under 1 B)", per_rejection < 1.0
        else:
            target, met = None, None
        results.append(Result(FIG2_MEM, c.name, per_rejection, "B", target, met))
    return results


class _RaiseOnly:
    """The least a rejection by a coroutine can cost: create, await, raise, catch."""

    name = "(reference) coroutine that only raises"

    async def loop(self, fn: Fn, n: int) -> int:
        rejected = 0
        for _ in range(n):
            try:
                await _reject(fn)
            except CircuitOpenError:
                rejected += 1
        return rejected


async def _reject(fn: Fn) -> None:
    raise CircuitOpenError("reference", State.OPEN, 1.0)


async def _open(contender: Contender) -> None:
    await contender.setup()
    await contender.trip()
    if not await is_open(contender):
        raise RuntimeError(f"{contender.name} did not open after failures")


class _Gate:
    """Holds every worker inside its guarded call until the next release."""

    def __init__(self, workers: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._workers = workers
        self._parked = 0
        self.release = self._loop.create_future()
        self.all_parked = self._loop.create_future()

    async def park(self) -> None:
        self._parked += 1
        if self._parked == self._workers:
            self.all_parked.set_result(None)
        await self.release

    def open(self) -> None:
        """Let every worker out; their next calls park on a new release."""
        release = self.release
        self.release = self._loop.create_future()
        self.all_parked = self._loop.create_future()
        self._parked = 0
        release.set_result(None)


async def _paired_blocks(
    contender: Caller, workers: int, cycles: int, pairs: int
) -> list[float]:
    """Overheads a call of ``contender`` over no breaker, one per pair of blocks.

    Two groups of ``workers`` tasks, one guarded and one bare, make calls that
    park until their group's gate opens, which it does once the whole group
    is parked: every guarded call is inside the breaker at once. A block is
    ``cycles`` rounds of wake, leave the call, enter the next, park; the
    groups take turns block by block, so the machine's drift cancels.
    """
    calls = pairs * cycles + 1
    gates = _Gate(workers), _Gate(workers)
    tasks = [
        asyncio.create_task(caller.loop(gate.park, calls))
        for caller, gate in zip((contender, Bare()), gates, strict=True)
        for _ in range(workers)
    ]
    async with asyncio.timeout(60):
        for gate in gates:
            await gate.all_parked

    overheads = []
    for pair in range(pairs):
        spent = [0.0, 0.0]
        for g in (0, 1) if pair % 2 == 0 else (1, 0):
            gate = gates[g]
            with gc_paused():
                start = cpu_time()
                for _ in range(cycles):
                    gate.open()
                    await gate.all_parked
                spent[g] = cpu_time() - start
        overheads.append((spent[0] - spent[1]) / (cycles * workers))

    for gate in gates:
        gate.open()
    await asyncio.gather(*tasks)
    return overheads


class _Layer:
    """One empty coroutine layer around the call: no breaker at all.

    What any ``call(fn)`` form costs by keeping one more frame alive per
    parked task, the yardstick for how flat a breaker's overhead can be.
    """

    name = "(reference) empty coroutine layer"

    async def loop(self, fn: Fn, n: int) -> int:
        for _ in range(n):
            await _through(fn)
        return 0


async def _through(fn: Fn) -> object:
    return await fn()


async def concurrent_overhead(mode: Mode) -> list[Result]:
    """Figure 3: overhead with many tasks inside the breaker at once."""
    ours = Ours()
    contenders: list[Contender] = [ours, *peers()]
    limits = {c.name: await cannot_guard(c) for c in contenders}

    def measure(c: Caller, workers: int) -> Callable[[], Awaitable[list[float]]]:
        cycles = max(1, BLOCK_CALLS // workers)
        # With few tasks a cycle is mostly the event loop's own wake-up, whose
        # cost varies from one cycle to the next: more pairs bring the median
        # of those small overheads to the same precision as with many tasks.
        pairs = 4 if workers >= 10_000 else 8 if workers >= 1_000 else 24
        return lambda: _paired_blocks(c, workers, cycles, pairs)

    measures = {f"{c.name}@1000": measure(c, 1_000) for c in contenders}
    measures |= {f"{OURS}@{tasks}": measure(ours, tasks) for tasks in TASKS}
    layer = _Layer()
    measures |= {f"{layer.name}@{t}": measure(layer, t) for t in (1, 10_000)}
    samples = await interleave(measures, mode.reps(24, 10))
    values = {key: median(s) * US for key, s in samples.items()}

    at_1000 = {c.name: values[f"{c.name}@1000"] for c in contenders}
    results = [
        Result(FIG3, c.name, at_1000[c.name], "us", note=_limited(limits[c.name]))
        for c in contenders
    ]
    series = [values[f"{OURS}@{tasks}"] for tasks in TASKS]
    results += [
        Result(FIG3_SCALE, f"{OURS}, {_tasks(tasks)}", value, "us")
        for tasks, value in zip(TASKS, series, strict=True)
    ]
    results += [
        Result(
            FIG3_SCALE, f"{layer.name}, {_tasks(t)}", values[f"{layer.name}@{t}"], "us"
        )
        for t in (1, 10_000)
    ]
    spread = max(series) / min(series)
    growth = values[f"{layer.name}@10000"] / values[f"{layer.name}@1"]
    results.append(
        Result(
            FIG3_SCALE,
            f"{OURS}, max/min over 1-10,000 tasks",
            spread,
            "x",
            target="<= 1.3",
            met=spread <= 1.3,
            note=f"the empty coroutine layer grows {growth:.2f} x from 1 to "
            "10,000 tasks in the same run",
        )
    )
    return results


async def memory_per_breaker(mode: Mode) -> list[Result]:
    """Figure 4: bytes each of 10,000 live breakers keeps."""
    names = [f"breaker-{i}" for i in range(BREAKERS)]
    contenders: list[Contender] = [Ours(f"{OURS}, CountWindow(100)", window=100)]
    contenders += peers()
    results = []
    for c in contenders:
        held: list[object] = [None] * BREAKERS

        async def make(c: Contender = c, held: list[object] = held) -> object:
            for i, name in enumerate(names):
                held[i] = await c.new_breaker(name)
            return held

        per_breaker = await retained_bytes(make) / BREAKERS
        if c.name.startswith(OURS):
            target, met = "<= 1024 B", per_breaker <= 1024
        else:
            target, met = None, None
        results.append(Result(FIG4, c.name, per_breaker, "B", target, met))
    return results


FIGURES: dict[str, Callable[[Mode], Awaitable[list[Result]]]] = {
    "1": closed_overhead,
    "2": open_rejections,
    "3": concurrent_overhead,
    "4": memory_per_breaker,
}
