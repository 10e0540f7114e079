"""A small retrying client with a cache: the shape of many asyncio libraries' suites."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def retry(call: Callable[[], Awaitable[T]], *, attempts: int = 5, backoff: float = 1.0) -> T:
    """Call until it succeeds, sleeping backoff, 2*backoff, ... between attempts."""
    for attempt in range(attempts):
        try:
            return await call()
        except ConnectionError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")


class Cache:
    """Values that expire after ttl seconds of loop time."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._values: dict[str, tuple[float, object]] = {}

    def put(self, key: str, value: object) -> None:
        self._values[key] = (asyncio.get_running_loop().time() + self.ttl, value)

    def get(self, key: str) -> object | None:
        entry = self._values.get(key)
        if entry is None or entry[0] <= asyncio.get_running_loop().time():
            return None
        return entry[1]
