"""The cancel-at-every-await sweep: it catches the seeded bugs and passes the fixed code."""

from __future__ import annotations

import asyncio
import re
import sys
import warnings
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, Mock

import pytest

import labkit

VIRTUAL = pytest.mark.asyncio(loop_factories=["virtual"])
THIS_FILE = Path(__file__).name


def line_of(marker: str) -> int:
    """The line number of the one source line of this file that ends with ``# <marker>``."""
    lines = Path(__file__).read_text().splitlines()
    hits = [n for n, text in enumerate(lines, 1) if text.rstrip().endswith(f"# {marker}")]
    assert len(hits) == 1, marker
    return hits[0]


# -- a small connection pool: the seeded bug leaks a slot when cancelled while connecting ------


class Pool:
    """At most ``size`` connections; ``connect`` takes one unit of (virtual) time."""

    def __init__(self, size: int = 2, *, leaky: bool = False) -> None:
        self.size = size
        self.leaky = leaky
        self._slots = asyncio.Semaphore(size)
        self.taken = 0

    async def acquire(self) -> str:
        await self._slots.acquire()
        self.taken += 1
        if self.leaky:
            await asyncio.sleep(0.1)  # connect, leaky
            return "connection"
        try:
            await asyncio.sleep(0.1)  # connect, fixed
        except BaseException:
            self.release()
            raise
        return "connection"

    def release(self) -> None:
        self.taken -= 1
        self._slots.release()

    def assert_all_free(self) -> None:
        assert self.taken == 0, f"{self.taken} of {self.size} slot(s) still taken"


async def use_pool(pool: Pool) -> str:
    await pool.acquire()  # point: acquire
    try:
        await asyncio.sleep(1)  # point: query
        await asyncio.sleep(0)  # point: yield
    finally:
        pool.release()
    return "done"


@VIRTUAL
async def test_the_leaky_pool_fails_at_the_connect_point() -> None:
    pool = Pool(leaky=True)
    report = await labkit.cancel_at_every_await(
        lambda: use_pool(pool), check=pool.assert_all_free, raise_on_failure=False
    )
    assert not report.ok
    first = report.failures[0]
    assert first.k == 1
    assert first.where == f"{THIS_FILE}:{line_of('point: acquire')}"
    assert "check failed: 1 of 2 slot(s) still taken" in first.outcome
    assert any("connect, leaky" in frame or "Pool.acquire" in frame for frame in first.stack)


@VIRTUAL
async def test_the_fixed_pool_passes_at_every_point() -> None:
    pool = Pool()
    report = await labkit.cancel_at_every_await(lambda: use_pool(pool), check=pool.assert_all_free)
    assert report.ok
    assert report.suspension_points == 3
    assert [p.where for p in report.points[1:]] == [
        f"{THIS_FILE}:{line_of('point: acquire')}",
        f"{THIS_FILE}:{line_of('point: query')}",
        f"{THIS_FILE}:{line_of('point: yield')}",
    ]
    assert report.points[2].code == "await asyncio.sleep(1)  # point: query"


@VIRTUAL
async def test_the_timeout_flavour_catches_the_leak_and_passes_the_fix() -> None:
    leaky = Pool(leaky=True)
    report = await labkit.timeout_at_every_await(
        lambda: use_pool(leaky), check=leaky.assert_all_free, raise_on_failure=False
    )
    assert report.mode == "timeout"
    assert report.failures[0].k == 1
    fixed = Pool()
    report = await labkit.timeout_at_every_await(
        lambda: use_pool(fixed), check=fixed.assert_all_free
    )
    assert report.ok
    assert report.suspension_points == 3


# -- a worker that swallows cancellation ---------------------------------------------------------


async def swallowing_worker(queue: asyncio.Queue[int], done: list[int]) -> None:
    while True:
        try:
            item = await queue.get()  # point: get
        except asyncio.CancelledError:
            return  # the bug: cancellation ends here, the caller never learns
        done.append(item)
        if not queue.qsize():
            return


async def fixed_worker(queue: asyncio.Queue[int], done: list[int]) -> None:
    while True:
        try:
            item = await queue.get()
        except asyncio.CancelledError:
            done.append(-1)  # log it, then let it propagate
            raise
        done.append(item)
        if not queue.qsize():
            return


def worker_factory(
    worker: Callable[[asyncio.Queue[int], list[int]], Any],
) -> Callable[[], Any]:
    def make() -> Any:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for item in range(3):
            queue.put_nowait(item)
        return worker(queue, [])

    return make


@VIRTUAL
async def test_a_swallowed_cancellation_is_reported() -> None:
    report = await labkit.cancel_at_every_await(
        worker_factory(swallowing_worker), raise_on_failure=False
    )
    assert report.suspension_points == 0  # items are ready: get() never suspends

    def slow_start() -> Any:
        queue: asyncio.Queue[int] = asyncio.Queue()
        asyncio.get_running_loop().call_later(1, queue.put_nowait, 7)
        return swallowing_worker(queue, [])

    report = await labkit.cancel_at_every_await(slow_start, raise_on_failure=False)
    assert [p.outcome for p in report.points] == [
        "ok",
        "swallowed: returned None after the cancellation",
    ]
    assert report.points[1].where == f"{THIS_FILE}:{line_of('point: get')}"


@VIRTUAL
async def test_the_fixed_worker_lets_cancellation_propagate() -> None:
    async def slow_start() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        asyncio.get_running_loop().call_later(1, queue.put_nowait, 7)
        await fixed_worker(queue, [])

    report = await labkit.cancel_at_every_await(slow_start)
    assert report.ok
    assert report.suspension_points == 1


@VIRTUAL
async def test_raising_something_else_instead_of_cancelled_is_reported() -> None:
    async def converts() -> None:
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            raise RuntimeError("shutting down") from None

    report = await labkit.cancel_at_every_await(converts, raise_on_failure=False)
    assert report.points[1].outcome == (
        "replaced CancelledError with RuntimeError('shutting down')"
    )


# -- tasks left behind ----------------------------------------------------------------------------


async def fire_and_forget() -> None:
    asyncio.create_task(asyncio.sleep(10), name="audit-log")  # noqa: RUF006
    await asyncio.sleep(1)


async def structured() -> None:
    async with asyncio.TaskGroup() as group:
        group.create_task(asyncio.sleep(10), name="audit-log")
        await asyncio.sleep(1)


@VIRTUAL
async def test_a_fire_and_forget_task_is_reported_left_pending() -> None:
    report = await labkit.cancel_at_every_await(fire_and_forget, raise_on_failure=False)
    assert report.points[0].outcome.startswith("left pending: 'audit-log'")
    assert report.points[1].outcome.startswith("left pending: 'audit-log'")
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "audit-log"]


@VIRTUAL
async def test_a_task_group_leaves_nothing_behind() -> None:
    report = await labkit.cancel_at_every_await(structured)
    assert report.ok


async def shielded_close(log: list[str], *, wait_for_close: bool) -> None:
    async def close() -> None:
        await asyncio.sleep(0.5)
        log.append("closed")

    try:
        await asyncio.sleep(1)
    finally:
        closing = asyncio.ensure_future(close())
        try:
            await asyncio.shield(closing)  # point: shield
        except asyncio.CancelledError:
            if wait_for_close:
                await closing
            raise


@VIRTUAL
async def test_a_shield_alone_lets_cleanup_outlive_the_caller() -> None:
    log: list[str] = []
    report = await labkit.cancel_at_every_await(
        lambda: shielded_close(log, wait_for_close=False), raise_on_failure=False
    )
    failing = report.failures
    assert [p.k for p in failing] == [2]
    assert failing[0].where == f"{THIS_FILE}:{line_of('point: shield')}"
    assert "left pending: shielded_close.<locals>.close()" in failing[0].outcome
    log.clear()
    report = await labkit.cancel_at_every_await(lambda: shielded_close(log, wait_for_close=True))
    assert report.ok
    assert log == ["closed"] * 3


# -- the report, errors and edge cases -------------------------------------------------------------


@VIRTUAL
async def test_raising_on_failure_shows_the_table() -> None:
    pool = Pool(leaky=True)
    with pytest.raises(labkit.CancelSweepError) as caught:
        await labkit.cancel_at_every_await(lambda: use_pool(pool), check=pool.assert_all_free)
    message = str(caught.value)
    assert message.splitlines()[0] == (
        "cancel sweep of use_pool(): 3 suspension point(s), 3 failing"
    )
    assert "first failure: point 1" in message
    assert isinstance(caught.value, AssertionError)
    assert caught.value.report.failures[0].k == 1


@VIRTUAL
async def test_the_table_is_deterministic() -> None:
    tables = []
    for _ in range(2):
        pool = Pool(leaky=True)
        report = await labkit.cancel_at_every_await(
            lambda pool=pool: use_pool(pool), check=pool.assert_all_free, raise_on_failure=False
        )
        tables.append(str(report))
    assert tables[0] == tables[1]
    assert not re.search(r"0x[0-9a-f]+|Task-\d+|/", tables[0])


@VIRTUAL
async def test_every_suspension_counts_including_bare_yields() -> None:
    async def two_hundred() -> int:
        for _ in range(100):
            await asyncio.sleep(0)
            await asyncio.sleep(0.01)
        return 200

    report = await labkit.cancel_at_every_await(two_hundred)
    assert report.suspension_points == 200
    assert all(p.ok for p in report.points)


@VIRTUAL
async def test_a_target_that_never_suspends_has_only_the_baseline() -> None:
    async def instant() -> int:
        return 1

    report = await labkit.cancel_at_every_await(instant, min_points=0)
    assert [p.k for p in report.points] == [0]
    assert report.ok


async def mocked_transfer(pool: Any) -> None:
    connection = await pool.acquire()
    await connection.query("x")


def test_a_sweep_of_async_mocks_fails_saying_it_tested_nothing() -> None:
    """AsyncMock awaits never suspend: the sweep used to pass "all ok", having tested nothing."""
    pool = Mock(acquire=AsyncMock(return_value=Mock(query=AsyncMock())))
    with pytest.raises(labkit.CancelSweepError) as caught:
        labkit.run_cancel_sweep(lambda: mocked_transfer(pool))
    report = caught.value.report
    assert not report.ok
    assert report.suspension_points == 0
    lines = str(caught.value).splitlines()
    assert lines[0] == "cancel sweep of mocked_transfer(): 0 suspension point(s), nothing tested"
    assert "never suspended" in lines[1]
    assert "tested nothing" in lines[1]
    assert "unittest.mock.AsyncMock" in lines[2]
    assert "min_points=0" in lines[3]
    assert "all ok" not in str(caught.value)


@VIRTUAL
async def test_min_points_asks_for_as_many_points_as_the_test_expects() -> None:
    async def two() -> None:
        await asyncio.sleep(1)
        await asyncio.sleep(1)

    report = await labkit.cancel_at_every_await(two, min_points=3, raise_on_failure=False)
    assert not report.ok
    assert report.failures == ()
    assert (
        report.table()
        .splitlines()[0]
        .endswith(".two(): 2 suspension point(s), fewer than min_points=3")
    )
    assert (await labkit.timeout_at_every_await(two, min_points=2)).ok
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="min_points must be a whole number"):
            await labkit.cancel_at_every_await(two, min_points=bad)  # type: ignore[arg-type]


@VIRTUAL
async def test_a_long_await_line_keeps_the_outcome_column_aligned() -> None:
    async def long_line() -> None:
        await asyncio.sleep(1)  # a comment long enough to push the outcome column far to the right
        await asyncio.sleep(1)

    table = (await labkit.cancel_at_every_await(long_line)).table().splitlines()
    rows = table[1:]
    columns = {row.index("outcome" if i == 0 else "ok") for i, row in enumerate(rows)}
    assert len(columns) == 1, "\n".join(table)
    assert "..." in rows[2]


def test_notebook_cell_locations_read_like_the_trackers() -> None:
    """Sweep rows name a notebook cell as ``<cell>:N``, as trackers and task hygiene do."""
    namespace: dict[str, Any] = {"asyncio": asyncio}
    code = "async def in_a_cell():\n    await asyncio.sleep(1)\n"
    exec(compile(code, "/tmp/ipykernel_4242/3109437223.py", "exec"), namespace)
    report = labkit.run_cancel_sweep(namespace["in_a_cell"])
    assert report.points[1].where == "<cell>:2"


@VIRTUAL
async def test_a_baseline_failure_propagates_and_a_failing_check_is_reported() -> None:
    async def broken() -> None:
        await asyncio.sleep(1)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await labkit.cancel_at_every_await(broken, raise_on_failure=False)

    async def fine() -> None:
        await asyncio.sleep(1)

    def check() -> None:
        raise KeyError("state")

    report = await labkit.cancel_at_every_await(fine, check=check, raise_on_failure=False)
    assert report.points[0].outcome == "check raised KeyError('state')"


@VIRTUAL
async def test_an_async_check_is_awaited() -> None:
    seen: list[str] = []

    async def check() -> None:
        await asyncio.sleep(0)
        seen.append("checked")

    async def fine() -> None:
        await asyncio.sleep(1)

    await labkit.cancel_at_every_await(fine, check=check)
    assert seen == ["checked", "checked"]


@VIRTUAL
async def test_a_target_stuck_after_cancellation_is_reported_hung_in_no_real_time() -> None:
    async def stuck() -> None:
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            await asyncio.Event().wait()  # point: stuck
            raise

    report = await labkit.cancel_at_every_await(stuck, limit=30, raise_on_failure=False)
    assert report.points[1].outcome == (
        f"hung: still waiting at {THIS_FILE}:{line_of('point: stuck')} after 30 s"
    )


@VIRTUAL
async def test_a_target_whose_points_vary_is_reported_not_reached() -> None:
    runs = iter([3, 1, 1, 1])

    async def varying() -> None:
        for _ in range(next(runs)):
            await asyncio.sleep(1)

    report = await labkit.cancel_at_every_await(varying, raise_on_failure=False)
    assert [p.ok for p in report.points] == [True, True, False, False]
    assert report.points[2].outcome.startswith("not reached: finished after 1 suspension(s)")


@VIRTUAL
async def test_bad_factories_are_refused_with_the_fix() -> None:
    coroutine = use_pool(Pool())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match=r"not `job\(pool\)`"):
            await labkit.cancel_at_every_await(coroutine)  # type: ignore[arg-type]
    future = asyncio.get_running_loop().create_future()
    with pytest.raises(TypeError, match="already scheduled"):
        await labkit.cancel_at_every_await(lambda: future)
    with pytest.raises(TypeError, match="not an awaitable"):
        await labkit.cancel_at_every_await(lambda: 42)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="limit must be a positive"):
        await labkit.cancel_at_every_await(lambda: use_pool(Pool()), limit=0)


@VIRTUAL
async def test_a_check_that_is_not_callable_is_refused_with_the_fix() -> None:
    """check=queue.empty() passes a bool: every row used to fail with "check raised TypeError"."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    with pytest.raises(TypeError, match=r"check must be a function.*not `check=queue\.empty\(\)`"):
        await labkit.cancel_at_every_await(
            lambda: use_pool(Pool()),
            check=queue.empty(),  # type: ignore[arg-type]
        )


def test_a_manual_clock_is_refused() -> None:
    loop = labkit.VirtualTimeLoop(autojump=False)
    try:
        with pytest.raises(RuntimeError, match="autojump=False"):
            loop.run_until_complete(labkit.cancel_at_every_await(lambda: use_pool(Pool())))
    finally:
        loop.close()


@pytest.mark.asyncio(loop_factories=["asyncio", "uvloop", "virtual"])
async def test_the_sweep_runs_on_real_loops_too() -> None:
    async def quick() -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0.001)

    report = await labkit.cancel_at_every_await(quick)
    assert report.suspension_points == 2


def test_the_sync_form_runs_on_its_own_virtual_loop() -> None:
    pool = Pool(leaky=True)
    report = labkit.run_cancel_sweep(
        lambda: use_pool(pool), check=pool.assert_all_free, raise_on_failure=False
    )
    assert report.failures[0].k == 1
    fixed = Pool()
    report = labkit.run_cancel_sweep(lambda: use_pool(fixed), check=fixed.assert_all_free)
    assert report.ok


@pytest.mark.asyncio
async def test_the_sync_form_works_where_a_loop_already_runs() -> None:
    pool = Pool()
    report = labkit.run_cancel_sweep(
        lambda: use_pool(pool), check=pool.assert_all_free, timeout=True
    )
    assert report.ok
    assert report.mode == "timeout"


@VIRTUAL
async def test_the_deadline_lands_exactly_even_when_the_future_is_already_resolved() -> None:
    seen: list[int] = []

    async def target() -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.call_soon(ready.set_result, None)  # resolved before the deadline's callback runs
        try:
            await ready
        except asyncio.CancelledError:
            seen.append(1)
            raise
        await asyncio.sleep(1)

    report = await labkit.timeout_at_every_await(target)
    assert [p.outcome for p in report.points] == ["ok", "ok", "ok"]
    assert seen == [1]


@VIRTUAL
async def test_a_check_returning_false_fails_the_row() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def leaves_an_item() -> None:
        queue.put_nowait(1)
        await asyncio.sleep(1)
        queue.get_nowait()

    report = await labkit.cancel_at_every_await(
        leaves_an_item, check=queue.empty, raise_on_failure=False
    )
    assert [p.outcome for p in report.points] == [
        "ok",
        "check failed: Queue.empty() returned False",
    ]
    report = await labkit.cancel_at_every_await(
        leaves_an_item, check=lambda: queue.qsize() < 5, raise_on_failure=False
    )
    assert report.ok


class TwoStepPool:
    """``acquire`` suspends twice: waiting for a slot, then connecting."""

    def __init__(self) -> None:
        self.taken = 0

    async def acquire(self) -> str:
        await asyncio.sleep(0)  # inner: wait for a slot
        self.taken += 1
        await asyncio.sleep(0.1)  # inner: connect (leaks the slot when cancelled here)
        return "connection"


async def use_two_step_pool(pool: TwoStepPool) -> None:
    await pool.acquire()  # point: two-step acquire
    pool.taken -= 1


@VIRTUAL
async def test_two_awaits_behind_one_line_are_told_apart_by_their_inner_line() -> None:
    pool = TwoStepPool()

    def check() -> None:
        assert pool.taken == 0, f"{pool.taken} slot(s) still taken"
        pool.taken = 0

    report = await labkit.cancel_at_every_await(
        lambda: use_two_step_pool(pool), check=check, raise_on_failure=False
    )
    outer = f"{THIS_FILE}:{line_of('point: two-step acquire')}"
    assert [p.where for p in report.points[1:]] == [outer, outer]
    assert [p.inner for p in report.points[1:]] == [
        f"{THIS_FILE}:{line_of('inner: wait for a slot')}",
        f"{THIS_FILE}:{line_of('inner: connect (leaks the slot when cancelled here)')}",
    ]
    assert [p.ok for p in report.points[1:]] == [True, False]
    rows = report.table().splitlines()[-2:]
    assert f"{outer} › {THIS_FILE}:{line_of('inner: wait for a slot')}" in rows[0]
    assert rows[0].rstrip().endswith("ok")
    assert (
        f"{outer} › {THIS_FILE}:{line_of('inner: connect (leaks the slot when cancelled here)')}"
        in rows[1]
    )
    assert "1 slot(s) still taken" in rows[1]
    assert report.points[2].inner_cell.endswith(
        "await asyncio.sleep(0.1)  # inner: connect (leaks the slot when cancelled here)"
    )


@VIRTUAL
async def test_rows_at_one_line_and_one_inner_await_stay_short() -> None:
    pool = Pool()
    report = await labkit.cancel_at_every_await(lambda: use_pool(pool), check=pool.assert_all_free)
    assert " › " not in report.table()  # each target line suspends at one inner await only
    assert report.points[1].inner == f"{THIS_FILE}:{line_of('connect, fixed')}"


# -- eager tasks (3.12+) ---------------------------------------------------------------------

eager_only = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="asyncio.eager_task_factory is new in Python 3.12"
)


async def two_children_then_a_pool(pool: Pool) -> None:
    async with asyncio.TaskGroup() as group:
        group.create_task(asyncio.sleep(0.01), name="one")
        group.create_task(asyncio.sleep(0.02), name="two")
    await use_pool(pool)


@eager_only
@pytest.mark.asyncio(loop_factories=["asyncio", "virtual"])
@pytest.mark.parametrize("timeout", [False, True])
async def test_with_eager_tasks_the_sweep_gives_the_same_table(timeout: bool) -> None:
    loop = asyncio.get_running_loop()
    pools: list[Pool] = []

    def factory() -> Coroutine[Any, Any, None]:
        pools.append(Pool(leaky=True))
        return two_children_then_a_pool(pools[-1])

    sweep = labkit.timeout_at_every_await if timeout else labkit.cancel_at_every_await

    def all_free() -> None:
        pools[-1].assert_all_free()

    lazy = await sweep(factory, check=all_free, raise_on_failure=False)
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
    try:
        eager = await sweep(factory, check=all_free, raise_on_failure=False)
    finally:
        loop.set_task_factory(None)
    assert [(p.k, p.outcome) for p in eager.points] == [(p.k, p.outcome) for p in lazy.points]
    assert lazy.suspension_points == 4
    assert [p.k for p in lazy.failures] == [2]  # cancelled while connecting: the seeded leak


def plain_factory(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **options: Any
) -> asyncio.Task[Any]:
    return asyncio.Task(coro, loop=loop, **options)


@VIRTUAL
async def test_a_leftover_task_is_named_by_its_coroutine_under_a_task_factory() -> None:
    """Python 3.13.0 names an unnamed task 'None' when the loop has a task factory."""

    async def forgets_a_task() -> None:
        asyncio.create_task(asyncio.sleep(5))  # noqa: RUF006
        await asyncio.sleep(1)

    loop = asyncio.get_running_loop()
    loop.set_task_factory(plain_factory)
    try:
        report = await labkit.cancel_at_every_await(forgets_a_task, raise_on_failure=False)
    finally:
        loop.set_task_factory(None)
    assert report.points[0].outcome == "left pending: sleep() waiting inside asyncio.sleep"


# -- workers that run until cancelled, second cancellations, shielded clean-up ----------------


async def queue_worker(queue: asyncio.Queue[int], done: list[int]) -> None:
    while True:
        item = await queue.get()  # point: worker get
        done.append(item)


async def stubborn_worker(queue: asyncio.Queue[int], done: list[int]) -> None:
    while True:
        try:
            item = await queue.get()  # point: stubborn get
        except asyncio.CancelledError:
            continue  # the bug: every cancellation is swallowed
        done.append(item)


def loaded(worker: Callable[[asyncio.Queue[int], list[int]], Any]) -> Callable[[], Any]:
    def make() -> Any:
        queue: asyncio.Queue[int] = asyncio.Queue()
        queue.put_nowait(1)
        asyncio.get_running_loop().call_later(1, queue.put_nowait, 2)
        return worker(queue, [])

    return make


@VIRTUAL
async def test_a_worker_that_runs_until_cancelled_is_swept_not_reported_hung() -> None:
    """Zoo: a correct run-until-cancelled worker used to fail its baseline as "hung"."""
    report = await labkit.cancel_at_every_await(
        loaded(queue_worker), limit=30, raise_on_failure=False
    )
    assert report.points[0].outcome.startswith("hung: still waiting")
    report = await labkit.cancel_at_every_await(loaded(queue_worker), until_cancelled=True)
    assert report.ok
    assert report.until_cancelled
    assert report.points[0].cell == "(baseline)  cancelled once idle"
    assert report.suspension_points == 2  # the get that waits for item 2, then the next one
    assert {p.where for p in report.points[1:]} == {f"{THIS_FILE}:{line_of('point: worker get')}"}
    assert (
        report.table()
        .splitlines()[0]
        .startswith(
            "cancel sweep of queue_worker() (runs until cancelled): 2 suspension point(s), all ok"
        )
    )


@VIRTUAL
async def test_a_worker_that_swallows_every_cancellation_is_reported_and_ended() -> None:
    report = await labkit.cancel_at_every_await(
        loaded(stubborn_worker), until_cancelled=True, limit=30, raise_on_failure=False
    )
    line = line_of("point: stubborn get")
    assert report.points[0].outcome == (
        f"hung: still waiting at {THIS_FILE}:{line} after 30 s; and it ignores cancellation"
    )
    assert all(not p.ok for p in report.points)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


@VIRTUAL
async def test_a_polling_worker_runs_for_the_seconds_given() -> None:
    polls: list[float] = []

    async def poller() -> None:
        while True:
            await asyncio.sleep(1)  # point: poll
            polls.append(asyncio.get_running_loop().time())

    report = await labkit.cancel_at_every_await(poller, until_cancelled=3.5)
    assert report.suspension_points == 4  # it waited at 0, 1, 2 and 3 s, and was cancelled at 3.5
    assert report.points[0].code == "cancelled after 3.5 s"
    with pytest.raises(ValueError, match="until_cancelled must be True"):
        await labkit.cancel_at_every_await(poller, until_cancelled=-1)


class Sessions:
    """Counts sessions opened and closed: every session must say goodbye to the server."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0

    def all_closed(self) -> bool:
        return self.closed == self.opened


async def session(sessions: Sessions, *, style: str) -> None:
    sessions.opened += 1

    async def close() -> None:
        await asyncio.sleep(0.5)  # point: close sleep
        sessions.closed += 1

    try:
        await asyncio.sleep(1)  # point: session work
    finally:
        closing = asyncio.ensure_future(close())
        if style == "shield alone":
            await asyncio.shield(closing)  # point: shield alone
        elif style == "await once":
            try:
                await asyncio.shield(closing)
            except asyncio.CancelledError:
                await closing  # point: await once
                raise
        else:  # "until done": survives any number of cancellations
            cancelled: asyncio.CancelledError | None = None
            while not closing.done():
                try:
                    await asyncio.shield(closing)
                except asyncio.CancelledError as error:
                    cancelled = error
            if cancelled is not None:
                raise cancelled


@VIRTUAL
async def test_the_check_waits_for_a_shielded_clean_up_to_finish() -> None:
    """Zoo: the check used to run (and the clean-up be cancelled) before the shield finished."""
    sessions = Sessions()
    report = await labkit.cancel_at_every_await(
        lambda: session(sessions, style="shield alone"),
        check=sessions.all_closed,
        raise_on_failure=False,
    )
    failing = report.failures
    assert [p.k for p in failing] == [2]
    assert failing[0].outcome == (
        f"left pending: session.<locals>.close() at {THIS_FILE}:{line_of('point: close sleep')}"
    )  # reported for outliving the caller, but the clean-up finished and the check passed
    assert sessions.all_closed()


@VIRTUAL
async def test_twice_cancels_again_during_the_clean_up() -> None:
    """Zoo: the sweep never cancelled twice, so a clean-up cut short by a second cancel passed."""
    sessions = Sessions()
    report = await labkit.cancel_at_every_await(
        lambda: session(sessions, style="await once"), check=sessions.all_closed
    )
    assert report.ok  # one cancellation at a time: fine
    report = await labkit.cancel_at_every_await(
        lambda: session(sessions, style="await once"),
        check=sessions.all_closed,
        twice=True,
        raise_on_failure=False,
    )
    assert [p.label for p in report.points] == ["0", "1", "1+1", "2", "2+1"]
    assert [p.label for p in report.failures] == ["2+1"]
    assert report.failures[0].where == f"{THIS_FILE}:{line_of('point: await once')}"
    assert "check failed: check() returned False" not in report.failures[0].outcome
    assert report.failures[0].outcome == "check failed: Sessions.all_closed() returned False"
    assert report.table().splitlines()[0] == (
        "cancel sweep of session(): 2 suspension point(s), "
        "2 second cancellation(s) in clean-up, 1 failing"
    )
    sessions = Sessions()
    report = await labkit.cancel_at_every_await(
        lambda: session(sessions, style="until done"), check=sessions.all_closed, twice=True
    )
    assert report.ok
    assert report.second_cancellations == 2


@VIRTUAL
async def test_twice_with_a_timeout_expects_the_second_cancellation_to_win() -> None:
    sessions = Sessions()
    report = await labkit.timeout_at_every_await(
        lambda: session(sessions, style="until done"), check=sessions.all_closed, twice=True
    )
    assert report.ok
    assert report.second_cancellations == 2


@VIRTUAL
async def test_twice_says_so_when_no_clean_up_suspends() -> None:
    async def plain() -> None:
        await asyncio.sleep(1)

    report = await labkit.cancel_at_every_await(plain, twice=True)
    assert "nothing was cancelled twice" in report.table()


@VIRTUAL
async def test_a_lambda_check_is_labelled_check() -> None:
    """Zoo: a lambda defined in a test read `test_x.<locals>.<lambda>() returned False`."""

    async def fine() -> None:
        await asyncio.sleep(1)

    report = await labkit.cancel_at_every_await(fine, check=lambda: False, raise_on_failure=False)
    assert report.points[0].outcome == "check failed: check() returned False"


# -- force_cancel ----------------------------------------------------------------------------------


@VIRTUAL
async def test_force_cancel_ends_a_task_that_swallows_every_cancellation() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    cleaned: list[str] = []

    async def stubborn() -> None:
        try:
            await stubborn_worker(queue, [])
        finally:
            cleaned.append("finally")

    task = asyncio.create_task(stubborn(), name="stubborn")
    await labkit.run_until_idle()
    task.cancel()
    await labkit.run_until_idle()
    assert not task.done()
    assert task.cancelling() == 1
    await labkit.force_cancel(task)
    assert task.done()
    assert cleaned == ["finally"]
    await labkit.force_cancel(task)  # done already: nothing happens
    with pytest.raises(RuntimeError, match="ends another task"):
        await labkit.force_cancel(asyncio.current_task())  # type: ignore[arg-type]


@VIRTUAL
async def test_force_cancel_says_when_a_task_cannot_be_ended() -> None:
    release = asyncio.Event()

    async def ignores_everything() -> None:
        while True:
            try:
                await release.wait()
                return
            except BaseException:
                continue

    task = asyncio.create_task(ignores_everything(), name="immortal")
    await labkit.run_until_idle()
    with pytest.raises(
        RuntimeError, match="task 'immortal' cannot be ended: it catches GeneratorExit"
    ):
        await labkit.force_cancel(task)
    task.cancel()  # hands the task a future it knows again (it swallows this one too)
    await labkit.run_until_idle()
    release.set()
    await task
