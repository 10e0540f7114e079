import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from retrykit import Cache, retry


def flaky(failures):
    calls = []

    async def call():
        calls.append(asyncio.get_running_loop().time())
        if len(calls) <= failures:
            raise ConnectionError("down")
        return "up"

    return call, calls


async def test_retry_backs_off():
    call, calls = flaky(3)
    assert await retry(call, backoff=0.05) == "up"
    assert len(calls) == 4


async def test_retry_gives_up():
    call, _ = flaky(10)
    with pytest.raises(ConnectionError):
        await retry(call, attempts=3, backoff=0.05)


async def test_cache_expires():
    cache = Cache(ttl=0.2)
    cache.put("k", 1)
    assert cache.get("k") == 1
    await asyncio.sleep(0.25)
    assert cache.get("k") is None


async def test_own_fixtures(watchdog, task_tracker, virtual_clock):
    assert (watchdog, task_tracker, virtual_clock) == ("file observer", [], "wall clock")


@settings(max_examples=10, deadline=None)
@given(st.integers(min_value=0, max_value=3))
async def test_retry_any_failures(failures):
    call, calls = flaky(failures)
    assert await retry(call, backoff=0.01) == "up"
    assert len(calls) == failures + 1


def test_sync(watchdog):
    assert watchdog == "file observer"
