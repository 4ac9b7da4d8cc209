"""The two connections of one proxied client, and the pipes between them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

from ._frames import StreamCounter

# Chunks buffered per direction while they wait out a delay or a black hole.
_QUEUE_CHUNKS = 64
_LINGER_ZERO = struct.pack("ii", 1, 0)

ChunkQueue = asyncio.Queue[tuple[float, bytes]]


def reset_socket(sock: Any) -> None:
    """Make the next close of `sock` send RST instead of FIN (zero linger)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)


class Link:
    """One client connection and, once made, its upstream connection."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.writers: list[asyncio.StreamWriter] = []
        self.task: asyncio.Task[None] | None = None

    def add(self, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)

    def reset(self) -> None:
        """Abort both connections with RST and stop relaying."""
        reset_socket(self.client)
        for writer in self.writers:
            reset_socket(writer.get_extra_info("socket"))
            writer.transport.abort()
        if not self.writers:
            self.client.close()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    def close(self) -> None:
        """Close both connections gracefully (FIN after pending bytes)."""
        for writer in self.writers:
            writer.close()
        if not self.writers:
            self.client.close()


class Pipe:
    """One direction of a link: chunks go from `reader` to `writer` in order."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        counter: StreamCounter | None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.counter = counter
        self.queue: ChunkQueue = asyncio.Queue(_QUEUE_CHUNKS)
        # Chunks queued or in the writer's hands, not yet written.
        self.held = 0
