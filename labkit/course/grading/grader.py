"""The grader: `labkit grade` runs learners' notebooks in sandboxes, scores them, keeps a gradebook.

For each submission it validates the notebook (:mod:`~labkit.course.grading.submission`), skips
it if the gradebook already holds a grade for the same content and lesson build, plans its jobs
from the lesson's check plan in the instructor manifest (:mod:`~labkit.course.grading.plan`),
runs them in the submission's own sandbox (:mod:`~labkit.course.grading.sandbox`), decodes the
plain-data replies, **decides every verdict here**, scores with
:mod:`~labkit.course.grading.score`, commits the grade
(:mod:`~labkit.course.grading.gradebook`) and writes the learner's feedback
(:mod:`~labkit.course.grading.feedback`). ``--jobs`` runs several sandboxes at once. Bad input is
one line on stderr and never stops the others; a grading machine that cannot run a lesson (a
module its cells import is missing) is one line too, and nothing is recorded for that lesson.

Example::

    $ labkit grade collected/ --lesson 4 --jobs 2 --feedback feedback/
"""

from __future__ import annotations

import argparse
import hmac
import importlib.util
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
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
from labkit.course.grading.plan import Call, Job, Plan, make_plan
from labkit.course.grading.sandbox import (
    JobResult,
    Limits,
    Sandbox,
    SandboxError,
    isolation,
    stop_all,
)
from labkit.course.grading.score import catch_points, check_points, exercise_points, same
from labkit.course.grading.submission import (
    DEFAULT_MAX_BYTES,
    Lesson,
    Submission,
    SubmissionError,
    load_lessons,
    load_submission,
)
from labkit.course.grading.wire import Raised, WireError, decode, show
from labkit.course.trial import number

__all__ = [
    "JobReport",
    "Progress",
    "configure",
    "find_submissions",
    "grade_submission",
    "missing_modules",
    "read_result",
    "run",
    "run_jobs",
    "score",
]

_OUTCOMES = {"passed", "failed", "timeout", "placeholder"}
_STATUSES = {"ok", "failed", "timeout", "placeholder"}
_MAX_HINT = 1500
_SLOW = "the cell ran longer than the "
_CRASHES = {
    signal.SIGSEGV: "a C extension fault, ctypes misuse or memory exhausted in native code",
    signal.SIGBUS: "a C extension fault or memory exhausted in native code",
    signal.SIGABRT: "the interpreter aborted (a C extension or memory exhausted)",
    signal.SIGILL: "a C extension fault",
    signal.SIGFPE: "a C extension fault",
}


@dataclass
class JobReport:
    """What the grader made of one job: its reply (checked), or why and where it stopped.

    ``reply`` is the job's plain-data reply after validation (``None`` if there was none or it
    was malformed). ``stop`` is the outcome when the job's process ended abnormally
    (``timeout``, ``cpu``, ``crashed``, ``exited``) with ``reason``; ``at`` is the index of the
    cell it was running (``-1``: in the job itself, after the cells). ``skipped`` says why a
    job never ran (an earlier one stopped in a cell it needs, or a placeholder made the call
    ``not solved yet``).

    Example::

        report = reports[job.id]
        if report.stop:
            print(report.stop, report.reason, report.at)
    """

    job: Job
    reply: dict[str, Any] | None = None
    stop: str = ""
    reason: str = ""
    at: int | None = None
    skipped: str = ""
    cells: list[tuple[int, str]] = field(default_factory=list)


def _text(value: Any, limit: int = _MAX_HINT) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _cells(value: Any, size: int) -> list[tuple[int, str]]:
    found = []
    if isinstance(value, list):
        for item in value[:1000]:
            if (
                isinstance(item, list)
                and len(item) == 2
                and type(item[0]) is int
                and 0 <= item[0] < size
                and isinstance(item[1], str)
            ):
                found.append((item[0], item[1][:600]))
    return found


def _validated(reply: Any, kind: str) -> dict[str, Any] | None:
    """A job's reply if it has the shape its kind promises, else None (it earns nothing)."""
    if not isinstance(reply, dict):
        return None
    if isinstance(reply.get("error"), str):
        return {"error": _text(reply["error"])}
    if kind == "check":
        items = reply.get("items")
        if not isinstance(items, list):
            return None
        clean = []
        for item in items[:1000]:
            if not isinstance(item, dict) or item.get("status") not in _STATUSES:
                return None
            clean.append(
                {
                    "status": item["status"],
                    "observation": item.get("observation"),
                    "problem": _text(item.get("problem")),
                    "hint": _text(item.get("hint")),
                }
            )
        return {"items": clean}
    if reply.get("outcome") not in _OUTCOMES:
        return None
    return {"outcome": reply["outcome"], "hint": _text(reply.get("hint"))}


def _signal_name(number_: int) -> str:
    try:
        return signal.Signals(number_).name
    except ValueError:
        return f"signal {number_}"


def read_result(
    job: Job, result: JobResult, plan: Plan, wall: float, limits: Limits, key: bytes
) -> JobReport:
    """Decode and judge what one job's process left: its reply, or how it ended and where.

    Only frames signed with the job's key count.

    Example::

        key = secrets.token_bytes(32)
        result = sandbox.run(job.id, job.spec, job.cells, 60, key)
        report = read_result(job, result, plan, 60, limits, key)
    """
    report = JobReport(job)
    at: int | None = None
    reply: Any = None
    for signed in result.frames:
        tag, payload = signed[:32], signed[32:]
        if len(tag) != 32 or not hmac.compare_digest(tag, hmac.digest(key, payload, "sha256")):
            continue  # not written by the job's own runner: forged bytes on its pipe
        try:
            value = decode(payload)
        except WireError:
            continue
        if isinstance(value, dict) and set(value) == {"cell"} and type(value["cell"]) is int:
            at = value["cell"]
        else:
            reply = value
    if at is not None and at >= 0 and at not in job.cells:
        at = None  # a forged progress frame: not one of this job's cells
    if result.status == "exit" and not result.killed and reply is not None:
        # The process replied and ended: whatever the reply says is only a report, judged
        # here; a malformed one earns nothing.
        report.reply = _validated(reply, job.spec["kind"])
        if isinstance(reply, dict):
            report.cells = _cells(reply.get("cells"), len(plan.table))
        return report
    report.at = at
    if result.killed == "wall" or result.status == "wall":
        report.stop = "timeout"
        report.reason = (
            f"the notebook ran longer than the {number(limits.wall)} s wall-time limit for "
            "a whole submission"
            if result.status == "wall"
            else f"the cell ran longer than {number(wall)} s and ignored the per-cell alarm"
        )
    elif result.killed == "flood":
        report.stop = "broken"
        report.reason = "the notebook flooded the grader's channel with output"
    elif (
        result.status == "cpu"
        or result.signal == signal.SIGXCPU
        or (result.signal == signal.SIGKILL and result.cpu >= result.cpu_limit - 0.5)
    ):
        report.stop = "cpu"
        report.reason = f"the notebook used more than the {limits.cpu} s CPU-time limit"
    elif result.status == "signal" and result.signal in _CRASHES:
        name = _signal_name(result.signal)
        report.stop = "crashed"
        report.reason = (
            f"the Python process running the notebook crashed ({name}): "
            f"{_CRASHES[result.signal]}"  # type: ignore[index]
        )
    elif result.status == "signal":
        name = _signal_name(result.signal or 0)
        report.stop = "exited"
        report.reason = (
            f"the notebook's process was killed by {name}: os.kill() on itself (or the "
            "system's out-of-memory killer) stops the whole kernel; remove that call"
        )
    elif result.status == "exit":
        report.stop = "exited"
        report.reason = (
            f"the notebook ended the grading process itself (exit status {result.code}): "
            "os._exit(), os.kill() or similar stop the whole kernel; remove that call"
        )
    else:
        report.stop = "crashed"
        report.reason = (
            "the sandbox ended in the middle of the job: a process of the notebook killed the "
            "grading process"
        )
    return report


def run_jobs(
    sandbox: Sandbox, plan: Plan, limits: Limits, order: Sequence[Job] | None = None
) -> dict[str, JobReport]:
    """Run a plan's jobs in a random order, one process each; return a report per job.

    A job that stopped in one of the submission's cells makes every other job that needs that
    cell ``not graded`` without running it (it would stop there too); a placeholder in a job
    makes the rest of its call ``not solved yet``; a learner cell that ran past the per-cell
    limit is reported failed in later jobs without being run again (each would pay the limit).

    Example::

        reports = run_jobs(sandbox, plan, limits)
    """
    jobs = list(order) if order is not None else list(plan.jobs)
    if order is None:
        secrets.SystemRandom().shuffle(jobs)
    reports: dict[str, JobReport] = {}
    stopped: dict[int, JobReport] = {}
    placeholder: set[tuple[str, int]] = set()
    slow: dict[int, str] = {}
    over: JobReport | None = None
    for job in jobs:
        key = (job.exercise, job.call)
        if over is not None:
            reports[job.id] = JobReport(job, stop=over.stop, reason=over.reason, skipped="over")
            continue
        blocked = next((stopped[i] for i in job.cells if i in stopped), None)
        if blocked is not None:
            reports[job.id] = JobReport(
                job, stop=blocked.stop, reason=blocked.reason, at=blocked.at, skipped="stopped"
            )
            continue
        if key in placeholder:
            reports[job.id] = JobReport(job, skipped="placeholder")
            continue
        wall = limits.cell * (len(job.cells) + 2) + 60
        secret = secrets.token_bytes(32)
        skip = {i: slow[i] for i in job.cells if i in slow}
        result = sandbox.run(job.id, job.spec, job.cells, wall, secret, skip)
        report = read_result(job, result, plan, wall, limits, secret)
        reports[job.id] = report
        for index, error in report.cells:
            if error.startswith(_SLOW) and plan.table[index]["kind"] == "learner":
                slow[index] = error
        if report.stop and report.at is not None and report.at >= 0:
            stopped[report.at] = report
        if report.stop == "cpu" or result.status == "lost" or sandbox.remaining <= 0:
            over = report
        reply = report.reply or {}
        if reply.get("outcome") == "placeholder" or any(
            item["status"] == "placeholder" for item in reply.get("items", [])
        ):
            placeholder.add(key)
    return reports


def score(submission: Submission, plan: Plan, reports: dict[str, JobReport]) -> Grade:
    """Turn the jobs' reports into points per exercise, with the reasons: every verdict is here.

    A check holds when its job replied with an observation equal to the instructor's reference;
    a test's verdict on a candidate is read from the job that ran it, and only this side knows
    which candidate that was. Exercises with instructor material or learner code that reaches
    into the machinery earn nothing.

    Example::

        grade = score(submission, plan, run_jobs(sandbox, plan, limits))
    """
    lesson = submission.lesson
    by_call: dict[tuple[str, int], list[JobReport]] = {}
    for report in reports.values():
        by_call.setdefault((report.job.exercise, report.job.call), []).append(report)
    errors: dict[int, str] = {}
    for report in reports.values():
        for index, error in report.cells:
            errors.setdefault(index, error)
    exercises: list[ExerciseGrade] = []
    for ident, maximum in lesson.exercises.items():
        grade = ExerciseGrade(ident, 0.0, maximum, "failed")
        if ident in submission.forbidden:
            grade.status = "tampered"
            grade.reason = "No points: " + "; ".join(dict.fromkeys(submission.forbidden[ident]))
            exercises.append(grade)
            continue
        calls = lesson.calls.get(ident, [])
        points: list[float] = []
        statuses: list[str] = []
        for index, call in enumerate(calls):
            mine = by_call.get((ident, index), [])
            earned, status = _call(call, mine, grade)
            points.append(earned)
            statuses.append(status)
        grade.points = exercise_points(points, maximum)
        if "not graded" in statuses:
            stop = next((r for r in by_call_of(by_call, ident) if r.stop), None)
            grade.status = "not graded"
            grade.reason = "Not graded: the run stopped before this exercise's checks finished" + (
                f" ({stop.reason})." if stop else "."
            )
        elif grade.points >= maximum > 0:
            grade.status = "solved"
        elif "not solved yet" in statuses and grade.points == 0:
            grade.status = "not solved yet"
        elif grade.points > 0:
            grade.status = "partly solved"
        mine_cells = [
            i
            for i, entry in enumerate(plan.table)
            if entry["kind"] == "learner" and _exercise_of(submission, entry["id"]) == ident
        ]
        raised = [errors[i] for i in mine_cells if i in errors]
        if raised and grade.status != "solved":
            grade.reason = (
                f"Your solution cell failed: {raised[0].rstrip('.')}. {grade.reason}".strip()
            )
        exercises.append(grade)
    outcome, reason = _outcome(submission, plan, reports)
    return Grade(
        learner=submission.learner,
        lesson=lesson.number,
        lesson_slug=lesson.slug,
        lesson_version=lesson.version,
        path=str(submission.path),
        sha256=submission.sha256,
        outcome=outcome,
        reason=reason,
        tampering=list(submission.tampered),
        exercises=exercises,
    )


def by_call_of(by_call: dict[tuple[str, int], list[JobReport]], ident: str) -> list[JobReport]:
    """Every report of one exercise's jobs."""
    return [r for (e, _), reports in by_call.items() if e == ident for r in reports]


def _exercise_of(submission: Submission, cell_id: str) -> str | None:
    return next((c.exercise for c in submission.cells if c.id == cell_id), None)


def _call(call: Call, reports: list[JobReport], grade: ExerciseGrade) -> tuple[float, str]:
    """One call's points and status, and its failures noted on ``grade``."""
    if not reports:
        return 0.0, "not graded"
    if call.kind == "check":
        report = reports[0]
        reply = report.reply
        if reply is None:
            if (report.stop and report.at is not None and report.at >= 0) or report.skipped:
                return 0.0, "not graded"
            why = report.reason or "their reply was malformed"
            grade.failed.append(f"the checks did not report\n{why}")
            return 0.0, "failed"
        if "error" in reply:
            grade.failed.append(f"the checks could not start\n{reply['error']}")
            return 0.0, "failed"
        items = reply["items"]
        if any(item["status"] == "placeholder" for item in items):
            return 0.0, "not solved yet"
        verdicts = []
        for check, item in zip(call.checks, [*items, *[None] * len(call.checks)], strict=False):
            held = (
                item is not None
                and item["status"] == "ok"
                and not item["problem"]
                and same(item["observation"], check.reference)
            )
            verdicts.append(held)
            if held:
                continue
            if item is None:
                hint = "did not run (the process ended before it)"
            elif item["status"] != "ok":
                hint = item["hint"]
            elif item["problem"]:
                hint = f"the check's value could not be read: {item['problem']}"
            else:
                hint = (
                    f"the check passed in your process but observed {_shown(item['observation'])}"
                    ", which is not what a correct solution gives"
                )
            grade.failed.append(f"{check.title}\n{hint}".strip())
        earned = check_points(call.points, verdicts)
        return earned, "solved" if all(verdicts) else "failed"
    outcomes: dict[tuple[str, int], JobReport] = {(r.job.role, r.job.index): r for r in reports}
    replies = {key: (r.reply or {}) for key, r in outcomes.items()}
    if any(reply.get("outcome") == "placeholder" for reply in replies.values()) or any(
        r.skipped == "placeholder" for r in reports
    ):
        return 0.0, "not solved yet"
    keys = [("correct", i) for i in range(len(call.correct))]
    keys += [("mutant", i) for i in range(len(call.mutants))]
    if any(key not in outcomes or _cut(outcomes[key]) for key in keys):
        return 0.0, "not graded"
    correct: list[bool] = []
    for index, candidate in enumerate(call.correct):
        reply = replies[("correct", index)]
        correct.append(reply.get("outcome") == "passed")
        if not correct[-1]:
            hint = reply.get("hint") or outcomes[("correct", index)].reason or "failed"
            label = (
                f"passes on a correct implementation: {candidate.label}"
                if candidate.label
                else "passes on the correct implementation"
            )
            grade.failed.append(f"{label}\n{hint}")
    caught: list[bool] = []
    for index, mutant in enumerate(call.mutants):
        report = outcomes[("mutant", index)]
        # A test that fails, times out or ends its process on a mutant caught it: it cannot
        # tell a mutant from the correct version but by its behaviour.
        hit = replies[("mutant", index)].get("outcome") in ("failed", "timeout") or (
            report.reply is None and bool(report.stop)
        )
        caught.append(hit)
        if all(correct):
            (grade.caught if hit else grade.missed).append(mutant.label)
    earned = catch_points(call.points, correct, caught)
    return earned, "solved" if all(correct) and all(caught) else "failed"


def _cut(report: JobReport) -> bool:
    """Whether a job never got to its test: skipped, or stopped in one of the cells before it."""
    return bool(report.skipped) or (
        report.reply is None and bool(report.stop) and report.at is not None and report.at >= 0
    )


def _shown(value: Any) -> str:
    if isinstance(value, Raised):
        return f"the exception {value}"
    return show(value, 120)


def _outcome(submission: Submission, plan: Plan, reports: dict[str, JobReport]) -> tuple[str, str]:
    """The run's outcome: completed, or the first stop (in notebook order) and where it was."""
    stops = [r for r in reports.values() if r.stop and not r.skipped]
    if not stops:
        return "completed", ""
    first = min(stops, key=lambda r: r.at if r.at is not None and r.at >= 0 else 10**9)
    where = "a cell"
    if first.at is not None and 0 <= first.at < len(plan.table):
        entry = plan.table[first.at]
        exercise = _exercise_of(submission, entry["id"])
        if entry["kind"] == "learner" and exercise:
            where = f"your solution cell for exercise {exercise}"
        elif entry["kind"] == "learner":
            where = f"a cell you added (id {entry['id']!r})"
        else:
            where = f"the lesson's cell {entry['id']!r}"
    else:
        where = f"the checks of exercise {first.job.exercise}"
    return first.stop, f"In {where}: {first.reason}."


def grade_submission(submission: Submission, limits: Limits, hide: Sequence[Path] = ()) -> Grade:
    """Plan, run and score one validated submission in its own sandbox.

    Raises SandboxError when the grading machine, not the submission, is at fault (the grade
    must then not be recorded).

    Example::

        grade = grade_submission(load_submission(path, lessons), Limits(wall=120))
    """
    started = time.monotonic()
    lesson = submission.lesson
    plan = make_plan(submission.cells, lesson.cells, lesson.calls, skip=submission.forbidden.keys())
    with Sandbox(
        limits,
        prerun=plan.prerun,
        table=plan.table,
        preload=lesson.needs,
        hide=hide,
        font_cache="matplotlib.pyplot" in lesson.needs,
    ) as sandbox:
        failed = sandbox.ready.get("prerun") or []
        if failed:
            _, cell, error = failed[0]
            raise SandboxError(
                f"lesson {lesson.number:02d}'s own cell {cell!r} fails in the sandbox ({error}); "
                "this is the grading machine's setup, not the learner's work",
                environment=True,
            )
        reports = run_jobs(sandbox, plan, limits)
    grade = score(submission, plan, reports)
    grade.cpu_seconds = round(sandbox.cpu, 3)
    grade.isolation = list(isolation().applied)
    grade.seconds = round(time.monotonic() - started, 3)
    return grade


def missing_modules(lesson: Lesson) -> list[str]:
    """The modules a lesson's cells import that this Python cannot find.

    Example::

        missing_modules(lessons[3])   # ["matplotlib.pyplot"] without matplotlib
    """
    missing = []
    for name in lesson.needs:
        top = name.split(".")[0]
        if importlib.util.find_spec(top) is None:
            missing.append(name)
    return missing


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
        "--disk",
        type=int,
        default=Limits.disk_mb,
        metavar="MB",
        help=f"writable space per sandbox, all files together (default {Limits.disk_mb} MB)",
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
    for name in ("jobs", "timeout", "cell_timeout", "cpu", "memory", "max_size", "disk"):
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
    limits = Limits(
        wall=args.timeout,
        cpu=args.cpu,
        memory_mb=args.memory,
        cell=args.cell_timeout,
        disk_mb=args.disk,
    )
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
    refused = 0
    for number_ in sorted({s.lesson.number for s in todo}):
        missing = missing_modules(lessons[number_])
        if missing:
            mine = [s for s in todo if s.lesson.number == number_]
            refused += len(mine)
            todo = [s for s in todo if s.lesson.number != number_]
            progress.note(
                f"labkit grade: lesson {number_:02d} cannot be graded on this machine: its cells "
                f"import {', '.join(missing)}, which this Python cannot find; install the "
                f"lesson's tools (pip install 'labkit[course]', or pip install "
                f"{missing[0].split('.')[0]}) and run labkit grade again ({len(mine)} "
                "notebook(s) not graded, nothing recorded)"
            )
            for submission in mine:
                progress.done("not graded", submission.path.name)
    if todo:
        progress.note("sandbox: " + "; ".join(isolation().applied))
        missing_protections = isolation().missing
        if missing_protections:
            progress.note("sandbox: NOT protected: " + "; ".join(missing_protections))
    pool = ThreadPoolExecutor(max_workers=args.jobs, thread_name_prefix="labkit-grade")
    futures: dict[Future[Grade], Submission] = {
        pool.submit(grade_submission, s, limits, hide): s for s in todo
    }
    broken: set[int] = set()
    sandbox_cpu = 0.0
    try:
        for future in as_completed(futures):
            submission = futures[future]
            try:
                grade = future.result()
            except SandboxError as exc:
                if exc.environment:
                    refused += 1
                    if submission.lesson.number not in broken:
                        broken.add(submission.lesson.number)
                        progress.note(
                            f"labkit grade: lesson {submission.lesson.number:02d} cannot be "
                            f"graded on this machine: {exc}; fix that and run labkit grade "
                            "again (nothing was recorded for it)"
                        )
                    progress.done("not graded", submission.path.name)
                    continue
                rejected += 1
                progress.note(f"labkit grade: {submission.path}: not graded ({exc})")
                progress.done("rejected", submission.path.name)
                continue
            except Exception as exc:  # a bug or a system limit: report it, grade the rest
                rejected += 1
                progress.note(
                    f"labkit grade: {submission.path}: not graded ({exc!r}); this is "
                    "a grader problem, not the notebook's: please report it"
                )
                progress.done("rejected", submission.path.name)
                continue
            book.record(grade)
            sandbox_cpu += grade.cpu_seconds
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
    summary = (
        f"\n{progress.counts['graded']} graded, {progress.counts['unchanged']} unchanged, "
        f"{rejected} rejected"
    )
    if refused:
        summary += f", {refused} not graded (see above)"
    print(f"{summary}; gradebook {args.gradebook}, feedback in {args.feedback}/")
    if progress.counts["graded"]:
        print(f"sandboxes used {sandbox_cpu:.1f} CPU s")
    if refused:
        return 2
    return 1 if rejected else 0


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
