"""One guarded etcd call: admission, deadline, outcome, and the client it runs on."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from threading import get_ident
from typing import TYPE_CHECKING, Any, Final, TypeVar

import aetcd
import structlog

from ..core import CircuitBreaker, InvalidSettingError, InvalidSettingTypeError
from ..core._deadline import (
    Timers,
    current_task,
    redeliver_cancellation,
    start_deadline,
    timed_out,
    timers_for,
)
from ..core.breaker import ADMIT
from ..core.guard import Permit
from ..core.policies import finite
from ._arguments import name_refused
from ._channel import Channels, Inner
from .errors import ClientClosedError, EtcdCallTimeoutError, EtcdCircuitOpenError

if TYPE_CHECKING:
    from .leases import KeepAlive
    from .objects import Lease
    from .retry import Retry
    from .stale import StaleCache

__all__ = ["Op", "Session", "check_timeout"]

T = TypeVar("T")
Op = Callable[..., Awaitable[T]]
"""An operation: awaited with the inner aetcd client and the call's arguments."""

_log = structlog.get_logger("aetcd_breaker")
_ASYNCIO_ONLY: Final = (
    "BreakerClient runs on asyncio only, like aetcd; under trio, guard your "
    "own calls with CircuitBreaker"
)
_running_loop = asyncio._get_running_loop
_keys = itertools.count()
_CLOSED: Final = "the BreakerClient was closed while the call ran"
_CUT_OFF: Final = "the call was cut off: its gRPC channel was closed under it"


def check_timeout(value: object, setting: str = "call_timeout") -> float:
    """Validate a deadline in seconds: a finite number above zero."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSettingTypeError(setting, value, "a number of seconds")
    if not (value > 0 and finite(value)):
        raise InvalidSettingError(setting, value, "a finite number above 0")
    return float(value)


class Session:
    """The breaker, the deadlines and the inner clients of one BreakerClient."""

    __slots__ = (
        "aborted",
        "breaker",
        "budgeted",
        "channels",
        "clock",
        "closed",
        "closing",
        "creating",
        "fallback",
        "fallbacks",
        "is_failure",
        "keepers",
        "loop",
        "plain",
        "retries",
        "retry",
        "revoking",
        "slow_timeout",
        "stale",
        "stale_answers",
        "thread",
        "timeout",
        "timers",
    )

    def __init__(
        self,
        breaker: CircuitBreaker,
        channels: Channels,
        is_failure: Callable[[BaseException], bool],
        timeout: float,
        slow_timeout: float,
    ) -> None:
        self.breaker = breaker
        self.clock = breaker.clock
        # The loop of the last call and its deadline timers; see bind().
        self.loop: asyncio.AbstractEventLoop | None = None
        self.timers: Timers | None = None
        self.thread = 0
        self.channels = channels
        self.is_failure = is_failure
        self.timeout = timeout
        self.slow_timeout = slow_timeout
        # Tasks creating a watch, and those of them that close() cut off:
        # aetcd's watch creation waits on a condition that closing the client
        # never signals, so close() has to cancel them itself.
        self.creating: set[asyncio.Task[Any]] = set()
        self.aborted: set[asyncio.Task[Any]] = set()
        # The lease keep-alives running in the background; close() ends them.
        self.keepers: set[KeepAlive] = set()
        # The revocations of closes under way: a close waits for every one of
        # them before it closes the channels, which would cut them off.
        self.revoking: set[asyncio.Task[None]] = set()
        self.closed = False
        """Set by :meth:`aclose`, until :meth:`reopen`; while it runs only, when
        the client stays open."""
        # One future per close under way, done when it is: a reopen waits for
        # them, or the close would end by closing the client under it.
        self.closing: set[asyncio.Future[None]] = set()
        # Tasks whose call runs under a deadline cut to their own time budget
        # (a lock's timeout): its expiry says nothing about etcd.
        self.budgeted: set[asyncio.Task[Any]] = set()
        # The client-wide options, set by _options.configure; ``plain`` says
        # that none is in effect, so a call without options checks one flag.
        self.retry: Retry | None = None
        self.fallback: object = None
        self.stale: StaleCache | None = None
        self.plain = True
        self.retries = self.fallbacks = self.stale_answers = 0

    def bind(self) -> asyncio.Task[Any]:
        """The current task, with the session bound to the loop running it.

        Asking asyncio for the running loop costs a system call (it checks
        the process id), as much as the rest of a guarded call; so a call
        looks for its task in the loop of the last call, and only when that
        finds none (the first call, or a new loop) comes here. A call from
        another thread comes here too: the last loop may be running there,
        and its task is not this call's.
        """
        loop = _running_loop()
        if loop is None:
            raise RuntimeError(_ASYNCIO_ONLY)
        task = current_task(loop)
        if task is None:
            raise RuntimeError("a guarded etcd call needs to run inside a task")
        self.loop = loop
        self.thread = get_ident()
        self.timers = timers_for(loop, self.clock)
        return task

    async def call(self, op: Op[T], call_timeout: object, /, *args: Any) -> T:
        """Run ``op(inner_client, *args)`` under the breaker and a deadline."""
        task = current_task(self.loop)
        if task is None or get_ident() != self.thread:
            task = self.bind()
        seconds = self.timeout if call_timeout is None else check_timeout(call_timeout)
        breaker = self.breaker
        permit = breaker.acquire()
        if permit is None:
            raise breaker.open_error(EtcdCircuitOpenError)
        channels = self.channels
        inner = channels.current if permit.kind == ADMIT else channels.for_trial()
        inner.calls += 1
        # The deadline, entered by hand: no object to make on the way.
        base = task.cancelling()
        key = next(_keys)
        registry = self.timers.registry(seconds)  # type: ignore[union-attr]
        registry[key] = task
        try:
            result = await op(inner.client, *args)
        except asyncio.CancelledError as exc:
            error = await redeliver_cancellation(exc)
            inner.calls -= 1
            if inner.retired:
                channels.drained(inner)
            late = timed_out(task, base, key, registry, error)
            self.settle(permit, late, seconds, inner, error)
            if error is exc:
                raise
            raise error from exc
        except BaseException as exc:
            inner.calls -= 1
            if inner.retired:
                channels.drained(inner)
            late = timed_out(task, base, key, registry, exc)
            self.settle(permit, late, seconds, inner, exc)
            name_refused(op, args, exc)
            raise
        inner.calls -= 1
        if inner.retired:
            channels.drained(inner)
        if registry.pop(key, None) is None:
            # The deadline fired as the call returned: its request is void.
            task.uncancel()
        breaker.record_success(permit)
        return result

    async def direct(self, op: Op[T], seconds: float, /, *args: Any) -> T:
        """Run ``op`` outside the breaker: not admitted, no outcome recorded.

        For a lease keeper whose lease is about to run out while the breaker
        rejects calls. It runs under a deadline of ``seconds``, on a fresh
        channel if the current one waits out gRPC's reconnect backoff.
        """
        if _running_loop() is None:
            raise RuntimeError(_ASYNCIO_ONLY)
        channels = self.channels
        inner = channels.for_trial()
        inner.calls += 1
        deadline = start_deadline(self.clock, seconds)
        try:
            result = await op(inner.client, *args)
        except BaseException as exc:
            if deadline.expired(exc):
                raise EtcdCallTimeoutError(self.breaker.name, seconds) from None
            raise
        finally:
            inner.calls -= 1
            if inner.retired:
                channels.drained(inner)
        deadline.expired(None)
        return result

    def slow(self, call_timeout: object) -> object:
        """The deadline of a slow-by-nature call when the call names none."""
        return self.slow_timeout if call_timeout is None else call_timeout

    def settle(
        self,
        permit: Permit,
        expired: bool,
        seconds: float,
        inner: Inner,
        exc: BaseException,
    ) -> None:
        """Record how a call ended, and raise what the caller should see.

        ``expired`` says that the call's deadline, and nothing else, ended
        it; ``exc`` is what the call raised. A deadline that was the task's
        own time budget (``budgeted``) expiring is no outcome.
        """
        breaker = self.breaker
        if expired:
            if self.budgeted and asyncio.current_task() in self.budgeted:
                breaker.release(permit)
            else:
                breaker.record_failure(permit, timed_out=True)
            raise EtcdCallTimeoutError(breaker.name, seconds) from None
        if isinstance(exc, ClientClosedError):
            # Refused before it reached etcd: no outcome, like a rejection.
            breaker.release(permit)
            return
        if isinstance(exc, Exception):
            if self.counts(exc):
                breaker.record_failure(permit)
            else:
                breaker.record_ignored(permit)
            return
        if not isinstance(exc, asyncio.CancelledError):
            breaker.release(permit)
            return
        task = asyncio.current_task()
        assert task is not None
        if task in self.aborted:
            self.aborted.discard(task)
            # Our own cancel request: take it back, and let a caller's win.
            if task.uncancel() == 0:
                breaker.release(permit)
                raise aetcd.ConnectionFailedError(_CLOSED) from exc
        elif task.cancelling() == 0:
            # Nobody cancelled this task: closing the aetcd client did, which
            # cancels its calls with a bare CancelledError.
            if inner.closed:
                breaker.release(permit)
                raise aetcd.ConnectionFailedError(_CLOSED) from exc
            breaker.record_failure(permit)
            raise aetcd.ConnectionFailedError(_CUT_OFF) from exc
        breaker.release(permit)

    def counts(self, exc: BaseException) -> bool:
        """Classify an error with the client's table; a broken classifier counts.

        A call refused because the session is closed never counts.
        """
        if isinstance(exc, ClientClosedError):
            return False
        try:
            return bool(self.is_failure(exc))
        except Exception as error:
            # A broken log pipeline must not reach the caller either: it
            # would replace the call's own error and skip its outcome.
            with contextlib.suppress(Exception):
                _log.error(
                    "aetcd_breaker.classifier_failed",
                    breaker=self.breaker.name,
                    error=repr(error),
                    exc_info=error,
                )
            return True

    def stream_failed(self, exc: BaseException) -> None:
        """A running watch stream failed: record it if it counts.

        A stream cut off by closing the client says nothing about etcd.
        """
        if not self.closed and self.counts(exc):
            breaker = self.breaker
            # A stream failure is news of now, not a late answer to an old
            # call: it belongs to the current generation.
            permit = Permit(breaker.generation, ADMIT, self.clock.now())
            breaker.record_failure(permit)

    async def aclose(self) -> None:
        """End the keep-alives, cut off watch creations, close the inner clients.

        From then on calls fail at once with :class:`ClientClosedError` until
        :meth:`reopen`; unless the client is not ours to close, which stays
        open, and so does the session once the close is done.
        """
        closing = asyncio.get_running_loop().create_future()
        self.closing.add(closing)
        try:
            await self._close()
        finally:
            self.closing.discard(closing)
            closing.set_result(None)

    async def _close(self) -> None:
        from .leases import revoke_on_close

        # Keepers that start from now on end at once (KeepAlive.start), so
        # these are all there will be.
        self.closed = True
        leases = self._halt_keepers()
        if leases:
            task = asyncio.get_running_loop().create_task(revoke_on_close(self, leases))
            self.revoking.add(task)
            task.add_done_callback(self.revoking.discard)
        try:
            if self.revoking:
                # The holders are told already; the revocations go on even
                # when the caller stops waiting for them. A second close
                # (halting no keeper) waits for the first one's too.
                await asyncio.wait(set(self.revoking))
        finally:
            for task in self.creating:
                self.aborted.add(task)
                task.cancel()
            self.creating.clear()
            await self.channels.aclose()
            if self.channels.open:
                # A client that is not ours to close stays open (``wrap``),
                # and so does the session: its keepers and locks work on.
                self.closed = False

    def _halt_keepers(self) -> list[Lease]:
        """Stop every keep-alive; the leases to revoke."""
        leases = []
        while self.keepers:
            lease = self.keepers.pop().halt()
            if lease is not None:
                leases.append(lease)
        return leases

    async def reopen(self) -> None:
        """Let calls through again after :meth:`aclose`, once every close
        under way is done."""
        while self.closing:
            await asyncio.wait(set(self.closing))
        self.closed = False
        self.channels.reopen()
