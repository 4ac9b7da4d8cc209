"""The command line: ``python -m aetcd_breaker demo``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import anyio
import structlog

from .demo import FAULTS, PhaseStats, format_table, run_demo

__all__ = ["main"]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 3600:
        raise argparse.ArgumentTypeError(f"must be above 0 and below 3600, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError(f"must be from 1 to 1000, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m aetcd_breaker")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="protect a workload from a real etcd outage, phase by phase"
    )
    demo.add_argument(
        "--fault",
        choices=FAULTS,
        action="append",
        help="the fault to inject (repeatable); all of them in turn by default",
    )
    demo.add_argument(
        "--log-format",
        choices=("console", "json"),
        default="console",
        help="console (default) or one JSON object per line",
    )
    demo.add_argument(
        "--phase-seconds",
        type=_positive_float,
        default=5.0,
        help="how long each phase lasts (default 5)",
    )
    demo.add_argument(
        "--workers",
        type=_positive_int,
        default=16,
        help="concurrent tasks calling etcd (default 16)",
    )
    return parser


def _configure_logging(log_format: str) -> None:
    # The application configures structlog; the library never does.
    renderer: structlog.typing.Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(
                fmt="iso" if log_format == "json" else "%H:%M:%S",
                utc=log_format == "json",
            ),
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )


async def _until_terminated(
    job: Callable[[], Awaitable[list[PhaseStats]]],
) -> list[PhaseStats] | None:
    """Run ``job``; on SIGTERM cancel it, so its cleanup still runs.

    Python's default for SIGTERM ends the process on the spot, which would
    leave the embedded etcd's directories behind (``timeout``, CI runners and
    service managers all stop programs that way).
    """
    result: list[PhaseStats] | None = None
    async with anyio.create_task_group() as tg:

        async def on_sigterm() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(on_sigterm)
        result = await job()
        tg.cancel_scope.cancel()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    _configure_logging(args.log_format)
    faults = tuple(args.fault) if args.fault else FAULTS
    try:
        phases = anyio.run(
            _until_terminated,
            lambda: run_demo(
                faults, phase_seconds=args.phase_seconds, workers=args.workers
            ),
        )
    except KeyboardInterrupt:
        phases = None
    if phases is None:
        print("interrupted; etcd stopped and its data removed", file=sys.stderr)
        return 130
    if args.log_format == "json":
        for p in phases:
            row = {
                "event": "demo.summary",
                "phase": p.name,
                "calls": p.calls,
                "ok": p.ok,
                "failed": p.failed,
                "timed_out": p.timed_out,
                "rejected": p.rejected,
                "p50_ms": round(p.percentile(0.5), 3),
                "p99_ms": round(p.percentile(0.99), 3),
            }
            print(json.dumps(row))
    else:
        print()
        print(format_table(phases))
    return 0
