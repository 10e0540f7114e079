"""Python 3.12+'s eager task factory with the virtual loop, the sweep, the trackers, the watchdog.

With ``loop.set_task_factory(asyncio.eager_task_factory)`` ``create_task()`` runs the new
task's first step at once, inside the call: code that assumes a task has not started yet
(or that it is scheduled on the loop) breaks there first.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator

import pytest

import labkit

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="asyncio.eager_task_factory is new in Python 3.12"
)


@pytest.fixture
def eager_loop() -> Iterator[labkit.VirtualTimeLoop]:
    loop = labkit.VirtualTimeLoop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
    yield loop
    loop.close()


def test_eager_tasks_run_their_first_step_inside_create_task(
    eager_loop: labkit.VirtualTimeLoop,
) -> None:
    steps: list[str] = []

    async def child() -> str:
        steps.append("started")
        await asyncio.sleep(3600)
        return "done"

    async def main() -> str:
        task = asyncio.create_task(child(), name="child")
        steps.append("after create_task")
        return await task

    assert eager_loop.run_until_complete(main()) == "done"
    assert steps == ["started", "after create_task"]
    assert eager_loop.time() == 3600.0


def test_a_deadlock_with_eager_tasks_names_them(eager_loop: labkit.VirtualTimeLoop) -> None:
    async def main() -> None:
        never = asyncio.Event()
        await asyncio.create_task(never.wait(), name="waiter")

    with pytest.raises(labkit.DeadlockError, match=r"task .waiter. running Event\.wait"):
        eager_loop.run_until_complete(main())
    for task in asyncio.all_tasks(eager_loop):
        task.cancel()
    eager_loop.run_until_complete(asyncio.sleep(0))


def test_a_task_that_finishes_eagerly_never_reaches_the_loop(
    eager_loop: labkit.VirtualTimeLoop,
) -> None:
    async def instant() -> int:
        return 7

    async def main() -> int:
        task = asyncio.create_task(instant())
        assert task.done()  # finished inside create_task
        return await task

    assert eager_loop.run_until_complete(main()) == 7


async def pool_job(slots: asyncio.Semaphore, log: list[str]) -> None:
    async with slots:
        worker = asyncio.create_task(asyncio.sleep(1), name="io")
        try:
            await worker
        finally:
            worker.cancel()
            log.append("released")


def test_the_cancel_sweep_runs_with_eager_tasks(eager_loop: labkit.VirtualTimeLoop) -> None:
    slots = asyncio.Semaphore(1)
    log: list[str] = []

    async def main() -> labkit.CancelSweep:
        return await labkit.cancel_at_every_await(
            lambda: pool_job(slots, log), check=lambda: not slots.locked()
        )

    report = eager_loop.run_until_complete(main())
    assert report.ok, report
    assert report.suspension_points == 1
    assert len(log) == 2


def test_the_sweep_finds_a_leak_in_an_eager_task(eager_loop: labkit.VirtualTimeLoop) -> None:
    async def fire_and_forget() -> None:
        asyncio.create_task(asyncio.sleep(10), name="audit")  # noqa: RUF006
        await asyncio.sleep(1)

    async def main() -> labkit.CancelSweep:
        return await labkit.cancel_at_every_await(fire_and_forget, raise_on_failure=False)

    report = eager_loop.run_until_complete(main())
    assert [p.ok for p in report.points] == [False, False]
    assert report.points[1].outcome.startswith("left pending: 'audit'")


def test_the_task_tracker_keeps_tasks_eager_and_finds_a_leak(
    eager_loop: labkit.VirtualTimeLoop,
) -> None:
    started: list[str] = []

    async def audit() -> None:
        started.append("audit")
        await asyncio.sleep(60)

    async def main() -> list[labkit.HygieneProblem]:
        tracker = labkit.TaskTracker().install()
        asyncio.create_task(audit())  # noqa: RUF006
        assert started == ["audit"]  # still eager under the tracker
        return await tracker.afinish()

    problems = eager_loop.run_until_complete(main())
    assert [p.subject for p in problems] == [
        "task running test_the_task_tracker_keeps_tasks_eager_and_finds_a_leak.<locals>.audit()"
    ]
    assert eager_loop.get_task_factory() is asyncio.eager_task_factory  # type: ignore[attr-defined,unused-ignore]


def test_the_resource_tracker_and_watchdog_with_eager_tasks(
    eager_loop: labkit.VirtualTimeLoop,
) -> None:
    tracker = labkit.ResourceTracker()

    class Conn:
        pass

    async def blocking_child() -> None:
        conn = tracker.acquired(Conn())
        time.sleep(0.6)  # blocks the loop inside create_task's eager step
        tracker.released(conn)

    async def main() -> None:
        async with labkit.Watchdog(threshold=0.1) as dog:
            await asyncio.create_task(blocking_child(), name="child")
            await asyncio.sleep(0)
        assert dog.blocks == []  # unreachable: the block is reported on exit

    with pytest.raises(labkit.BlockingCallError, match="blocked the event loop"):
        eager_loop.run_until_complete(main())
    tracker.assert_all_released()


ON_AN_EAGER_LOOP = """
import asyncio
import pytest
import pytest_asyncio

@pytest_asyncio.fixture
async def eager():
    asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)

@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.usefixtures("eager")
async def test_leaks(task_tracker):
    asyncio.create_task(asyncio.sleep(10), name="stray")

@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.usefixtures("eager")
async def test_clean(task_tracker):
    await asyncio.create_task(asyncio.sleep(10), name="awaited")
"""


def test_the_plugins_checks_with_an_eager_task_factory(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "asyncio_default_test_loop_scope = function\n"
    )
    pytester.makepyfile(ON_AN_EAGER_LOOP)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*task 'stray' is still pending*"])
