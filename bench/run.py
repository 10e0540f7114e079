"""`make bench`: run every benchmark module in bench/ that has a ``main()``, one after another.

The two benchmarks of issue 2 come first (sleepers, queue_throughput); every other module in
bench/ whose name does not start with an underscore and that defines ``main()`` follows in
alphabetical order. ``main`` is called with no arguments; it returns None or an exit code.
Figures are printed, never asserted.

Run: make bench   (or: .venv/bin/python bench/run.py [module ...])
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
FIRST = ("sleepers", "queue_throughput")


def discover() -> list[str]:
    """Benchmark module names: issue 2's two first, then the rest alphabetically."""
    names = sorted(
        path.stem
        for path in BENCH.glob("*.py")
        if not path.stem.startswith("_") and path.stem != "run"
    )
    return [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]


def run_one(name: str) -> bool:
    """Import bench/<name>.py and call its main(); False if it failed."""
    try:
        module = importlib.import_module(name)
    except Exception:
        print(f"!! bench/{name}.py failed to import:\n{traceback.format_exc()}", flush=True)
        return False
    main = getattr(module, "main", None)
    if not callable(main):
        return True  # a helper module, not a benchmark
    started = time.perf_counter()
    try:
        code = main([]) if _takes_argv(main) else main()
    except SystemExit as exc:
        code = exc.code
    except Exception:
        print(f"!! bench/{name}.py failed:\n{traceback.format_exc()}", flush=True)
        return False
    print(f"   (bench/{name}.py took {time.perf_counter() - started:.1f} s)\n", flush=True)
    return code in (None, 0)


def _takes_argv(main: object) -> bool:
    """Whether main accepts an argv list (so it must not read the runner's own sys.argv)."""
    code = getattr(main, "__code__", None)
    return code is not None and code.co_argcount >= 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    names = args or discover()
    failed = [name for name in names if not run_one(name)]
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
