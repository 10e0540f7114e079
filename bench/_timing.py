"""Shared helpers for the benchmarks: repeat a measurement and summarize it honestly.

Figures are printed, never asserted. Every benchmark runs its variants round-robin (A, B, C,
A, B, C, ...) so a burst of load from elsewhere on the machine hits them all alike.

Example::

    samples = measure({"fast": run_fast, "slow": run_slow}, repeats=5)
    print(summary_table(samples))
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

# `make bench` installs the competitors here (pip --target), never into the kit's .venv: looptime
# registers pytest plugins that would patch every test loop of the kit's own suite.
BENCH_DEPS = Path(__file__).resolve().parents[1] / "build" / "bench-deps"
if BENCH_DEPS.is_dir() and str(BENCH_DEPS) not in sys.path:
    sys.path.append(str(BENCH_DEPS))


# The benchmarks are single-threaded and CPU-bound, so they measure the CPU time of this
# process: unlike wall time, it does not grow when other jobs share the machine's cores.
# LABKIT_BENCH_CLOCK=wall measures wall time instead (on an otherwise idle machine).
CLOCK_NAME = "wall" if os.environ.get("LABKIT_BENCH_CLOCK") == "wall" else "cpu"
CLOCK = time.perf_counter if CLOCK_NAME == "wall" else time.process_time


def measure(
    variants: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    at_most: Mapping[str, int] | None = None,
) -> dict[str, list[float]]:
    """Seconds (CPU or wall, see CLOCK) of each variant, round-robin, GC collected between runs.

    Every variant runs ``repeats`` times, except those ``at_most`` caps (a very slow one).
    """
    samples: dict[str, list[float]] = {name: [] for name in variants}
    caps = at_most or {}
    for round_ in range(repeats):
        for name, run in variants.items():
            if round_ >= caps.get(name, repeats):
                continue
            gc.collect()
            started = CLOCK()
            run()
            samples[name].append(CLOCK() - started)
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """min-max around the median, as a percentage of the median."""
    mid = median(values)
    low, high = min(values), max(values)
    return f"{low:.3f}-{high:.3f} s (-{(mid - low) / mid:.0%}/+{(high - mid) / mid:.0%})"


def summary_table(samples: Mapping[str, list[float]]) -> str:
    """One line per variant: median, spread, number of runs."""
    width = max(len(name) for name in samples)
    lines = []
    for name, values in samples.items():
        lines.append(
            f"  {name:<{width}}  median {median(values):7.3f} s   spread {spread(values)}"
            f"   n={len(values)}"
        )
    return "\n".join(lines)


def machine() -> str:
    """A one-line description of where the figures were measured."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = platform.processor() or platform.machine()
    return (
        f"Python {platform.python_version()} on {platform.system()} {cpu}, "
        f"{os.cpu_count()} CPUs, load average {load:.2f} at start; {CLOCK_NAME} time"
    )
