"""Small pieces the breaker-core tests share: a failing dependency and a yield."""

from __future__ import annotations

import anyio


class Boom(Exception):
    """The dependency failed."""


async def ok() -> str:
    return "ok"


async def fail() -> str:
    raise Boom("down")


async def settle() -> None:
    """Give every other task a chance to run; no time passes."""
    for _ in range(10):
        await anyio.sleep(0)
