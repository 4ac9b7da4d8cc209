"""A caller's timeout racing the breaker's deadline never leaks a bare cancel.

gRPC ends a cancelled call with a fresh ``CancelledError`` that has lost the
canceller's message; anyio recognises its own cancellations by that message.
When an ``anyio.fail_after`` around a guarded call expires together with the
call's deadline, the caller must see a timeout (ours or anyio's), never a
``CancelledError`` escaping a scope that nobody cancelled from outside.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import anyio
import pytest

from aetcd_breaker import BreakerClient, CallTimeoutError, CircuitBreaker
from aetcd_breaker.testing import EtcdServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _race(
    call: Callable[[], Awaitable[object]], outer: float, n: int
) -> Counter[str]:
    seen: Counter[str] = Counter()

    async def one() -> None:
        try:
            with anyio.fail_after(outer):
                await call()
            seen["ok"] += 1
        except CallTimeoutError:
            seen["deadline"] += 1
        except TimeoutError:
            seen["outer"] += 1
        except BaseException as exc:  # the bug: a cancel escaping fail_after
            seen["escaped " + type(exc).__name__] += 1

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return seen


async def _grpc_like_sleep() -> None:
    # Like a gRPC call: a cancellation comes back as a fresh, bare
    # CancelledError, after a step of cleanup on the loop.
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        await asyncio.sleep(0)
        raise asyncio.CancelledError() from None


@pytest.mark.parametrize("outer", [0.05, 0.052, 0.054])
async def test_core_deadline_racing_fail_after_around_a_grpc_like_call(
    outer: float,
) -> None:
    breaker = CircuitBreaker(name="core", failure_threshold=None, call_timeout=0.05)

    seen = await _race(lambda: breaker.call(_grpc_like_sleep), outer, 300)

    assert set(seen) <= {"deadline", "outer"}, seen
    assert sum(seen.values()) == 300
    assert breaker.metrics().failures == seen["deadline"]


@pytest.mark.etcd
@pytest.mark.parametrize("outer", [0.3, 0.302])
async def test_client_deadline_racing_fail_after_on_a_hung_etcd(outer: float) -> None:
    async with EtcdServer() as server:
        breaker = CircuitBreaker(name="etcd", failure_threshold=None)
        async with BreakerClient(
            server.host, server.port, breaker=breaker, call_timeout=0.3
        ) as etcd:
            await etcd.put(b"/k", b"v")
            server.pause()
            seen = await _race(lambda: etcd.get(b"/k"), outer, 200)
            server.resume()

    assert set(seen) <= {"deadline", "outer"}, seen
    assert sum(seen.values()) == 200
    assert breaker.metrics().failures == seen["deadline"]
