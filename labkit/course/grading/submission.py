"""Submissions: read a learner's notebook, check it belongs to a lesson, plan the cells to grade.

A submission is untrusted input. :func:`load_submission` turns every problem into a
:class:`SubmissionError` whose message is one line naming the file, the problem and the fix
(not JSON, not a notebook, an unknown lesson, another lesson's notebook, missing exercise
cells, duplicated cells, too large). A valid submission is matched against the lesson's
instructor notebook by cell id: locked cells run as the instructor wrote them (a changed one is
recorded as tampering), solution cells and cells the learner added run as the learner wrote
them, and the hidden checks are kept apart for the sandbox to send last.

Example::

    lessons = load_lessons(Path("instructor"))
    submission = load_submission(Path("collected/alice/04-backpressure.ipynb"), lessons)
    print(submission.learner, submission.lesson.slug, submission.tampered)
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.course.grading.plan import (
    Call,
    Cell,
    CellKind,
    LessonCell,
    PlanError,
    one_at_a_time,
    protected_names,
    python_text,
)
from labkit.course.grading.scan import scan_cell

__all__ = [
    "Lesson",
    "LessonCell",
    "Submission",
    "SubmissionError",
    "learner_name",
    "load_lessons",
    "load_submission",
    "locked_hash",
    "normalize",
    "notebook_needs",
]

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
_NOTEBOOK_NAME = re.compile(r"^(\d{2})-[a-z0-9-]+$")
_GENERIC_DIRS = {"notebooks", "submissions", "collected", "labkit", "lessons", ""}
_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
# What every sandbox imports before any cell runs, whatever the lesson.
BASE_NEEDS = ("IPython", "pytest", "pytest_asyncio", "ipytest", "labkit", "labkit.course")


class SubmissionError(Exception):
    """A submission (or the lesson files) cannot be graded; the message is one line for a person.

    Example::

        try:
            load_submission(path, lessons)
        except SubmissionError as error:
            print(error)   # "alice.ipynb: not JSON (line 1, column 1: ...); ..."
    """


@dataclass(frozen=True)
class Lesson:
    """A lesson as the grader sees it: its instructor notebook's cells and its exercises' points.

    ``version`` hashes what grading depends on (the instructor notebook), so a rebuilt lesson
    regrades everyone.

    Example::

        lesson = load_lessons(Path("instructor"))[4]
        print(lesson.slug, list(lesson.exercises))    # 04-backpressure ['4.1', '4.2']
    """

    number: int
    slug: str
    title: str
    path: Path
    cells: tuple[LessonCell, ...]
    exercises: dict[str, float]
    version: str
    locked: dict[str, str] = field(default_factory=dict)
    problem: str = ""
    calls: dict[str, list[Call]] = field(default_factory=dict)
    protected: frozenset[str] = frozenset()
    needs: tuple[str, ...] = ()

    @property
    def max_points(self) -> float:
        """The most points the lesson gives."""
        return sum(self.exercises.values())


@dataclass
class Submission:
    """A validated submission: who, which lesson, its content hash and the cells to run.

    Example::

        submission = load_submission(path, lessons)
        print(submission.tampered, submission.forbidden)   # flags, and exercises that earn 0

    ``tampered`` lists everything flagged. ``forbidden`` maps each exercise that earns nothing to
    why: a learner cell that reaches into the grading machinery (:mod:`~.scan`) and can affect
    it, or instructor-only material handed in (hidden cells, solution markers, the instructor
    version's metadata).
    """

    path: Path
    learner: str
    lesson: Lesson
    sha256: str
    cells: list[Cell]
    hidden: list[Cell]
    tampered: list[str] = field(default_factory=list)
    forbidden: dict[str, list[str]] = field(default_factory=dict)


def normalize(source: str) -> str:
    """The form locked cells are compared in: trailing whitespace of lines and of the cell removed.

    Example::

        assert normalize("x = 1  \\n\\n") == normalize("x = 1")
    """
    return "\n".join(line.rstrip() for line in source.split("\n")).rstrip()


def locked_hash(source: str) -> str:
    """The SHA-256 `labkit build` records for a locked cell (of its normalized source).

    Example::

        assert locked_hash("x = 1  ") == locked_hash("x = 1")
    """
    return hashlib.sha256(normalize(source).encode("utf-8")).hexdigest()


def _source(cell: dict[str, Any]) -> str:
    raw = cell.get("source", "")
    if isinstance(raw, list):
        return "".join(part for part in raw if isinstance(part, str))
    return raw if isinstance(raw, str) else ""


def _labkit(meta: Any) -> dict[str, Any]:
    if isinstance(meta, dict):
        value = meta.get("labkit")
        if isinstance(value, dict):
            return value
    return {}


# -- lessons ------------------------------------------------------------------------------


@one_at_a_time
def load_lessons(instructor: Path) -> dict[int, Lesson]:
    """Every lesson in an instructor directory, by number; raises SubmissionError if unusable.

    Example::

        lessons = load_lessons(Path("instructor"))
    """
    manifest_path = instructor / "manifest.json"
    if not manifest_path.is_file():
        raise SubmissionError(
            f"{manifest_path}: no lesson manifest; run `labkit build` to generate instructor/, "
            "or point --instructor at the directory that has manifest.json"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SubmissionError(f"{manifest_path}: unreadable ({exc}); rerun `labkit build`") from exc
    entries = _manifest_entries(manifest)
    lessons: dict[int, Lesson] = {}
    for notebook in sorted(instructor.glob("[0-9][0-9]-*.ipynb")):
        try:
            lesson = _load_lesson(notebook, entries)
        except SubmissionError as exc:
            # Only this lesson's submissions are refused (say, while `labkit build` runs).
            lesson = _broken_lesson(notebook, str(exc))
        lessons[lesson.number] = lesson
    if not lessons:
        raise SubmissionError(f"{instructor}: no instructor notebooks; run `labkit build`")
    return lessons


def _manifest_entries(manifest: Any) -> dict[int, dict[str, Any]]:
    """The manifest's per-lesson entries by lesson number (``{"lessons": {"04": {...}}}``)."""
    raw = manifest.get("lessons") if isinstance(manifest, dict) else None
    entries: dict[int, dict[str, Any]] = {}
    if isinstance(raw, dict):
        for key, entry in raw.items():
            if isinstance(entry, dict) and str(key).isdigit():
                entries[int(key)] = entry
    return entries


def _exercise_points(entry: dict[str, Any]) -> dict[str, float]:
    raw = entry.get("exercises", {})
    points: dict[str, float] = {}
    if isinstance(raw, dict):
        for ident, value in raw.items():
            value = (
                value.get("points", value.get("max_points")) if isinstance(value, dict) else value
            )
            points[str(ident)] = _points(value)
    elif isinstance(raw, list):
        for value in raw:
            if isinstance(value, dict) and "id" in value:
                points[str(value["id"])] = _points(value.get("points", value.get("max_points")))
    return points


def _points(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _broken_lesson(path: Path, problem: str) -> Lesson:
    match = _NOTEBOOK_NAME.match(path.stem)
    number = int(match.group(1)) if match else -1
    return Lesson(number, path.stem, path.stem, path, (), {}, "", problem=problem)


def _load_lesson(path: Path, entries: dict[int, dict[str, Any]]) -> Lesson:
    data = path.read_bytes()
    try:
        notebook = json.loads(data)
        if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
            raise ValueError("not a notebook")
    except ValueError as exc:
        raise SubmissionError(
            f"{path}: the instructor notebook is not a JSON notebook; rerun `labkit build`"
        ) from exc
    meta = _labkit(notebook.get("metadata"))
    match = _NOTEBOOK_NAME.match(path.stem)
    number = int(str(meta.get("lesson", match.group(1) if match else -1)))
    cells: list[LessonCell] = []
    order: list[str] = []
    for raw in notebook.get("cells", []):
        info = _labkit(raw.get("metadata"))
        role = str(info.get("role", "locked"))
        exercise = info.get("exercise")
        cells.append(
            LessonCell(
                id=str(raw.get("id", "")),
                cell_type=str(raw.get("cell_type", "")),
                role=role,
                exercise=str(exercise) if exercise is not None else None,
                source=_source(raw),
            )
        )
        if exercise is not None and str(exercise) not in order:
            order.append(str(exercise))
    entry = entries.get(number, {})
    recorded = entry.get("locked") if isinstance(entry.get("locked"), dict) else {}
    locked = {c.id: locked_hash(c.source) for c in cells if c.locked}
    for ident, digest in locked.items():
        if recorded and recorded.get(ident) != digest:
            raise SubmissionError(
                f"{path}: cell {ident!r} does not match instructor/manifest.json (the lesson was "
                "edited after `labkit build`); run `labkit build` again"
            )
    declared = _exercise_points(entry)
    exercises = {ident: declared.get(ident, 0.0) for ident in order}
    exercises.update({k: v for k, v in declared.items() if k not in exercises})
    problem = ""
    try:
        calls = _calls(path, entry, exercises)
    except SubmissionError as exc:  # its cells still tell other lessons' notebooks apart
        calls, problem = {}, str(exc)
    plan_digest = json.dumps(entry.get("exercises", {}), sort_keys=True).encode()
    return Lesson(
        number=number,
        slug=path.stem,
        title=str(meta.get("title", entry.get("title", path.stem))),
        path=path,
        cells=tuple(cells),
        exercises=exercises,
        version=hashlib.sha256(data + plan_digest).hexdigest()[:16],
        locked=locked,
        calls=calls,
        problem=problem,
        protected=frozenset(protected_names(cells)),
        needs=notebook_needs(c.source for c in cells if c.cell_type == "code"),
    )


def _calls(path: Path, entry: dict[str, Any], exercises: dict[str, float]) -> dict[str, list[Call]]:
    """Each exercise's check calls from the manifest; refuses a manifest without them."""
    raw = entry.get("exercises", {})
    calls: dict[str, list[Call]] = {}
    for ident in exercises:
        found = raw.get(ident, {}).get("calls") if isinstance(raw, dict) else None
        if not isinstance(found, list) or not found:
            raise SubmissionError(
                f"{path}: instructor/manifest.json has no check plan for exercise {ident} (it "
                "was written by an older labkit build); run `labkit build` again"
            )
        try:
            calls[ident] = [Call.from_manifest(ident, item) for item in found]
        except PlanError as exc:
            raise SubmissionError(f"{path}: {exc}; run `labkit build` again") from exc
    return calls


def notebook_needs(sources: Iterable[str]) -> tuple[str, ...]:
    """The modules a notebook's cells import at top level (``%matplotlib`` needs matplotlib).

    The sandbox imports them before any cell runs, and the grader refuses a lesson whose
    modules are missing here, instead of grading every learner 0.

    Example::

        notebook_needs(["import asyncio\nimport uvloop", "%matplotlib inline"])
        # ("IPython", ..., "asyncio", "matplotlib.pyplot", "uvloop")
    """
    found: set[str] = set(BASE_NEEDS)
    for source in sources:
        if "%matplotlib" in source:
            found.add("matplotlib.pyplot")
        try:
            tree = ast.parse(python_text(source))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
    return tuple(sorted(found))


# -- submissions --------------------------------------------------------------------------


def learner_name(path: Path, lessons: dict[int, Lesson]) -> str:
    """Who a submission is from: the file name, or its folder when the file keeps the lesson's name.

    Example::

        learner_name(Path("collected/alice/04-backpressure.ipynb"), lessons)   # "alice"
        learner_name(Path("collected/bob.ipynb"), lessons)                     # "bob"
    """
    slugs = {lesson.slug for lesson in lessons.values()}
    stem = path.stem
    if stem not in slugs and not _NOTEBOOK_NAME.match(stem):
        return stem
    for parent in path.resolve().parents:
        if parent.name.lower() not in _GENERIC_DIRS:
            return parent.name
    return stem


@one_at_a_time
def load_submission(
    path: Path,
    lessons: dict[int, Lesson],
    *,
    lesson: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    learner: str | None = None,
) -> Submission:
    """Read, validate and plan one submission; raises SubmissionError (one line) if it is bad input.

    Example::

        submission = load_submission(Path("bob.ipynb"), lessons, lesson=4)
    """
    name = str(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise SubmissionError(
                f"{name}: too large ({size / 1e6:.3g} MB, the limit is {max_bytes / 1e6:g} MB); "
                "clear the outputs (Edit > Clear Outputs of All Cells), save, and resubmit, "
                "or raise --max-size"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise SubmissionError(f"{name}: cannot read the file ({exc.strerror})") from exc
    digest = hashlib.sha256(data).hexdigest()
    try:
        notebook = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SubmissionError(
            f"{name}: not JSON (the bytes are not UTF-8 text); submit the .ipynb JupyterLab saved"
        ) from exc
    except json.JSONDecodeError as exc:
        raise SubmissionError(
            f"{name}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); submit the "
            ".ipynb file JupyterLab saved, not an export or a copy-paste"
        ) from exc
    except RecursionError as exc:
        raise SubmissionError(f"{name}: not a notebook (JSON nested too deeply)") from exc
    cells = _notebook_cells(name, notebook)
    target = _which_lesson(name, path, notebook, cells, lessons, lesson)
    run, hidden, tampered = _plan(name, cells, target)
    forbidden = _instructor_material(notebook, cells, target)
    for exercise, why in _reaching_in(run, target).items():
        forbidden.setdefault(exercise, []).extend(why)
    flags = list(dict.fromkeys(why for reasons in forbidden.values() for why in reasons))
    return Submission(
        path=path,
        learner=learner or learner_name(path, lessons),
        lesson=target,
        sha256=digest,
        cells=run,
        hidden=hidden,
        tampered=[*tampered, *flags],
        forbidden=forbidden,
    )


def _instructor_material(
    notebook: dict[str, Any], cells: list[dict[str, Any]], lesson: Lesson
) -> dict[str, list[str]]:
    """Exercises that earn nothing because the notebook carries instructor-only material."""
    found: dict[str, list[str]] = {}
    everything = list(lesson.exercises)
    version = _labkit(notebook.get("metadata")).get("version")
    if version == "instructor":
        why = "the notebook is the instructor's version (its metadata says so)"
        for exercise in everything:
            found.setdefault(exercise, []).append(why)
    ids = {cell["id"]: cell for cell in cells}
    for original in lesson.cells:
        theirs = ids.get(original.id)
        if theirs is None or original.exercise is None:
            continue
        if original.role == "hidden":
            found.setdefault(original.exercise, []).append(
                f"the notebook carries the hidden check cell {original.id!r} (instructor only)"
            )
        elif original.role == "solution" and any(
            line.strip().startswith(_MARKERS) for line in _source(theirs).split("\n")
        ):
            found.setdefault(original.exercise, []).append(
                f"the solution cell {original.id!r} is the instructor's, solution markers and all"
            )
    return found


def _reaching_in(run: list[Cell], lesson: Lesson) -> dict[str, list[str]]:
    """Exercises a learner cell that reaches into the machinery can affect, and what it does.

    A learner cell runs before the checks of every exercise that comes after it (and of its own
    exercise), so all of those earn nothing.
    """
    found: dict[str, list[str]] = {}
    checks = {c.exercise: i for i, c in enumerate(run) if c.kind == "check" and c.exercise}
    for index, cell in enumerate(run):
        if cell.kind != "learner":
            continue
        findings = scan_cell(cell.source, cell=cell.id, protected=lesson.protected)
        if not findings:
            continue
        where = (
            f"exercise {cell.exercise}'s solution cell" if cell.exercise else f"cell {cell.id!r}"
        )
        reasons = [f"{where}, {finding}" for finding in findings]
        affected = {e for e, at in checks.items() if at > index}
        if cell.exercise:
            affected.add(cell.exercise)
        for exercise in affected:
            found.setdefault(exercise, []).extend(reasons)
    return found


def _notebook_cells(name: str, notebook: Any) -> list[dict[str, Any]]:
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise SubmissionError(
            f"{name}: not a Jupyter notebook (valid JSON, but without a list of cells); "
            "submit the lesson's .ipynb file"
        )
    major = notebook.get("nbformat")
    if major != 4:
        raise SubmissionError(
            f"{name}: not a Jupyter notebook in format 4 (nbformat is {major!r}); open it in "
            "JupyterLab, save it, and resubmit"
        )
    cells: list[dict[str, Any]] = notebook["cells"]
    for number, cell in enumerate(cells, 1):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise SubmissionError(
                f"{name}: not a valid notebook (cell {number} has no valid cell_type); open it "
                "in JupyterLab, save it, and resubmit"
            )
        if not isinstance(cell.get("id"), str):
            raise SubmissionError(
                f"{name}: cell {number} has no id, so the notebook was not made from a lesson "
                "notebook of this kit; copy your solutions into a fresh copy of the lesson"
            )
        if not isinstance(cell.get("source", ""), (str, list)):
            raise SubmissionError(
                f"{name}: not a valid notebook (cell {number}'s source is not text)"
            )
    counts = Counter(cell["id"] for cell in cells)
    twice = [ident for ident, count in counts.items() if count > 1]
    if twice:
        raise SubmissionError(
            f"{name}: duplicated cells (cell id {twice[0]!r} appears {counts[twice[0]]} times); "
            "delete the extra copies, keeping the one with your work"
        )
    return cells


def _which_lesson(
    name: str,
    path: Path,
    notebook: dict[str, Any],
    cells: list[dict[str, Any]],
    lessons: dict[int, Lesson],
    wanted: int | None,
) -> Lesson:
    known = ", ".join(f"{n:02d}" for n in sorted(lessons))
    raw = _labkit(notebook.get("metadata")).get("lesson")
    declared: int | None = None
    if raw is not None:
        if isinstance(raw, bool) or not (
            isinstance(raw, int) or (isinstance(raw, str) and raw.isdigit())
        ):
            raise SubmissionError(
                f"{name}: the notebook's metadata says lesson {json.dumps(raw)}, which is not a "
                "lesson number; submit the lesson's notebook as JupyterLab saved it, or pass "
                "--lesson N"
            )
        declared = int(raw)
    match = _NOTEBOOK_NAME.match(path.stem)
    number = wanted if wanted is not None else declared
    if number is None and match:
        number = int(match.group(1))
    if number is None:
        raise SubmissionError(
            f"{name}: cannot tell which lesson this is (no lesson number in its metadata or "
            "file name); pass --lesson N"
        )
    if number not in lessons:
        raise SubmissionError(
            f"{name}: unknown lesson {number} (the lessons are {known}); check --lesson"
        )
    target = lessons[number]
    if declared is not None and declared != number:
        raise SubmissionError(
            f"{name}: a notebook from a different lesson (lesson {declared}, not lesson "
            f"{number}); grade it with --lesson {declared} or submit lesson {number}'s notebook"
        )
    mine = {cell["id"]: cell for cell in cells}
    fits = {n: _fit(lesson, mine) for n, lesson in lessons.items()}
    locked = sum(1 for c in target.cells if c.locked and c.cell_type == "code")
    best = max(fits, key=lambda n: (fits[n], n == number))
    if fits.get(number, 0) * 2 < locked and best != number and fits[best] > fits.get(number, 0):
        label = "its metadata" if declared is not None else "its file name"
        raise SubmissionError(
            f"{name}: a notebook from a different lesson: its cells are those of "
            f"{lessons[best].slug}, but {label} says lesson {number}; submit "
            f"{target.slug}.ipynb, or grade it with --lesson {best}"
        )
    if locked and fits.get(number, 0) == 0:
        raise SubmissionError(
            f"{name}: not a notebook of {target.slug} (none of its cells are that lesson's); "
            f"submit {target.slug}.ipynb"
        )
    if target.problem:
        raise SubmissionError(f"{name}: lesson {number} cannot be graded: {target.problem}")
    return target


def _fit(lesson: Lesson, mine: dict[str, dict[str, Any]]) -> int:
    """How many of a lesson's locked code cells a notebook holds unchanged."""
    return sum(
        1
        for cell in lesson.cells
        if cell.locked
        and cell.cell_type == "code"
        and cell.id in mine
        and locked_hash(_source(mine[cell.id])) == lesson.locked.get(cell.id)
    )


def _plan(
    name: str, cells: list[dict[str, Any]], lesson: Lesson
) -> tuple[list[Cell], list[Cell], list[str]]:
    """The cells to run (learner phase), the hidden cells, and the tampering found."""
    mine = {cell["id"]: cell for cell in cells}
    missing = [c for c in lesson.cells if c.role == "solution" and c.id not in mine]
    if missing:
        first = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise SubmissionError(
            f"{name}: missing exercise cells: exercise {first.exercise}'s solution cell "
            f"(id {first.id!r}) is not in the notebook{more}; copy your work into a fresh "
            "copy of the lesson notebook and resubmit"
        )
    known = {c.id for c in lesson.cells}
    extras: dict[str | None, list[dict[str, Any]]] = {}
    previous: str | None = None
    for cell in cells:
        if cell["id"] in known:
            previous = cell["id"]
        elif cell["cell_type"] == "code":
            extras.setdefault(previous, []).append(cell)

    run: list[Cell] = [_extra(c) for c in extras.get(None, [])]
    hidden: list[Cell] = []
    tampered: list[str] = []
    for original in lesson.cells:
        theirs = mine.get(original.id)
        if original.role == "hidden":
            if original.cell_type == "code":
                hidden.append(Cell(original.id, original.source, "hidden", original.exercise))
            run.extend(_extra(c) for c in extras.get(original.id, []))
            continue
        if original.locked:
            if theirs is None:
                tampered.append(f"locked cell {original.id!r} was deleted (restored for grading)")
            elif locked_hash(_source(theirs)) != lesson.locked[original.id] or (
                theirs["cell_type"] != original.cell_type
            ):
                what = (
                    "check cell"
                    if original.role == "check"
                    else f"locked {original.cell_type} cell"
                )
                tampered.append(f"{what} {original.id!r} was changed (graded with the original)")
            if original.cell_type == "code":
                kind: CellKind = "check" if original.role == "check" else "locked"
                run.append(Cell(original.id, original.source, kind, original.exercise))
        elif theirs is not None and theirs["cell_type"] == "code":
            run.append(Cell(original.id, _source(theirs), "learner", original.exercise))
        run.extend(_extra(c) for c in extras.get(original.id, []))
    return run, hidden, tampered


def _extra(cell: dict[str, Any]) -> Cell:
    return Cell(str(cell["id"]), _source(cell), "learner")
