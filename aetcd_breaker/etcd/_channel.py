"""The aetcd clients behind a BreakerClient, and their replacement after an outage.

gRPC waits out a reconnect backoff before it tries a failed address again,
so a client whose channel failed during an outage keeps failing for seconds
after etcd is back. When the breaker admits a half-open trial and the channel
is in ``TRANSIENT_FAILURE``, the trial runs on a fresh client instead (its
own channel, and with ``grpc.use_local_subchannel_pool`` its own backoff).
The old client is closed once the calls still running on it have ended:
closing a channel cancels its calls.

aetcd reconnects a closed client on its next call, so closing the session
puts a stand-in in the client's place whose calls fail at once: nothing left
running from before the close (a clean-up, a late task) opens a channel that
nobody would close again. Opening the session again puts the client back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final

import aetcd
import anyio
import grpc  # type: ignore[import-untyped]

from .errors import ClientClosedError

__all__ = ["LOCAL_SUBCHANNEL_POOL", "Channels", "Inner", "factory_of"]

LOCAL_SUBCHANNEL_POOL: Final = "grpc.use_local_subchannel_pool"
_FAILING: Final = grpc.ChannelConnectivity.TRANSIENT_FAILURE
# aetcd's close() only shuts a watcher task and a channel down; the bound is
# there so that closing a session can never hang.
_CLOSE_TIMEOUT: Final = 5.0

Factory = Callable[[], aetcd.Client]


class Inner:
    """One aetcd client and the guarded calls running on it."""

    __slots__ = ("calls", "client", "closed", "owned", "retired")

    def __init__(self, client: aetcd.Client, *, owned: bool) -> None:
        self.client = client
        self.owned = owned
        self.calls = 0
        self.retired = False
        self.closed = False

    def failing(self) -> bool:
        channel = self.client.channel
        return channel is not None and channel.get_state(False) == _FAILING


class _Closed(aetcd.Client):  # type: ignore[misc]
    """Stands in for the client of a closed session: every call fails at once.

    aetcd's operations connect first, so refusing to connect refuses them all.
    """

    def __init__(self, previous: aetcd.Client) -> None:
        super().__init__(previous._host, previous._port)
        self.previous = previous

    async def connect(self) -> None:
        raise ClientClosedError


def factory_of(client: aetcd.Client) -> Factory:
    """A function that builds a fresh client with ``client``'s settings.

    Reads the settings aetcd 1.x keeps on the client; the fresh client gets a
    local subchannel pool unless the options say otherwise.
    """
    settings = {
        "host": client._host,
        "port": client._port,
        "username": client._username,
        "password": client._password,
        "timeout": client._timeout,
        "options": {LOCAL_SUBCHANNEL_POOL: 1, **client._options},
        "connect_wait_timeout": client._connect_wait_timeout,
    }
    return lambda: aetcd.Client(**settings)


class Channels:
    """The current inner client, the retired ones, and their closing."""

    __slots__ = ("_closers", "_factory", "_retired", "current", "reconnects")

    def __init__(self, first: Inner, factory: Factory | None) -> None:
        self.current = first
        self.reconnects = 0
        self._factory = factory
        self._retired: set[Inner] = set()
        self._closers: set[asyncio.Task[None]] = set()

    def for_trial(self) -> Inner:
        """The client a half-open trial should use: a fresh one if needed."""
        inner = self.current
        if self._factory is None or not inner.failing():
            return inner
        fresh = self.current = Inner(self._factory(), owned=True)
        self.reconnects += 1
        inner.retired = True
        self._retired.add(inner)
        if inner.calls == 0:
            self.drained(inner)
        return fresh

    def drained(self, inner: Inner) -> None:
        """A retired client's last call ended: close it in the background."""
        if inner.calls or inner not in self._retired:
            return
        self._retired.discard(inner)
        if inner.owned:
            task = asyncio.get_running_loop().create_task(_close(inner))
            self._closers.add(task)
            task.add_done_callback(self._closers.discard)

    @property
    def open(self) -> bool:
        """Whether calls get through: a close put no stand-in in the client's place."""
        return not isinstance(self.current.client, _Closed)

    def reopen(self) -> None:
        """Open a closed session again, on the client it had.

        A new holder keeps the calls made from now on apart from the ones
        the close cut off.
        """
        client = self.current.client
        if isinstance(client, _Closed):
            self.current = Inner(client.previous, owned=True)

    async def aclose(self) -> None:
        """Close every client this object owns, and wait until they are closed."""
        current = self.current
        doomed = [inner for inner in self._retired if inner.owned]
        self._retired.clear()
        if current.owned:
            doomed.append(current)
            self.current = Inner(_Closed(current.client), owned=False)
        with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
            for inner in doomed:
                await _close(inner)
            while self._closers:
                await asyncio.wait(set(self._closers))


async def _close(inner: Inner) -> None:
    inner.closed = True
    # The channel may already be broken; closing it cannot fail in a way that
    # matters to anyone.
    with contextlib.suppress(Exception):
        await inner.client.close()
