"""Waiting for a lock's holder to let go: a watch whose wait is not a call.

Creating the watch is a guarded call, registered like every watch creation
so that closing the client can cut it off (aetcd's creation waits on a
condition that closing never signals). Waiting for the event is not a call:
no deadline but the lock's own, and no outcome, except that a stream which
fails because etcd went away counts, like any watch stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Final

import aetcd
import anyio

from ..core._clock import scope_until

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["wait_for_delete"]

_ENDED: Final = "the watch on the lock's holder ended: the client was closed"


async def _watch_deletes(client: aetcd.Client, key: bytes, start_revision: int) -> Any:
    """aetcd's own watch of ``key``'s deletions from ``start_revision`` on."""
    return await aetcd.Client.watch(
        client, key, start_revision=start_revision, kind=aetcd.EventKind.DELETE
    )


async def wait_for_delete(
    session: Session,
    key: bytes,
    start_revision: int,
    seconds: float,
    give_up: float | None,
) -> None:
    """Return once ``key`` is deleted at or after ``start_revision``, or at ``give_up``.

    ``seconds`` is the deadline of creating the watch. Also returns when the
    revision was compacted away: the caller reads the key afresh anyway.
    """
    task = asyncio.current_task()
    assert task is not None
    session.creating.add(task)
    try:
        watch = await session.call(_watch_deletes, seconds, key, start_revision)
    finally:
        session.creating.discard(task)
        session.aborted.discard(task)
    scope = scope_until(session.clock, give_up)
    try:
        with scope:
            async for _ in watch:
                return
        if not scope.cancelled_caught:
            raise aetcd.ConnectionFailedError(_ENDED)
    except aetcd.RevisionCompactedError:
        return
    except Exception as exc:
        session.stream_failed(exc)
        raise
    finally:
        with anyio.move_on_after(session.timeout, shield=True):
            # On a closed client, aetcd's cancel() reaches for a watcher that
            # no longer exists.
            with contextlib.suppress(AttributeError):
                await watch.cancel()
