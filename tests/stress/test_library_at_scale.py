"""Stress: labkit's tools at volumes far beyond the unit tests, where ordering bugs would show.

Run by `make stress`, not by `make test`. Everything runs in virtual time or is counted, never
timed: each test fails on a wrong result, not on a slow one.
"""

from __future__ import annotations

import asyncio
import random

import pytest

import labkit

pytestmark = pytest.mark.stress

ALL_LOOPS = pytest.mark.asyncio(loop_factories=["asyncio", "uvloop", "virtual"])


@ALL_LOOPS
async def test_many_producers_and_consumers_lose_nothing_and_respect_the_bound() -> None:
    producers, consumers, per_producer, bound = 8, 5, 12_500, 16
    queue: labkit.CountingQueue[tuple[int, int]] = labkit.CountingQueue(maxsize=bound)
    seen: list[tuple[int, int]] = []
    deepest = 0

    async def produce(p: int) -> None:
        for i in range(per_producer):
            await queue.put((p, i))

    async def consume() -> None:
        nonlocal deepest
        while True:
            deepest = max(deepest, queue.qsize())
            item = await queue.get()
            seen.append(item)
            queue.task_done()

    async with asyncio.TaskGroup() as group:
        workers = [group.create_task(consume(), name=f"consumer {c}") for c in range(consumers)]
        await asyncio.gather(*(produce(p) for p in range(producers)))
        await queue.join()
        for worker in workers:
            worker.cancel()

    assert queue.put_count == queue.get_count == producers * per_producer
    assert sorted(seen) == [(p, i) for p in range(producers) for i in range(per_producer)]
    for p in range(producers):  # one queue keeps each producer's items in order
        assert [i for q, i in seen if q == p] == list(range(per_producer))
    assert deepest <= bound


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_a_blocked_producer_advances_exactly_one_item_per_get_ten_thousand_times() -> None:
    queue: labkit.CountingQueue[int] = labkit.CountingQueue(maxsize=3)

    async def produce() -> None:
        for i in range(10_003):
            await queue.put(i)

    producer = asyncio.create_task(produce(), name="producer")
    await labkit.run_until_idle()
    for expected in range(10_000):
        assert labkit.is_blocked(producer, at="put")
        assert queue.get_nowait() == expected
        await labkit.run_until_idle()
        assert queue.put_count == expected + 4
    assert queue.full()  # the last three items are in, the producer is about to finish
    for _ in range(3):
        queue.get_nowait()
    await producer


def test_a_hundred_thousand_timers_fire_in_order_each_at_its_own_time() -> None:
    rng = random.Random(7)
    delays = [rng.uniform(0, 365 * 86_400.0) for _ in range(100_000)]
    fired: list[tuple[float, float]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        done = loop.create_future()
        remaining = len(delays)

        def fire(due: float) -> None:
            nonlocal remaining
            fired.append((due, loop.time() - start))
            remaining -= 1
            if remaining == 0:
                done.set_result(None)

        for delay in delays:
            loop.call_later(delay, fire, delay)
        await done

    labkit.run(main())
    assert [due for due, _ in fired] == sorted(delays)
    assert all(abs(at - due) < 1e-6 for due, at in fired)


def test_a_two_hundred_await_target_survives_both_sweeps() -> None:
    holders: set[int] = set()

    async def target() -> None:
        slot = asyncio.Semaphore(1)
        for step in range(100):
            async with slot:
                holders.add(step)
                try:
                    await asyncio.sleep(0)
                    await asyncio.sleep(0.01)
                finally:
                    holders.discard(step)

    def nothing_held() -> bool:
        return not holders

    for timeout in (False, True):
        report = labkit.run_cancel_sweep(target, check=nothing_held, timeout=timeout)
        assert report.ok
        assert report.suspension_points == 200


def test_a_leaky_two_hundred_await_target_fails_at_every_point_it_leaks() -> None:
    holders: set[int] = set()

    async def target() -> None:
        for step in range(100):
            holders.add(step)  # the bug: no try/finally around the awaits
            await asyncio.sleep(0)
            await asyncio.sleep(0.01)
            holders.discard(step)

    def nothing_held() -> bool:
        ok = not holders
        holders.clear()
        return ok

    report = labkit.run_cancel_sweep(target, check=nothing_held, raise_on_failure=False)
    assert report.suspension_points == 200
    assert len(report.failures) == 200


def test_pct_finds_a_three_step_race_in_a_crowd_of_bystanders() -> None:
    async def body() -> None:
        stock = {"widgets": 1}
        sold: list[str] = []

        async def buy(who: str, errands: int) -> None:
            for _ in range(errands):  # other awaits first: in asyncio's order, ann wins cleanly
                await asyncio.sleep(0)
            if stock["widgets"] > 0:
                await asyncio.sleep(0)  # checks, then pays: another buyer may slip in
                stock["widgets"] -= 1
                sold.append(who)

        async def bystander() -> None:
            for _ in range(5):
                await asyncio.sleep(0)

        await asyncio.gather(
            *(bystander() for _ in range(6)),
            buy("ann", 0),
            *(bystander() for _ in range(6)),
            buy("bob", 3),
        )
        assert stock["widgets"] >= 0, f"oversold to {sold}"

    with pytest.raises(labkit.ExplorationFailure) as caught:
        labkit.explore(body, runs=500, strategy="pct", seed=0)
    failure = caught.value
    replayed = labkit.replay(body, seed=failure.seed, check=False)
    assert replayed.failed
    assert replayed.trace.text() == failure.run.trace.text()
    assert replayed.schedule == failure.run.schedule
