"""A loopback TCP proxy that puts switchable network faults in front of etcd."""

from __future__ import annotations

import asyncio
import enum
import random
import socket
from types import TracebackType
from typing import Self

from ._checks import check_host, check_port, check_seconds
from ._errors import KitError
from ._frames import StreamCounter
from ._links import Link, Pipe, reset_socket

_CHUNK = 64 * 1024
_BACKLOG = 1024


class Mode(enum.Enum):
    """What the proxy does with traffic."""

    PASS_THROUGH = "pass_through"
    BLACK_HOLE = "black_hole"
    DELAY = "delay"
    RESET = "reset"
    REFUSE = "refuse"


class FaultProxy:
    """A TCP proxy on a free loopback port in front of one upstream server.

    Modes switch at any time and apply to open connections as well as new
    ones: `pass_through`, `black_hole`, `delay`, `reset_connections` and
    `refuse`. It counts the gRPC requests it forwards (`requests`). It runs on
    the asyncio loop that called `start`, which must be a selector loop (the
    default on POSIX), and is not thread-safe.
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1"
    ) -> None:
        self._upstream = (
            check_host("upstream_host", upstream_host),
            check_port("upstream_port", upstream_port),
        )
        self._host = check_host("host", host)
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._links: set[Link] = set()
        self._mode = Mode.PASS_THROUGH
        self._delay = (0.0, 0.0)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._requests = 0
        self._counted = asyncio.Event()
        self._stopped = False

    @property
    def host(self) -> str:
        """The address clients connect to."""
        return self._host

    @property
    def port(self) -> int:
        """The port clients connect to; kept across `refuse`."""
        if not self._port:
            raise KitError("fault proxy is not started")
        return self._port

    @property
    def endpoint(self) -> str:
        """``host:port`` for clients."""
        return f"{self._host}:{self.port}"

    @property
    def mode(self) -> Mode:
        """The fault in force."""
        return self._mode

    @property
    def requests(self) -> int:
        """gRPC requests (new HTTP/2 streams) forwarded upstream so far."""
        return self._requests

    @property
    def connections(self) -> int:
        """Client connections open through the proxy."""
        return len(self._links)

    async def start(self) -> None:
        """Start listening on the running asyncio loop."""
        if self._loop is not None:
            raise KitError("fault proxy is already started")
        self._loop = asyncio.get_running_loop()
        self._listen()

    async def stop(self) -> None:
        """Stop listening and reset every connection; idempotent."""
        self._stopped = True
        self._unlisten()
        links = list(self._links)
        for link in links:
            link.reset()
        tasks = [link.task for link in links if link.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    aclose = stop

    def pass_through(self) -> None:
        """Forward everything unchanged; heals every other mode."""
        self._set_mode(Mode.PASS_THROUGH)

    def black_hole(self) -> None:
        """Hold all traffic, a network partition: calls hang, nothing errors.

        Connections stay open and new ones are accepted; bytes already sent
        are kept, not dropped, and flow again after `pass_through`.
        """
        self._set_mode(Mode.BLACK_HOLE)

    def delay(self, low: float, high: float | None = None) -> None:
        """Delay every chunk in both directions by `low` seconds, or by a
        random time between `low` and `high`; byte order is kept."""
        low = check_seconds("delay low", low, zero=True)
        high = low if high is None else check_seconds("delay high", high, zero=True)
        if not low <= high:
            raise ValueError(f"need 0 <= low <= high, got low={low} high={high}")
        self._delay = (low, high)
        self._set_mode(Mode.DELAY)

    def reset_connections(self) -> None:
        """Reset (RST) every open connection, and new ones until the mode
        changes. The resets go out at the loop's next iteration."""
        self._set_mode(Mode.RESET)
        for link in list(self._links):
            link.reset()

    def refuse(self) -> None:
        """Stop listening: new connects get ECONNREFUSED, open ones go on."""
        self._set_mode(Mode.REFUSE)

    async def wait_for_requests(self, count: int) -> None:
        """Return once at least `count` requests were forwarded upstream."""
        while self._requests < count:
            await self._counted.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _set_mode(self, mode: Mode) -> None:
        if self._loop is None or self._stopped:
            raise KitError("fault proxy is not running")
        self._mode = mode
        if mode is Mode.BLACK_HOLE:
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode is Mode.REFUSE:
            self._unlisten()
        elif self._listener is None:
            self._listen()

    def _listen(self) -> None:
        # A plain socket watched with add_reader, so that refusing and listening
        # again happen synchronously inside the mode switch.
        assert self._loop is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(_BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise KitError(f"fault proxy cannot listen on port {self._port}") from exc
        self._port = sock.getsockname()[1]
        self._listener = sock
        self._loop.add_reader(sock.fileno(), self._accept)

    def _unlisten(self) -> None:
        if self._listener is not None and self._loop is not None:
            self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None

    def _accept(self) -> None:
        assert self._listener is not None and self._loop is not None
        for _ in range(_BACKLOG):
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError:
                # Out of file descriptors, say: leave the rest in the backlog.
                return
            if self._mode is Mode.RESET:
                reset_socket(client)
                client.close()
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = Link(client)
            self._links.add(link)
            link.task = self._loop.create_task(self._relay(link))

    async def _relay(self, link: Link) -> None:
        try:
            # A connection made during a black hole is held before it reaches
            # upstream; the client sees a connect that never gets an answer.
            await self._flowing.wait()
            client_in, client_out = await asyncio.open_connection(
                sock=link.client, limit=_CHUNK
            )
            link.add(client_out)
            upstream_in, upstream_out = await asyncio.open_connection(
                *self._upstream, limit=_CHUNK
            )
            link.add(upstream_out)
            upstream_out.transport.get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )

            up = Pipe(client_in, upstream_out, StreamCounter())
            down = Pipe(upstream_in, client_out, None)
            async with asyncio.TaskGroup() as group:
                for pipe in (up, down):
                    group.create_task(self._read(pipe))
                    group.create_task(self._write(pipe))
        except Exception:
            # A refused upstream or a reset on either side: the client sees a
            # reset too, as it would without the proxy.
            link.reset()
        finally:
            link.close()
            self._links.discard(link)

    async def _read(self, pipe: Pipe) -> None:
        assert self._loop is not None
        while True:
            data = await pipe.reader.read(_CHUNK)
            if data and not pipe.held and self._mode is Mode.PASS_THROUGH:
                # Nothing waits ahead of this chunk, so sending it right away
                # keeps the byte order and saves a hop through the writer task.
                self._send(pipe, data)
                await pipe.writer.drain()
                continue

            due = self._loop.time()
            if self._mode is Mode.DELAY:
                due += random.uniform(*self._delay)
            pipe.held += 1
            await pipe.queue.put((due, data))
            if not data:
                return

    async def _write(self, pipe: Pipe) -> None:
        assert self._loop is not None
        while True:
            due, data = await pipe.queue.get()
            wait = due - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._flowing.wait()
            if not data:
                if pipe.writer.can_write_eof():
                    pipe.writer.write_eof()
                return
            self._send(pipe, data)
            pipe.held -= 1
            await pipe.writer.drain()

    def _send(self, pipe: Pipe, data: bytes) -> None:
        if pipe.counter is not None:
            self._count(pipe.counter.feed(data))
        pipe.writer.write(data)

    def _count(self, new_requests: int) -> None:
        if new_requests:
            self._requests += new_requests
            self._counted.set()
            self._counted = asyncio.Event()
