"""BreakerClient: every operation of ``aetcd.Client``, each under a circuit breaker."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Self

import aetcd

from ..core import CircuitBreaker, InvalidSettingTypeError
from ..core._settings import is_async
from ._channel import LOCAL_SUBCHANNEL_POOL, Channels, Inner, factory_of
from ._cluster import ClusterOps
from ._connection import check_connection, check_flag
from ._keys import KeyOps
from ._options import NO_FALLBACK, configure
from ._session import Session, check_timeout
from .outcomes import is_etcd_failure
from .retry import Retry
from .stale import StaleCache

__all__ = ["DEFAULT_CALL_TIMEOUT", "SLOW_CALL_TIMEOUT", "BreakerClient"]

DEFAULT_CALL_TIMEOUT: Final = 5.0
"""Seconds an etcd call may take when neither the call, the client nor the
breaker sets a deadline."""

SLOW_CALL_TIMEOUT: Final = 60.0
"""Seconds ``snapshot``, ``defragment`` and ``compact(physical=True)`` may take
when neither the call nor the client sets a deadline."""


class BreakerClient(KeyOps, ClusterOps):
    """An etcd client whose every call runs under a circuit breaker.

    Takes ``aetcd.Client``'s connection arguments and offers its operations
    with the same names and parameters, plus a keyword-only ``call_timeout``
    on each. A call's deadline is, in order: its own ``call_timeout``, the
    client's, the breaker's, else :data:`DEFAULT_CALL_TIMEOUT`. Errors reach
    the caller unchanged; rejections raise :class:`EtcdCircuitOpenError` and
    deadlines :class:`EtcdCallTimeoutError`, both ``aetcd.ClientError``.

    Args:
        breaker: the breaker to use; by default a new one named ``"etcd"``.
        call_timeout: the client's deadline in seconds for each call.
        is_failure: which errors of an etcd call count as failures; by
            default :func:`is_etcd_failure`, whatever the breaker's own
            ``is_failure`` says (that one still applies to ``breaker.call``).
        retry: a :class:`Retry` for the idempotent operations (reads, status,
            members, hash, lease info); a call can still ask with ``retry=``.
        fallback: a value, or a function of the error, that the key reads
            answer with when rejected or failing; :data:`NO_FALLBACK`: none.
        stale_reads: a :class:`StaleCache`: ``get`` and ``get_prefix`` then
            answer a rejected or failing read with its last good answer,
            marked :class:`Stale`.

    ``timeout`` is passed on to aetcd as the gRPC deadline of each request.
    Watches, leases, members and locks handed out talk to etcd through this
    client. After an outage, a half-open trial whose channel is still failing
    runs on a fresh channel, so recovery does not wait out gRPC's reconnect
    backoff (see :attr:`reconnects`). Use ``async with`` to close the
    session, or call :meth:`close`; ``async with`` (or :meth:`connect`)
    opens a closed one again.
    """

    __slots__ = ("_session", "transactions")

    def __init__(
        self,
        host: str = "localhost",
        port: int = 2379,
        username: str | None = None,
        password: str | None = None,
        timeout: float | None = None,
        options: dict[str, Any] | None = None,
        connect_wait_timeout: int = 3,
        *,
        breaker: CircuitBreaker | None = None,
        call_timeout: float | None = None,
        is_failure: Callable[[BaseException], bool] | None = None,
        retry: Retry | None = None,
        fallback: Any = NO_FALLBACK,
        stale_reads: StaleCache | None = None,
    ) -> None:
        grpc_options = check_connection(
            host, port, username, password, timeout, options, connect_wait_timeout
        )
        client = aetcd.Client(
            host,
            port,
            username,
            password,
            timeout,
            # A channel of its own backoff; see _channel.py.
            {LOCAL_SUBCHANNEL_POOL: 1, **grpc_options},
            connect_wait_timeout,
        )
        self._setup(client, True, breaker, call_timeout, is_failure)
        configure(self._session, retry, fallback, stale_reads)

    @classmethod
    def wrap(
        cls,
        client: aetcd.Client,
        *,
        breaker: CircuitBreaker | None = None,
        call_timeout: float | None = None,
        is_failure: Callable[[BaseException], bool] | None = None,
        close_client: bool = False,
        retry: Retry | None = None,
        fallback: Any = NO_FALLBACK,
        stale_reads: StaleCache | None = None,
    ) -> Self:
        """Guard an ``aetcd.Client`` you already have.

        Closing the BreakerClient closes ``client`` only with
        ``close_client=True``. After an outage the BreakerClient may move to
        a fresh client of the same settings (its own, closed with it).
        """
        if not isinstance(client, aetcd.Client):
            raise InvalidSettingTypeError("client", client, "an aetcd.Client")
        check_flag("close_client", close_client)
        self = cls.__new__(cls)
        self._setup(client, close_client, breaker, call_timeout, is_failure)
        configure(self._session, retry, fallback, stale_reads)
        return self

    def _setup(
        self,
        client: aetcd.Client,
        owned: bool,
        breaker: CircuitBreaker | None,
        call_timeout: float | None,
        is_failure: Callable[[BaseException], bool] | None,
    ) -> None:
        if breaker is None:
            breaker = CircuitBreaker(name="etcd", is_failure=is_etcd_failure)
        elif not isinstance(breaker, CircuitBreaker):
            raise InvalidSettingTypeError("breaker", breaker, "a CircuitBreaker")
        if is_failure is None:
            is_failure = is_etcd_failure
        elif not callable(is_failure) or is_async(is_failure):
            raise InvalidSettingTypeError(
                "is_failure", is_failure, "a plain function (not async)"
            )
        own = None if call_timeout is None else check_timeout(call_timeout)
        channels = Channels(Inner(client, owned=owned), factory_of(client))
        self._session = Session(
            breaker,
            channels,
            is_failure,
            own or breaker.call_timeout or DEFAULT_CALL_TIMEOUT,
            own or SLOW_CALL_TIMEOUT,
        )
        self.transactions = aetcd.Transactions()

    def __repr__(self) -> str:
        client = self._session.channels.current.client
        breaker = self.breaker
        return (
            f"<BreakerClient {client._host}:{client._port} "
            f"breaker={breaker.name!r} {breaker.state.value}>"
        )

    @property
    def breaker(self) -> CircuitBreaker:
        """The breaker every call of this client runs under."""
        return self._session.breaker

    @property
    def reconnects(self) -> int:
        """How often a trial moved to a fresh channel to skip gRPC's backoff."""
        return self._session.channels.reconnects

    @property
    def retries(self) -> int:
        """Attempts made again after a failure, inside their calls' permits."""
        return self._session.retries

    @property
    def fallbacks(self) -> int:
        """Calls answered by a fallback instead of failing."""
        return self._session.fallbacks

    @property
    def stale_answers(self) -> int:
        """Reads answered from the stale-read cache instead of etcd."""
        return self._session.stale_answers

    async def connect(self) -> None:
        """Set up the session's channel, as ``aetcd.Client.connect`` does.

        Like aetcd's, it makes no network call, so it is not guarded: the
        first real call is the first contact with etcd. Calls connect by
        themselves; this exists for code written against aetcd, and to open
        the client again after :meth:`close`.
        """
        await self._session.reopen()
        await self._session.channels.current.client.connect()

    async def close(self) -> None:
        """Close the session; calls, watches and keep-alives running end at once.

        Calls cut off by the close raise ``aetcd.ConnectionFailedError``
        without counting; watches end their iteration. The lease keepers and
        locks of this client stop refreshing and report their leases lost
        with the reason :data:`CLOSED`; those they would revoke on exit are
        revoked if etcd answers within a second, the others expire by their
        TTL. Unlike aetcd's, a closed client does not reconnect by itself:
        a call made after ``close()`` raises :class:`ClientClosedError` at
        once, uncounted, until ``async with`` or :meth:`connect` opens the
        client again (they wait for a close under way to end first). A
        client wrapped with ``close_client=False`` stays usable: its aetcd
        client is yours.
        """
        await self._session.aclose()

    async def __aenter__(self) -> Self:
        await self._session.reopen()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
