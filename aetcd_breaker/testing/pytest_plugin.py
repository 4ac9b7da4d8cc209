"""pytest fixtures of the fault kit: a real etcd and a fault proxy before it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

# The kit is imported inside the fixtures: a session that uses none of them
# pays nothing, and a missing etcd binary fails only the tests that need one.
if TYPE_CHECKING:
    from aetcd_breaker.testing import EtcdServer, FaultProxy


@pytest.fixture
def etcd_server() -> Iterator[EtcdServer]:
    """A fresh etcd for one test, always stopped and removed afterwards."""
    from aetcd_breaker.testing import EtcdServer

    with EtcdServer() as server:
        yield server


@pytest.fixture(scope="session")
def etcd_server_session() -> Iterator[EtcdServer]:
    """One etcd shared by the session; tests must not kill or pause it."""
    from aetcd_breaker.testing import EtcdServer

    with EtcdServer() as server:
        yield server


@pytest.fixture
async def fault_proxy(
    etcd_server: EtcdServer, anyio_backend_name: str
) -> AsyncIterator[FaultProxy]:
    """A `FaultProxy` in front of ``etcd_server``, in pass-through mode.

    An anyio fixture that needs the asyncio backend (aetcd is asyncio-only):
    use it from tests marked ``pytest.mark.anyio`` with ``anyio_backend``
    returning ``"asyncio"``.
    """
    from aetcd_breaker.testing import FaultProxy, KitError

    if anyio_backend_name != "asyncio":
        raise KitError(f"fault_proxy needs asyncio, not {anyio_backend_name}")
    async with FaultProxy(etcd_server.host, etcd_server.port) as proxy:
        yield proxy
