"""Shared by the examples: use --endpoint HOST:PORT, or start an embedded etcd."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

from aetcd_breaker.testing import EtcdServer


@contextlib.asynccontextmanager
async def etcd_endpoint(description: str) -> AsyncIterator[tuple[str, int]]:
    """Yield (host, port) of the etcd given on the command line, or of a new one."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--endpoint", help="HOST:PORT of a running etcd")
    args = parser.parse_args()
    if args.endpoint:
        host, _, port = args.endpoint.rpartition(":")
        if not host or not port.isdigit():
            parser.error(f"--endpoint must be HOST:PORT, got {args.endpoint!r}")
        yield host, int(port)
        return
    async with EtcdServer() as server:
        yield server.host, server.port
