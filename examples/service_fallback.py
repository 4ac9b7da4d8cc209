"""Guarded reads and writes in an async service, with a fallback when etcd is away.

Run: python examples/service_fallback.py [--endpoint HOST:PORT]
"""

from __future__ import annotations

import anyio
from _embedded import etcd_endpoint

from aetcd_breaker import BreakerClient, CircuitBreaker, CircuitOpenError

DEFAULT_LIMIT = b"100"


async def rate_limit(etcd: BreakerClient) -> bytes:
    """The configured limit, or a safe default while etcd is unavailable."""
    try:
        found = await etcd.get(b"/config/rate-limit")
    except CircuitOpenError as exc:
        print(f"  circuit open ({exc}); using the default")
        return DEFAULT_LIMIT
    return found.value if found is not None else DEFAULT_LIMIT


async def main() -> None:
    async with etcd_endpoint(__doc__ or "") as (host, port):
        breaker = CircuitBreaker(name="config", failure_threshold=3, reset_timeout=5)
        async with BreakerClient(host, port, breaker=breaker, call_timeout=1.0) as etcd:
            await etcd.put(b"/config/rate-limit", b"250")
            print("limit from etcd:", (await rate_limit(etcd)).decode())

            breaker.force_open()  # as if etcd had failed three times in a row
            print("limit while open:", (await rate_limit(etcd)).decode())

            breaker.reset()
            print("limit after reset:", (await rate_limit(etcd)).decode())


if __name__ == "__main__":
    anyio.run(main)
