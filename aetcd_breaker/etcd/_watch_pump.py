"""The task behind one iteration of a watch: it reads the stream and re-creates it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

import aetcd

from ..core import CircuitOpenError, State
from ._session import Session
from ._watch_position import Position
from ._watch_stream import Stream
from .errors import WatchCompactedError

__all__ = ["Handoff", "Opener", "Pump"]

Opener = Callable[[int | None], Awaitable[Stream]]
"""Opens a stream from a revision (``None``: from now), as a guarded call."""

Item = tuple[Stream, Any]

# Pauses between attempts while the breaker keeps admitting them (a breaker
# that trips on rates may take many failures to open): doubling, capped.
_PAUSE_BASE: Final = 0.05
_PAUSE_CAP: Final = 2.0
_ADMITTING: Final = (State.CLOSED, State.DISABLED)


class _SessionClosedError(Exception):
    """The session was closed: the watch ends."""


class Handoff:
    """One response at a time, from the pump to the consumer."""

    __slots__ = ("_drained", "_item", "_space", "_waiter", "closed")

    def __init__(self) -> None:
        self._item: Item | None = None
        self._space = asyncio.Event()
        self._space.set()
        self._drained = asyncio.Event()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False

    async def put(self, item: Item) -> None:
        await self._space.wait()
        self._space.clear()
        self._drained.clear()
        self._item = item
        self._wake()

    async def drained(self) -> None:
        """Return once the consumer has asked for more than was handed over."""
        await self._drained.wait()

    async def get(self) -> Item | None:
        """The next item, or ``None`` once the pump has ended."""
        if self._item is None:
            # The consumer is done with every earlier item.
            self._drained.set()
        while self._item is None and not self.closed:
            # A cancelled consumer only cancels this wake-up call; the item
            # stays in the slot for its next try.
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        item = self._item
        if item is not None:
            self._item = None
            self._space.set()
        return item

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


async def _until_cancelled() -> None:
    await asyncio.get_running_loop().create_future()


class Pump:
    """Keeps one watch stream going for one consumer.

    The pump reads one response ahead of the consumer and hands it over
    through a one-slot :class:`Handoff`. When the stream fails, it records
    the failure, waits until the consumer has taken in everything it was
    handed (so that the consumer's :class:`Position` is exact: resuming
    earlier than needed could run into a compaction for nothing), waits
    until the breaker admits a call, and opens a new stream from there.

    Closing the session must end the watch, also when the client is not ours
    to close (``BreakerClient.wrap``): the pump keeps a sentinel task among
    the session's ``creating`` tasks, which ``close()`` cancels and marks
    aborted.
    """

    __slots__ = (
        "_opener",
        "_position",
        "_sentinel",
        "_session",
        "_stream",
        "_task",
        "closed",
        "error",
        "handoff",
    )

    def __init__(
        self,
        session: Session,
        opener: Opener,
        position: Position,
        stream: Stream | None,
    ) -> None:
        self._session = session
        self._opener = opener
        self._position = position
        self._stream = stream
        self.handoff = Handoff()
        self.error: BaseException | None = None
        self.closed = False
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run())
        self._sentinel = loop.create_task(_until_cancelled())
        session.creating.add(self._sentinel)
        self._sentinel.add_done_callback(self._sentinel_done)
        self._task.add_done_callback(self._done)

    def stop(self) -> None:
        """Stop the pump; its consumer's iteration ends."""
        self._task.cancel()

    async def wait(self) -> None:
        """Return once the pump and everything it started have ended."""
        await asyncio.wait((self._task, self._sentinel))

    async def _run(self) -> None:
        stream = self._stream
        failures = 0
        try:
            while True:
                if stream is None:
                    # Resume from an exact position: once the consumer has
                    # taken in everything it was handed (or still holds).
                    await self.handoff.drained()
                    stream = self._stream = await self._reopen(failures)
                try:
                    response = await stream.next()
                except Exception as exc:
                    self._stream = None
                    await _finish(stream)
                    if self._session_closed(stream):
                        return
                    self._session.stream_failed(exc)
                    stream = None
                    failures += 1
                    continue
                failures = 0
                if response.compact_revision:
                    start = stream.start
                    if start is None:
                        start = self._position.resume_revision()
                    self.error = WatchCompactedError(response.compact_revision, start)
                    return
                if response.canceled:
                    reason = response.cancel_reason or "no reason given"
                    self.error = aetcd.ClientError(
                        f"etcd cancelled the watch: {reason}"
                    )
                    return
                # Answers to probes (watch id -1) only prove the stream alive:
                # before etcd 3.5.8 they may overtake events still on the way.
                if response.watch_id == stream.watch_id:
                    await self.handoff.put((stream, response))
        except _SessionClosedError:
            return
        except Exception as exc:
            self.error = exc
        finally:
            stream = self._stream
            if stream is not None:
                self._stream = None
                await _finish(stream)

    async def _reopen(self, failures: int) -> Stream:
        breaker = self._session.breaker
        while True:
            if failures > 1 and breaker.state in _ADMITTING:
                await asyncio.sleep(min(_PAUSE_CAP, _PAUSE_BASE * 2 ** (failures - 1)))
            await breaker.wait_ready()
            try:
                return await self._opener(self._position.resume_revision())
            except CircuitOpenError:
                # Another caller took the trial permit: wait for its outcome.
                continue
            except Exception as exc:
                if self._session_closed(None):
                    raise _SessionClosedError from exc
                if not self._session.counts(exc):
                    raise
                failures += 1

    def _session_closed(self, stream: Stream | None) -> bool:
        inner = None if stream is None else stream.inner
        if (
            self._sentinel in self._session.aborted
            # A session that closed its own client before this pump started.
            or (inner is not None and inner.closed and not inner.retired)
        ):
            self.closed = True
        return self.closed

    def _sentinel_done(self, sentinel: asyncio.Task[None]) -> None:
        aborted = self._session.aborted
        if sentinel in aborted:
            aborted.discard(sentinel)
            self.closed = True
            self._task.cancel()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._session.creating.discard(self._sentinel)
        self._sentinel.cancel()
        self.handoff.close()


async def _finish(stream: Stream) -> None:
    ending = stream.close()
    if ending:
        await asyncio.wait(ending)
