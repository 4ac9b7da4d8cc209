"""Timing for the benchmarks: interleaved rounds, medians, percentiles, memory."""

from __future__ import annotations

import gc
import math
import random
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

T = TypeVar("T", int, float)

Block = Callable[[int], Awaitable[object]]
"""Something that makes ``n`` calls of one kind when awaited with ``n``."""

cpu_time = time.thread_time
"""The clock of the micro benchmarks.

CPU time of the benchmark's own thread: time the machine spends on other
processes (a shared 2-core box) does not count, so ratios hold under load.
"""


@dataclass(frozen=True, slots=True)
class Result:
    """One row of the report: a figure, a contender and what it measured."""

    name: str
    contender: str
    value: float
    unit: str
    target: str | None = None
    met: bool | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Mode:
    """How long to measure: the full run, or a rougher ``--quick`` one."""

    quick: bool

    def reps(self, full: T, quick: T) -> T:
        """The count (or seconds) for this mode."""
        return quick if self.quick else full


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def paired_ratios(values: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Each value over the baseline measured in the same turn."""
    return [v / b for v, b in zip(values, baseline, strict=True)]


def median_interval(
    samples: Sequence[float], confidence: float = 0.95, resamples: int = 2_000
) -> tuple[float, float]:
    """A bootstrap interval for the median of ``samples``.

    Seeded, so that a report can be regenerated; it says how far the median
    of another run of the same length could plausibly land.
    """
    rng = random.Random(20261203)
    n = len(samples)
    medians = sorted(
        statistics.median(rng.choices(samples, k=n)) for _ in range(resamples)
    )
    tail = (1 - confidence) / 2
    return medians[int(tail * resamples)], medians[int((1 - tail) * resamples) - 1]


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-100) of ``samples``."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def rotated(names: list[str], turn: int) -> list[str]:
    """The order of ``names`` for a turn: rotated, and reversed every other lap.

    Rotation gives each name every position equally often; reversing gives it
    more than one predecessor, so that whatever a block leaves behind (garbage,
    timers, a cold cache) does not always land on the same neighbour.
    """
    k = turn % len(names)
    order = names[k:] + names[:k]
    return order[::-1] if (turn // len(names)) % 2 else order


async def interleave(
    measures: Mapping[str, Callable[[], Awaitable[float | list[float]]]], rounds: int
) -> dict[str, list[float]]:
    """Run every measure once a round; the order rotates from round to round.

    A measure gives one sample or a list of them.

    Rotating gives each contender every position equally often, so a slow
    spell of the machine or a warm cache is shared out instead of landing on
    whoever always runs first.
    """
    names = list(measures)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in rotated(names, r):
            sample = await measures[name]()
            if isinstance(sample, list):
                samples[name] += sample
            else:
                samples[name].append(sample)
    return samples


@contextmanager
def gc_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector out of a timed block.

    A collection lands in whichever block happens to cross its threshold, and
    a full one over thousands of parked tasks costs milliseconds: noise far
    above the costs measured here. Collection resumes after the block.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def per_call(block: Block, n: int) -> float:
    """CPU seconds per call for ``n`` calls of ``block``."""
    with gc_paused():
        start = cpu_time()
        await block(n)
        return (cpu_time() - start) / n


async def overhead(block: Block, bare: Block, n: int) -> float:
    """Seconds per call that ``block`` costs beyond ``bare``.

    The bare run is made just before and just after, and the two averaged,
    so that a drift in the machine's speed during the pair cancels out.
    """
    before = await per_call(bare, n)
    cost = await per_call(block, n)
    after = await per_call(bare, n)
    return cost - (before + after) / 2


async def retained_bytes(make: Callable[[], Awaitable[object]]) -> int:
    """Bytes still allocated after ``make`` returns, its result kept alive.

    Only what ``make`` allocates is traced; garbage is collected first, so
    that only what something still references is counted.
    """
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = await make()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return after - before
