"""Interleaving exploration: how fast schedules run, and how soon each strategy finds a race.

1. Schedules per second for a three-task test (each task awaits three times), per strategy,
   next to plain ``asyncio.run`` of the same body and to labkit.run (virtual loop, no control).
2. Runs (and wall time) each strategy needs to find a lost update that happens in only one of
   the six orders in which three tasks can resume, over 50 different base seeds. The goal
   from issue 3: PCT finds it in under 50 runs and under 1 s.

Figures are measured in one run on this machine and only printed, never asserted.

Run: .venv/bin/python bench/explore.py
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import labkit

Body = Callable[[], Awaitable[None]]


async def three_tasks() -> None:
    """Three tasks, three awaits each: 13 scheduling steps per run."""
    total = 0

    async def worker() -> None:
        nonlocal total
        for _ in range(3):
            await asyncio.sleep(0)
            total += 1

    await asyncio.gather(*(asyncio.create_task(worker(), name=f"w{i}") for i in range(3)))
    assert total == 9


def lost_update(*, fixed: bool = False) -> Body:
    """snapshot, deposit, restore resume together; only snapshot-deposit-restore loses."""

    async def body() -> None:
        account = {"balance": 100, "version": 0}
        saved: dict[str, int] = {}
        start = asyncio.Event()

        async def deposit() -> None:
            await start.wait()
            account["balance"] += 50
            account["version"] += 1

        async def snapshot() -> None:
            await start.wait()
            saved.update(account)

        async def restore() -> None:
            await start.wait()
            if saved and (not fixed or saved["version"] == account["version"]):
                account.update(saved)

        tasks = [
            asyncio.create_task(deposit(), name="deposit"),
            asyncio.create_task(snapshot(), name="snapshot"),
            asyncio.create_task(restore(), name="restore"),
        ]
        await asyncio.sleep(0)
        start.set()
        await asyncio.gather(*tasks)
        assert account["balance"] == 150

    return body


def schedules_per_second(strategy: str, runs: int) -> float:
    started = time.perf_counter()
    labkit.explore(three_tasks, runs=runs, strategy=strategy)
    return runs / (time.perf_counter() - started)


def plain_per_second(runner: Callable[[Awaitable[None]], object], runs: int) -> float:
    started = time.perf_counter()
    for _ in range(runs):
        runner(three_tasks())  # type: ignore[arg-type]
    return runs / (time.perf_counter() - started)


def runs_to_find(strategy: str, seed: int) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        labkit.explore(lost_update(), runs=2000, strategy=strategy, seed=seed)
    except labkit.ExplorationFailure as failure:
        return failure.runs, time.perf_counter() - started
    return -1, time.perf_counter() - started


def main() -> None:
    runs = 300
    print(f"schedules per second, three tasks x three awaits ({runs} runs each)")
    print(f"{'how':<34} {'runs/s':>8}")
    base = plain_per_second(asyncio.run, runs)
    print(f"{'asyncio.run (no exploration)':<34} {base:>8.0f}")
    print(f"{'labkit.run (virtual, no control)':<34} {plain_per_second(labkit.run, runs):>8.0f}")
    for strategy in ("random", "pct", "exhaustive"):
        rate = schedules_per_second(strategy, runs)
        how = f"explore strategy={strategy}"
        print(f"{how:<34} {rate:>8.0f}   ({rate / base:.2f}x asyncio.run)")

    print()
    print("runs to find a lost update present in 1 of 6 orders (50 base seeds)")
    print(f"{'strategy':<11} {'median':>6} {'mean':>6} {'max':>5} {'median s':>9} {'max s':>7}")
    verdicts = []
    for strategy in ("random", "pct", "exhaustive"):
        seeds = [0] if strategy == "exhaustive" else [1000 * i for i in range(50)]
        found = [runs_to_find(strategy, seed) for seed in seeds]
        counts = [n for n, _ in found]
        seconds = [s for _, s in found]
        print(
            f"{strategy:<11} {statistics.median(counts):>6.0f} {statistics.mean(counts):>6.1f} "
            f"{max(counts):>5} {statistics.median(seconds):>9.3f} {max(seconds):>7.3f}"
        )
        if strategy == "pct":
            ok = max(counts) < 50 and max(seconds) < 1.0
            verdicts.append(
                f"goal (PCT: < 50 runs and < 1 s on every seed): {'met' if ok else 'NOT met'}"
            )
    for verdict in verdicts:
        print(verdict)
    labkit.explore(lost_update(fixed=True), runs=200, strategy="pct")
    print("the fixed version survives 200 PCT runs")


if __name__ == "__main__":
    main()
