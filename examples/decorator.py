"""The breaker as a decorator on your own async function.

Run: python examples/decorator.py [--endpoint HOST:PORT]
"""

from __future__ import annotations

import aetcd
import anyio
from _embedded import etcd_endpoint

from aetcd_breaker import CircuitBreaker, CircuitOpenError

breaker = CircuitBreaker(name="profile-store", failure_threshold=2, call_timeout=1.0)


async def main() -> None:
    async with etcd_endpoint(__doc__ or "") as (host, port):
        async with aetcd.Client(host, port) as raw:

            @breaker
            async def load_profile(user: str) -> bytes | None:
                found = await raw.get(f"/profiles/{user}".encode())
                return None if found is None else found.value

            await raw.put(b"/profiles/ada", b"Ada Lovelace")
            print("ada:", await load_profile("ada"))

        # The raw client is closed now, so calls fail; the breaker opens after two.
        unreachable = aetcd.Client("127.0.0.1", 1)

        @breaker
        async def probe() -> object:
            return await unreachable.get(b"/x")

        for attempt in range(4):
            try:
                await probe()
            except CircuitOpenError as exc:
                print(f"attempt {attempt}: rejected at once: {exc}")
            except aetcd.ClientError as exc:
                print(f"attempt {attempt}: failed: {type(exc).__name__}")
        await unreachable.close()


if __name__ == "__main__":
    anyio.run(main)
