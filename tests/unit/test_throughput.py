"""measure_throughput: figures per loop with median and spread, computed right, never asserted.

The timer is injected, so these tests check the arithmetic and the bookkeeping without reading
a wall clock; the real figures are printed by ``bench/`` and lesson 9.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

import labkit
from labkit.throughput import Throughput


async def pipeline() -> int:
    """The seed's workload: a producer and a consumer moving items through a bounded queue."""
    queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=10)
    total = 200

    async def producer() -> None:
        for item in range(total):
            await queue.put(item)
        await queue.put(None)

    async def consumer() -> int:
        count = 0
        while await queue.get() is not None:
            count += 1
        return count

    async with asyncio.TaskGroup() as group:
        group.create_task(producer())
        consumed = group.create_task(consumer())
    return consumed.result()


def fake_timer(durations: list[float]) -> Callable[[], float]:
    """A clock that advances by the next duration on every second reading (start, stop)."""
    steps = iter(durations)
    now = [0.0]
    readings = itertools.count()

    def timer() -> float:
        if next(readings) % 2:
            now[0] += next(steps)
        return now[0]

    return timer


def test_figures_are_items_over_time_per_repeat_and_loop() -> None:
    # warmup runs are not timed; repeats interleave the loops, rotating who goes first
    timer = fake_timer([0.125, 0.25, 0.5, 0.125, 0.125, 0.5])
    result = labkit.measure_throughput(
        pipeline, loops=("asyncio", "virtual"), repeats=3, warmup=1, timer=timer
    )
    assert result.items == 200
    assert result.loops == ("asyncio", "virtual")
    # run order: asyncio, virtual | virtual, asyncio | asyncio, virtual
    assert result.samples == {
        "asyncio": (1600.0, 1600.0, 1600.0),
        "virtual": (800.0, 400.0, 400.0),
    }
    assert result.median("virtual") == 400.0
    assert result.spread("virtual") == 1.0
    assert result.ratio("asyncio", "virtual") == 4.0


def test_the_shape_is_deterministic_and_the_table_carries_the_figures() -> None:
    result = Throughput(
        items=10_000, repeats=3, samples={"asyncio": (1.0e5, 2.0e5, 3.0e5), "uvloop": (4.0e5,) * 3}
    )
    assert result.shape() == (
        "asyncio, uvloop: 3 repeat(s) each of 10,000 items; figures vary run to run"
    )
    assert result.table().splitlines() == [
        "loop        median items/s   spread   vs asyncio",
        "asyncio            200,000     100%        1.00x",
        "uvloop             400,000       0%        2.00x",
    ]
    assert str(result).startswith(result.shape())


def test_a_real_measurement_runs_every_loop_and_reports_positive_figures() -> None:
    result = labkit.measure_throughput(pipeline, loops=("asyncio", "uvloop"), repeats=2)
    assert set(result.samples) == {"asyncio", "uvloop"}
    assert all(len(samples) == 2 for samples in result.samples.values())
    assert all(figure > 0 for samples in result.samples.values() for figure in samples)


@pytest.mark.asyncio
async def test_it_also_runs_from_inside_a_running_loop_like_jupyter() -> None:
    result = labkit.measure_throughput(pipeline, loops=("virtual",), repeats=1, warmup=0)
    assert result.items == 200


def test_items_can_be_given_when_the_workload_returns_nothing() -> None:
    async def quiet() -> None:
        await asyncio.sleep(0)

    result = labkit.measure_throughput(
        quiet, loops=("asyncio",), repeats=1, items=50, timer=fake_timer([0.5, 0.5])
    )
    assert result.samples == {"asyncio": (100.0,)}
    with pytest.raises(TypeError, match="return the count of items"):
        labkit.measure_throughput(quiet, loops=("asyncio",), repeats=1)


def test_a_custom_loop_mapping_is_accepted() -> None:
    result = labkit.measure_throughput(
        pipeline,
        loops={"mine": asyncio.new_event_loop},
        repeats=1,
        warmup=0,
        timer=fake_timer([1.0]),
    )
    assert result.samples == {"mine": (200.0,)}


def test_bad_input_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="unknown loop 'trio'"):
        labkit.measure_throughput(pipeline, loops=("trio",))
    with pytest.raises(TypeError, match=r"not a string"):
        labkit.measure_throughput(pipeline, loops="asyncio")
    with pytest.raises(ValueError, match="repeats must be"):
        labkit.measure_throughput(pipeline, repeats=0)
    with pytest.raises(ValueError, match="loops is empty"):
        labkit.measure_throughput(pipeline, loops=())
    with pytest.raises(TypeError, match=r"not a coroutine \(`pipeline\(\)`\)"):
        labkit.measure_throughput(pipeline())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="repeats must be a whole number >= 1, got True"):
        labkit.measure_throughput(pipeline, repeats=True)
    with pytest.raises(TypeError, match=r"loops\['mine'\] must be a loop factory"):
        labkit.measure_throughput(pipeline, loops={"mine": 5})  # type: ignore[dict-item]
    result = Throughput(items=1, repeats=1, samples={"asyncio": (1.0,)})
    with pytest.raises(KeyError, match="this result measured asyncio"):
        result.median("uvloop")


def test_a_frozen_clock_is_refused_rather_than_dividing_by_zero() -> None:
    with pytest.raises(RuntimeError, match="the timer measured no time"):
        labkit.measure_throughput(
            pipeline, loops=("asyncio",), repeats=1, warmup=0, timer=lambda: 0.0
        )


def test_the_stale_timed_assert_divides_by_zero_on_a_virtual_loop() -> None:
    """The seed's form times with loop.time(), which a virtual loop does not move while busy."""

    async def stale() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await pipeline()
        elapsed = loop.time() - start
        return 200 / elapsed

    with pytest.raises(ZeroDivisionError):
        labkit.run(stale())


def test_plot_draws_one_bar_per_loop() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    result = Throughput(items=100, repeats=2, samples={"a": (1.0, 3.0), "b": (2.0, 2.0)})
    ax = result.plot()
    try:
        assert [tick.get_text() for tick in ax.get_xticklabels()] == ["a", "b"]
        assert [bar.get_height() for bar in ax.patches] == [2.0, 2.0]
        assert ax.get_ylabel() == "items per second"
    finally:
        import matplotlib.pyplot as plt

        plt.close(ax.figure)  # pyplot keeps every figure it made; later tests expect none
