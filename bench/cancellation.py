"""Cost of the cancel-at-every-await sweep: how it grows with the target's suspension points.

A target with n awaits is run n + 1 times, run k taking about k steps, so the sweep executes
about n²/2 target steps; this prints the real time per sweep for n = 50, 100 and 200 on the
virtual loop (where the target's sleeps cost no real time), for both flavours, and the ratio
to n = 50, which grows towards (n/50)² as the steps outweigh the fixed cost of each run.

Run: .venv/bin/python bench/cancellation.py
"""

from __future__ import annotations

import asyncio
import statistics
import time

import labkit


def make_target(awaits: int) -> labkit.cancellation.Factory:
    async def target() -> int:
        done = 0
        for _ in range(awaits // 2):
            await asyncio.sleep(0)
            await asyncio.sleep(0.01)
            done += 2
        return done

    return target


def time_sweep(awaits: int, *, timeout: bool, repeats: int = 3) -> tuple[float, int]:
    """Median real seconds of one sweep, and the number of target steps it ran."""
    figures = []
    points = 0
    for _ in range(repeats):
        started = time.perf_counter()
        report = labkit.run_cancel_sweep(make_target(awaits), timeout=timeout)
        figures.append(time.perf_counter() - started)
        points = report.suspension_points
    assert points == awaits, (points, awaits)
    steps = points + sum(range(1, points + 1))
    return statistics.median(figures), steps


def main() -> None:
    print("cancel-at-every-await sweep on the virtual loop (median of 3 sweeps)")
    print(f"{'flavour':<8} {'awaits':>6} {'runs':>5} {'steps':>7} {'seconds':>8} {'vs 50':>7}")
    for flavour in ("cancel", "timeout"):
        base = None
        for awaits in (50, 100, 200):
            seconds, steps = time_sweep(awaits, timeout=flavour == "timeout")
            base = base or seconds
            print(
                f"{flavour:<8} {awaits:>6} {awaits + 1:>5} {steps:>7} {seconds:>8.3f} "
                f"{seconds / base:>6.1f}x"
            )
    print(
        "growth: points x target length, so at most (n/50)^2 = 4x at 100 and 16x at 200 awaits;"
        " the fixed cost of each run (a task, settling, the checks) weighs most at n = 50,"
        " so the measured ratios stay below that bound"
    )


if __name__ == "__main__":
    main()
