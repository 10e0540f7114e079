"""Benchmark 2: 100,000 items through an asyncio.Queue, producer to consumer, no timers at all.

labkit's VirtualTimeLoop against asyncio's stock loop (and uvloop, for reference), on a
workload where the virtual clock has nothing to do: what the virtual loop costs on top of
asyncio's own machinery. Goal from issue 2: at most 1.1x the stock loop's time. Figures are
printed, never asserted.

Run: make bench   (or: .venv/bin/python bench/queue_throughput.py --n 20000 --maxsize 1)
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from _timing import machine, measure, median, summary_table

import labkit


async def pipeline(n: int, maxsize: int) -> int:
    """A producer puts n items on a bounded queue; a consumer sums them."""
    queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=maxsize)
    total = 0

    async def producer() -> None:
        for i in range(n):
            await queue.put(i)
        await queue.put(None)

    async def consumer() -> None:
        nonlocal total
        while (item := await queue.get()) is not None:
            total += item

    async with asyncio.TaskGroup() as tg:
        tg.create_task(producer(), name="producer")
        tg.create_task(consumer(), name="consumer")
    assert total == n * (n - 1) // 2
    return total


def factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    found: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio (stock)": asyncio.new_event_loop,
        "labkit": labkit.VirtualTimeLoop,
    }
    try:
        import uvloop

        found["uvloop (reference)"] = uvloop.new_event_loop
    except ImportError:
        pass
    return found


def runner(
    factory: Callable[[], asyncio.AbstractEventLoop], n: int, maxsize: int
) -> Callable[[], None]:
    def run() -> None:
        loop = factory()
        try:
            loop.run_until_complete(pipeline(n, maxsize))
        finally:
            loop.close()

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="items through the queue")
    parser.add_argument(
        "--maxsize",
        type=int,
        nargs="+",
        default=[100, 1],
        help="the queue's bound; 1 makes every item a trip through the loop (default: 100 1)",
    )
    parser.add_argument("--repeats", type=int, default=7, help="runs per loop")
    args = parser.parse_args(argv)

    for maxsize in args.maxsize:
        print(
            f"== Benchmark 2: {args.n:,} items through asyncio.Queue(maxsize={maxsize}), "
            "producer to consumer, no timers"
        )
        print(f"   {machine()}")
        variants = {name: runner(f, args.n, maxsize) for name, f in factories().items()}
        samples = measure(variants, repeats=args.repeats)
        print(summary_table(samples))
        ratio = median(samples["labkit"]) / median(samples["asyncio (stock)"])
        verdict = "met" if ratio <= 1.1 else "NOT met"
        print(f"   labkit / stock time: {ratio:.3f}x (goal: <= 1.1x, {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
