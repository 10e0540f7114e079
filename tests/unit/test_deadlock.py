"""DeadlockError: a loop that can never make progress fails at once, saying who waits where."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest

import labkit
from labkit import DeadlockError, VirtualTimeLoop
from labkit.deadlock import describe_task


def test_an_event_nobody_sets_raises_instead_of_hanging() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(DeadlockError, match="no timer is pending"):
        labkit.run(main())


def test_the_message_names_every_pending_task_and_its_suspended_line() -> None:
    async def consumer(queue: asyncio.Queue[int]) -> None:
        await queue.get()  # the consumer's line

    async def producer(done: asyncio.Event) -> None:
        await done.wait()  # the producer's line

    async def main() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        done = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(consumer(queue), name="consumer")
            tg.create_task(producer(done), name="producer")

    with pytest.raises(DeadlockError) as info:
        labkit.run(main())
    message = str(info.value)
    assert "3 pending task(s)" in message
    assert "task 'consumer' running " in message
    assert "await queue.get()  # the consumer's line" in message
    assert "task 'producer' running " in message
    assert "await done.wait()  # the producer's line" in message
    assert "test_deadlock.py:" in message
    assert "main: async with asyncio.TaskGroup() as tg:" in message
    names = sorted(task.get_name() for task in info.value.tasks)
    assert "consumer" in names
    assert "producer" in names
    assert len(names) == 3


def test_two_tasks_waiting_on_each_others_lock() -> None:
    async def grab(first: asyncio.Lock, second: asyncio.Lock, ready: asyncio.Barrier) -> None:
        async with first:
            await ready.wait()
            async with second:  # never acquired
                pass

    async def main() -> None:
        a, b = asyncio.Lock(), asyncio.Lock()
        ready = asyncio.Barrier(2)
        await asyncio.gather(
            asyncio.create_task(grab(a, b, ready), name="a-then-b"),
            asyncio.create_task(grab(b, a, ready), name="b-then-a"),
        )

    with pytest.raises(DeadlockError) as info:
        labkit.run(main())
    message = str(info.value)
    assert "task 'a-then-b'" in message
    assert "task 'b-then-a'" in message
    assert message.count("async with second:  # never acquired") == 2


def test_the_error_is_a_runtime_error_so_broad_handlers_still_see_it() -> None:
    assert issubclass(DeadlockError, RuntimeError)


def test_the_deadlock_surfaces_after_time_has_run_out() -> None:
    # A timer keeps the loop alive until it fires; only then is nothing left to wake it.
    async def main() -> None:
        await asyncio.sleep(60)
        await asyncio.Future()

    loop = VirtualTimeLoop()
    try:
        with pytest.raises(DeadlockError):
            loop.run_until_complete(main())
        assert loop.time() == 60.0
    finally:
        loop.close()


def test_manual_clock_deadlock_says_how_to_advance() -> None:
    loop = VirtualTimeLoop(autojump=False)
    try:
        with pytest.raises(DeadlockError, match=r"clock is manual .*loop\.advance\(seconds\)"):
            loop.run_until_complete(asyncio.sleep(10))
        assert loop.time() == 0.0
    finally:
        loop.close()


def test_a_task_not_started_yet_is_described_as_such() -> None:
    loop = VirtualTimeLoop()
    try:
        task = loop.create_task(asyncio.sleep(1), name="fresh")
        assert describe_task(task) == "task 'fresh' running sleep()\n    (not started yet)"
        loop.run_until_complete(task)
    finally:
        loop.close()


def test_unnamed_tasks_are_listed_in_creation_order() -> None:
    async def main() -> None:
        waiters = [asyncio.create_task(asyncio.Event().wait()) for _ in range(3)]
        await asyncio.gather(*waiters)

    with pytest.raises(DeadlockError) as info:
        labkit.run(main())
    numbers = [
        int(line.split("'")[1].removeprefix("Task-"))
        for line in str(info.value).splitlines()
        if line.startswith("task 'Task-")
    ]
    assert len(numbers) == 4
    assert numbers == sorted(numbers)


def test_a_connected_socket_is_a_possible_wakeup_not_a_deadlock() -> None:
    # The peer closes its end from inside the loop later; until then the read is pending on
    # real I/O, which must not count as a deadlock.
    async def main() -> bytes:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            reader, writer = await asyncio.open_connection(sock=ours)
            asyncio.get_running_loop().call_soon(theirs.sendall, b"late")
            data = await reader.read(4)
            writer.close()
            await writer.wait_closed()
            return data

    assert labkit.run(main()) == b"late"


def test_a_running_subprocess_is_a_possible_wakeup_not_a_deadlock() -> None:
    async def main() -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "pass", stdout=subprocess.DEVNULL
        )
        return await proc.wait()

    assert labkit.run(main()) == 0


def test_a_task_that_swallows_its_cancellation_is_diagnosed_and_can_be_ended() -> None:
    """Zoo: the report named the worker's line, not that it held a swallowed cancellation."""

    async def worker(queue: asyncio.Queue[int]) -> None:
        while True:
            try:
                await queue.get()
            except asyncio.CancelledError:
                continue

    async def main() -> None:
        task = asyncio.create_task(worker(asyncio.Queue()), name="worker")
        await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except DeadlockError:
            raise AssertionError("raised in the loop, not at the await") from None

    loop = VirtualTimeLoop()
    try:
        with pytest.raises(DeadlockError) as info:
            loop.run_until_complete(main())
        message = str(info.value)
        assert "1 of the tasks was cancelled and kept waiting: a swallowed cancellation." in (
            message.splitlines()[0]
        )
        diagnosis = "it holds a swallowed cancellation: cancelled once, it caught CancelledError"
        assert diagnosis in message
        assert "await labkit.force_cancel(task)" in message
        worker_task = next(t for t in info.value.tasks if t.get_name() == "worker")
        loop.run_until_complete(labkit.force_cancel(worker_task))
        assert worker_task.done()
        for task in info.value.tasks:
            task.cancel()
        loop.run_until_complete(asyncio.wait(info.value.tasks))
    finally:
        loop.close()
