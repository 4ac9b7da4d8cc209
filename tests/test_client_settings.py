"""BreakerClient checks aetcd's connection arguments and names a bad one."""

from __future__ import annotations

import math
from typing import Any

import pytest

from aetcd_breaker import (
    BreakerClient,
    BreakerError,
    InvalidSettingError,
    InvalidSettingTypeError,
)

V, T = InvalidSettingError, InvalidSettingTypeError

BAD_ARGUMENTS: list[tuple[dict[str, Any], type[BreakerError], str]] = [
    ({"host": ""}, V, "host"),
    ({"host": 5}, T, "host"),
    ({"port": 70000}, V, "port"),
    ({"port": 0}, V, "port"),
    ({"port": -1}, V, "port"),
    ({"port": "2379"}, T, "port"),
    ({"port": True}, T, "port"),
    ({"timeout": -1}, V, "timeout"),
    ({"timeout": 0}, V, "timeout"),
    ({"timeout": math.nan}, V, "timeout"),
    ({"timeout": "x"}, T, "timeout"),
    # Past about 9.2e9 s gRPC's deadline overflows: every call would fail.
    ({"timeout": 1e10}, V, "timeout"),
    ({"timeout": 1e308}, V, "timeout"),
    ({"timeout": 2**2000}, V, "timeout"),
    ({"call_timeout": 2**2000}, V, "call_timeout"),
    ({"connect_wait_timeout": -1}, V, "connect_wait_timeout"),
    ({"connect_wait_timeout": "x"}, T, "connect_wait_timeout"),
    ({"options": 5}, T, "options"),
    ({"username": "root"}, V, "password"),
    ({"password": "secret"}, V, "username"),
    ({"username": 5, "password": "secret"}, T, "username"),
]


@pytest.mark.parametrize(
    ("arguments", "error", "setting"),
    BAD_ARGUMENTS,
    ids=[repr(a) for a, _, _ in BAD_ARGUMENTS],
)
def test_a_bad_connection_argument_raises_an_error_naming_it(
    arguments: dict[str, Any], error: type[BreakerError], setting: str
) -> None:
    with pytest.raises(error) as raised:
        BreakerClient(**arguments)

    assert raised.value.setting == setting  # type: ignore[attr-defined]
    assert str(raised.value).startswith(f"{setting} must be")
    assert isinstance(raised.value, ValueError if error is V else TypeError)


async def _async_classifier(exc: BaseException) -> bool:
    return False


def test_an_async_classifier_is_refused_by_name() -> None:
    # Its coroutine, never awaited, is true: every error would count.
    with pytest.raises(InvalidSettingTypeError) as raised:
        BreakerClient(is_failure=_async_classifier)

    assert raised.value.setting == "is_failure"
    assert raised.value.value is _async_classifier


def test_a_password_never_appears_in_the_error() -> None:
    with pytest.raises(InvalidSettingError) as raised:
        BreakerClient(password="hunter2")

    assert "hunter2" not in str(raised.value)


def test_good_connection_arguments_are_accepted() -> None:
    client = BreakerClient(
        "127.0.0.1",
        2379,
        username="root",
        password="pw",
        timeout=2,
        options={"grpc.keepalive_time_ms": 10000},
        connect_wait_timeout=1.5,
    )
    assert "127.0.0.1:2379" in repr(client)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_connect_sets_up_the_channel_without_touching_the_network(
    anyio_backend: str,
) -> None:
    # Nothing listens on port 1: aetcd's connect() makes no call either.
    async with BreakerClient("127.0.0.1", 1) as client:
        await client.connect()
        assert client.breaker.metrics().calls == 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_call_under_trio_says_the_client_is_asyncio_only(
    anyio_backend: str,
) -> None:
    client = BreakerClient("127.0.0.1", 1)

    with pytest.raises(RuntimeError, match="asyncio only"):
        await client.get(b"/k")

    assert client.breaker.metrics().calls == 0
