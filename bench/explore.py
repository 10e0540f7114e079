"""Interleaving exploration: how fast schedules run, how far the delay bound cuts, how soon a race
is found.

1. Runs per second for a three-task body (each task awaits three times), per strategy, as a
   ratio to a plain ``asyncio.run`` of the same body (issue 16's goal: at least 1.0x), with
   ``labkit.run`` (virtual loop, no control) for reference. Round-robin, CPU time (see
   bench/_timing.py), medians.
2. The delay bound: for bodies of three tasks with three awaits each, one buggy and two correct,
   the schedules ``Exhaustive()`` runs (every schedule, or until the bug) next to
   ``Exhaustive(delays=d)``, and whether both reach the same verdict.
3. Runs (and seconds) each strategy needs to find a lost update that shows in only one of the
   six orders in which three tasks can resume, over 50 base seeds (issue 3: PCT under 50 runs
   and under 1 s).

Figures are measured in one run on this machine and only printed, never asserted.

Run: .venv/bin/python bench/explore.py
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from _timing import CLOCK, machine, measure, median

import labkit

Body = Callable[[], Awaitable[None]]


async def three_tasks() -> None:
    """Three tasks, three awaits each: 14 scheduling steps per run, 34,650 schedules."""
    total = 0

    async def worker() -> None:
        nonlocal total
        for _ in range(3):
            await asyncio.sleep(0)
            total += 1

    await asyncio.gather(*(asyncio.create_task(worker(), name=f"w{i}") for i in range(3)))
    assert total == 9


def open_race(*, fixed: bool) -> Body:
    """Three tasks, three awaits each: two users of a pool and its opener.

    A user checks the pool after its first await. The pool is used before it is opened only if
    the opener, created first, is held back until one user has taken two steps: three delays
    from asyncio's own order. The fix waits for the pool to be opened.
    """

    async def body() -> None:
        pool = {"open": False, "used": 0}
        opened = asyncio.Event()

        async def opener() -> None:
            pool["open"] = True
            opened.set()
            for _ in range(3):
                await asyncio.sleep(0)

        async def user() -> None:
            if fixed:
                await opened.wait()
            else:
                await asyncio.sleep(0)
            assert pool["open"], "the pool was used before it was opened"
            for _ in range(2):
                await asyncio.sleep(0)
            pool["used"] += 1

        await asyncio.gather(
            asyncio.create_task(opener(), name="opener"),
            asyncio.create_task(user(), name="user1"),
            asyncio.create_task(user(), name="user2"),
        )
        assert pool["used"] == 2

    return body


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


# -- 1. runs per second --------------------------------------------------------------------------


def speed(runs: int = 300, repeats: int = 7) -> None:
    def plain(runner: Callable[[Awaitable[None]], object]) -> Callable[[], None]:
        def go() -> None:
            for _ in range(runs):
                runner(three_tasks())

        return go

    def exploring(strategy: str) -> Callable[[], None]:
        def go() -> None:
            labkit.explore(three_tasks, runs=runs, strategy=strategy)

        return go

    variants: dict[str, Callable[[], object]] = {
        "asyncio.run (no exploration)": plain(asyncio.run),  # type: ignore[arg-type]
        "labkit.run (virtual, no control)": plain(labkit.run),  # type: ignore[arg-type]
    }
    for strategy in ("random", "pct", "exhaustive"):
        variants[f"explore strategy={strategy}"] = exploring(strategy)
    samples = measure(variants, repeats=repeats)
    print(
        f"1. runs per second, three tasks x three awaits "
        f"({runs} runs per sample, {repeats} samples)"
    )
    print(f"   {machine()}")
    print(f"   {'how':<34} {'runs/s':>8} {'vs asyncio.run':>15}")
    base = runs / median(samples["asyncio.run (no exploration)"])
    ratios = []
    for name, values in samples.items():
        rate = runs / median(values)
        ratio = rate / base
        if name.startswith("explore"):
            ratios.append(ratio)
        print(f"   {name:<34} {rate:>8.0f} {ratio:>14.2f}x")
    met = "met" if min(ratios) >= 1.0 else "NOT met"
    print(f"   goal (every strategy >= 1.0x asyncio.run): {met} (lowest {min(ratios):.2f}x)")


# -- 2. the delay bound --------------------------------------------------------------------------


def search(body: Body, delays: int | None) -> tuple[str, int, float]:
    """Verdict ("bug found" / "all ok"), schedules run, seconds of one Exhaustive exploration."""
    strategy = labkit.Exhaustive(limit=200_000, delays=delays)
    started = CLOCK()
    try:
        report = labkit.explore(body, runs=200_000, strategy=strategy)
    except labkit.ExplorationFailure as failure:
        return "bug found", failure.runs, CLOCK() - started
    assert report.complete, report
    return "all ok", report.runs, CLOCK() - started


def reduction() -> None:
    bodies = {
        "use before open (buggy)": open_race(fixed=False),
        "use before open (fixed)": open_race(fixed=True),
        "three counters (correct)": three_tasks,
        "lost update (buggy)": lost_update(),
    }
    bounds = (1, 2, 3)
    print("2. Exhaustive, every schedule vs the delay bound: schedules run, and the verdict")
    print("   (three tasks, three awaits each; the lost update: three tasks, one await each)")
    head = f"   {'body':<26} {'every schedule':>22}"
    for d in bounds:
        head += f" {f'delays={d}':>21}"
    print(head)
    agree = {d: True for d in bounds}
    totals = {d: 0 for d in bounds}
    total_full = 0
    for name, body in bodies.items():
        verdict, runs, seconds = search(body, None)
        total_full += runs
        line = f"   {name:<26} {runs:>7} {verdict:<9} {seconds:>5.2f}s"
        for d in bounds:
            bounded, bounded_runs, bounded_seconds = search(body, d)
            totals[d] += bounded_runs
            agree[d] = agree[d] and bounded == verdict
            line += f" {bounded_runs:>6} {bounded:<9} {bounded_seconds:>4.2f}s"
        print(line)
    for d in bounds:
        same = "the same verdict as every schedule on every body" if agree[d] else (
            "a different verdict on some body (a bug that needs more delays)"
        )
        print(
            f"   delays={d}: {totals[d]} schedules against {total_full} "
            f"({total_full / totals[d]:.0f}x fewer), {same}"
        )


# -- 3. runs to find a race ----------------------------------------------------------------------


def runs_to_find(strategy: str, seed: int) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        labkit.explore(lost_update(), runs=2000, strategy=strategy, seed=seed)
    except labkit.ExplorationFailure as failure:
        return failure.runs, time.perf_counter() - started
    return -1, time.perf_counter() - started


def finding() -> None:
    print("3. runs to find a lost update present in 1 of 6 orders (50 base seeds)")
    print(f"   {'strategy':<11} {'median':>6} {'mean':>6} {'max':>5} {'median s':>9} {'max s':>7}")
    verdicts = []
    for strategy in ("random", "pct", "exhaustive"):
        seeds = [0] if strategy == "exhaustive" else [1000 * i for i in range(50)]
        found = [runs_to_find(strategy, seed) for seed in seeds]
        counts = [n for n, _ in found]
        seconds = [s for _, s in found]
        print(
            f"   {strategy:<11} {statistics.median(counts):>6.0f} {statistics.mean(counts):>6.1f} "
            f"{max(counts):>5} {statistics.median(seconds):>9.3f} {max(seconds):>7.3f}"
        )
        if strategy == "pct":
            ok = max(counts) < 50 and max(seconds) < 1.0
            verdicts.append(
                f"goal (PCT: < 50 runs and < 1 s on every seed): {'met' if ok else 'NOT met'}"
            )
    for verdict in verdicts:
        print(f"   {verdict}")
    labkit.explore(lost_update(fixed=True), runs=200, strategy="pct")
    print("   the fixed version survives 200 PCT runs")


def main() -> None:
    speed()
    print()
    reduction()
    print()
    finding()


if __name__ == "__main__":
    main()
