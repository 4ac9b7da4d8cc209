"""The outage demo: a steady workload through BreakerClient while etcd fails."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aetcd
import anyio
import structlog

from .core import (
    CallTimeoutError,
    CircuitBreaker,
    CircuitOpenError,
    CountWindow,
    ExponentialBackoff,
    SlowCallRate,
)
from .etcd import BreakerClient
from .testing import EtcdServer, FaultProxy

__all__ = ["FAULTS", "PhaseStats", "run_demo"]

FAULTS = ("crash", "hang", "partition", "slow")

_log = structlog.get_logger("aetcd_breaker.demo")


@dataclass
class PhaseStats:
    """What the workload saw during one phase."""

    name: str
    ok: int = 0
    failed: int = 0
    timed_out: int = 0
    rejected: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return self.ok + self.failed + self.timed_out + self.rejected

    def percentile(self, q: float) -> float:
        """Latency at quantile ``q`` in milliseconds (0 with no calls)."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@dataclass
class _Workload:
    client: BreakerClient
    workers: int
    current: PhaseStats

    async def run(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            for worker in range(self.workers):
                tg.start_soon(self._worker, worker)
            task_status.started()

    async def _worker(self, worker: int) -> None:
        rng = random.Random(worker)
        while True:
            key = f"/demo/key/{rng.randrange(32)}".encode()
            started = time.perf_counter()
            stats = self.current
            try:
                if rng.random() < 0.7:
                    await self.client.get(key)
                else:
                    await self.client.put(key, f"{worker}".encode())
            except CircuitOpenError:
                # A service would answer from a fallback here, at once.
                stats.rejected += 1
            except CallTimeoutError:
                stats.timed_out += 1
            except aetcd.ClientError:
                stats.failed += 1
            else:
                stats.ok += 1
            stats.latencies.append(time.perf_counter() - started)
            await anyio.sleep(0.02)


Action = Callable[[], Awaitable[None] | None]


def _fault_actions(
    fault: str, server: EtcdServer, proxy: FaultProxy
) -> tuple[str, Action, str, Action]:
    async def restart() -> None:
        await server.arestart()

    def heal_proxy() -> None:
        proxy.pass_through()

    def slow() -> None:
        proxy.delay(0.8)

    table: dict[str, tuple[str, Action, str, Action]] = {
        "crash": ("etcd crashed (SIGKILL)", server.kill, "restarted", restart),
        "hang": (
            "etcd hung (SIGSTOP)",
            server.pause,
            "resumed (SIGCONT)",
            server.resume,
        ),
        "partition": ("partitioned", proxy.black_hole, "healed", heal_proxy),
        "slow": ("slow (0.8 s > 0.5 s deadline)", slow, "fast again", heal_proxy),
    }
    return table[fault]


async def _act(action: Action) -> None:
    result = action()
    if result is not None:
        await result


async def run_demo(
    faults: Sequence[str] = FAULTS, *, phase_seconds: float = 5.0, workers: int = 16
) -> list[PhaseStats]:
    """Run the phases against a real embedded etcd and return their stats."""
    phases: list[PhaseStats] = []
    breaker = CircuitBreaker(
        name="etcd",
        failure_threshold=5,
        reset_timeout=ExponentialBackoff(base=0.5, factor=2.0, cap=2.0, jitter=0.2),
        window=CountWindow(50),
        trip_rules=[SlowCallRate(0.5, slow_call_duration=0.3, minimum_calls=10)],
        half_open_max_wait=2.0,
    )
    async with EtcdServer() as server, FaultProxy(server.host, server.port) as proxy:
        _log.info(
            "demo.etcd_started",
            endpoint=server.endpoint,
            proxy=proxy.endpoint,
            pid=server.pid,
            data_dir=server.data_dir,
        )
        async with BreakerClient(
            proxy.host, proxy.port, breaker=breaker, call_timeout=0.5
        ) as client:
            await client.put(b"/demo/canary", b"written before the faults")

            def begin(name: str) -> PhaseStats:
                stats = PhaseStats(name)
                phases.append(stats)
                _log.info("demo.phase", phase=name, seconds=phase_seconds)
                return stats

            # Each call counts in the phase it started in; the first phase
            # begins before the first worker does, so no call goes uncounted.
            workload = _Workload(client, workers, begin("healthy"))

            async def phase(name: str) -> None:
                workload.current = begin(name)
                await anyio.sleep(phase_seconds)

            async with anyio.create_task_group() as tg:
                await tg.start(workload.run)
                await anyio.sleep(phase_seconds)
                for fault in faults:
                    label, inject, healed, heal = _fault_actions(fault, server, proxy)
                    await _act(inject)
                    await phase(label)
                    await _act(heal)
                    await phase(healed)
                tg.cancel_scope.cancel()

            canary = await _read_when_ready(client, breaker, b"/demo/canary")
            _log.info(
                "demo.data_check",
                canary_kept=canary is not None,
                final_state=breaker.state.value,
            )
    return phases


async def _read_when_ready(
    client: BreakerClient, breaker: CircuitBreaker, key: bytes
) -> aetcd.Get | None:
    # The last fault may have left the breaker open for a while yet: wait for
    # its trial (a service would), then read through it.
    with anyio.fail_after(60):
        while True:
            await breaker.wait_ready()
            try:
                return await client.get(key, call_timeout=5.0)
            except CircuitOpenError:
                continue


def format_table(phases: Sequence[PhaseStats]) -> str:
    """The per-phase table the demo prints at the end."""
    head = (
        f"{'phase':<32} {'calls':>6} {'ok':>6} {'failed':>6} {'timeout':>7} "
        f"{'rejected':>8} {'p50 ms':>7} {'p99 ms':>7}"
    )
    rows = [head, "-" * len(head)]
    for p in phases:
        rows.append(
            f"{p.name:<32} {p.calls:>6} {p.ok:>6} {p.failed:>6} {p.timed_out:>7} "
            f"{p.rejected:>8} {p.percentile(0.5):>7.2f} {p.percentile(0.99):>7.2f}"
        )
    return "\n".join(rows)
