"""labkit.assert_checkpoints / assert_no_checkpoints: does a block really yield to the loop?"""

from __future__ import annotations

import asyncio
import sys
import unittest.mock
from collections.abc import Coroutine
from typing import Any

import pytest

import labkit

pytest_plugins = ["pytester"]

ALL_LOOPS = pytest.mark.asyncio(loop_factories=["asyncio", "uvloop", "virtual"])
eager_only = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="asyncio.eager_task_factory is new in Python 3.12"
)


def eager_factory(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **options: Any
) -> asyncio.Task[Any]:
    """asyncio.eager_task_factory, also on uvloop 0.23 under 3.13.0 (it passes eager_start=)."""
    options.pop("eager_start", None)
    return asyncio.Task(coro, loop=loop, eager_start=True, **options)  # type: ignore[call-arg,unused-ignore]


async def no_await_inside() -> int:
    return 1


async def suspends_once() -> int:
    await asyncio.sleep(0)
    return 2


# -- what is a checkpoint ----------------------------------------------------------------


@ALL_LOOPS
async def test_sleep_zero_is_a_checkpoint() -> None:
    with labkit.assert_checkpoints():
        await asyncio.sleep(0)
    expected = r"suspended the task at .*asyncio.sleep\(0\)"
    with pytest.raises(AssertionError, match=expected), labkit.assert_no_checkpoints():
        await asyncio.sleep(0)


@ALL_LOOPS
async def test_an_async_mock_never_suspends_and_the_failure_says_so() -> None:
    fetch = unittest.mock.AsyncMock(return_value=b"data")
    with pytest.raises(AssertionError, match="AsyncMock") as info, labkit.assert_checkpoints():
        assert await fetch() == b"data"
    assert "without suspending the task even once" in str(info.value)
    with labkit.assert_no_checkpoints():
        await fetch()


@ALL_LOOPS
async def test_a_coroutine_is_a_checkpoint_only_if_something_inside_suspends() -> None:
    with labkit.assert_no_checkpoints():
        assert await no_await_inside() == 1
    with labkit.assert_checkpoints():
        assert await suspends_once() == 2


@ALL_LOOPS
async def test_a_done_future_is_no_checkpoint_a_pending_one_is() -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    done.set_result("ready")
    with labkit.assert_no_checkpoints():
        assert await done == "ready"
    pending = loop.create_future()
    loop.call_soon(pending.set_result, "later")
    with labkit.assert_checkpoints():
        assert await pending == "later"


@ALL_LOOPS
async def test_an_uncontended_lock_and_a_queue_with_room_do_not_suspend() -> None:
    lock = asyncio.Lock()
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    with labkit.assert_no_checkpoints():
        async with lock:
            await queue.put(1)
        assert await queue.get() == 1


@ALL_LOOPS
async def test_a_full_queue_suspends_and_the_report_says_where() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(0)
    asyncio.get_running_loop().call_soon(queue.get_nowait)
    with pytest.raises(AssertionError) as info, labkit.assert_no_checkpoints():
        await queue.put(1)
    message = str(info.value)
    assert "test_checkpoints.py" in message
    assert "await queue.put(1)" in message
    assert "in asyncio Queue.put" in message


@pytest.mark.asyncio(loop_factories=["asyncio", "virtual"])
async def test_drain_with_nothing_to_wait_for_is_no_checkpoint() -> None:
    async with labkit.memory_connection() as connection:
        (_, writer), (reader, _) = connection
        with labkit.assert_no_checkpoints():
            writer.write(b"small")
            await writer.drain()
        with labkit.assert_checkpoints():
            assert await reader.readexactly(5) == b"small"


# -- soundness: other ready work, exceptions, cancellation -------------------------------


@ALL_LOOPS
async def test_other_ready_tasks_do_not_make_a_block_look_suspended() -> None:
    ran: list[int] = []

    async def other(n: int) -> None:
        ran.append(n)

    tasks = [asyncio.create_task(other(n)) for n in range(3)]
    with labkit.assert_no_checkpoints():
        total = sum(range(1000))
    assert ran == []
    with labkit.assert_checkpoints():
        await asyncio.sleep(0)
    assert ran == [0, 1, 2]
    await asyncio.gather(*tasks)
    assert total == 499500


@ALL_LOOPS
async def test_assert_checkpoints_lets_an_exception_through_unchanged() -> None:
    failing = unittest.mock.AsyncMock(side_effect=ValueError("refused"))
    with pytest.raises(ValueError, match="refused"), labkit.assert_checkpoints():
        await failing()


@ALL_LOOPS
async def test_assert_no_checkpoints_checks_a_block_that_raises_too() -> None:
    async def suspend_then_fail() -> None:
        await asyncio.sleep(0)
        raise ValueError("after suspending")

    with (
        pytest.raises(AssertionError, match="suspended the task") as info,
        labkit.assert_no_checkpoints(),
    ):
        await suspend_then_fail()
    assert isinstance(info.value.__context__, ValueError)
    with pytest.raises(KeyError), labkit.assert_no_checkpoints():
        raise KeyError("no suspension, the error itself")


@ALL_LOOPS
async def test_a_cancellation_delivered_while_suspended_counts_as_a_checkpoint() -> None:
    started = asyncio.Event()
    outcome: list[str] = []

    async def waits_forever(check: str) -> None:
        probe = labkit.assert_checkpoints() if check == "yes" else labkit.assert_no_checkpoints()
        try:
            with probe:
                started.set()
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append(f"{check}: cancelled")
            raise
        except AssertionError as error:
            outcome.append(f"{check}: {error}")

    for check in ("yes", "no"):
        started.clear()
        task = asyncio.create_task(waits_forever(check))
        await started.wait()
        task.cancel()
        await asyncio.wait({task})
    assert outcome[0] == "yes: cancelled"
    assert outcome[1].startswith("no: assert_no_checkpoints(): the block suspended the task")
    assert "(and was cancelled while suspended)" in outcome[1]


@ALL_LOOPS
async def test_a_cancelled_error_raised_without_suspending_is_no_checkpoint() -> None:
    cancelled = asyncio.get_running_loop().create_future()
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError), labkit.assert_no_checkpoints():
        await cancelled


def test_without_a_running_loop_the_error_says_where_to_use_it() -> None:
    with (
        pytest.raises(RuntimeError, match=r"needs a running event loop.*async def"),
        labkit.assert_checkpoints(),
    ):
        pass
    with (
        pytest.raises(RuntimeError, match=r"assert_no_checkpoints\(\) needs a running"),
        labkit.assert_no_checkpoints(),
    ):
        pass


@ALL_LOOPS
async def test_nested_probes_are_independent() -> None:
    with labkit.assert_checkpoints():
        with labkit.assert_no_checkpoints():
            await no_await_inside()
        await asyncio.sleep(0)


# -- eager tasks (3.12+) ------------------------------------------------------------------


@eager_only
@ALL_LOOPS
async def test_with_eager_tasks_create_task_is_no_checkpoint_of_the_caller() -> None:
    loop = asyncio.get_running_loop()
    loop.set_task_factory(eager_factory)
    steps: list[str] = []

    async def child() -> str:
        steps.append("child started")
        with labkit.assert_checkpoints():
            await asyncio.sleep(0)
        with labkit.assert_no_checkpoints():
            await no_await_inside()
        return "child done"

    try:
        with labkit.assert_no_checkpoints():
            task = asyncio.create_task(child())
            steps.append("create_task returned")
        assert steps == ["child started", "create_task returned"]  # it ran eagerly
        with labkit.assert_checkpoints():
            assert await task == "child done"
    finally:
        loop.set_task_factory(None)


@eager_only
@ALL_LOOPS
async def test_an_eager_task_that_finishes_at_once_is_no_checkpoint_to_await() -> None:
    loop = asyncio.get_running_loop()
    loop.set_task_factory(eager_factory)
    try:
        task = asyncio.create_task(no_await_inside())
        assert task.done()
        with labkit.assert_no_checkpoints():
            assert await task == 1
    finally:
        loop.set_task_factory(None)


# -- what a failing test shows ----------------------------------------------------------


def test_a_failure_points_at_the_users_with_line_not_at_labkit(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        test_user="""
        import unittest.mock
        import pytest
        import labkit

        @pytest.mark.asyncio
        async def test_fetch_yields():
            fetch = unittest.mock.AsyncMock(return_value=b"x")
            with labkit.assert_checkpoints():
                await fetch()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    output = result.stdout.str()
    assert result.ret == 1
    assert ">       with labkit.assert_checkpoints():" in output
    assert "E       AssertionError: assert_checkpoints(): the block finished" in output
    assert "checkpoints.py" not in output
    assert "contextlib.py" not in output
