"""Benchmark (issue 16 §2): what a learner waits for, a ``%%ipytest`` cell and a lesson's Run All.

In real kernels of the kit's environment, driven through jupyter_client as JupyterLab drives
them, it measures

* the median time of a one-test ``%%ipytest`` cell (a plain test, and an async test on the
  virtual loop), from the execute request to the kernel's idle status, with labkit's runner and
  with the old path (``setup(runner="ipytest")``: plain ``ipytest.run``), in two kernels side by
  side, cell by cell round-robin; the kernel's CPU time per cell beside it (it does not grow when
  other jobs share the machine); a plain ``x = 1`` cell as the floor;
* Run All of every lesson's instructor notebook (solutions, checks and hidden checks: the
  longest a lesson runs), from the first cell's start to the last cell's end, in a fresh kernel
  each, both ways, the two runs of a lesson back to back.

Figures are printed, never asserted. Goals (issue 16): <= 0.15 s per simple test cell, and each
lesson's Run All under 10 s, on 2 idle cores.

Run: .venv/bin/python bench/run.py notebook_cells   (part of `make bench`)
     .venv/bin/python bench/notebook_cells.py --cells 30 --lessons 00,02
"""

from __future__ import annotations

import argparse
import copy
import os
import queue
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUNNERS = ("ipytest", "labkit")
SIMPLE = "%%ipytest\n\ndef test_one():\n    assert 1 + 1 == 2\n"
ASYNC = (
    "%%ipytest\n\n"
    '@pytest.mark.asyncio(loop_factories=["virtual"])\n'
    "async def test_an_hour():\n"
    "    await asyncio.sleep(3600)\n"
)
PLAIN = "x = 1"


def _kernel_manager(folder: Path) -> Any:
    """A started kernel of this Python (the kit's environment), in ``folder``."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager

    class OwnKernel(KernelSpecManager):  # type: ignore[misc]
        def get_kernel_spec(self, kernel_name: str, *args: Any, **kwargs: Any) -> Any:
            argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
            return KernelSpec(argv=argv, display_name="Python 3 (ipykernel)", language="python")

    return KernelManager(kernel_name="python3", kernel_spec_manager=OwnKernel())


class Kernel:
    """One kernel, its client, and the CPU time it has used."""

    def __init__(self, folder: Path, runner: str) -> None:
        import psutil

        self.runner = runner
        self.manager = _kernel_manager(folder)
        self.manager.start_kernel(cwd=str(folder))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)
        self.process = psutil.Process(self.manager.provisioner.process.pid)
        setup = f'import asyncio, pytest\nfrom labkit.course import setup\nsetup(runner="{runner}")'
        self.execute(setup)

    def cpu(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def execute(self, code: str) -> tuple[float, float, str]:
        """Run one cell: (wall seconds, kernel CPU seconds, what it printed)."""
        cpu, started = self.cpu(), time.perf_counter()
        msg_id = self.client.execute(code)
        texts: list[str] = []
        while True:
            try:
                message = self.client.get_iopub_msg(timeout=300)
            except queue.Empty:
                raise RuntimeError(f"the {self.runner} kernel hangs on {code!r}") from None
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                texts.append(message["content"]["text"])
            elif message["msg_type"] == "error":
                texts.append("\n".join(message["content"]["traceback"]))
            elif (
                message["msg_type"] == "status"
                and message["content"]["execution_state"] == "idle"
            ):
                break
        return time.perf_counter() - started, self.cpu() - cpu, "".join(texts)

    def stop(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def cells(rounds: int) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Per cell kind and runner: (wall, cpu) of each measured cell, round-robin over kernels."""
    folder = ROOT / "notebooks"
    kernels = [Kernel(folder, runner) for runner in RUNNERS]
    kinds = {"simple test cell": SIMPLE, "async test cell (virtual loop)": ASYNC, "x = 1": PLAIN}
    samples: dict[str, dict[str, list[tuple[float, float]]]] = {
        kind: {k.runner: [] for k in kernels} for kind in kinds
    }
    try:
        outputs = {}
        for kernel in kernels:  # warm up: the first test cell of a kernel imports the plugins
            for code in (SIMPLE, ASYNC, SIMPLE, ASYNC):
                outputs[kernel.runner] = kernel.execute(code)[2]
        if len(set(outputs.values())) != 1:
            raise RuntimeError(f"the runners print different reports: {outputs}")
        for _ in range(rounds):
            for kind, code in kinds.items():
                for kernel in kernels:
                    wall, cpu, _text = kernel.execute(code)
                    samples[kind][kernel.runner].append((wall, cpu))
    finally:
        for kernel in kernels:
            kernel.stop()
    return samples


def run_all(notebook: Path, runner: str) -> tuple[float, int, list[tuple[float, str]]]:
    """Seconds from the first cell's start to the last cell's end, the code cells run, and the
    seconds of each cell (slowest first)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(notebook), as_version=4)
    for cell in nb.cells:
        cell.outputs = [] if cell.cell_type == "code" else cell.get("outputs")
    if runner != "labkit":
        first = next(c for c in nb.cells if c.cell_type == "code" and "setup()" in c.source)
        first.source = first.source.replace("setup()", f'setup(runner="{runner}")')
    marks: list[float] = []
    each: list[tuple[float, str]] = []
    count = sum(cell.cell_type == "code" for cell in nb.cells)

    def started(**_: Any) -> None:
        marks.append(time.perf_counter())

    def executed(cell: Any, **_: Any) -> None:
        marks.append(time.perf_counter())
        each.append((marks[-1] - marks[-2], str(cell.get("id", "?"))))

    client = NotebookClient(
        copy.deepcopy(nb),
        km=_kernel_manager(notebook.parent),
        timeout=600,
        record_timing=False,
        resources={"metadata": {"path": str(notebook.parent)}},
        on_cell_execute=started,
        on_cell_executed=executed,
    )
    saved = os.environ.pop("LABKIT_RESULTS", None)
    try:
        client.execute()
    finally:
        if saved is not None:
            os.environ["LABKIT_RESULTS"] = saved
    return marks[-1] - marks[0], count, sorted(each, reverse=True)


def lessons(selected: Sequence[str], rounds: int) -> dict[str, dict[str, list[float]]]:
    notebooks = sorted((ROOT / "instructor").glob("[0-9][0-9]-*.ipynb"))
    if selected:
        notebooks = [n for n in notebooks if n.name[:2] in selected]
    found: dict[str, dict[str, list[float]]] = {n.stem: {r: [] for r in RUNNERS} for n in notebooks}
    for round_ in range(rounds):
        for index, notebook in enumerate(notebooks):
            order = RUNNERS if (index + round_) % 2 == 0 else RUNNERS[::-1]
            slowest: list[tuple[float, str]] = []
            for runner in order:
                seconds, count, each = run_all(notebook, runner)
                found[notebook.stem][runner].append(seconds)
                slowest = each if runner == "labkit" else slowest
            cells = ", ".join(f"{name} {seconds:.1f} s" for seconds, name in slowest[:3])
            print(
                f"  {notebook.stem:<36} {count:3d} code cells   "
                + "   ".join(f"{r} {found[notebook.stem][r][-1]:6.2f} s" for r in RUNNERS)
                + f"   slowest cells (new): {cells}",
                flush=True,
            )
    return found


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=20, help="measured cells per kind and runner")
    parser.add_argument("--lessons", default="", help="comma-separated lesson numbers (00,02)")
    parser.add_argument("--lesson-rounds", type=int, default=1, help="Run All rounds per lesson")
    parser.add_argument("--no-lessons", action="store_true", help="measure cells only")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])

    load: Callable[[], float] = lambda: os.getloadavg()[0]  # noqa: E731
    print("== a learner's cell and a lesson's Run All (issue 16 §2), in real kernels")
    print(f"   Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {load():.2f} at start")
    print("   old: setup(runner='ipytest'), plain ipytest.run; new: labkit's runner (the default)")
    samples = cells(args.cells)
    print(f"\n  {'cell':<32} {'old median':>11} {'new median':>11} {'old/new':>8}   kernel CPU")
    for kind, by_runner in samples.items():
        old = _median([w for w, _c in by_runner["ipytest"]])
        new = _median([w for w, _c in by_runner["labkit"]])
        old_cpu = _median([c for _w, c in by_runner["ipytest"]])
        new_cpu = _median([c for _w, c in by_runner["labkit"]])
        print(
            f"  {kind:<32} {old:9.3f} s {new:9.3f} s {old / new:7.2f}×   "
            f"{old_cpu:.3f} s -> {new_cpu:.3f} s"
        )
    print(f"  ({args.cells} cells of each kind per runner; goal: simple test cell <= 0.15 s)")
    if not args.no_lessons:
        print(f"\n  Run All of each instructor notebook, load {load():.2f} now:")
        selected = [s.strip() for s in args.lessons.split(",") if s.strip()]
        found = lessons(selected, args.lesson_rounds)
        print(f"\n  {'lesson':<36} {'old':>8} {'new':>8} {'old/new':>8}")
        for name, by_runner in found.items():
            old, new = _median(by_runner["ipytest"]), _median(by_runner["labkit"])
            print(f"  {name:<36} {old:6.2f} s {new:6.2f} s {old / new:7.2f}×")
        worst = max(_median(b["labkit"]) for b in found.values()) if found else float("nan")
        print(f"  slowest lesson, new: {worst:.2f} s (goal: each under 10 s on 2 idle cores)")
    print(f"   load {load():.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
