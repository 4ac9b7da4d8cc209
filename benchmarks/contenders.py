"""Adapters for each library: guard a call in its natural form, trip it open."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable
from datetime import timedelta
from importlib.metadata import version
from typing import Protocol

import aiobreaker
import circuitbreaker
import purgatory
import pybreaker
from purgatory.domain.model import OpenedState

from aetcd_breaker.core import (
    CircuitBreaker,
    CircuitOpenError,
    CountWindow,
    FailureRate,
)

Fn = Callable[[], Awaitable[object]]

OURS = "aetcd_breaker"
THRESHOLD = 5
"""Consecutive failures that open every contender (each library's default)."""
OPEN_FOR = 3600
"""Seconds a tripped contender stays open: longer than any measurement."""


async def noop() -> None:
    return None


async def fail() -> None:
    raise RuntimeError("the dependency is down")


async def must_not_run() -> None:
    raise AssertionError("a rejected call ran")


def _fail_sync() -> None:
    raise RuntimeError("the dependency is down")


class Caller(Protocol):
    """Something that makes calls in a loop: a library, or no breaker at all."""

    name: str

    async def loop(self, fn: Fn, n: int) -> int:
        """Make ``n`` guarded calls of ``fn`` in the form the library's docs use.

        Return how many were rejected; the caller drops each rejection error.
        """
        ...


class Contender(Caller, Protocol):
    """What a figure needs of a circuit-breaker library."""

    async def new_breaker(self, name: str) -> object:
        """A new breaker as a service would make one: closed, in memory."""
        ...

    async def setup(self) -> None:
        """Make a fresh breaker for :meth:`loop` to use."""
        ...

    async def trip(self) -> None:
        """Open the breaker the way production does: with failing calls."""
        ...

    def limitation(self) -> str | None:
        """What this library does with a coroutine function, if it is wrong."""
        ...


class Bare:
    """No breaker: ``await fn()``, the baseline every overhead is taken from."""

    name = "bare await"

    async def loop(self, fn: Fn, n: int) -> int:
        rejected = 0
        for _ in range(n):
            try:
                await fn()
            except CircuitOpenError:
                rejected += 1
        return rejected


class Ours:
    """aetcd_breaker's ``await breaker.call(fn)``."""

    def __init__(
        self,
        name: str = OURS,
        *,
        call_timeout: float | None = None,
        window: int | None = None,
    ) -> None:
        self.name = name
        self._call_timeout = call_timeout
        self._window = window

    async def new_breaker(self, name: str) -> CircuitBreaker:
        size = self._window
        return CircuitBreaker(
            name=name,
            failure_threshold=THRESHOLD,
            reset_timeout=OPEN_FOR,
            call_timeout=self._call_timeout,
            window=None if size is None else CountWindow(size),
            trip_rules=() if size is None else (FailureRate(0.5),),
        )

    async def setup(self) -> None:
        self.breaker = await self.new_breaker("bench")

    async def loop(self, fn: Fn, n: int) -> int:
        call = self.breaker.call
        rejected = 0
        for _ in range(n):
            try:
                await call(fn)
            except CircuitOpenError:
                rejected += 1
        return rejected

    async def trip(self) -> None:
        await _trip(self)

    def limitation(self) -> str | None:
        return None


class AioBreaker:
    """aiobreaker's ``await breaker.call_async(fn)``, in-memory storage."""

    name = f"aiobreaker {version('aiobreaker')}"

    async def new_breaker(self, name: str) -> aiobreaker.CircuitBreaker:
        return aiobreaker.CircuitBreaker(
            fail_max=THRESHOLD, timeout_duration=timedelta(seconds=OPEN_FOR), name=name
        )

    async def setup(self) -> None:
        self.breaker = await self.new_breaker("bench")

    async def loop(self, fn: Fn, n: int) -> int:
        call = self.breaker.call_async
        rejected = 0
        for _ in range(n):
            try:
                await call(fn)
            except aiobreaker.CircuitBreakerError:
                rejected += 1
        return rejected

    async def trip(self) -> None:
        await _trip(self)

    def limitation(self) -> str | None:
        return None


class Purgatory:
    """purgatory's ``async with breaker:`` with the in-memory unit of work.

    The breaker is fetched from the factory once and reused: the cheapest
    correct use, cheaper than the decorator, which fetches it on every call.
    """

    name = f"purgatory {version('purgatory')}"

    def __init__(self) -> None:
        self._factory = self._new_factory()

    @staticmethod
    def _new_factory() -> purgatory.AsyncCircuitBreakerFactory:
        return purgatory.AsyncCircuitBreakerFactory(
            default_threshold=THRESHOLD,
            default_ttl=OPEN_FOR,
            uow=purgatory.AsyncInMemoryUnitOfWork(),
        )

    async def new_breaker(self, name: str) -> object:
        return await self._factory.get_breaker(name)

    async def setup(self) -> None:
        self._factory = self._new_factory()
        self.breaker = await self._factory.get_breaker("bench")

    async def loop(self, fn: Fn, n: int) -> int:
        breaker = self.breaker
        rejected = 0
        for _ in range(n):
            try:
                async with breaker:
                    await fn()
            except OpenedState:
                rejected += 1
        return rejected

    async def trip(self) -> None:
        await _trip(self)

    def limitation(self) -> str | None:
        return None


class CircuitBreakerLib:
    """circuitbreaker's decorator, which wraps ``async def`` natively in 2.x."""

    name = f"circuitbreaker {version('circuitbreaker')}"

    async def new_breaker(self, name: str) -> circuitbreaker.CircuitBreaker:
        return circuitbreaker.CircuitBreaker(
            failure_threshold=THRESHOLD, recovery_timeout=OPEN_FOR, name=name
        )

    async def setup(self) -> None:
        self.breaker = await self.new_breaker("bench")
        self._guarded: dict[Fn, Fn] = {}

    async def loop(self, fn: Fn, n: int) -> int:
        guarded = self._guarded.get(fn)
        if guarded is None:
            guarded = self._guarded[fn] = self.breaker(fn)
        rejected = 0
        for _ in range(n):
            try:
                await guarded()
            except circuitbreaker.CircuitBreakerError:
                rejected += 1
        return rejected

    async def trip(self) -> None:
        await _trip(self)

    def limitation(self) -> str | None:
        return None


class PyBreaker:
    """pybreaker's ``breaker.call(fn)``, whose result the caller awaits.

    pybreaker guards coroutines only through tornado (``call_async``); plain
    ``call`` returns the coroutine without awaiting it, so the no-op still
    runs, but outside the breaker.
    """

    name = f"pybreaker {version('pybreaker')}"

    async def new_breaker(self, name: str) -> pybreaker.CircuitBreaker:
        return pybreaker.CircuitBreaker(
            fail_max=THRESHOLD, reset_timeout=OPEN_FOR, name=name
        )

    async def setup(self) -> None:
        self.breaker = await self.new_breaker("bench")

    async def loop(self, fn: Fn, n: int) -> int:
        call = self.breaker.call
        rejected = 0
        for _ in range(n):
            try:
                await call(fn)
            except pybreaker.CircuitBreakerError:
                rejected += 1
        return rejected

    async def trip(self) -> None:
        # Only a plain function that raises counts as a failure in pybreaker.
        for _ in range(THRESHOLD):
            with contextlib.suppress(Exception):
                self.breaker.call(_fail_sync)

    def limitation(self) -> str | None:
        returned = self.breaker.call(noop)
        if not inspect.iscoroutine(returned):
            return None
        returned.close()
        return "call() returns the coroutine un-awaited, counted as a success"


async def _trip(contender: Contender) -> None:
    for _ in range(THRESHOLD):
        with contextlib.suppress(Exception):
            await contender.loop(fail, 1)


async def is_open(contender: Contender) -> bool:
    """True when the next call is rejected without running."""
    try:
        return await contender.loop(must_not_run, 1) == 1
    except AssertionError:
        return False


async def cannot_guard(contender: Contender) -> str | None:
    """Say why ``contender`` cannot guard a coroutine, or None if it can.

    Checked on a fresh breaker, left fresh again: failing coroutines must
    open it, which they cannot when the library never awaits them itself.
    """
    await contender.setup()
    reason = contender.limitation()
    await _trip(contender)
    opened = await is_open(contender)
    await contender.setup()
    if opened:
        return reason
    closed = f"{THRESHOLD} failing coroutines left it closed"
    return f"{reason}; {closed}" if reason else closed


def peers() -> list[Contender]:
    return [AioBreaker(), Purgatory(), CircuitBreakerLib(), PyBreaker()]
