"""Backpressure helpers: a producer must block on a full queue and advance one item per slot."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import pytest

import labkit

VIRTUAL = pytest.mark.asyncio(loop_factories=["virtual"])
Producer = Callable[[asyncio.Queue[int], Iterable[int]], Coroutine[Any, Any, None]]


async def produce(queue: asyncio.Queue[int], items: Iterable[int]) -> None:
    """The correct producer: waits for room."""
    for item in items:
        await queue.put(item)


async def produce_dropping(queue: asyncio.Queue[int], items: Iterable[int]) -> None:
    """Seeded bug: drops items when the queue is full instead of waiting."""
    for item in items:
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            pass
        await asyncio.sleep(0)


async def produce_with_logging(queue: asyncio.Queue[int], items: Iterable[int]) -> None:
    """Correct, with two extra awaits per item: sleep(0)-counting tests break on it."""
    for item in items:
        await asyncio.sleep(0)
        await queue.put(item)
        await asyncio.sleep(0)


async def produce_in_pairs(queue: asyncio.Queue[int], items: Iterable[int]) -> None:
    """Seeded bug: waits for two free slots before each pair, so one free slot is not enough."""
    batch: list[int] = []
    for item in items:
        batch.append(item)
        if len(batch) == 2:
            while queue.maxsize - queue.qsize() < 2:
                await asyncio.sleep(0.01)
            for queued in batch:
                queue.put_nowait(queued)
            batch.clear()


async def produce_unbounded(queue: asyncio.Queue[int], items: Iterable[int]) -> None:
    """Seeded bug: ignores the bound with a private side buffer, never blocking."""
    overflow: list[int] = []
    for item in items:
        if queue.full():
            overflow.append(item)
        else:
            queue.put_nowait(item)
    await asyncio.Event().wait()


async def three_line_test(producer: Producer) -> None:
    """The kit's backpressure test, as a learner would write it."""
    queue: labkit.CountingQueue[int] = labkit.CountingQueue(maxsize=5)
    task = asyncio.create_task(producer(queue, range(100)), name="producer")
    try:
        blocked = await labkit.assert_blocks(task, at="put", progress=queue)
        queue.get_nowait()
        await blocked.assert_advanced(1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@VIRTUAL
@pytest.mark.parametrize("producer", [produce, produce_with_logging])
async def test_the_three_line_test_passes_correct_producers(producer: Producer) -> None:
    await three_line_test(producer)


@VIRTUAL
@pytest.mark.parametrize(
    ("producer", "message"),
    [
        (
            produce_dropping,
            "task 'producer' is not blocked once the loop settled: it already finished "
            "(returned None)",
        ),
        (produce_in_pairs, "task 'producer' is blocked once the loop settled, but not in 'put'"),
        (produce_unbounded, "but not in 'put': it waits at test_backpressure.py:"),
    ],
)
async def test_the_three_line_test_catches_each_seeded_bug(
    producer: Producer, message: str
) -> None:
    with pytest.raises(AssertionError) as caught:
        await three_line_test(producer)
    assert message in str(caught.value)


@VIRTUAL
async def test_assert_advanced_counts_exactly() -> None:
    queue: labkit.CountingQueue[int] = labkit.CountingQueue(maxsize=3)
    task = asyncio.create_task(produce(queue, range(10)), name="producer")
    blocked = await labkit.assert_blocks(task, at="put", progress=queue)
    queue.get_nowait()
    with pytest.raises(AssertionError) as caught:
        await blocked.assert_advanced(2)
    assert str(caught.value).startswith(
        "task 'producer' advanced 1 item(s), expected exactly 2; it waits at test_backpressure.py:"
    )
    assert str(caught.value).endswith("in produce: await queue.put(item) -> in asyncio Queue.put")
    task.cancel()


@VIRTUAL
async def test_a_producer_that_waits_elsewhere_after_advancing_is_named() -> None:
    async def rate_limited(queue: asyncio.Queue[int], items: Iterable[int]) -> None:
        for item in items:
            await queue.put(item)
            if queue.full():
                await asyncio.sleep(1)  # pause when full

    with pytest.raises(AssertionError) as caught:
        await three_line_test(rate_limited)
    message = str(caught.value)
    assert message.startswith("task 'producer' is blocked once the loop settled, but not in 'put'")
    assert message.endswith("await asyncio.sleep(1)  # pause when full -> in asyncio sleep")


@VIRTUAL
async def test_the_stale_sleep_zero_form_breaks_on_an_extra_await() -> None:
    async def stale(producer: Producer) -> int:
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=5)
        task = asyncio.create_task(producer(queue, range(100)), name="producer")
        for _ in range(6):
            await asyncio.sleep(0)
        produced = queue.qsize()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return produced

    assert await stale(produce) == 5
    assert await stale(produce_with_logging) < 5  # same behaviour, the guess no longer fits


@VIRTUAL
async def test_is_blocked_tells_waiting_from_ready() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(0)
    putter = asyncio.create_task(queue.put(1), name="putter")
    assert not labkit.is_blocked(putter)  # created, not started: ready to run
    await asyncio.sleep(0)
    assert labkit.is_blocked(putter)
    assert labkit.is_blocked(putter, at="put")
    assert labkit.is_blocked(putter, at="Queue.put")
    assert not labkit.is_blocked(putter, at="get")
    queue.get_nowait()  # wakes the putter: ready, not blocked
    assert not labkit.is_blocked(putter)
    await putter
    assert not labkit.is_blocked(putter)


@VIRTUAL
async def test_a_task_that_never_blocks_fails_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("labkit.backpressure._SETTLE_GUARD", 0.2)

    async def spin() -> None:
        while True:
            await asyncio.sleep(0)  # polls

    task = asyncio.create_task(spin(), name="spinner")
    await asyncio.sleep(0)
    assert not labkit.is_blocked(task)
    with pytest.raises(AssertionError) as caught:
        await labkit.assert_blocks(task)
    message = str(caught.value)
    assert message.startswith("the loop never became idle in 0.2 real seconds: task 'spinner' at")
    assert "await asyncio.sleep(0)  # polls" in message
    task.cancel()


@VIRTUAL
async def test_assert_blocks_on_an_awaitable_proves_and_cancels() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
    queue.put_nowait("first")
    blocked = await labkit.assert_blocks(queue.put("second"), at="put")
    assert blocked.task.cancelled()
    assert blocked.where == "in asyncio Queue.put"
    assert queue.qsize() == 1
    with pytest.raises(AssertionError, match="'assert_blocks' is not blocked"):
        await labkit.assert_blocks(queue.get())


@VIRTUAL
async def test_blocked_on_a_line_of_text() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    task = asyncio.create_task(produce(queue, range(3)), name="producer")
    blocked = await labkit.assert_blocks(task, at="queue.put(item)")
    assert blocked.where.endswith("in produce: await queue.put(item) -> in asyncio Queue.put")
    assert blocked.where.startswith("test_backpressure.py:")
    task.cancel()


@VIRTUAL
async def test_progress_from_a_callable_and_the_end_of_the_items() -> None:
    produced: list[int] = []

    async def producer(queue: asyncio.Queue[int]) -> None:
        for item in range(3):
            await queue.put(item)
            produced.append(item)

    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=2)
    task = asyncio.create_task(producer(queue), name="producer")
    blocked = await labkit.assert_blocks(task, at="put", progress=lambda: len(produced))
    assert blocked.progress == 2
    queue.get_nowait()
    await blocked.assert_advanced(1, then_blocked=False)
    assert task.done()
    with pytest.raises(AssertionError, match="is not blocked after advancing"):
        await blocked.assert_advanced(1)


@VIRTUAL
async def test_bad_input_is_refused_with_the_fix() -> None:
    with pytest.raises(TypeError, match=r"labkit\.CountingQueue"):
        await labkit.assert_blocks(asyncio.sleep(1), progress=asyncio.Queue())
    with pytest.raises(TypeError, match="needs a task or an awaitable"):
        await labkit.assert_blocks(42)  # type: ignore[arg-type]
    blocked = await labkit.assert_blocks(asyncio.sleep(1))
    with pytest.raises(TypeError, match="needs a progress measure"):
        await blocked.assert_advanced(1)


@VIRTUAL
async def test_blocked_elsewhere_names_the_place_in_plain_words() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(0)
    with pytest.raises(AssertionError) as caught:
        await labkit.assert_blocks(queue.put(1), at="get")
    assert str(caught.value) == (
        "task 'assert_blocks' is blocked once the loop settled, but not in 'get': "
        "it waits in asyncio Queue.put"
    )


def test_counting_queue_counts_every_item() -> None:
    async def main() -> tuple[int, int]:
        queue: labkit.CountingQueue[str] = labkit.CountingQueue(maxsize=2)
        await queue.put("a")
        queue.put_nowait("b")
        await queue.get()
        return queue.put_count, queue.get_count

    assert labkit.run(main()) == (2, 1)


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_assert_blocks_also_works_on_asyncios_own_loop() -> None:
    await three_line_test(produce)
    with pytest.raises(AssertionError):
        await three_line_test(produce_dropping)


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_on_uvloop_settling_is_refused_with_the_fix() -> None:
    with pytest.raises(TypeError, match="loop_factories=\\['virtual'\\]"):
        await three_line_test(produce)


@VIRTUAL
async def test_suspended_at_describes_done_tasks() -> None:
    async def fails() -> None:
        raise ValueError("x")

    task = asyncio.create_task(fails(), name="fails")
    await asyncio.gather(task, return_exceptions=True)
    assert labkit.suspended_at(task) == "not suspended: finished (raised ValueError('x'))"

    async def returns() -> None:
        pass

    task = asyncio.create_task(returns(), name="returns")
    await task
    assert labkit.suspended_at(task) == "not suspended: finished (returned None)"
    task = asyncio.create_task(asyncio.sleep(1), name="cancelled")
    await labkit.run_until_idle()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert labkit.suspended_at(task) == "not suspended: cancelled"


@VIRTUAL
async def test_assert_blocks_accepts_a_plain_future() -> None:
    future = asyncio.get_running_loop().create_future()
    blocked = await labkit.assert_blocks(future)
    assert blocked.where == "waiting for a future to be resolved"
    future.set_result(None)
    with pytest.raises(AssertionError, match="the future is not blocked"):
        await labkit.assert_blocks(future)
