"""Counting gRPC requests in a client's HTTP/2 byte stream."""

from __future__ import annotations

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME_HEADER = 9
_HEADERS = 0x1


class StreamCounter:
    """Walks the frame headers of one client-to-server HTTP/2 connection.

    Every gRPC call opens a new stream with a HEADERS frame on a stream id
    above all earlier ones; HEADERS on a known stream (trailers) are not new.
    Payloads are skipped, never copied. A connection that does not start with
    the HTTP/2 preface is not counted at all.
    """

    __slots__ = ("_header", "_last_stream", "_preface", "_skip", "_valid")

    def __init__(self) -> None:
        self._preface = b""
        self._header = b""
        self._skip = 0
        self._last_stream = 0
        self._valid = True

    def feed(self, data: bytes) -> int:
        """Consume the next bytes sent to the server; return new streams seen."""
        if not self._valid:
            return 0
        pos = 0
        if len(self._preface) < len(PREFACE):
            pos = len(PREFACE) - len(self._preface)
            self._preface += data[:pos]
            if not PREFACE.startswith(self._preface):
                self._valid = False
                return 0

        new = 0
        end = len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            need = _FRAME_HEADER - len(self._header)
            header = self._header + data[pos : pos + need]
            pos += need
            if len(header) < _FRAME_HEADER:
                self._header = header
                break
            self._header = b""
            self._skip = int.from_bytes(header[:3])
            if header[3] == _HEADERS:
                stream = int.from_bytes(header[5:9]) & 0x7FFFFFFF
                if stream > self._last_stream:
                    self._last_stream = stream
                    new += 1
        return new
