"""The grader: `labkit grade` runs learners' notebooks in sandboxes, scores them, keeps a gradebook.

For each submission it validates the notebook (:mod:`~labkit.course.grading.submission`), skips
it if the gradebook already holds a grade for the same content and lesson build, runs it in its
own sandboxed process (:mod:`~labkit.course.grading.sandbox`), turns the checks' results lines
into points per exercise (:func:`score`), commits the grade
(:mod:`~labkit.course.grading.gradebook`) and writes the learner's feedback file
(:mod:`~labkit.course.grading.feedback`). ``--jobs`` runs several sandboxes at once. Bad input is
one line on stderr and never stops the others.

Example::

    $ labkit grade collected/ --lesson 4 --jobs 2 --feedback feedback/
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, TextIO

import labkit
from labkit.course.grading.feedback import feedback_path, write_feedback
from labkit.course.grading.gradebook import (
    DEFAULT_PATH,
    ExerciseGrade,
    Grade,
    Gradebook,
    GradebookError,
    table,
)
from labkit.course.grading.sandbox import Limits, SandboxResult, run_cells, stop_all
from labkit.course.grading.submission import (
    DEFAULT_MAX_BYTES,
    Lesson,
    Submission,
    SubmissionError,
    load_lessons,
    load_submission,
)

__all__ = ["Progress", "configure", "find_submissions", "grade_submission", "run", "score"]

_CAUGHT = "catches the bug: "


def score(submission: Submission, result: SandboxResult) -> Grade:
    """Turn a sandbox run of a submission into points per exercise, with the reasons.

    Only results lines written while the exercise's own locked check cells and hidden cells ran
    count; an exercise whose check cells did not all run (the run stopped early) is ``not
    graded``, with the run's reason. Points are capped at the lesson's points for the exercise.

    Example::

        grade = score(submission, run_cells(submission.cells, submission.hidden, Limits()))
    """
    lesson = submission.lesson
    ran = {cell.id: cell for cell in result.cells}
    grading = [c for c in [*submission.cells, *submission.hidden] if c.kind in ("check", "hidden")]
    exercises: list[ExerciseGrade] = []
    for ident, declared in lesson.exercises.items():
        own = [c for c in grading if c.exercise == ident]
        lines = [
            line
            for c in own
            if c.id in ran
            for line in ran[c.id].results
            if str(line.get("exercise")) == ident
        ]
        maximum = declared or sum(_float(line.get("max_points")) for line in lines)
        grade = _exercise(ident, maximum, own, ran, lines, result)
        mine = [c for c in submission.cells if c.kind == "learner" and c.exercise == ident]
        raised = [ran[c.id].error for c in mine if c.id in ran and not ran[c.id].ok]
        if raised and grade.status != "solved":
            grade.reason = (
                f"Your solution cell failed: {raised[0].rstrip('.')}. {grade.reason}".strip()
            )
        exercises.append(grade)
    return Grade(
        learner=submission.learner,
        lesson=lesson.number,
        lesson_slug=lesson.slug,
        lesson_version=lesson.version,
        path=str(submission.path),
        sha256=submission.sha256,
        outcome=result.outcome,
        reason=_where(submission, result),
        tampering=[*submission.tampered, *result.tampering],
        exercises=exercises,
        isolation=result.isolation,
    )


def _exercise(
    ident: str,
    maximum: float,
    own: Sequence[Any],
    ran: dict[str, Any],
    lines: list[dict[str, Any]],
    result: SandboxResult,
) -> ExerciseGrade:
    grade = ExerciseGrade(ident, 0.0, maximum, "failed")
    missing = [c for c in own if c.id not in ran]
    if missing:
        grade.status = "not graded"
        grade.reason = "Not graded: the run stopped before this exercise's checks ran (see above)."
        return grade
    for line in lines:
        for item in line.get("items", []) if isinstance(line.get("items"), list) else []:
            if not isinstance(item, dict):
                continue
            name, ok, detail = (
                str(item.get("name", "")),
                bool(item.get("ok")),
                str(item.get("detail", "")),
            )
            if name.startswith(_CAUGHT):
                (grade.caught if ok else grade.missed).append(name[len(_CAUGHT) :])
            elif not ok:
                grade.failed.append(f"{name}\n{detail}".strip())
    errors = [ran[c.id].error for c in own if not ran[c.id].ok and not ran[c.id].results]
    if errors:
        grade.reason = f"A check cell stopped with an error: {errors[0]}"
    points = sum(_float(line.get("points")) for line in lines)
    grade.points = round(max(0.0, min(points, maximum)), 2)
    statuses = {str(line.get("status")) for line in lines}
    if grade.points >= maximum > 0 and not errors:
        grade.status = "solved"
    elif grade.points > 0:
        grade.status = "partly solved"
    elif "not solved yet" in statuses:
        grade.status = "not solved yet"
    elif not lines and not errors:
        grade.reason = "No check reported a result for this exercise."
    return grade


def _float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if number == number and abs(number) != float("inf") else 0.0


def _where(submission: Submission, result: SandboxResult) -> str:
    if result.outcome == "completed":
        return ""
    if result.stopped_at is None:
        return result.reason[:1].upper() + result.reason[1:] + "."
    cell = next(
        (c for c in [*submission.cells, *submission.hidden] if c.id == result.stopped_at), None
    )
    if cell is None:
        where = "a cell"
    elif cell.kind == "learner" and cell.exercise:
        where = f"your solution cell for exercise {cell.exercise}"
    elif cell.kind == "learner":
        where = f"a cell you added (id {cell.id!r})"
    elif cell.exercise:
        where = f"the checks of exercise {cell.exercise}"
    else:
        where = f"the lesson's cell {cell.id!r}"
    return f"In {where}: {result.reason}."


def grade_submission(submission: Submission, limits: Limits, hide: Sequence[Path] = ()) -> Grade:
    """Run one validated submission in a sandbox and score it.

    Example::

        grade = grade_submission(load_submission(path, lessons), Limits(wall=120))
    """
    started = time.monotonic()
    result = run_cells(submission.cells, submission.hidden, limits, hide=hide)
    grade = score(submission, result)
    grade.seconds = round(time.monotonic() - started, 3)
    return grade


def find_submissions(paths: Iterable[Path]) -> list[Path]:
    """The notebooks named, with folders searched recursively (checkpoints skipped), in order.

    Example::

        find_submissions([Path("collected")])   # [collected/alice/04-backpressure.ipynb, ...]
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                p
                for p in sorted(path.rglob("*.ipynb"))
                if ".ipynb_checkpoints" not in p.parts and p.is_file()
            )
        else:
            found.append(path)
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


class Progress:
    """A progress line on stderr: a redrawn bar on a terminal, one line per submission otherwise.

    Example::

        progress = Progress(total=40, stream=sys.stderr)
        progress.done("graded", "alice: 7/10")
    """

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.counts = {"graded": 0, "unchanged": 0, "rejected": 0}
        self.tty = stream.isatty()

    @property
    def finished(self) -> int:
        """How many submissions are dealt with."""
        return sum(self.counts.values())

    def note(self, line: str) -> None:
        """Print one message line without garbling the bar."""
        self.stream.write(("\r\x1b[K" if self.tty else "") + line + "\n")
        self.stream.flush()

    def done(self, what: str, detail: str) -> None:
        """Count one finished submission and show it."""
        self.counts[what] = self.counts.get(what, 0) + 1
        if self.tty:
            width = 30
            filled = width * self.finished // max(self.total, 1)
            bar = "#" * filled + "." * (width - filled)
            summary = ", ".join(f"{n} {k}" for k, n in self.counts.items() if n)
            self.stream.write(
                f"\r\x1b[K[{bar}] {self.finished}/{self.total} ({summary}) {detail[:40]}"
            )
            if self.finished == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(f"[{self.finished}/{self.total}] {what} {detail}\n")
        self.stream.flush()


# -- the command line ---------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    """Add `labkit grade` options.

    Example::

        $ labkit grade collected/ --jobs 2 --gradebook grades.sqlite --feedback feedback/
    """
    parser.add_argument(
        "submissions",
        nargs="+",
        type=Path,
        metavar="SUBMISSION",
        help="learner notebooks, or folders searched for *.ipynb",
    )
    parser.add_argument(
        "--lesson",
        type=int,
        metavar="N",
        help="grade every submission as lesson N (default: from each notebook)",
    )
    parser.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=_cores(),
        metavar="J",
        help="submissions graded at once (default: the number of cores)",
    )
    parser.add_argument(
        "--gradebook",
        type=Path,
        default=DEFAULT_PATH,
        metavar="PATH",
        help=f"the SQLite gradebook (default: {DEFAULT_PATH})",
    )
    parser.add_argument(
        "--feedback",
        type=Path,
        default=Path("feedback"),
        metavar="DIR",
        help="where each learner's feedback goes (default: feedback/)",
    )
    parser.add_argument(
        "--format",
        choices=["md", "html"],
        default="md",
        help="feedback as Markdown (default) or HTML",
    )
    parser.add_argument(
        "--instructor",
        type=Path,
        metavar="DIR",
        help="the instructor notebooks and manifest.json (default: ./instructor)",
    )
    parser.add_argument(
        "--learner",
        metavar="NAME",
        help="the learner's name for a single notebook (default: from its file or folder name)",
    )
    parser.add_argument(
        "--regrade",
        action="store_true",
        help="grade again even when the gradebook has this exact submission",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=Limits.wall,
        metavar="S",
        help=f"wall-time limit per submission (default {Limits.wall:g} s)",
    )
    parser.add_argument(
        "--cell-timeout",
        type=float,
        default=Limits.cell,
        metavar="S",
        help=f"wall-time limit per cell (default {Limits.cell:g} s)",
    )
    parser.add_argument(
        "--cpu",
        type=int,
        default=Limits.cpu,
        metavar="S",
        help=f"CPU-time limit per submission (default {Limits.cpu} s)",
    )
    parser.add_argument(
        "--memory",
        type=int,
        default=Limits.memory_mb,
        metavar="MB",
        help=f"address-space limit per submission (default {Limits.memory_mb} MB)",
    )
    parser.add_argument(
        "--max-size",
        type=float,
        default=DEFAULT_MAX_BYTES / 1e6,
        metavar="MB",
        help=f"largest notebook accepted (default {DEFAULT_MAX_BYTES / 1e6:g} MB)",
    )


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _instructor(given: Path | None) -> Path:
    if given is not None:
        return given
    here = Path("instructor")
    if (here / "manifest.json").is_file():
        return here
    return Path(labkit.__file__).resolve().parent.parent / "instructor"


def _fail(message: str) -> int:
    print(f"labkit grade: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run `labkit grade`; returns 0, 1 if some submission was bad input, 2 on a usage error."""
    for name in ("jobs", "timeout", "cell_timeout", "cpu", "memory", "max_size"):
        if getattr(args, name) <= 0:
            return _fail(f"--{name.replace('_', '-')} must be more than 0")
    instructor = _instructor(args.instructor)
    try:
        lessons = load_lessons(instructor)
    except SubmissionError as exc:
        return _fail(str(exc))
    if args.lesson is not None and args.lesson not in lessons:
        known = ", ".join(f"{n:02d}" for n in sorted(lessons))
        return _fail(f"--lesson {args.lesson}: unknown lesson (the lessons are {known})")
    limits = Limits(wall=args.timeout, cpu=args.cpu, memory_mb=args.memory, cell=args.cell_timeout)
    try:
        book = Gradebook(args.gradebook)
    except GradebookError as exc:
        return _fail(str(exc))
    # What learner code must not read: hidden checks and solutions, grades, others' work.
    hide = [instructor, instructor.parent / "lessons", args.gradebook.resolve(), args.feedback]
    hide += [Path(f"{args.gradebook.resolve()}-{suffix}") for suffix in ("wal", "shm")]
    hide += [p if p.is_dir() else p.parent for p in args.submissions]
    with book:
        return _grade_all(args, lessons, limits, book, [p.resolve() for p in hide if p.exists()])


def _grade_all(
    args: argparse.Namespace,
    lessons: dict[int, Lesson],
    limits: Limits,
    book: Gradebook,
    hide: list[Path],
) -> int:
    paths = find_submissions(args.submissions)
    if not paths:
        return _fail("no notebooks found in " + " ".join(map(str, args.submissions)))
    if args.learner is not None and len(paths) != 1:
        return _fail(f"--learner names one learner, but {len(paths)} notebooks were given")
    progress = Progress(len(paths), sys.stderr)
    rejected = 0
    todo: list[Submission] = []
    shown: dict[tuple[str, int], Path] = {}
    max_bytes = int(args.max_size * 1e6)
    for path in paths:
        try:
            submission = load_submission(
                path, lessons, lesson=args.lesson, max_bytes=max_bytes, learner=args.learner
            )
        except SubmissionError as exc:
            rejected += 1
            book.reject(str(path), "", str(exc))
            progress.note(f"labkit grade: {exc}")
            progress.done("rejected", path.name)
            continue
        key = (submission.learner, submission.lesson.number)
        if key in shown:
            progress.note(
                f"labkit grade: {path}: a second submission for {key[0]} in lesson "
                f"{key[1]:02d} (the first is {shown[key]}); the gradebook keeps the last graded"
            )
        shown[key] = path
        lesson = submission.lesson
        if not args.regrade and book.has(
            submission.learner, lesson.number, submission.sha256, lesson.version
        ):
            progress.done("unchanged", f"{submission.learner} ({lesson.slug}): already graded")
            continue
        todo.append(submission)
    pool = ThreadPoolExecutor(max_workers=args.jobs, thread_name_prefix="labkit-grade")
    futures: dict[Future[Grade], Submission] = {
        pool.submit(grade_submission, s, limits, hide): s for s in todo
    }
    told = False
    try:
        for future in as_completed(futures):
            try:
                grade = future.result()
            except Exception as exc:  # a bug or a system limit: report it, grade the rest
                rejected += 1
                progress.note(
                    f"labkit grade: {futures[future].path}: not graded ({exc!r}); this is "
                    "a grader problem, not the notebook's: please report it"
                )
                progress.done("rejected", futures[future].path.name)
                continue
            if not told and grade.isolation:
                progress.note("sandbox: " + "; ".join(grade.isolation))
                told = True
            book.record(grade)
            write_feedback(grade, args.feedback, fmt=args.format)
            note = "" if grade.outcome == "completed" else f" [{grade.outcome}]"
            note += " [tampered]" if grade.tampered else ""
            progress.done(
                "graded",
                f"{grade.learner} ({grade.lesson_slug}): {_number(grade.points)}/"
                f"{_number(grade.max_points)}{note}",
            )
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        stop_all()
        raise
    pool.shutdown()
    grades = [
        g
        for lesson in sorted({key[1] for key in shown})
        for g in book.latest(lesson)
        if (g.learner, g.lesson) in shown
    ]
    for grade in grades:
        if not feedback_path(grade, args.feedback, args.format).exists():
            write_feedback(grade, args.feedback, fmt=args.format)
    if grades:
        print(table(grades))
    print(
        f"\n{progress.counts['graded']} graded, {progress.counts['unchanged']} unchanged, "
        f"{rejected} rejected; gradebook {args.gradebook}, feedback in {args.feedback}/"
    )
    return 1 if rejected else 0


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
