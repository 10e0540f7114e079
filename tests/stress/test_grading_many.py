"""Stress: a folder of 48 submissions, a third of them hostile, graded in parallel, twice."""

from __future__ import annotations

import importlib.util
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "grading"

pytestmark = [
    pytest.mark.stress,
    pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux-only"),
]


def _fixture_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lesson98", FIXTURE / "lesson98.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


L = _fixture_module()
SOLVED = {"ex1_solution": L.SOLVED_98_1, "ex2_solution": L.SOLVED_98_2}
KINDS: dict[str, tuple[dict[str, str], float]] = {
    "solved": (SOLVED, 6),
    "half": ({"ex1_solution": L.SOLVED_98_1, "ex2_solution": L.HALF_98_2}, 4.5),
    "empty": ({}, 0),
    "endless": ({**SOLVED, "ex1_solution": "while True:\n    pass"}, 3),
    "quitter": ({**SOLVED, "ex2_solution": "import os\nos._exit(3)"}, 3),
    # os.fork in a learner cell is flagged (it reaches past the notebook): no points; the
    # sandbox tests run such cells directly to show nothing escapes.
    "forker": (
        {
            **SOLVED,
            "ex1_solution": L.SOLVED_98_1 + "\nimport os\nfor _ in range(20):\n"
            "    if os.fork() == 0:\n        os._exit(0)",
        },
        0,
    ),
}


@pytest.mark.timeout(900)
def test_many_submissions_grade_in_parallel_and_regrade_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "collected"
    expected: dict[str, float] = {}
    for number in range(48):
        kind = list(KINDS)[number % len(KINDS)]
        sources, points = KINDS[kind]
        name = f"{kind}{number:02d}"
        L.write(folder / f"{name}.ipynb", L.learner(**sources))
        expected[name] = points
    command = [
        sys.executable,
        "-m",
        "labkit",
        "grade",
        str(folder),
        "--jobs",
        "2",
        "--instructor",
        str(FIXTURE / "instructor"),
        "--gradebook",
        str(tmp_path / "book.sqlite"),
        "--feedback",
        str(tmp_path / "feedback"),
        "--cell-timeout",
        "3",
        "--cpu",
        "20",
    ]
    first = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    with sqlite3.connect(tmp_path / "book.sqlite") as db:
        stored = dict(
            db.execute(
                "SELECT l.name, s.points FROM submissions s JOIN learners l ON l.id = s.learner_id"
            ).fetchall()
        )
    assert stored == expected
    second = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert f"0 graded, {len(expected)} unchanged, 0 rejected" in second.stdout


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("number", range(12))
def test_every_lessons_namespace_is_the_same_without_pytest(number: int, tmp_path: Path) -> None:
    """What grading skips (pytest's run of each %%ipytest cell) changes no lesson's namespace."""
    spec = importlib.util.spec_from_file_location("shell_tests", ROOT / "tests/unit/test_shell.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.equivalent(number, tmp_path)
