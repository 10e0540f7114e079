"""labkit.MockAsyncIterator: yields, waits, fails and records like a scripted async generator."""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

import labkit
from labkit import MockAsyncIterator

both_loops = pytest.mark.asyncio(loop_factories=["asyncio", "virtual"])


async def total(stream: AsyncIterator[int]) -> int:
    return sum([item async for item in stream])


async def collect(stream: AsyncIterator[int], into: list[int]) -> None:
    async for item in stream:
        into.append(item)


async def first_even_leaky(stream: AsyncIterator[int]) -> int | None:
    async for item in stream:
        if item % 2 == 0:
            return item
    return None


async def first_even_closing(stream: collections.abc.AsyncGenerator[int, None]) -> int | None:
    async with contextlib.aclosing(stream):
        async for item in stream:
            if item % 2 == 0:
                return item
    return None


@both_loops
async def test_yields_every_item_then_stops() -> None:
    stream = MockAsyncIterator([1, 2, 3, 4, 5])
    assert await total(stream) == 15
    assert stream.consumed == 5
    assert stream.exhausted
    assert not stream.closed
    assert not stream.failed
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


@both_loops
async def test_is_an_async_generator_and_its_own_iterator() -> None:
    stream = MockAsyncIterator([1])
    assert isinstance(stream, collections.abc.AsyncGenerator)
    assert stream.__aiter__() is stream
    assert await anext(stream) == 1
    assert await anext(stream, "done") == "done"


@both_loops
async def test_items_are_consumed_lazily_so_endless_streams_work() -> None:
    stream = MockAsyncIterator(itertools.count())
    assert await first_even_closing(stream) == 0
    assert [await anext(stream, None)] == [None]  # closed: nothing more


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_delay_is_waited_before_each_item_in_virtual_time() -> None:
    loop = asyncio.get_running_loop()
    stream = MockAsyncIterator("abc", delay=10.0)
    seen = [(item, loop.time()) async for item in stream]
    assert seen == [("a", 10.0), ("b", 20.0), ("c", 30.0)]


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_every_item_is_a_suspension_point_even_without_a_delay() -> None:
    """Documented behaviour: the stream yields to the loop per item; a list generator never."""

    async def from_list() -> collections.abc.AsyncGenerator[int, None]:
        for item in [1, 2, 3]:
            yield item

    mocked = await labkit.cancel_at_every_await(lambda: total(MockAsyncIterator([1, 2, 3])))
    assert mocked.suspension_points == 4  # three items and the end of the stream
    listed = await labkit.cancel_at_every_await(lambda: total(from_list()), min_points=0)
    assert listed.suspension_points == 0
    assert "every item is a suspension point" in " ".join((MockAsyncIterator.__doc__ or "").split())


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_per_item_delays() -> None:
    loop = asyncio.get_running_loop()
    stream = MockAsyncIterator("abc", delay=[1.0, 0.0, 5.0])
    seen = [(item, loop.time()) async for item in stream]
    assert seen == [("a", 1.0), ("b", 1.0), ("c", 6.0)]


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_a_consumer_timeout_fires_during_a_slow_item() -> None:
    stream = MockAsyncIterator([1, 2], delay=[0.0, 60.0])
    got: list[int] = []

    async def consume() -> None:
        async with asyncio.timeout(30):
            async for item in stream:
                got.append(item)

    with pytest.raises(TimeoutError):
        await consume()
    assert got == [1]
    assert asyncio.get_running_loop().time() == 30.0


@both_loops
async def test_fail_at_raises_the_error_instead_of_that_item() -> None:
    stream = MockAsyncIterator([1, 2, 3], fail_at=2, error=ConnectionResetError("gone"))
    got: list[int] = []
    with pytest.raises(ConnectionResetError, match="gone"):
        await collect(stream, got)
    assert got == [1, 2]
    assert stream.consumed == 2
    assert stream.failed
    assert not stream.exhausted
    with pytest.raises(StopAsyncIteration):  # a failed generator is finished
        await anext(stream)


@both_loops
async def test_fail_at_zero_fails_before_the_first_item() -> None:
    stream = MockAsyncIterator([1], fail_at=0, error=ValueError)
    with pytest.raises(ValueError):
        await anext(stream)
    assert stream.consumed == 0


@both_loops
async def test_error_without_fail_at_breaks_the_stream_after_the_last_item() -> None:
    stream = MockAsyncIterator([1, 2], error=EOFError("truncated"))
    got: list[int] = []
    with pytest.raises(EOFError, match="truncated"):
        await collect(stream, got)
    assert got == [1, 2]


@both_loops
async def test_fail_at_without_error_raises_a_named_runtime_error() -> None:
    stream = MockAsyncIterator([1, 2], fail_at=1)
    await anext(stream)
    with pytest.raises(RuntimeError, match="injected failure at item 1"):
        await anext(stream)


@both_loops
async def test_aclose_is_recorded_and_ends_the_stream() -> None:
    stream = MockAsyncIterator([1, 2, 3])
    assert await anext(stream) == 1
    await stream.aclose()
    assert stream.closed
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    await stream.aclose()  # idempotent, as on a real async generator


@both_loops
async def test_assert_closed_catches_a_consumer_that_breaks_without_aclosing() -> None:
    leaky = MockAsyncIterator([1, 2, 3, 4])
    assert await first_even_leaky(leaky) == 2
    with pytest.raises(AssertionError, match=r"stopped after 2 item\(s\).*aclosing"):
        leaky.assert_closed()

    fixed = MockAsyncIterator([1, 2, 3, 4])
    assert await first_even_closing(fixed) == 2
    fixed.assert_closed()
    fixed.assert_consumed(2)


@both_loops
async def test_assert_closed_accepts_a_stream_run_to_its_end_or_its_error() -> None:
    done = MockAsyncIterator([1])
    await total(done)
    done.assert_closed()
    broken = MockAsyncIterator([1], fail_at=0)
    with pytest.raises(RuntimeError):
        await total(broken)
    broken.assert_closed()


@both_loops
async def test_assert_consumed_names_both_counts() -> None:
    stream = MockAsyncIterator([1, 2, 3])
    await anext(stream)
    stream.assert_consumed(1)
    with pytest.raises(AssertionError, match=r"take 3 item.*took 1"):
        stream.assert_consumed(3)


@both_loops
async def test_asend_records_values_and_advances() -> None:
    stream = MockAsyncIterator(["a", "b", "c"])
    assert await stream.asend(None) == "a"
    assert await stream.asend("ack-1") == "b"
    assert await stream.asend("ack-2") == "c"
    assert stream.sent == ["ack-1", "ack-2"]


@both_loops
async def test_asend_of_a_value_before_starting_is_a_type_error_like_a_real_generator() -> None:
    stream = MockAsyncIterator([1])
    with pytest.raises(TypeError, match="just-started"):
        await stream.asend("too early")


@both_loops
async def test_athrow_propagates_is_recorded_and_finishes_the_stream() -> None:
    stream = MockAsyncIterator([1, 2, 3])
    await anext(stream)
    with pytest.raises(KeyError):
        await stream.athrow(KeyError("k"))
    with pytest.raises(ValueError, match="v"):
        await stream.athrow(ValueError, "v")
    assert [type(e) for e in stream.thrown] == [KeyError, ValueError]
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


@both_loops
async def test_concurrent_steps_are_refused_like_a_running_async_generator() -> None:
    stream = MockAsyncIterator([1, 2], delay=0.01)
    first = asyncio.create_task(anext(stream), name="first-anext")
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already running"):
        await anext(stream)
    with pytest.raises(RuntimeError, match="already running"):
        await stream.aclose()
    assert await first == 1


async def real_generator() -> collections.abc.AsyncGenerator[int, None]:
    yield 1
    await asyncio.sleep(5.0)
    yield 2


@both_loops
@pytest.mark.parametrize("make", [real_generator, lambda: MockAsyncIterator([1, 2], delay=[0, 5])])
async def test_a_cancelled_step_finishes_the_stream_like_a_real_generator(make: Any) -> None:
    stream = make()
    assert await anext(stream) == 1
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await anext(stream)
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


@both_loops
async def test_aclose_during_a_delay_ends_the_stream_after_the_wait() -> None:
    stream = MockAsyncIterator([1, 2], delay=[0.0, 5.0])
    assert await anext(stream) == 1
    waiting = asyncio.create_task(anext(stream), name="waiting-anext")
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await stream.aclose()
    assert stream.consumed == 1
    stream.assert_closed()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delay": -1}, "delay must be"),
        ({"delay": [1.0, float("nan")]}, "delay must be"),
        ({"fail_at": -1}, "fail_at must be"),
        ({"fail_at": True}, "fail_at must be"),
        ({"delay": None}, "delay must be"),
        ({"error": "boom"}, "error must be an exception"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        MockAsyncIterator([1], **kwargs)  # type: ignore[arg-type]


def test_repr_shows_the_record() -> None:
    assert repr(MockAsyncIterator([1])) == "<MockAsyncIterator consumed=0 open>"
