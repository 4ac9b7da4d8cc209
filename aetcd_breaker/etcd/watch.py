"""Guarded watches that lose nothing: they resume after outages where they stopped."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import weakref
from typing import Any, Final

import aetcd
import anyio

from ._session import Session, check_timeout
from ._watch_position import Position
from ._watch_pump import Opener, Pump
from ._watch_stream import Stream, WatchSpec, open_stream
from .errors import WatchCompactedError

__all__ = [
    "PROGRESS_INTERVAL",
    "PROGRESS_TIMEOUT",
    "Watch",
    "WatchCompactedError",
    "WatchSpec",
    "first_event",
    "open_watch",
]

PROGRESS_INTERVAL: Final = 2.0
"""Seconds without a response after which a watch asks etcd for a progress report."""

PROGRESS_TIMEOUT: Final = 2.0
"""Seconds a watch waits for any answer to that request before it gives the
stream up as dead; silence is noticed within the sum of both."""

_ENDED: Final = "the watch ended before an event arrived: the client was closed"


class Watch:
    """A watch; iterate it with ``async for`` to receive ``aetcd.Event`` objects.

    Made by :meth:`BreakerClient.watch`. Creating it is a guarded call; the
    call deadline bounds the creation, never the watch's life. Then it
    survives outages: when its stream fails (etcd killed or unreachable, or
    silent for ``progress_interval`` plus ``progress_timeout`` seconds), the
    failure is recorded in the breaker, the watch waits until the breaker
    admits a call, and opens a new stream from just after the last event it
    delivered (from its start if it delivered none).

    Guarantee: every event reaches the consumer once, in revision order,
    also when a revision holds several events and a stream broke among them.
    When etcd compacted the revision the watch needs (a watch idle through
    an outage and a compaction, say), iterating raises
    :class:`WatchCompactedError` rather than going on from "now". Other
    answers that end a watch (permission denied, say) are raised as etcd's
    errors. The iteration ends when the watch is cancelled or the client is
    closed.

    One iteration at a time: a new ``async for`` takes over from an earlier
    one, which ends. Leaving an ``async for``, or cancelling the task in it,
    stops the stream behind it; the next one resumes where that one stopped.
    """

    __slots__ = (
        "_ended",
        "_error",
        "_events",
        "_opener",
        "_position",
        "_pump",
        "_session",
        "_spec",
        "_stream",
        "_watch_id",
    )

    def __init__(
        self,
        session: Session,
        spec: WatchSpec,
        opener: Opener,
        position: Position,
        stream: Stream | None,
    ) -> None:
        self._session = session
        self._spec = spec
        self._opener = opener
        self._position = position
        self._stream = stream
        self._pump: Pump | None = None
        self._events: weakref.ref[_Events] | None = None
        self._ended = False
        self._error: BaseException | None = None
        self._watch_id = None if stream is None else stream.watch_id

    @property
    def watch_id(self) -> int | None:
        """The id etcd gave the watch on its first stream."""
        return self._watch_id

    def __repr__(self) -> str:
        return f"<Watch watch_id={self.watch_id} at={self._position.resume_revision()}>"

    def __aiter__(self) -> _Events:
        events = _Events(self)
        self._events = weakref.ref(events)
        return events

    async def cancel(self) -> None:
        """Stop the watch: its iteration ends, and etcd drops the watcher."""
        self._ended = True
        stream = self._stream
        if stream is not None:
            self._stream = None
            stream.close()
        pump = self._pump
        if pump is not None:
            pump.stop()
            await pump.wait()

    aclose = cancel

    def __del__(self) -> None:
        # Dropped before its first iteration: nothing else would ever end the
        # stream it was created with, and etcd would keep its watcher.
        stream = self._stream
        if stream is not None:
            self._stream = None
            with contextlib.suppress(Exception):
                stream.close()

    def _start(self, events: _Events) -> Pump:
        if self._error is not None:
            # Raised once already: a fresh copy keeps tracebacks from growing.
            raise copy.copy(self._error)
        current = None if self._events is None else self._events()
        if current is not events or self._ended:
            raise StopAsyncIteration
        old = self._pump
        if old is not None:
            old.stop()
        stream, self._stream = self._stream, None
        pump = self._pump = Pump(self._session, self._opener, self._position, stream)
        return pump

    def _end(self, pump: Pump) -> BaseException:
        """What ends an iteration whose pump has stopped."""
        if pump.closed:
            self._ended = True
        error = pump.error
        if error is None:
            return StopAsyncIteration()
        self._ended = True
        self._error = error
        return error

    def _event(self, raw: Any) -> aetcd.Event:
        prev = raw.prev_kv if self._spec.prev_kv else None
        return aetcd.Event(raw.type, raw.kv, prev)


class _Events:
    """One iteration over a :class:`Watch`; dropping it stops its pump."""

    __slots__ = ("__weakref__", "_next", "_pump", "_response", "_stream", "_watch")

    def __init__(self, watch: Watch) -> None:
        self._watch = watch
        self._pump: Pump | None = None
        self._stream: Stream | None = None
        self._response: Any = None
        self._next = 0

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> aetcd.Event:
        watch = self._watch
        pump = self._pump
        if pump is None:
            pump = self._pump = watch._start(self)
        elif watch._pump is not pump:
            # A newer iteration took over; what this one still holds, the
            # newer one delivers.
            raise StopAsyncIteration
        position = watch._position
        while True:
            response = self._response
            if response is not None:
                events = response.events
                end = len(events)
                while self._next < end:
                    raw = events[self._next]
                    self._next += 1
                    revision = raw.kv.mod_revision
                    new = position.admit(self._stream, revision)
                    if self._next == end and not response.fragment:
                        position.complete(revision)
                    if new:
                        return watch._event(raw)
                if not end:
                    # A progress notification of the watcher itself: it comes
                    # after every event up to its revision.
                    position.complete(response.header.revision)
                self._response = None
            try:
                item = await pump.handoff.get()
            except BaseException:
                # Cancelled. Stop the stream now: the error's traceback can keep
                # this iterator alive long after the caller dropped it. A next
                # call resumes on a new stream.
                pump.stop()
                self._pump = None
                raise
            if item is None:
                raise watch._end(pump)
            self._stream, self._response = item
            self._next = 0

    def __del__(self) -> None:
        pump = self._pump
        if pump is not None:
            # RuntimeError: the event loop is closed already; nothing runs.
            with contextlib.suppress(RuntimeError):
                pump.stop()


async def _create(
    client: aetcd.Client,
    session: Session,
    spec: WatchSpec,
    start: int | None,
    interval: float,
    timeout: float,
) -> Stream:
    inner = session.channels.current
    stream = await open_stream(client, spec, start, interval, timeout)
    if inner.client is client:
        stream.inner = inner
    return stream


async def _open(
    session: Session,
    spec: WatchSpec,
    call_timeout: object,
    interval: float,
    timeout: float,
    start: int | None,
) -> Stream:
    return await session.call(
        _create, call_timeout, session, spec, start, interval, timeout
    )


async def open_watch(
    session: Session,
    spec: WatchSpec,
    call_timeout: object,
    progress_interval: float | None,
    progress_timeout: float | None,
) -> Watch:
    """Create a watch under the breaker: its first stream, then the :class:`Watch`."""
    interval = check_timeout(
        PROGRESS_INTERVAL if progress_interval is None else progress_interval,
        "progress_interval",
    )
    timeout = check_timeout(
        PROGRESS_TIMEOUT if progress_timeout is None else progress_timeout,
        "progress_timeout",
    )
    opener = functools.partial(_open, session, spec, call_timeout, interval, timeout)
    task = asyncio.current_task()
    assert task is not None
    session.creating.add(task)
    try:
        stream = await opener(spec.start_revision)
    finally:
        session.creating.discard(task)
        session.aborted.discard(task)
    start = spec.start_revision
    done = stream.created_revision if start is None else start - 1
    return Watch(session, spec, opener, Position(done), stream)


async def first_event(
    watch: Watch, timeout: float | None, cancel_timeout: float
) -> aetcd.Event:
    """Wait for the first event of ``watch``, then cancel the watch.

    ``timeout`` keeps aetcd's meaning: with no event in time, raise
    ``aetcd.WatchTimeoutError``.
    """
    try:
        async with asyncio.timeout(timeout) as scope:
            async for event in watch:
                return event
        raise aetcd.ConnectionFailedError(_ENDED)
    except TimeoutError:
        if scope.expired():
            raise aetcd.WatchTimeoutError from None
        raise
    finally:
        # Shielded: a caller's cancellation must not leave the watch
        # registered with etcd; bounded, so that it cannot hang either.
        with anyio.move_on_after(cancel_timeout, shield=True):
            await watch.cancel()
