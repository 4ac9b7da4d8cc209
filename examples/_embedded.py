"""Shared by the examples: use --endpoint HOST:PORT, or start an embedded etcd."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator

import structlog

from aetcd_breaker.testing import EtcdServer


def log_to_stderr() -> None:
    """Send structlog's events (the breaker's state changes) to stderr."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


@contextlib.asynccontextmanager
async def etcd_endpoint(description: str) -> AsyncIterator[tuple[str, int]]:
    """Yield (host, port) of the etcd given on the command line, or of a new one."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--endpoint", help="HOST:PORT of a running etcd")
    args = parser.parse_args()
    log_to_stderr()
    if args.endpoint:
        host, _, port = args.endpoint.rpartition(":")
        if not host or not port.isdigit():
            parser.error(f"--endpoint must be HOST:PORT, got {args.endpoint!r}")
        yield host, int(port)
        return
    async with EtcdServer() as server:
        yield server.host, server.port
