"""The grading shell runs cells as JupyterLab's kernel does, %%ipytest cells without pytest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from labkit.course.grading.shell import CellRunner, GradingShell

ROOT = Path(__file__).resolve().parents[2]

# Runs one lesson's cells in a fresh process and prints, after each cell, the names the
# namespace holds with their types: once as grading runs them, once with pytest as in JupyterLab.
NAMESPACE = r"""
import json, sys
from labkit.course.grading.shell import CellRunner
from labkit.course.grading.submission import load_lessons
lesson = load_lessons(__import__("pathlib").Path(sys.argv[1]))[int(sys.argv[2])]
runner = CellRunner(60, run_pytest=sys.argv[3] == "pytest")
runner.start_loop()
skip = {"In", "Out", "exit", "quit", "get_ipython"}
steps = []
for cell in lesson.cells:
    if cell.cell_type != "code" or cell.role == "hidden":
        continue
    error = runner.run_cell(cell.source)
    names = {
        name: type(value).__name__
        for name, value in runner.namespace.items()
        if not name.startswith("_") and name not in skip
    }
    steps.append([cell.id, error, names])
print(json.dumps(steps))
"""


def _namespaces(number: int, mode: str, tmp_path: Path) -> list[Any]:
    done = subprocess.run(
        [sys.executable, "-c", NAMESPACE, str(ROOT / "instructor"), str(number), mode],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    steps: list[Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return steps


def equivalent(number: int, tmp_path: Path) -> None:
    """Every cell leaves the same names, of the same types, with and without running pytest."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    graded = _namespaces(number, "define", tmp_path / "a")
    kernel = _namespaces(number, "pytest", tmp_path / "b")
    assert [s[0] for s in graded] == [s[0] for s in kernel]
    for (cell, error, names), (_, kernel_error, kernel_names) in zip(graded, kernel, strict=True):
        assert error == "", (cell, error)
        assert kernel_error == "", (cell, kernel_error)
        assert names == kernel_names, cell


def test_ipytest_cells_define_the_same_namespace_without_pytest(tmp_path: Path) -> None:
    """Lesson 2 (whose hidden checks need an earlier exercise's test); all lessons: stress."""
    equivalent(2, tmp_path)


@pytest.fixture(scope="module")
def runner() -> CellRunner:
    runner = CellRunner(cell_limit=20)
    runner.start_loop()
    return runner


def test_cells_run_inside_a_running_loop_in_the_main_thread(runner: CellRunner) -> None:
    assert runner.run_cell("import asyncio, threading\nloop = asyncio.get_running_loop()") == ""
    assert runner.run_cell("x = await asyncio.sleep(0, 41) + 1") == ""
    assert runner.namespace["x"] == 42
    assert runner.run_cell("assert threading.current_thread() is threading.main_thread()") == ""
    error = runner.run_cell(
        "async def f(): pass\ncoro = f()\ntry:\n    asyncio.run(coro)\nfinally:\n    coro.close()"
    )
    assert error.startswith(
        "RuntimeError: asyncio.run() cannot be called from a running event loop"
    )


def test_matplotlib_inline_works_as_under_ipykernel(runner: CellRunner) -> None:
    assert GradingShell.initialized()
    assert runner.run_cell("%matplotlib inline") == ""
    assert (
        runner.run_cell(
            "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2])"
        )
        == ""
    )
    backend = runner.run_cell("import matplotlib\nraise ValueError(matplotlib.get_backend())")
    assert backend in (
        "ValueError: inline",
        "ValueError: module://matplotlib_inline.backend_inline",
    )
    assert runner.shell.enable_gui("inline") is None


def test_an_ipytest_cell_cleans_earlier_tests_and_defines_its_own(runner: CellRunner) -> None:
    assert runner.run_cell("def test_old(): pass\ndef helper(): pass") == ""
    assert runner.run_cell("%%ipytest -q\ndef test_new():\n    assert False") == ""
    assert "test_old" not in runner.namespace
    assert "helper" in runner.namespace
    assert "test_new" in runner.namespace
    assert runner.output == ""  # pytest did not run: no report


def test_a_cell_that_runs_too_long_is_stopped_and_the_next_one_runs() -> None:
    runner = CellRunner(cell_limit=0.5)
    runner.start_loop()
    assert "ran longer than the 0.5 s limit per cell" in runner.run_cell("while True:\n    pass")
    assert runner.run_cell("y = 1") == ""
