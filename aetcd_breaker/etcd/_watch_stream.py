"""One gRPC watch stream with one watcher on it, and the probes that keep it honest."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

import aetcd
import grpc  # type: ignore[import-untyped]
from aetcd import rpc
from aetcd.exceptions import _handle_exception

from ..core import InvalidSettingError, InvalidSettingTypeError
from ..core.policies import check_count
from ._channel import Inner
from ._connection import check_flag
from .errors import WatchCompactedError

__all__ = [
    "Stream",
    "StreamSilentError",
    "WatchSpec",
    "open_stream",
]

_PROGRESS: Final = rpc.WatchRequest(progress_request=rpc.WatchProgressRequest())
_INT64_MAX: Final = 2**63 - 1
_ENDED: Final = "etcd ended the watch stream"
_CUT_OFF: Final = "the watch stream was cut off: its gRPC channel was closed"
_FILTERS: Final = {
    aetcd.EventKind.PUT: (rpc.WatchCreateRequest.FilterType.NODELETE,),
    aetcd.EventKind.DELETE: (rpc.WatchCreateRequest.FilterType.NOPUT,),
}


# aetcd ships no type information, so mypy sees its classes as Any.
class StreamSilentError(aetcd.ConnectionTimeoutError):  # type: ignore[misc]
    """etcd sent nothing on a watch stream, not even an answer to a probe."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer on the watch stream for {seconds:g} s")


@dataclass(frozen=True, slots=True)
class WatchSpec:
    """What to watch, as given to ``watch()``; the same for every stream."""

    key: bytes
    range_end: bytes | None
    start_revision: int | None
    progress_notify: bool
    filters: tuple[int, ...]
    prev_kv: bool
    watch_id: int | None
    fragment: bool

    @classmethod
    def of(
        cls,
        key: bytes,
        range_end: bytes | None,
        start_revision: int | None,
        progress_notify: bool,
        kind: aetcd.EventKind | None,
        prev_kv: bool,
        watch_id: int | None,
        fragment: bool,
    ) -> WatchSpec:
        """Check ``watch()``'s arguments; ``start_revision`` 0 means "from now"."""
        if not isinstance(key, bytes):
            raise InvalidSettingTypeError("key", key, "bytes")
        if range_end is not None and not isinstance(range_end, bytes):
            raise InvalidSettingTypeError("range_end", range_end, "bytes or None")
        for flag, on in (
            ("progress_notify", progress_notify),
            ("prev_kv", prev_kv),
            ("fragment", fragment),
        ):
            check_flag(flag, on)
        if kind is not None and not isinstance(kind, aetcd.EventKind):
            raise InvalidSettingTypeError("kind", kind, "an aetcd.EventKind")
        filters = () if kind is None else _FILTERS[kind]
        for setting, value in (
            ("start_revision", start_revision),
            ("watch_id", watch_id),
        ):
            if value is not None:
                check_count(setting, value, low=0)
                if value > _INT64_MAX:
                    # etcd's revisions and watch ids are int64: protobuf would
                    # raise a bare ValueError from inside the call.
                    raise InvalidSettingError(setting, value, "at most 2**63 - 1")
        start = start_revision or None
        return cls(
            key, range_end, start, progress_notify, filters, prev_kv, watch_id, fragment
        )

    def request(self, start_revision: int | None) -> Any:
        """The request that creates the watcher, from ``start_revision``."""
        create = rpc.WatchCreateRequest(
            key=self.key,
            progress_notify=self.progress_notify,
            filters=self.filters,
            prev_kv=self.prev_kv,
            fragment=self.fragment,
        )
        if self.range_end is not None:
            create.range_end = self.range_end
        if start_revision is not None:
            create.start_revision = start_revision
        if self.watch_id is not None:
            create.watch_id = self.watch_id
        return rpc.WatchRequest(create_request=create)


def aetcd_error(exc: grpc.aio.AioRpcError) -> Exception:
    """The error aetcd raises for ``exc``, so that the outcome table reads it."""
    try:
        _handle_exception(exc)
    except Exception as error:
        return error
    return Exception(exc)  # pragma: no cover - aetcd always raises


def _retrieve(task: asyncio.Future[Any]) -> None:
    # Nobody awaits a probe, nor the read of a closed stream: fetch their
    # errors so that asyncio does not log them as never retrieved.
    if not task.cancelled():
        task.exception()


async def open_stream(
    client: aetcd.Client,
    spec: WatchSpec,
    start: int | None,
    interval: float,
    timeout: float,
) -> Stream:
    """Open a stream on ``client``'s channel and wait until etcd created the watcher.

    ``start`` is the first revision to watch; ``None`` watches from now.
    """
    await client.connect()
    call = rpc.WatchStub(client.channel).Watch(metadata=client.metadata)
    try:
        await call.write(spec.request(start))
        response = await call.read()
    except grpc.aio.AioRpcError as exc:
        raise aetcd_error(exc) from exc
    except BaseException:
        call.cancel()
        raise
    if response is grpc.aio.EOF:
        raise aetcd.ConnectionFailedError(_ENDED)
    if response.compact_revision:
        call.cancel()
        raise WatchCompactedError(response.compact_revision, start or 0)
    if response.canceled or not response.created:
        call.cancel()
        reason = response.cancel_reason or "no reason given"
        raise aetcd.ClientError(f"etcd refused the watch: {reason}")
    return Stream(call, start, response, interval, timeout)


class Stream:
    """A running watch stream; :meth:`next` reads it and notices silence.

    After ``interval`` seconds without a response, :meth:`next` asks etcd for
    a progress report; etcd answers even when no key changed. Nothing at all
    within ``timeout`` more seconds means the stream is dead.
    """

    __slots__ = (
        "_call",
        "_interval",
        "_reading",
        "_timeout",
        "_writing",
        "created_revision",
        "inner",
        "start",
        "watch_id",
    )

    def __init__(
        self,
        call: Any,
        start: int | None,
        created: Any,
        interval: float,
        timeout: float,
    ) -> None:
        self._call = call
        self._interval = interval
        self._timeout = timeout
        self._reading: asyncio.Future[Any] | None = None
        self._writing: asyncio.Future[Any] | None = None
        self.start = start
        self.watch_id: int = created.watch_id
        self.created_revision: int = created.header.revision
        # The client holder the stream runs on, when known: a stream cut off
        # by closing its session must end the watch, not resume it.
        self.inner: Inner | None = None

    async def next(self) -> Any:
        """The next response of any kind; raise if the stream failed or fell silent."""
        reading = self._reading
        if reading is None:
            reading = self._reading = asyncio.ensure_future(self._call.read())
        if not reading.done():
            await asyncio.wait((reading,), timeout=self._interval)
        if not reading.done():
            writing = self._writing
            if writing is None or writing.done():
                writing = self._writing = asyncio.ensure_future(
                    self._call.write(_PROGRESS)
                )
                writing.add_done_callback(_retrieve)
            await asyncio.wait((reading,), timeout=self._timeout)
            if not reading.done():
                raise StreamSilentError(self._interval + self._timeout)
        self._reading = None
        if reading.cancelled():
            raise aetcd.ConnectionFailedError(_CUT_OFF)
        exc = reading.exception()
        if isinstance(exc, grpc.aio.AioRpcError):
            raise aetcd_error(exc) from exc
        if exc is not None:
            raise exc
        response = reading.result()
        if response is grpc.aio.EOF:
            raise aetcd.ConnectionFailedError(_ENDED)
        return response

    def close(self) -> list[asyncio.Future[Any]]:
        """End the stream (etcd drops its watcher); return the tasks still ending."""
        self._call.cancel()
        ending = []
        for task in (self._reading, self._writing):
            if task is not None and not task.done():
                task.add_done_callback(_retrieve)
                task.cancel()
                ending.append(task)
        self._reading = self._writing = None
        return ending
