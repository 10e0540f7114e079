"""The gradebook: learners, submissions and results in one SQLite file that survives a kill -9.

Each graded submission is written in one transaction (WAL journal, synchronous writes), so a
grader killed mid-run keeps everything it finished and a re-run skips submissions whose content
hash was already graded against the same build of the lesson. ``labkit gradebook`` shows the
latest grades or exports them as CSV.

Example::

    with Gradebook(Path("gradebook.sqlite")) as book:
        book.record(grade)
        for grade in book.latest(lesson=4):
            print(grade.learner, grade.points)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import json
import os
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

__all__ = [
    "ExerciseGrade",
    "Grade",
    "Gradebook",
    "GradebookError",
    "configure",
    "export_csv",
    "run",
    "spreadsheet_safe",
    "table",
]

DEFAULT_PATH = Path("gradebook.sqlite")
_SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS learners (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY,
    learner_id INTEGER NOT NULL REFERENCES learners(id),
    lesson INTEGER NOT NULL,
    lesson_slug TEXT NOT NULL,
    lesson_version TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    tampered INTEGER NOT NULL DEFAULT 0,
    tampering TEXT NOT NULL DEFAULT '[]',
    points REAL NOT NULL,
    max_points REAL NOT NULL,
    seconds REAL NOT NULL DEFAULT 0,
    graded_at TEXT NOT NULL,
    UNIQUE (learner_id, lesson, sha256, lesson_version)
);
CREATE TABLE IF NOT EXISTS results (
    submission_id INTEGER NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
    exercise TEXT NOT NULL,
    points REAL NOT NULL,
    max_points REAL NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (submission_id, exercise)
);
CREATE TABLE IF NOT EXISTS rejections (
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    reason TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    PRIMARY KEY (path, sha256)
);
"""


@dataclass
class ExerciseGrade:
    """One exercise's result in one submission: points, status, and why points were lost.

    ``status`` is ``solved``, ``partly solved``, ``failed``, ``not solved yet``, ``not graded``
    (the run stopped before its checks finished) or ``tampered`` (no points: the notebook
    carries instructor material, or code that reaches into the grading machinery).
    ``caught`` and ``missed`` list the buggy implementations a test-writing exercise's test
    caught and missed.

    Example::

        ExerciseGrade("4.1", 2, 3, "partly solved", missed=["drops items when full"])
    """

    exercise: str
    points: float
    max_points: float
    status: str
    failed: list[str] = field(default_factory=list)
    caught: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    reason: str = ""

    def detail(self) -> str:
        """The JSON stored in the gradebook's detail column."""
        return json.dumps(
            {
                "failed": self.failed,
                "caught": self.caught,
                "missed": self.missed,
                "reason": self.reason,
            }
        )


@dataclass
class Grade:
    """A graded submission: who, which lesson and content, the outcome, tampering and each exercise.

    Example::

        grade = Grade("alice", 4, "04-backpressure", "v1", "alice.ipynb", "ab12...", "completed")
        print(grade.points, "/", grade.max_points)
    """

    learner: str
    lesson: int
    lesson_slug: str
    lesson_version: str
    path: str
    sha256: str
    outcome: str
    reason: str = ""
    tampering: list[str] = field(default_factory=list)
    exercises: list[ExerciseGrade] = field(default_factory=list)
    seconds: float = 0.0
    graded_at: str = ""
    isolation: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0

    @property
    def points(self) -> float:
        """Points earned over all exercises."""
        return round(sum(e.points for e in self.exercises), 2)

    @property
    def max_points(self) -> float:
        """The most points the lesson gives."""
        return round(sum(e.max_points for e in self.exercises), 2)

    @property
    def tampered(self) -> bool:
        """Whether a locked cell or the grading machinery was changed."""
        return bool(self.tampering)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class Gradebook:
    """An open gradebook file; one instance per thread (SQLite connections are not shared).

    Example::

        with Gradebook(Path("gradebook.sqlite")) as book:
            if not book.has(grade.learner, 4, sha, version):
                book.record(grade)
    """

    def __init__(self, path: Path = DEFAULT_PATH) -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
            self._refuse_foreign()
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(_SCHEMA)
            self.db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (_SCHEMA_VERSION,)
            )
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                self.db.close()
            raise GradebookError(
                f"{path}: not a labkit gradebook ({exc}); choose another --gradebook path"
            ) from exc

    def _refuse_foreign(self) -> None:
        """Refuse a SQLite file that holds something else: never add tables to it."""
        tables = {
            row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if not tables:
            return
        ours = {"meta", "learners", "submissions", "results", "rejections"}
        schema = None
        if "meta" in tables:
            with contextlib.suppress(sqlite3.DatabaseError):
                row = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                schema = row[0] if row else None
        if schema is None or not tables <= ours:
            others = ", ".join(sorted(tables - ours)[:3]) or ", ".join(sorted(tables)[:3])
            self.db.close()
            raise GradebookError(
                f"{self.path}: a SQLite database of something else (tables: {others}), not a "
                "labkit gradebook; choose another --gradebook path"
            )
        if schema != _SCHEMA_VERSION:
            self.db.close()
            raise GradebookError(
                f"{self.path}: a labkit gradebook of schema {schema}, this labkit reads schema "
                f"{_SCHEMA_VERSION}; use the labkit that wrote it, or another --gradebook path"
            )

    def __enter__(self) -> Gradebook:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self.db.close()

    def has(self, learner: str, lesson: int, sha256: str, version: str) -> bool:
        """Whether this exact content was already graded for this learner and lesson build."""
        row = self.db.execute(
            "SELECT 1 FROM submissions s JOIN learners l ON l.id = s.learner_id "
            "WHERE l.name = ? AND s.lesson = ? AND s.sha256 = ? AND s.lesson_version = ?",
            (learner, lesson, sha256, version),
        ).fetchone()
        return row is not None

    def record(self, grade: Grade) -> None:
        """Store one graded submission and its results, all or nothing."""
        grade.graded_at = grade.graded_at or _now()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT OR IGNORE INTO learners (name) VALUES (?)", (grade.learner,))
            (learner_id,) = db.execute(
                "SELECT id FROM learners WHERE name = ?", (grade.learner,)
            ).fetchone()
            db.execute(
                "DELETE FROM submissions WHERE learner_id = ? AND lesson = ? AND sha256 = ? "
                "AND lesson_version = ?",
                (learner_id, grade.lesson, grade.sha256, grade.lesson_version),
            )
            cursor = db.execute(
                "INSERT INTO submissions (learner_id, lesson, lesson_slug, lesson_version, path, "
                "sha256, outcome, reason, tampered, tampering, points, max_points, seconds, "
                "graded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    learner_id,
                    grade.lesson,
                    grade.lesson_slug,
                    grade.lesson_version,
                    grade.path,
                    grade.sha256,
                    grade.outcome,
                    grade.reason,
                    int(grade.tampered),
                    json.dumps(grade.tampering),
                    grade.points,
                    grade.max_points,
                    grade.seconds,
                    grade.graded_at,
                ),
            )
            db.executemany(
                "INSERT INTO results (submission_id, exercise, points, max_points, status, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (cursor.lastrowid, e.exercise, e.points, e.max_points, e.status, e.detail())
                    for e in grade.exercises
                ],
            )
            db.execute("DELETE FROM rejections WHERE path = ?", (grade.path,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def reject(self, path: str, sha256: str, reason: str) -> None:
        """Remember that a file was bad input, and why."""
        self.db.execute(
            "INSERT OR REPLACE INTO rejections (path, sha256, reason, seen_at) VALUES (?, ?, ?, ?)",
            (path, sha256, reason, _now()),
        )

    def rejections(self) -> list[tuple[str, str]]:
        """Every rejected file and its reason, by path."""
        rows = self.db.execute("SELECT path, reason FROM rejections ORDER BY path").fetchall()
        return [(str(p), str(r)) for p, r in rows]

    def latest(self, lesson: int | None = None) -> list[Grade]:
        """Each learner's most recent grade per lesson, ordered by lesson then learner."""
        query = (
            "SELECT s.id, l.name, s.lesson, s.lesson_slug, s.lesson_version, s.path, s.sha256, "
            "s.outcome, s.reason, s.tampering, s.seconds, s.graded_at FROM submissions s "
            "JOIN learners l ON l.id = s.learner_id WHERE s.id IN (SELECT MAX(id) FROM "
            "submissions GROUP BY learner_id, lesson)"
        )
        args: tuple[Any, ...] = ()
        if lesson is not None:
            query += " AND s.lesson = ?"
            args = (lesson,)
        query += " ORDER BY s.lesson, l.name"
        grades = []
        for row in self.db.execute(query, args).fetchall():
            grade = Grade(
                learner=row[1],
                lesson=row[2],
                lesson_slug=row[3],
                lesson_version=row[4],
                path=row[5],
                sha256=row[6],
                outcome=row[7],
                reason=row[8],
                tampering=json.loads(row[9]),
                seconds=row[10],
                graded_at=row[11],
            )
            for exercise, points, max_points, status, detail in self.db.execute(
                "SELECT exercise, points, max_points, status, detail FROM results "
                "WHERE submission_id = ? ORDER BY rowid",
                (row[0],),
            ):
                extra = json.loads(detail)
                grade.exercises.append(
                    ExerciseGrade(
                        exercise,
                        points,
                        max_points,
                        status,
                        failed=extra.get("failed", []),
                        caught=extra.get("caught", []),
                        missed=extra.get("missed", []),
                        reason=extra.get("reason", ""),
                    )
                )
            grades.append(grade)
        return grades

    def count(self) -> int:
        """How many submissions are stored (all versions)."""
        (number,) = self.db.execute("SELECT COUNT(*) FROM submissions").fetchone()
        return int(number)


class GradebookError(Exception):
    """The gradebook file cannot be used; the message says which file and what to do."""


# -- export and display -------------------------------------------------------------------


def spreadsheet_safe(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: one starting with = + - @ (a formula) is quoted.

    A learner named ``=HYPERLINK(...)`` would otherwise become a live formula in the
    instructor's spreadsheet (CSV injection); the leading apostrophe makes it plain text.

    Example::

        assert spreadsheet_safe("=1+2") == "'=1+2" and spreadsheet_safe(3) == 3
    """
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class _SafeWriter:
    def __init__(self, stream: TextIO) -> None:
        self.writer = csv.writer(stream, lineterminator="\n")

    def writerow(self, row: list[object]) -> None:
        self.writer.writerow([spreadsheet_safe(cell) for cell in row])


def export_csv(grades: list[Grade], stream: TextIO, *, wide: bool = False) -> None:
    """Write grades as CSV: one row per exercise (long), or one row per learner and lesson (wide).

    Text cells that a spreadsheet would run as formulas are escaped (:func:`spreadsheet_safe`).

    Example::

        export_csv(book.latest(), sys.stdout, wide=True)
    """
    writer = _SafeWriter(stream)
    if wide:
        exercises = sorted({e.exercise for g in grades for e in g.exercises}, key=_exercise_key)
        writer.writerow(
            [
                "learner",
                "lesson",
                *exercises,
                "points",
                "max_points",
                "tampered",
                "outcome",
                "graded_at",
                "sha256",
            ]
        )
        for grade in grades:
            by_id = {e.exercise: _number(e.points) for e in grade.exercises}
            writer.writerow(
                [
                    grade.learner,
                    grade.lesson_slug,
                    *(by_id.get(x, "") for x in exercises),
                    _number(grade.points),
                    _number(grade.max_points),
                    int(grade.tampered),
                    grade.outcome,
                    grade.graded_at,
                    grade.sha256,
                ]
            )
        return
    writer.writerow(
        [
            "learner",
            "lesson",
            "exercise",
            "points",
            "max_points",
            "status",
            "tampered",
            "outcome",
            "graded_at",
            "sha256",
        ]
    )
    for grade in grades:
        for e in grade.exercises:
            writer.writerow(
                [
                    grade.learner,
                    grade.lesson_slug,
                    e.exercise,
                    _number(e.points),
                    _number(e.max_points),
                    e.status,
                    int(grade.tampered),
                    grade.outcome,
                    grade.graded_at,
                    grade.sha256,
                ]
            )


def table(grades: list[Grade]) -> str:
    """A plain-text table of learners by exercises with points, one block per lesson.

    Example::

        print(table(book.latest(lesson=4)))
    """
    blocks: list[str] = []
    for lesson in sorted({g.lesson for g in grades}):
        rows = [g for g in grades if g.lesson == lesson]
        exercises = sorted({e.exercise for g in rows for e in g.exercises}, key=_exercise_key)
        maxima = {e.exercise: e.max_points for g in rows for e in g.exercises}
        header = ["learner", *exercises, "total", "notes"]
        body = [
            ["(max)", *(_number(maxima[x]) for x in exercises), _number(sum(maxima.values())), ""]
        ]
        for grade in rows:
            by_id = {e.exercise: e for e in grade.exercises}
            notes = []
            if grade.outcome != "completed":
                notes.append(grade.outcome)
            if grade.tampered:
                notes.append("tampered")
            body.append(
                [
                    grade.learner,
                    *(_number(by_id[x].points) if x in by_id else "-" for x in exercises),
                    _number(grade.points),
                    ", ".join(notes),
                ]
            )
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        lines = [f"{rows[0].lesson_slug}: {len(rows)} learner(s)"]
        for row in [header, *body]:
            cells = [row[0].ljust(widths[0])]
            cells += [value.rjust(widths[i]) for i, value in enumerate(row[1:-1], 1)]
            cells.append(row[-1])
            lines.append("  ".join(cells).rstrip())
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _exercise_key(ident: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in ident.split("."))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# -- the command line ---------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    """Add `labkit gradebook` options: show the latest grades, or export them as CSV.

    Example::

        $ labkit gradebook export --csv --wide > grades.csv
    """
    parser.add_argument(
        "action",
        nargs="?",
        choices=["show", "export"],
        default="show",
        help="show the latest grades as a table (default) or export them",
    )
    parser.add_argument(
        "--gradebook",
        type=Path,
        default=DEFAULT_PATH,
        metavar="PATH",
        help=f"the gradebook file (default: {DEFAULT_PATH})",
    )
    parser.add_argument("--csv", action="store_true", help="export as CSV (the only format)")
    parser.add_argument(
        "--wide",
        action="store_true",
        help="one row per learner and lesson instead of one per exercise",
    )
    parser.add_argument("--lesson", type=int, metavar="N", help="only lesson N")
    parser.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write to FILE instead of standard output"
    )


def run(args: argparse.Namespace) -> int:
    """Run `labkit gradebook`; returns the exit code."""
    path: Path = args.gradebook
    if not path.is_file():
        print(
            f"labkit gradebook: {path}: no such gradebook; run `labkit grade` first "
            "or pass --gradebook PATH",
            file=sys.stderr,
        )
        return 2
    try:
        with Gradebook(path) as book:
            grades = book.latest(args.lesson)
            rejected = book.rejections()
    except GradebookError as exc:
        print(f"labkit gradebook: {exc}", file=sys.stderr)
        return 2
    try:
        with _output(args.output) as stream:
            if args.action == "export":
                export_csv(grades, stream, wide=args.wide)
            else:
                stream.write((table(grades) or "no grades yet") + "\n")
                for file, reason in rejected:
                    stream.write(f"rejected: {reason or file}\n")
            stream.flush()
    except BrokenPipeError:
        # `labkit gradebook export | head`: the reader has what it wanted; end quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0


class _output:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.stream: TextIO = sys.stdout

    def __enter__(self) -> TextIO:
        if self.path is not None:
            self.stream = self.path.open("w", encoding="utf-8", newline="")
        return self.stream

    def __exit__(self, *exc: object) -> None:
        if self.path is not None:
            self.stream.close()
