"""The guarded client as an async context manager around an etcd session.

Run: python examples/session.py [--endpoint HOST:PORT]
"""

from __future__ import annotations

import anyio
from _embedded import etcd_endpoint

from aetcd_breaker import BreakerClient


async def main() -> None:
    # Every call below runs under the client's breaker with a 2 s deadline;
    # leaving the block closes the session, even with a watch still open.
    async with (
        etcd_endpoint(__doc__ or "") as (host, port),
        BreakerClient(host, port, call_timeout=2.0) as etcd,
    ):
        await etcd.put(b"/services/api/1", b"10.0.0.1:8080")
        await etcd.put(b"/services/api/2", b"10.0.0.2:8080")

        found = await etcd.get_prefix(b"/services/api/")
        for kv in found:
            print(kv.key.decode(), "->", kv.value.decode())

        lease = await etcd.lease(10)
        await etcd.put(b"/services/api/3", b"10.0.0.3:8080", lease=lease)
        print("lease", lease.id, "ttl", await lease.remaining_ttl())
        await lease.revoke()

        print("breaker:", etcd.breaker.state.value)


if __name__ == "__main__":
    anyio.run(main)
