"""The gradebook stores each graded submission atomically and exports the latest grades."""

from __future__ import annotations

import contextlib
import csv
import io
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.course import cli
from labkit.course.grading.gradebook import (
    ExerciseGrade,
    Grade,
    Gradebook,
    GradebookError,
    export_csv,
    table,
)


def make(learner: str = "ann", sha: str = "a" * 64, points: float = 2, **extra: object) -> Grade:
    grade = Grade(
        learner,
        98,
        "98-grading-fixture",
        "v1",
        f"{learner}.ipynb",
        sha,
        "completed",
        exercises=[
            ExerciseGrade("98.1", points, 3, "partly solved", failed=["hint"], reason="why"),
            ExerciseGrade("98.2", 3, 3, "solved", caught=["adds two"], missed=[]),
        ],
    )
    for key, value in extra.items():
        setattr(grade, key, value)
    return grade


def test_a_recorded_grade_comes_back_whole(tmp_path: Path) -> None:
    with Gradebook(tmp_path / "g.sqlite") as book:
        book.record(make(tampering=["check cell 'x' was changed"]))
    with Gradebook(tmp_path / "g.sqlite") as book:
        (grade,) = book.latest()
    assert (grade.learner, grade.points, grade.max_points, grade.tampered) == ("ann", 5, 6, True)
    assert grade.exercises[0].failed == ["hint"]
    assert grade.exercises[0].reason == "why"
    assert grade.exercises[1].caught == ["adds two"]
    assert grade.graded_at.endswith("+00:00")


def test_has_matches_learner_lesson_content_and_lesson_build(tmp_path: Path) -> None:
    with Gradebook(tmp_path / "g.sqlite") as book:
        book.record(make())
        assert book.has("ann", 98, "a" * 64, "v1")
        assert not book.has("ann", 98, "b" * 64, "v1")
        assert not book.has("ann", 98, "a" * 64, "v2")
        assert not book.has("bob", 98, "a" * 64, "v1")


def test_latest_is_each_learners_newest_submission(tmp_path: Path) -> None:
    with Gradebook(tmp_path / "g.sqlite") as book:
        book.record(make("ann", "1" * 64, points=1))
        book.record(make("bob", "2" * 64, points=0))
        book.record(make("ann", "3" * 64, points=3))
        assert book.count() == 3
        assert [(g.learner, g.points) for g in book.latest(98)] == [("ann", 6), ("bob", 3)]
        assert book.latest(4) == []


def test_regrading_the_same_content_replaces_the_old_row(tmp_path: Path) -> None:
    with Gradebook(tmp_path / "g.sqlite") as book:
        book.record(make(points=1))
        book.record(make(points=3))
        assert book.count() == 1
        assert book.latest()[0].points == 6


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    broken = make("zed")
    broken.exercises.append(ExerciseGrade("98.1", 1, 1, "solved"))  # the same exercise twice
    with Gradebook(tmp_path / "g.sqlite") as book:
        book.record(make("ann"))
        with pytest.raises(sqlite3.IntegrityError):
            book.record(broken)
        assert [g.learner for g in book.latest()] == ["ann"]
        assert book.db.execute("SELECT name FROM learners").fetchall() == [("ann",)]


def test_the_file_uses_a_write_ahead_log(tmp_path: Path) -> None:
    with Gradebook(tmp_path / "g.sqlite") as book:
        (mode,) = book.db.execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"


def test_a_file_that_is_not_a_gradebook_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database " * 200)
    with pytest.raises(GradebookError, match=r"notes.txt: not a labkit gradebook"):
        Gradebook(path)


def test_rejections_are_remembered_until_the_file_grades(tmp_path: Path) -> None:
    with Gradebook(tmp_path / "g.sqlite") as book:
        book.reject("ann.ipynb", "", "ann.ipynb: not JSON")
        assert book.rejections() == [("ann.ipynb", "ann.ipynb: not JSON")]
        book.record(make("ann"))
        assert book.rejections() == []


def test_csv_export_long_and_wide() -> None:
    grades = [make("ann"), make("bob", points=0)]
    long, wide = io.StringIO(), io.StringIO()
    export_csv(grades, long)
    export_csv(grades, wide, wide=True)
    rows = list(csv.DictReader(io.StringIO(long.getvalue())))
    assert [(r["learner"], r["exercise"], r["points"]) for r in rows] == [
        ("ann", "98.1", "2"),
        ("ann", "98.2", "3"),
        ("bob", "98.1", "0"),
        ("bob", "98.2", "3"),
    ]
    rows = list(csv.DictReader(io.StringIO(wide.getvalue())))
    assert [(r["learner"], r["98.1"], r["98.2"], r["points"]) for r in rows] == [
        ("ann", "2", "3", "5"),
        ("bob", "0", "3", "3"),
    ]


def test_table_has_a_row_per_learner_and_notes_problems() -> None:
    text = table([make("ann"), make("bob", outcome="timeout", tampering=["x"])])
    assert text.splitlines() == [
        "98-grading-fixture: 2 learner(s)",
        "learner  98.1  98.2  total  notes",
        "(max)       3     3      6",
        "ann         2     3      5",
        "bob         2     3      5  timeout, tampered",
    ]


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["gradebook", *argv])
    return code, out.getvalue(), err.getvalue()


def test_cli_exports_csv_and_shows_the_table(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    with Gradebook(path) as book:
        book.record(make())
    code, out, _ = _cli("export", "--csv", "--gradebook", str(path))
    assert code == 0
    assert out.splitlines()[0].startswith("learner,lesson,exercise,points")
    code, out, _ = _cli(
        "export", "--csv", "--wide", "--gradebook", str(path), "-o", str(tmp_path / "g.csv")
    )
    assert (
        (tmp_path / "g.csv")
        .read_text()
        .splitlines()[1]
        .startswith("ann,98-grading-fixture,2,3,5,6")
    )
    code, out, _ = _cli("--gradebook", str(path))
    assert "ann         2     3      5" in out


def test_cli_without_a_gradebook_says_what_to_do(tmp_path: Path) -> None:
    code, _, err = _cli("--gradebook", str(tmp_path / "none.sqlite"))
    assert code == 2
    assert "run `labkit grade` first" in err


def test_csv_cells_that_a_spreadsheet_would_run_are_escaped() -> None:
    grades = [make(name) for name in ("=1+2", "+cmd", "-x", "@SUM(A1)", "plain")]
    for wide in (False, True):
        out = io.StringIO()
        export_csv(grades, out, wide=wide)
        learners = [row["learner"] for row in csv.DictReader(io.StringIO(out.getvalue()))]
        assert sorted(set(learners)) == sorted(["'=1+2", "'+cmd", "'-x", "'@SUM(A1)", "plain"])


def test_a_sqlite_file_of_something_else_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
    with pytest.raises(GradebookError) as caught:
        Gradebook(path)
    assert str(caught.value) == (
        f"{path}: a SQLite database of something else (tables: orders), not a labkit "
        "gradebook; choose another --gradebook path"
    )
    with sqlite3.connect(path) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master")]
    assert tables == ["orders"]  # nothing of ours was added to it
    code, _, err = _cli("--gradebook", str(path))
    assert code == 2
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_export_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    with Gradebook(path) as book:
        for number in range(300):
            book.record(make(f"learner{number}", sha=f"{number:064d}"))
    done = subprocess.run(
        f"{sys.executable} -m labkit gradebook export --csv --gradebook {path} | head -n 2",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.splitlines()[0].startswith("learner,lesson,exercise")
    assert len(done.stdout.splitlines()) == 2
    assert done.stderr == ""
