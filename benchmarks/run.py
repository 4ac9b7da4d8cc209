"""Run the benchmarks, print the report table and save it as JSON and Markdown."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path

import structlog
from _harness import Mode, Result
from contenders import OURS
from figures_core import FIGURES as CORE_FIGURES
from figures_etcd import FIGURES as ETCD_FIGURES

RESULTS = Path(__file__).resolve().parent / "results"
LIBRARIES = (
    "aetcd-breaker",
    "aiobreaker",
    "purgatory",
    "circuitbreaker",
    "pybreaker",
    "aetcd",
    "grpcio",
    "anyio",
)

Figure = Callable[[Mode], Awaitable[list[Result]]]

METHOD = """\
## Method

- Every figure runs in this one process; contenders take turns round by round
  (or block by block) in an order that rotates, and each value is a median.
- Figures 1-3 time CPU of the benchmark's own thread (`time.thread_time`), with
  the cyclic garbage collector paused inside timed blocks. An overhead is a
  contender's block less a bare `await` block run next to it.
- Each peer runs in memory, in the form its docs show: aiobreaker
  `call_async`, purgatory `async with` on a breaker fetched once from an
  `AsyncCircuitBreakerFactory`, circuitbreaker's decorator (native on
  `async def` in 2.x), pybreaker `call`. All open after 5 failures.
- Figure 2 counts a rejection with its raise and the caller's `except`;
  memory kept is tracemalloc's growth after many rejections whose errors the
  caller drops. Figure 4 is tracemalloc's growth holding 10,000 breakers.
- Figure 5 reads `time.process_time` (gRPC's threads included) and wall time
  over short blocks of calls to a real etcd on loopback, taking turns among
  raw aetcd, a second raw client (A/A control: the method's own noise), raw
  aetcd with its own 5 s timeout (a gRPC deadline: what a deadline costs
  without the breaker), raw aetcd while one far-off loop timer is pending
  (asyncio does more per turn of its loop while any timer is pending, and
  BreakerClient's deadlines keep one pending), raw aetcd behind two
  coroutine layers that do nothing (the least any wrapper of BreakerClient's
  shape costs) and BreakerClient (deadline 5 s). The target is on the median
  of the ratios of each BreakerClient block to the raw block of the same
  turn; the note gives a bootstrap 95% interval for it. The bytecode rows
  count, with `sys.settrace`, the Python bytecodes run inside this package
  per call: a figure that does not move with the machine's load. The stub
  rows time BreakerClient's own code over aetcd with a stub that answers at
  once, caches hot: a lower bound.
- Figure 6: 4 tasks per client call `get` with a 2 ms pause, each client
  through its own FaultProxy; both give up after 1 s; the breaker opens after
  5 consecutive failures, for 2 s."""


def _ratios(results: list[Result]) -> list[float | None]:
    """Each value over ours in the same figure: the first row of ours there."""
    base: dict[str, Result] = {}
    for r in results:
        if r.contender.startswith(OURS):
            base.setdefault(r.name, r)
    ratios: list[float | None] = []
    for r in results:
        ours = base.get(r.name)
        if ours is None or ours.unit != r.unit or ours.value == 0:
            ratios.append(None)
        else:
            ratios.append(r.value / ours.value)
    return ratios


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _ratio(ratio: float) -> str:
    return f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.2f}"


def _cell(result: Result) -> str:
    measured = f"{_number(result.value)} {result.unit}"
    if result.note is not None and result.note.startswith("n/a"):
        return f"n/a ({measured} measured)"
    return measured


def table(results: list[Result]) -> str:
    """The report as a Markdown table, with notes under it."""
    lines = [
        "| figure | contender | value | ratio to ours | target | met |",
        "| --- | --- | ---: | ---: | --- | --- |",
    ]
    notes: list[str] = []
    for result, ratio in zip(results, _ratios(results), strict=True):
        met = {True: "met", False: "NOT MET", None: ""}[result.met]
        contender = result.contender
        if result.note is not None:
            notes.append(f"{len(notes) + 1}. {result.contender}: {result.note}")
            contender += f" [{len(notes)}]"
        cells = [
            result.name,
            contender,
            _cell(result),
            "" if ratio is None else _ratio(ratio),
            result.target or "",
            met,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(mode: Mode, seconds: float) -> str:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    versions = ", ".join(f"{name} {version(name)}" for name in LIBRARIES)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"- machine: {_cpu_model()}, {cores} cores ({usable} usable)",
            f"- Python {platform.python_version()} ({platform.python_implementation()})"
            f" on {platform.system()} {platform.release()}",
            f"- date: {now}; run: {'--quick' if mode.quick else 'full'},"
            f" {seconds / 60:.1f} min",
            f"- libraries: {versions}",
        ]
    )


def _save(results: list[Result], report: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    rows = []
    for result, ratio in zip(results, _ratios(results), strict=True):
        row = result.as_dict()
        row["ratio"] = ratio
        rows.append(row)
    (RESULTS / "latest.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / "latest.md").write_text(report + "\n")


async def _run(figures: dict[str, Figure], mode: Mode) -> list[Result]:
    results: list[Result] = []
    for key, figure in figures.items():
        started = time.monotonic()
        results += await figure(mode)
        gc.collect()
        print(
            f"figure {key} done in {time.monotonic() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions, under four minutes"
    )
    parser.add_argument(
        "--figures",
        default="",
        help="comma-separated figure numbers to run (results are then not saved)",
    )
    args = parser.parse_args(argv)
    # State changes are logged as warnings; the report is the output here.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR)
    )
    mode = Mode(quick=args.quick)
    figures = {**CORE_FIGURES, **ETCD_FIGURES}
    chosen = [key for key in args.figures.split(",") if key]
    unknown = set(chosen) - set(figures)
    if unknown:
        parser.error(
            f"no figure {', '.join(sorted(unknown))}; have {', '.join(figures)}"
        )
    selected = {key: figures[key] for key in chosen} if chosen else figures

    started = time.monotonic()
    results = asyncio.run(_run(selected, mode))
    report = "\n\n".join(
        [
            "# aetcd_breaker benchmarks",
            machine(mode, time.monotonic() - started),
            table(results),
            METHOD,
        ]
    )
    print(report)
    if not chosen:
        _save(results, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
