"""Guarded watches: creation under the breaker, a stream whose failure counts.

The call deadline bounds creating the stream, never its life: a watch may
stay idle for hours. A stream that fails with an error that counts (etcd
went away) records a failure in the breaker. Waiting for an event is not a
call to etcd, so it neither runs under the deadline nor trips the breaker.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import aetcd
import anyio

from ._session import Session

__all__ = ["Watch", "first_event", "open_watch"]

_ENDED: Final = "the watch ended before an event arrived: the client was closed"


class Watch:
    """A running watch; iterate it with ``async for`` to receive its events.

    Made by :meth:`BreakerClient.watch`. The iteration ends when the watch is
    cancelled or the client is closed, and raises the stream's error if the
    stream fails (the error is counted by the breaker if it counts).
    """

    __slots__ = ("_client", "_raw", "_session")

    def __init__(
        self, raw: aetcd.Watch, client: aetcd.Client, session: Session
    ) -> None:
        self._raw = raw
        self._client = client
        self._session = session

    @property
    def watch_id(self) -> int:
        """The id etcd gave the watch."""
        watch_id: int = self._raw.watch_id
        return watch_id

    def __aiter__(self) -> _Events:
        return _Events(self._raw.__aiter__(), self._session)

    async def cancel(self) -> None:
        """Stop the watch: its iteration ends, and etcd is told to drop it."""
        try:
            await self._raw.cancel()
        except AttributeError:
            # On a closed aetcd client, cancel() ends the iteration and then
            # reaches for a watcher that no longer exists.
            if self._client.channel is not None:
                raise

    def __repr__(self) -> str:
        return f"<Watch watch_id={self.watch_id}>"


class _Events:
    """The events of one iteration over a :class:`Watch`."""

    __slots__ = ("_events", "_session")

    def __init__(self, events: Any, session: Session) -> None:
        self._events = events
        self._session = session

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> aetcd.Event:
        try:
            return await self._events.__anext__()
        except StopAsyncIteration:
            raise
        except Exception as exc:
            self._session.stream_failed(exc)
            raise


async def _create(client: aetcd.Client, *args: Any) -> tuple[aetcd.Client, Any]:
    return client, await aetcd.Client.watch(client, *args)


async def open_watch(session: Session, call_timeout: object, *args: Any) -> Watch:
    """Create a watch under the breaker; ``args`` go to ``aetcd.Client.watch``."""
    task = asyncio.current_task()
    assert task is not None
    session.creating.add(task)
    try:
        client, raw = await session.call(_create, call_timeout, *args)
    finally:
        session.creating.discard(task)
        session.aborted.discard(task)
    return Watch(raw, client, session)


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
