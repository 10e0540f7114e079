"""Benchmark 1: 100,000 tasks, each sleeping a random virtual delay of up to one day.

labkit's VirtualTimeLoop against async-solipsism and looptime, the two other virtual-time loops
for asyncio (installed for the benchmark only: ``make bench``). Every loop runs the same
workload from the same seed; each run is checked to end at the same virtual time (the largest
delay), so no loop can win by skipping work. Figures are printed, never asserted.

Run: make bench   (or: .venv/bin/python bench/sleepers.py --n 20000 --repeats 3)
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections.abc import Callable

from _ceiling import CeilingLoop
from _timing import machine, measure, median, summary_table

import labkit

DAY = 86_400.0
CEILING = "ceiling (bench only)"


async def sleepers(n: int, seed: int) -> float:
    """n tasks sleep random delays in [0, one day); returns the virtual time at the end."""
    rng = random.Random(seed)
    delays = [rng.uniform(0, DAY) for _ in range(n)]
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = [asyncio.create_task(asyncio.sleep(delay)) for delay in delays]
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    # Every loop must really have walked the whole day (looptime rounds to 1 us).
    assert abs(elapsed - max(delays)) < 1e-3, (elapsed, max(delays))
    return elapsed


def _labkit_loop() -> asyncio.AbstractEventLoop:
    return labkit.VirtualTimeLoop()


def competitors() -> tuple[dict[str, Callable[[], asyncio.AbstractEventLoop]], list[str]]:
    """The loop factories that are installed, and a note for each that is not."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"labkit": _labkit_loop}
    missing = []
    try:
        import async_solipsism

        factories["async-solipsism"] = async_solipsism.EventLoop
    except ImportError:
        missing.append("async-solipsism")
    try:
        import looptime

        # looptime's own constructor: a patched stock loop with time compaction enabled.
        factories["looptime"] = lambda: looptime.new_event_loop(start=0)
    except ImportError:
        missing.append("looptime")
    return factories, missing


def runner(
    factory: Callable[[], asyncio.AbstractEventLoop], n: int, seed: int
) -> Callable[[], None]:
    def run() -> None:
        loop = factory()
        try:
            loop.run_until_complete(sleepers(n, seed))
        finally:
            loop.close()

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of sleeping tasks")
    parser.add_argument("--repeats", type=int, default=5, help="runs per loop")
    parser.add_argument(
        "--looptime-repeats", type=int, default=3, help="runs of looptime (about 10x slower)"
    )
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)

    factories, missing = competitors()
    print(f"== Benchmark 1: {args.n:,} tasks sleeping random virtual delays of up to one day")
    print(f"   {machine()}")
    if missing:
        print(f"   not installed (run `make bench`): {', '.join(missing)}")
    variants = {name: runner(f, args.n, args.seed) for name, f in factories.items()}
    variants[CEILING] = runner(CeilingLoop, args.n, args.seed)
    samples = measure(variants, repeats=args.repeats, at_most={"looptime": args.looptime_repeats})
    print(summary_table(samples))
    ours = median(samples["labkit"])
    ceiling = median(samples.pop(CEILING))
    others = {name: median(v) for name, v in samples.items() if name != "labkit"}
    for name, theirs in others.items():
        print(f"   labkit vs {name}: {theirs / ours:.2f}x faster")
    if others:
        best_name = min(others, key=others.__getitem__)
        ratio = others[best_name] / ours
        verdict = "met" if ratio >= 2 else "NOT met"
        print(
            f"   ratio vs the better competitor ({best_name}): {ratio:.2f}x "
            f"(goal: >= 2x, {verdict})"
        )
    print(
        "   the ceiling loop (bench/_ceiling.py: a tuple timer heap, no selector, a minimal\n"
        f"   step) takes {ceiling / ours:.0%} of labkit's time: no loop on asyncio's machinery can "
        f"be more than {ours / ceiling:.2f}x\n"
        "   faster than labkit here; the rest is asyncio's Task, Future and Handle, the garbage\n"
        "   collector and the workload itself"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
