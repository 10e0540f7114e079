"""`labkit grade` on a folder of solved, half-solved, empty, tampered, malicious, broken files."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "grading"
LIMITS = ("--timeout", "40", "--cpu", "6", "--cell-timeout", "3", "--memory", "1024")

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux-only")


def _fixture_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lesson98", FIXTURE / "lesson98.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


L = _fixture_module()
SOLVED = {"ex1_solution": L.SOLVED_98_1, "ex2_solution": L.SOLVED_98_2}

# learner -> (solution sources, points for 98.1, points for 98.2)
GOOD: dict[str, tuple[dict[str, str], float, float]] = {
    "solved": (SOLVED, 3, 3),
    "half": ({"ex1_solution": L.SOLVED_98_1, "ex2_solution": L.HALF_98_2}, 3, 1.5),
    "empty": ({}, 0, 0),
    "wrong": ({"ex1_solution": L.WRONG_98_1, "ex2_solution": L.SOLVED_98_2}, 1, 3),
    "endless": ({**SOLVED, "ex1_solution": "while True:\n    pass"}, 0, 3),
    # Blocks in C, where the per-cell alarm cannot interrupt it: the job is stopped.
    "stubborn": ({**SOLVED, "ex1_solution": "sum(range(10**12))"}, 0, 0),
    "hog": ({**SOLVED, "ex1_solution": "hog = [0] * 10**10\n" + L.SOLVED_98_1}, 0, 3),
    # A cell that ends its process stops only the exercises that run it.
    "quitter": ({**SOLVED, "ex2_solution": L.SOLVED_98_2 + "\nimport os\nos._exit(0)"}, 3, 0),
    "exiter": ({**SOLVED, "ex1_solution": L.SOLVED_98_1 + "\nimport sys\nsys.exit()"}, 3, 3),
    "crasher": (
        {
            **SOLVED,
            "ex2_solution": "import faulthandler\nfaulthandler._sigsegv()",
        },
        3,
        0,
    ),
    # Reaching into the machinery costs its exercise and every later one their points.
    "cheater": (
        {
            **SOLVED,
            "ex1_solution": L.WRONG_98_1 + "\nimport labkit.course.exercise as ex\n"
            "ex.check = lambda *a, **k: None\ncheck = ex.check",
        },
        0,
        0,
    ),
}


def build_folder(folder: Path) -> dict[str, str]:
    """Write every submission; return each bad file's name and the phrase its error carries."""
    for name, (sources, _, _) in GOOD.items():
        L.write(folder / f"{name}.ipynb", L.learner(**sources))
    tampered = L.learner(ex1_solution=L.WRONG_98_1, ex2_solution=L.SOLVED_98_2)
    L.cell(tampered, "ex1-check")["source"] = 'check("98.1", lambda: None, points=2)'
    L.write(folder / "tampered.ipynb", tampered)

    (folder / "garbled.ipynb").write_text('{"cells": [', encoding="utf-8")
    L.write(folder / "listing.ipynb", {"not": "a notebook"})
    other = L.learner()
    other["metadata"]["labkit"]["lesson"] = 3
    L.write(folder / "stray.ipynb", other)
    gap = L.learner()
    gap["cells"] = [c for c in gap["cells"] if c["id"] != "ex1-solution"]
    L.write(folder / "gap.ipynb", gap)
    twin = L.learner()
    twin["cells"].append(copy.deepcopy(L.cell(twin, "ex2-solution")))
    L.write(folder / "twin.ipynb", twin)
    huge = L.learner(**SOLVED)
    L.cell(huge, "ex1-solution")["outputs"] = [
        {"output_type": "stream", "name": "stdout", "text": "x" * 300_000}
    ]
    L.write(folder / "huge.ipynb", huge)
    return {
        "garbled.ipynb": "not JSON",
        "listing.ipynb": "not a Jupyter notebook",
        "stray.ipynb": "unknown lesson 3",
        "gap.ipynb": "missing exercise cells",
        "twin.ipynb": "duplicated cells",
        "huge.ipynb": "MB, the limit is 0.2 MB)",  # in the unit --max-size takes
    }


def grade(tmp_path: Path, *targets: Path, jobs: int = 2) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "labkit",
            "grade",
            *map(str, targets),
            "--jobs",
            str(jobs),
            "--instructor",
            str(FIXTURE / "instructor"),
            "--gradebook",
            str(tmp_path / "book.sqlite"),
            "--feedback",
            str(tmp_path / "feedback"),
            "--max-size",
            "0.2",
            *LIMITS,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        check=False,
    )


def rows(tmp_path: Path) -> dict[str, tuple[float, int, str]]:
    with sqlite3.connect(tmp_path / "book.sqlite") as db:
        found = db.execute(
            "SELECT l.name, s.points, s.tampered, s.outcome FROM submissions s "
            "JOIN learners l ON l.id = s.learner_id"
        ).fetchall()
    return {name: (points, tampered, outcome) for name, points, tampered, outcome in found}


@pytest.mark.timeout(600)
def test_grading_a_folder_gives_each_notebook_its_points(tmp_path: Path) -> None:
    folder = tmp_path / "collected"
    bad = build_folder(folder)
    done = grade(tmp_path, folder)

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    for name, phrase in bad.items():
        (line,) = [
            x for x in done.stderr.splitlines() if x.startswith(f"labkit grade: {folder / name}:")
        ]
        assert phrase in line

    table = {
        line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()[2:] if line.strip()
    }
    expected = {name: (p1, p2) for name, (_, p1, p2) in GOOD.items()}
    expected["tampered"] = (1, 3)
    for name, (p1, p2) in expected.items():
        assert table[name][:3] == [f"{p1:g}", f"{p2:g}", f"{p1 + p2:g}"], (name, table[name])
    assert "tampered" in table["tampered"][-1]
    assert "tampered" in table["cheater"][-1]

    stored = rows(tmp_path)
    assert set(stored) == set(expected)
    assert stored["tampered"][1] == 1
    assert stored["solved"] == (6, 0, "completed")
    assert stored["stubborn"][2] in ("cpu", "timeout")
    assert stored["quitter"][2] == "exited"
    assert stored["crasher"][2] == "crashed"

    feedback = tmp_path / "feedback"
    half = (feedback / "half" / "98-grading-fixture.md").read_text()
    assert "- caught: adds two instead of doubling" in half
    assert "- **missed**: squares" in half
    assert "**Tampered:**" in (feedback / "tampered" / "98-grading-fixture.md").read_text()
    assert "not solved yet" in (feedback / "empty" / "98-grading-fixture.md").read_text()
    assert "limit per cell" in (feedback / "endless" / "98-grading-fixture.md").read_text()
    assert "os._exit()" in (feedback / "quitter" / "98-grading-fixture.md").read_text()
    assert "SIGSEGV" in (feedback / "crasher" / "98-grading-fixture.md").read_text()
    assert "MemoryError" in (feedback / "hog" / "98-grading-fixture.md").read_text()
    cheat = (feedback / "cheater" / "98-grading-fixture.md").read_text()
    assert "exercise 98.1's solution cell, line 4: imports labkit.course.exercise" in cheat
    assert "## Exercise 98.2: tampered" in cheat

    # A second run grades nothing; a changed notebook is graded again, alone.
    again = grade(tmp_path, folder)
    assert f"0 graded, {len(expected)} unchanged, {len(bad)} rejected" in again.stdout
    L.write(folder / "empty.ipynb", L.learner(**SOLVED))
    third = grade(tmp_path, folder / "empty.ipynb", folder / "solved.ipynb")
    assert "1 graded, 1 unchanged, 0 rejected" in third.stdout
    assert third.returncode == 0
    assert rows(tmp_path)["empty"][0] == 6


@pytest.mark.timeout(600)
def test_kill_9_mid_run_loses_nothing_already_graded(tmp_path: Path) -> None:
    folder = tmp_path / "collected"
    learners = [f"learner{n}" for n in range(6)]
    for name in learners:
        L.write(folder / f"{name}.ipynb", L.learner(**SOLVED))
    command = [
        sys.executable,
        "-m",
        "labkit",
        "grade",
        str(folder),
        "--jobs",
        "1",
        "--instructor",
        str(FIXTURE / "instructor"),
        "--gradebook",
        str(tmp_path / "book.sqlite"),
        "--feedback",
        str(tmp_path / "feedback"),
        *LIMITS,
    ]
    grader = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert grader.stderr is not None
    reported: list[str] = []
    for line in grader.stderr:  # synchronize on the progress lines, not on time
        if " graded " in line:
            reported.append(line.split(" graded ")[1].split()[0])
        if len(reported) == 2:
            break
    sandboxes = psutil.Process(grader.pid).children(recursive=True)
    os.kill(grader.pid, signal.SIGKILL)
    grader.wait()
    grader.stderr.close()
    _, alive = psutil.wait_procs(sandboxes, timeout=30)
    assert alive == []  # the sandboxes die with the grader

    with sqlite3.connect(tmp_path / "book.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    survived = rows(tmp_path)
    assert set(reported) <= set(survived)
    assert all(points == 6 for points, _, _ in survived.values())

    finish = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert f"{len(learners) - len(survived)} graded, {len(survived)} unchanged" in finish.stdout
    assert set(rows(tmp_path)) == set(learners)


def _real_lesson() -> tuple[Path, Path] | None:
    manifest = ROOT / "instructor" / "manifest.json"
    if not manifest.is_file():
        return None
    for notebook in sorted((ROOT / "instructor").glob("[0-9][0-9]-*.ipynb")):
        learner = ROOT / "notebooks" / notebook.name
        if learner.is_file():
            return notebook, learner
    return None


@pytest.mark.timeout(900)
@pytest.mark.skipif(_real_lesson() is None, reason="no lesson built yet (run `labkit build`)")
def test_a_real_lesson_grades_solved_full_and_the_learner_version_zero(tmp_path: Path) -> None:
    found = _real_lesson()
    assert found is not None
    instructor_path, learner_path = found
    instructor: dict[str, Any] = json.loads(instructor_path.read_text())
    learner: dict[str, Any] = json.loads(learner_path.read_text())
    # The instructor's solution as a learner would type it: without the solution markers (a
    # cell that still carries them is the instructor's own file, and earns nothing).
    solutions = {
        c["id"]: "\n".join(
            line
            for line in "".join(c["source"]).split("\n")
            if not line.strip().startswith(("### BEGIN SOLUTION", "### END SOLUTION"))
        )
        for c in instructor["cells"]
        if c.get("metadata", {}).get("labkit", {}).get("role") == "solution"
    }
    solved = copy.deepcopy(learner)
    for cell in solved["cells"]:
        if cell["id"] in solutions:
            cell["source"] = solutions[cell["id"]]
    tampered = copy.deepcopy(solved)
    check = next(
        c
        for c in tampered["cells"]
        if c.get("metadata", {}).get("labkit", {}).get("role") == "check"
    )
    check["source"] = "pass  # no checks here"
    folder = tmp_path / "collected"
    folder.mkdir()
    (folder / "solved.ipynb").write_text(json.dumps(solved))
    (folder / "tampered.ipynb").write_text(json.dumps(tampered))
    (folder / "empty.ipynb").write_text(learner_path.read_text())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "labkit",
            "grade",
            str(folder),
            "--jobs",
            "2",
            "--gradebook",
            str(tmp_path / "book.sqlite"),
            "--feedback",
            str(tmp_path / "feedback"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(tmp_path / "book.sqlite") as db:
        found_rows = dict(
            db.execute(
                "SELECT l.name, s.points = s.max_points AND s.tampered = 0 FROM submissions s "
                "JOIN learners l ON l.id = s.learner_id"
            ).fetchall()
        )
        empty_points = db.execute(
            "SELECT s.points FROM submissions s JOIN learners l ON l.id = s.learner_id "
            "WHERE l.name = 'empty'"
        ).fetchone()
        tampered_row = db.execute(
            "SELECT s.points = s.max_points, s.tampered FROM submissions s JOIN learners l "
            "ON l.id = s.learner_id WHERE l.name = 'tampered'"
        ).fetchone()
    assert tampered_row == (1, 1)  # flagged, and graded with the original check cell
    assert found_rows["solved"] == 1, done.stdout
    assert empty_points == (0,)
