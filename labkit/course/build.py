"""Lessons: build learner and instructor notebooks from the lesson sources (``labkit build``).

A lesson's source ``lessons/NN-slug.md`` is text a reviewer reads as prose and code: a notebook in
jupytext's MyST Markdown format holding everything (explanations, worked examples, solution
regions and hidden checks; the format is in ``docs/exercises.md``). The build writes

* ``notebooks/NN-slug.ipynb``, the learner version: solution regions replaced by a placeholder,
  hidden cells removed, outputs cleared;
* ``instructor/NN-slug.ipynb``, the instructor version: every cell, executed on the kit's own
  kernel, outputs stored (nbval compares them);
* ``instructor/manifest.json``: per lesson, the exercises and their points, the SHA-256 of
  every locked cell, and the cell ids.

Example::

    $ labkit build              # every lesson
    $ labkit build 04           # one lesson
    $ labkit build --check      # exit 1 if a generated file is out of date
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Lesson",
    "LessonError",
    "build",
    "check_up_to_date",
    "configure",
    "execute",
    "find_lessons",
    "learner_notebook",
    "locked_hash",
    "read_source",
    "replace_regions",
    "run",
    "write_source",
]

ROLES = ("solution", "check", "hidden")
BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
MANIFEST_VERSION = 1
KERNEL_SPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
#: What JupyterLab writes into a notebook's metadata from the kit's kernel, so that opening and
#: saving an untouched lesson changes nothing; without the Python version, which differs from
#: one learner to the next (`labkit lab` leaves it out when it saves a lesson, see lab.py).
LANGUAGE_INFO = {
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
}
_NAME = re.compile(r"(\d\d)-([a-z0-9]+(?:-[a-z0-9]+)*)\.md")
_EXERCISE = re.compile(r"(\d+)\.(\d+)")


class LessonError(Exception):
    """A lesson source is malformed or does not run; the message names the lesson and cell."""


@dataclass(frozen=True)
class Lesson:
    """One lesson: its number, slug and the three files built from its source.

    Example::

        lesson = Lesson.from_source(Path("lessons/04-backpressure.md"))
        assert lesson.code == "04" and lesson.learner == Path("notebooks/04-backpressure.ipynb")
    """

    number: int
    slug: str
    source: Path
    root: Path

    @classmethod
    def from_source(cls, path: Path) -> Lesson:
        """The lesson whose source is ``path`` (``<root>/lessons/NN-slug.md``)."""
        match = _NAME.fullmatch(path.name)
        if match is None:
            raise LessonError(
                f"{path}: a lesson source is named NN-slug.md (two digits, then lowercase "
                "words joined by dashes), e.g. 04-backpressure.md"
            )
        return cls(int(match.group(1)), match.group(2), path, path.parent.parent)

    @property
    def code(self) -> str:
        """The two-digit lesson number, as in file names and ``labkit build 04``."""
        return f"{self.number:02d}"

    @property
    def name(self) -> str:
        """The file name of the two generated notebooks (``NN-slug.ipynb``)."""
        return f"{self.code}-{self.slug}.ipynb"

    @property
    def learner(self) -> Path:
        """Where the learner version goes."""
        return self.root / "notebooks" / self.name

    @property
    def instructor(self) -> Path:
        """Where the instructor version goes."""
        return self.root / "instructor" / self.name


@dataclass
class _Exercise:
    exercise: str
    check_cell: str = ""
    solution_cells: list[str] = field(default_factory=list)
    hidden_cells: list[str] = field(default_factory=list)


# -- reading and validating a source ------------------------------------------------------


def find_lessons(root: Path, selectors: Iterable[str] = ()) -> list[Lesson]:
    """The lessons under ``root/lessons``, optionally only those named by number or file.

    Example::

        find_lessons(Path("."), ["4"])  # [Lesson(number=4, slug="backpressure", ...)]
    """
    folder = root / "lessons"
    if not folder.is_dir():
        raise LessonError(f"{folder} does not exist: run labkit build from the kit's root folder")
    lessons = sorted(
        (Lesson.from_source(p) for p in folder.glob("*.md") if p.name != "README.md"),
        key=lambda x: x.number,
    )
    numbers = [lesson.number for lesson in lessons]
    for number in set(numbers):
        if numbers.count(number) > 1:
            twins = ", ".join(x.name for x in lessons if x.number == number)
            raise LessonError(f"two lesson sources share the number {number:02d}: {twins}")
    wanted = list(selectors)
    if not wanted:
        return lessons
    chosen: list[Lesson] = []
    for selector in wanted:
        name = Path(selector).name
        match = [
            x
            for x in lessons
            if (selector.isdigit() and x.number == int(selector)) or x.name == name
        ]
        if not match:
            known = ", ".join(x.code for x in lessons) or "none"
            raise LessonError(f"no lesson {selector!r} in {folder} (lessons there: {known})")
        chosen.extend(x for x in match if x not in chosen)
    return chosen


def read_source(path: Path) -> Any:
    """A lesson source (MyST Markdown) as a notebook whose cells carry their stable ids.

    Each cell's id is written in the source as the cell's ``id`` option (``:id: setup`` or
    ``+++ {"id": "title"}``); the notebook's ``labkit`` metadata sits in the front matter.

    Example::

        nb = read_source(Path("lessons/00-getting-started.md"))
        assert nb.cells[0].id == "title"
    """
    import jupytext

    try:
        nb = jupytext.read(str(path), fmt="md:myst")
    except Exception as exc:
        raise LessonError(f"{path}: not a readable MyST lesson ({exc})") from None
    nb.nbformat, nb.nbformat_minor = 4, 5
    for index, cell in enumerate(nb.cells):
        ident = cell.metadata.pop("id", None)
        if not isinstance(ident, str) or not ident:
            raise LessonError(
                f"{path}, cell {index + 1}: the cell has no id; give it one with an `:id: name` "
                'line after ```{code-cell}, or `+++ {"id": "name"}` before a text cell'
            )
        cell["id"] = ident
    nb.metadata.pop("jupytext", None)
    return nb


def write_source(nb: Any, path: Path) -> None:
    """Write a notebook as a lesson source: MyST Markdown, each cell's id kept as its ``id``.

    The inverse of :func:`read_source`: a notebook drafted in JupyterLab becomes a source.

    Example::

        write_source(nbformat.read("draft.ipynb", as_version=4), Path("lessons/12-new.md"))
    """
    import jupytext

    out = copy.deepcopy(nb)
    for cell in out.cells:
        cell.metadata = {"id": cell.get("id"), **cell.metadata}
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    out.metadata = {
        "kernelspec": dict(KERNEL_SPEC),
        "labkit": out.metadata.get("labkit", {}),
        "jupytext": {"notebook_metadata_filter": "labkit", "cell_metadata_filter": "all"},
    }
    text: str = jupytext.writes(out, fmt="md:myst")
    text = re.sub(r"  text_representation:\n(?:    .*\n)+", "", text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _read(lesson: Lesson) -> Any:
    nb = read_source(lesson.source)
    _validate(lesson, nb)
    return nb


def _cell_label(index: int, cell: Any) -> str:
    return f"cell {index + 1} (id {cell.get('id', '?')})"


def _validate(lesson: Lesson, nb: Any) -> None:
    where = str(lesson.source)
    meta = nb.metadata.get("labkit")
    if not isinstance(meta, dict) or meta.get("lesson") != lesson.number or not meta.get("title"):
        raise LessonError(
            f"{where}: the notebook metadata needs "
            f'"labkit": {{"lesson": {lesson.number}, "title": "..."}}'
        )
    seen_ids: set[str] = set()
    exercises = _exercises(lesson, nb)
    for index, cell in enumerate(nb.cells):
        label = f"{where}, {_cell_label(index, cell)}"
        cell_id = cell.get("id")
        if not cell_id:
            raise LessonError(
                f"{label}: the cell has no id; save the notebook with JupyterLab 4 "
                "(nbformat 4.5 gives every cell a stable id)"
            )
        if cell_id in seen_ids:
            raise LessonError(f"{label}: the cell id {cell_id!r} is used twice; make it unique")
        seen_ids.add(cell_id)
        role = _role(cell)
        markers = cell.source.count(BEGIN) + cell.source.count(END)
        if role != "solution" and markers:
            raise LessonError(
                f"{label}: solution markers belong in a cell whose metadata is "
                '"labkit": {"role": "solution", "exercise": "N.k"}'
            )
        if role == "solution":
            _learner_source(cell.source, _exercise_of(cell), label)
    for exercise in exercises.values():
        if not exercise.check_cell:
            raise LessonError(
                f"{where}: exercise {exercise.exercise} has no check cell (a cell with "
                f'"labkit": {{"role": "check", "exercise": "{exercise.exercise}"}})'
            )
    _static_calls(lesson, nb)


def _role(cell: Any) -> str | None:
    meta = cell.get("metadata", {}).get("labkit")
    if meta is None:
        return None
    role = meta.get("role") if isinstance(meta, dict) else None
    return role if isinstance(role, str) else "?"


def _exercise_of(cell: Any) -> str:
    return str(cell.metadata["labkit"]["exercise"])


def _exercises(lesson: Lesson, nb: Any) -> dict[str, _Exercise]:
    exercises: dict[str, _Exercise] = {}
    for index, cell in enumerate(nb.cells):
        role = _role(cell)
        if role is None:
            continue
        label = f"{lesson.source}, {_cell_label(index, cell)}"
        meta = cell.metadata["labkit"]
        if role not in ROLES:
            raise LessonError(
                f"{label}: unknown labkit role {meta.get('role')!r}; use one of {', '.join(ROLES)}"
            )
        exercise = meta.get("exercise")
        match = _EXERCISE.fullmatch(str(exercise)) if isinstance(exercise, str) else None
        if match is None or int(match.group(1)) != lesson.number:
            raise LessonError(
                f"{label}: exercise id {exercise!r} must look like "
                f'"{lesson.number}.1" (this lesson\'s number, a dot, the exercise number)'
            )
        if role == "solution" and cell.cell_type != "code":
            raise LessonError(f"{label}: a solution cell must be a code cell")
        entry = exercises.setdefault(exercise, _Exercise(exercise))
        cell_id = str(cell.get("id", ""))
        if role == "check":
            if entry.check_cell:
                raise LessonError(
                    f"{label}: duplicate exercise id {exercise}: it already has a check cell; "
                    "give this exercise its own id, or merge the two checks into one cell"
                )
            entry.check_cell = cell_id
        elif role == "solution":
            entry.solution_cells.append(cell_id)
        else:
            entry.hidden_cells.append(cell_id)
    return exercises


# -- solution regions ---------------------------------------------------------------------


def replace_regions(source: str, exercise: str) -> str:
    """The learner's text of a solution cell: each solution region becomes the placeholder.

    Example::

        cell = "def f():\\n    ### BEGIN SOLUTION\\n    return 1\\n    ### END SOLUTION\\n"
        replace_regions(cell, "4.1")
        # 'def f():\\n    # YOUR CODE HERE\\n    raise NotImplementedError("exercise 4.1: ...")\\n'
    """
    return _learner_source(source, exercise, f"exercise {exercise}")


def _learner_source(source: str, exercise: str, label: str) -> str:
    lines = source.split("\n")
    out: list[str] = []
    placeholders: list[int] = []
    begin: int | None = None
    indent = ""
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            if begin is not None:
                raise LessonError(
                    f"{label}: unbalanced solution markers: line {number} opens a region "
                    f"inside the region opened on line {begin}; close it with {END!r} first"
                )
            begin = number
            indent = line[: len(line) - len(line.lstrip())]
            custom = stripped[len(BEGIN) :].strip()
            if custom and not custom.startswith("placeholder:"):
                raise LessonError(
                    f"{label}, line {number}: after {BEGIN!r} only 'placeholder: <code>' may "
                    f"follow, got {custom!r}"
                )
            out.append(indent + "# YOUR CODE HERE")
            placeholders.append(len(out) + 1)
            if custom:
                out.append(indent + custom[len("placeholder:") :].strip())
            else:
                what = "write this test" if _in_test(lines[: number - 1]) else "write this code"
                out.append(f'{indent}raise NotImplementedError("exercise {exercise}: {what}")')
        elif stripped.startswith(END):
            if begin is None:
                raise LessonError(
                    f"{label}: unbalanced solution markers: line {number} closes a region "
                    f"that was never opened with {BEGIN!r}"
                )
            begin = None
        elif begin is None:
            out.append(line)
    if begin is not None:
        raise LessonError(
            f"{label}: unbalanced solution markers: the region opened on line {begin} is "
            f"never closed with {END!r}"
        )
    if not placeholders:
        raise LessonError(
            f"{label}: a solution cell needs at least one {BEGIN!r} ... {END!r} region"
        )
    learner = "\n".join(out)
    _check_inside_functions(learner, placeholders, label)
    return learner


def _in_test(before: list[str]) -> bool:
    for line in reversed(before):
        match = re.match(r"\s*(?:async\s+)?def\s+(\w+)", line)
        if match:
            return match.group(1).startswith("test")
    return False


def _python_text(source: str) -> str:
    """The cell as plain Python for ``ast``: a leading cell magic line and line magics blanked."""
    lines = source.split("\n")
    if lines and lines[0].startswith("%%"):
        lines[0] = ""
    cleaned = [
        "" if line.lstrip().startswith(("%", "!")) and not line.lstrip().startswith("%=") else line
        for line in lines
    ]
    return "\n".join(cleaned)


def _check_inside_functions(learner: str, placeholders: list[int], label: str) -> None:
    text = _python_text(learner)
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise LessonError(
            f"{label}: the learner version does not parse ({exc.msg}, line {exc.lineno}); "
            "check the indentation of the solution markers"
        ) from None
    spans = [
        (node.lineno, node.end_lineno or node.lineno)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    for line in placeholders:
        if not any(first < line <= last for first, last in spans):
            raise LessonError(
                f"{label}: the solution region replaced at line {line - 1} is outside a "
                "function body; put it inside a function so the learner's cell still runs"
            )


# -- the generated notebooks ----------------------------------------------------------------


def locked_hash(source: str) -> str:
    """SHA-256 of a locked cell's source, ignoring trailing whitespace on lines and at the end.

    Example::

        assert locked_hash("x = 1   \\n\\n") == locked_hash("x = 1")
    """
    text = "\n".join(line.rstrip() for line in source.split("\n")).rstrip()
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _source_hash(nb: Any) -> str:
    """What the generated files depend on: cells (not outputs) and the lesson metadata."""
    cells = [
        {
            "id": cell.get("id"),
            "type": cell.cell_type,
            "source": cell.source,
            "labkit": cell.get("metadata", {}).get("labkit"),
        }
        for cell in nb.cells
    ]
    payload = json.dumps(
        {"labkit": nb.metadata.get("labkit"), "cells": cells}, sort_keys=True, ensure_ascii=True
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _clean_cell(cell: Any) -> Any:
    cell = copy.deepcopy(cell)
    keep = {k: v for k, v in cell.get("metadata", {}).items() if k in ("labkit", "tags")}
    cell["metadata"] = keep
    if cell.cell_type == "code":
        cell["outputs"] = []
        cell["execution_count"] = None
    if not cell.get("attachments"):
        cell.pop("attachments", None)
    return cell


def _base_notebook(nb: Any, version: str, source_hash: str) -> Any:
    nbformat = _nbformat()

    out = nbformat.v4.new_notebook()
    out.nbformat, out.nbformat_minor = 4, 5
    labkit_meta = dict(nb.metadata["labkit"])
    labkit_meta.update({"version": version, "source_sha256": source_hash})
    out.metadata = {
        "kernelspec": dict(KERNEL_SPEC),
        "labkit": labkit_meta,
        "language_info": copy.deepcopy(LANGUAGE_INFO),
    }
    return out


def learner_notebook(lesson: Lesson, nb: Any | None = None) -> Any:
    """The learner version of a lesson: regions replaced, hidden cells removed, no outputs.

    Example::

        nb = learner_notebook(Lesson.from_source(Path("lessons/00-getting-started.md")))
    """
    nb = _read(lesson) if nb is None else nb
    out = _base_notebook(nb, "learner", _source_hash(nb))
    for index, cell in enumerate(nb.cells):
        role = _role(cell)
        if role == "hidden":
            continue
        cell = _clean_cell(cell)
        if role == "solution":
            label = f"{lesson.source}, {_cell_label(index, cell)}"
            cell.source = _learner_source(cell.source, _exercise_of(cell), label)
        elif role == "check":
            cell.metadata["editable"] = False
            cell.metadata["deletable"] = False
        out.cells.append(cell)
    return out


def _instructor_skeleton(nb: Any) -> Any:
    out = _base_notebook(nb, "instructor", _source_hash(nb))
    out.cells = [_clean_cell(cell) for cell in nb.cells]
    return out


def _manifest_entry(
    lesson: Lesson, nb: Any, points: dict[str, float], calls: dict[str, list[Any]]
) -> dict[str, Any]:
    exercises = _exercises(lesson, nb)
    return {
        "file": lesson.name,
        "title": nb.metadata["labkit"]["title"],
        "source_sha256": _source_hash(nb),
        "cells": [cell.id for cell in nb.cells],
        "exercises": {
            key: {
                "points": points.get(key, 0),
                "check_cell": ex.check_cell,
                "solution_cells": ex.solution_cells,
                "hidden_cells": ex.hidden_cells,
                "calls": calls.get(key, []),
            }
            for key, ex in sorted(exercises.items(), key=lambda kv: _exercise_key(kv[0]))
        },
        "locked": {
            cell.id: locked_hash(cell.source) for cell in nb.cells if _role(cell) != "solution"
        },
    }


def _exercise_key(exercise: str) -> tuple[int, int]:
    lesson, number = exercise.split(".")
    return int(lesson), int(number)


def _dumps(nb: Any) -> str:
    text: str = _nbformat().writes(nb)
    return text + "\n"


def _nbformat() -> Any:
    """nbformat, imported when needed (it is untyped, hence Any)."""
    import nbformat

    return nbformat


# -- executing ------------------------------------------------------------------------------


def _kernel_manager() -> Any:
    """A kernel manager that starts ipykernel from the running Python: the kit's own kernel."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager

    class _OwnKernel(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str, *args: Any, **kwargs: Any) -> Any:
            return KernelSpec(
                argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                display_name=KERNEL_SPEC["display_name"],
                language="python",
                resource_dir="",
            )

    return KernelManager(kernel_name="python3", kernel_spec_manager=_OwnKernel())


def execute(
    lesson: Lesson,
    nb: Any,
    *,
    timeout: float = 300,
    progress: Callable[[str], None] | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """Run a notebook on the kit's kernel in its own folder; return it and the check results.

    Example::

        executed, results = execute(lesson, learner_notebook(lesson))
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    version = nb.metadata.get("labkit", {}).get("version", "learner")
    nb = copy.deepcopy(nb)
    total = sum(cell.cell_type == "code" for cell in nb.cells)
    current: dict[str, Any] = {"index": -1, "done": 0}
    # The folder the notebook is stored in, as in JupyterLab and nbval.
    workdir = (lesson.instructor if version == "instructor" else lesson.learner).parent
    workdir.mkdir(parents=True, exist_ok=True)

    def on_cell_execute(cell: Any, cell_index: int, **_: Any) -> None:
        current["index"] = cell_index

    def on_cell_executed(cell: Any, cell_index: int, **_: Any) -> None:
        current["done"] += 1
        if progress is not None:
            progress(f"lesson {lesson.code}: {current['done']}/{total} code cells run")

    with tempfile.NamedTemporaryFile("w+", suffix=".jsonl", delete=False) as results_file:
        results_path = results_file.name
    saved = os.environ.get("LABKIT_RESULTS")
    os.environ["LABKIT_RESULTS"] = results_path
    try:
        client = NotebookClient(
            nb,
            km=_kernel_manager(),
            timeout=timeout,
            record_timing=False,
            allow_errors=False,
            resources={"metadata": {"path": str(workdir)}},
            on_cell_execute=on_cell_execute,
            on_cell_executed=on_cell_executed,
        )
        if progress is not None:
            progress(f"lesson {lesson.code}: running {total} code cells")
        client.execute(stderr=subprocess.DEVNULL)
        results = [
            json.loads(line)
            for line in Path(results_path).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    except CellTimeoutError:
        cell = nb.cells[current["index"]]
        raise LessonError(
            f"{lesson.source}, {_cell_label(current['index'], cell)}: still running after "
            f"{timeout:g} s; a cell must finish (does it wait on real time?)"
        ) from None
    except CellExecutionError as exc:
        index = current["index"]
        cell = nb.cells[index] if index >= 0 else {}
        evalue = " ".join(str(exc.evalue).split())
        raise LessonError(
            f"{lesson.source}, {_cell_label(index, cell)} failed: {exc.ename}: {evalue}"
        ) from None
    finally:
        if saved is None:
            os.environ.pop("LABKIT_RESULTS", None)
        else:
            os.environ["LABKIT_RESULTS"] = saved
        Path(results_path).unlink(missing_ok=True)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = _coalesce(cell.outputs)
            cell.metadata.pop("execution", None)
    nb.metadata["language_info"] = copy.deepcopy(LANGUAGE_INFO)
    nb.metadata.pop("widgets", None)
    return nb, results


_UNCHECKED = "nbval-ignore-output"


def _drop_unchecked_outputs(nb: Any) -> Any:
    """Store no output for cells tagged ``nbval-ignore-output``: they print what changes per run.

    nbval does not compare such a cell (measured throughput, a plot of it), so a stored output
    would be an unverified figure from the build machine; the cell still runs, live, for readers.

    Example::

        _write(lesson.instructor, _dumps(_drop_unchecked_outputs(executed)))
    """
    for cell in nb.cells:
        if cell.cell_type == "code" and _UNCHECKED in cell.metadata.get("tags", []):
            cell.outputs = []
    return nb


def _coalesce(outputs: list[Any]) -> list[Any]:
    """Merge consecutive stream outputs of one stream: their split depends on timing."""
    merged: list[Any] = []
    for output in outputs:
        if (
            output.get("output_type") == "stream"
            and merged
            and merged[-1].get("output_type") == "stream"
            and merged[-1].get("name") == output.get("name")
        ):
            merged[-1]["text"] += output["text"]
        else:
            merged.append(output)
    return merged


# -- building and checking -------------------------------------------------------------------


def _manifest_path(root: Path) -> Path:
    return root / "instructor" / "manifest.json"


def _load_manifest(root: Path) -> dict[str, Any]:
    path = _manifest_path(root)
    if not path.exists():
        return {"version": MANIFEST_VERSION, "lessons": {}}
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise LessonError(
            f"{path}: not valid JSON ({exc}); delete it and run labkit build"
        ) from None
    data.setdefault("lessons", {})
    return data


@contextlib.contextmanager
def _manifest_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the manifest while reading, updating and writing it."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"labkit-manifest-{key}.lock"
    with open(path, "a+b") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: builds there run one at a time
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    manifest["version"] = MANIFEST_VERSION
    manifest["lessons"] = dict(sorted(manifest["lessons"].items()))
    text = json.dumps(manifest, indent=1, sort_keys=False, ensure_ascii=False) + "\n"
    _write(_manifest_path(root), text)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _points(lesson: Lesson, nb: Any, results: list[dict[str, Any]]) -> dict[str, float]:
    """Each exercise's points, after proving that its own solution solves it."""
    points: dict[str, float] = {}
    for result in results:
        key = str(result.get("exercise"))
        if result.get("status") != "solved":
            failed = [item["name"] for item in result.get("items", []) if not item.get("ok")]
            kind = "hidden check" if result.get("hidden") else "check"
            raise LessonError(
                f"{lesson.source}: exercise {key}: the {kind} reports {result.get('status')!r} "
                f"on the instructor's solution ({'; '.join(failed) or 'no detail'}); fix the "
                "solution or the check"
            )
        points[key] = points.get(key, 0) + float(result.get("max_points", 0))
    for key in _exercises(lesson, nb):
        if key not in points:
            raise LessonError(
                f"{lesson.source}: exercise {key}: no check call reported a result; its check "
                f'cell must call check_test("{key}", ...) or check("{key}", ...) from labkit.course'
            )
    unknown = sorted(set(points) - set(_exercises(lesson, nb)))
    if unknown:
        raise LessonError(
            f"{lesson.source}: checks ran for exercise(s) {', '.join(unknown)} that no cell "
            "declares; give the check cell the metadata labkit.role = check with that id"
        )
    return {key: int(value) if value.is_integer() else value for key, value in points.items()}


def _grading_cells(nb: Any) -> list[Any]:
    return [c for c in nb.cells if c.cell_type == "code" and _role(c) in ("check", "hidden")]


def _static_calls(lesson: Lesson, nb: Any) -> list[Any]:
    """Every check cell's call as the grader plans it, read from the source (no run needed)."""
    from labkit.course.grading.plan import PlanError, parse_call

    calls = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or _role(cell) not in ("check", "hidden"):
            continue
        where = f"{lesson.source}, {_cell_label(index, cell)}"
        try:
            call = parse_call(cell.source, exercise=_exercise_of(cell), cell=cell.id, where=where)
        except PlanError as exc:
            raise LessonError(str(exc)) from None
        if call.hidden != (_role(cell) == "hidden"):
            raise LessonError(
                f"{where}: a {_role(cell)} cell's call must "
                f"{'say' if _role(cell) == 'hidden' else 'not say'} hidden=True"
            )
        calls.append(call)
    return calls


def _calls(lesson: Lesson, nb: Any, results: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The check plan for the manifest: each call, its points, and the reference observations.

    The instructor solution's run gives, for every check function, the plain-data value it
    returned; the grader compares learners' values with these. A check that returns nothing
    readable is refused here, with what to return instead.
    """
    from dataclasses import replace

    from labkit.course.grading.wire import WireError, from_text

    static = _static_calls(lesson, nb)
    if len(static) != len(results):
        raise LessonError(
            f"{lesson.source}: {len(static)} check cells but {len(results)} check calls ran; "
            "each check cell must make exactly one check(...) or check_test(...) call"
        )
    found: dict[str, list[Any]] = {}
    for call, result in zip(static, results, strict=True):
        where = f"{lesson.source}, cell {call.cell}"
        if str(result.get("exercise")) != call.exercise:
            raise LessonError(
                f"{where}: the call that ran is for exercise {result.get('exercise')}, "
                f"the cell is exercise {call.exercise}"
            )
        expected = "check" if call.kind == "check" else "test"
        if result.get("kind") != expected:
            raise LessonError(f"{where}: the cell's last call is not the one that reported")
        points = float(result.get("max_points", 0))
        if call.kind == "check":
            items = result.get("items", [])
            checks = []
            for item, check in zip(items, call.checks, strict=True):
                problem = item.get("problem") or ""
                if problem or item.get("observation") is None:
                    raise LessonError(
                        f"{where}: the check {check.expr}() {problem or 'returns nothing'}; a "
                        "graded check must return the plain-data value it asserted on (a "
                        "number, text, or a list, tuple or dict of them, e.g. `return elapsed` "
                        "or `return {'dropped': dropped, 'elapsed': elapsed}`): the grader "
                        "compares learners' values with the one your solution gives"
                    )
                try:
                    reference = from_text(item["observation"])
                except WireError as exc:
                    raise LessonError(f"{where}: unreadable observation ({exc})") from None
                checks.append(
                    replace(check, title=str(item.get("name", check.title)), reference=reference)
                )
            call = replace(call, checks=tuple(checks), points=points)
        else:
            call = replace(call, points=points)
        found.setdefault(call.exercise, []).append(call.to_manifest())
    return found


def build(
    lessons: Iterable[Lesson],
    *,
    timeout: float = 300,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Write the learner and instructor notebooks and the manifest entry of each lesson.

    Example::

        build(find_lessons(Path(".")), progress=print)
    """
    lessons = list(lessons)
    if not lessons:
        return
    root = lessons[0].root
    for lesson in lessons:
        nb = _read(lesson)
        learner = learner_notebook(lesson, nb)
        _write(lesson.learner, _dumps(learner))
        executed, results = execute(
            lesson, _instructor_skeleton(nb), timeout=timeout, progress=progress
        )
        points = _points(lesson, nb, results)
        calls = _calls(lesson, nb, results)
        _write(lesson.instructor, _dumps(_drop_unchecked_outputs(executed)))
        with _manifest_lock(root):  # other builds may update other lessons' entries meanwhile
            manifest = _load_manifest(root)
            manifest["lessons"][lesson.code] = _manifest_entry(lesson, nb, points, calls)
            _write_manifest(root, manifest)
        if progress is not None:
            summary = ", ".join(f"{k}: {v:g} points" for k, v in points.items()) or "no exercises"
            progress(f"lesson {lesson.code}: built {lesson.name} ({summary})")


def check_up_to_date(lessons: Iterable[Lesson]) -> list[str]:
    """What is out of date among the generated files of these lessons (empty: all current).

    Example::

        assert check_up_to_date(find_lessons(Path("."))) == []
    """
    nbformat = _nbformat()

    problems: list[str] = []
    lessons = list(lessons)
    if not lessons:
        return problems
    manifest = _load_manifest(lessons[0].root)
    for lesson in lessons:
        nb = _read(lesson)
        fix = f"run `labkit build {lesson.code}`"
        if not lesson.learner.exists():
            problems.append(f"{lesson.learner} is missing: {fix}")
        elif lesson.learner.read_text(encoding="utf-8") != _dumps(learner_notebook(lesson, nb)):
            problems.append(f"{lesson.learner} is out of date with {lesson.source}: {fix}")
        if not lesson.instructor.exists():
            problems.append(f"{lesson.instructor} is missing: {fix}")
        else:
            stored = nbformat.read(str(lesson.instructor), as_version=4)
            expected = _instructor_skeleton(nb)
            same = stored.metadata.get("labkit") == expected.metadata["labkit"] and [
                (c.id, c.source) for c in stored.cells
            ] == [(c.id, c.source) for c in expected.cells]
            if not same:
                problems.append(f"{lesson.instructor} is out of date with {lesson.source}: {fix}")
        entry = manifest["lessons"].get(lesson.code)
        if entry is None:
            problems.append(
                f"{_manifest_path(lesson.root)} has no entry for lesson {lesson.code}: {fix}"
            )
        else:
            points = {k: v["points"] for k, v in entry.get("exercises", {}).items()}
            if entry != _manifest_entry(lesson, nb, points, _stored_calls(lesson, nb, entry)):
                problems.append(
                    f"{_manifest_path(lesson.root)}: the entry of lesson {lesson.code} is out of "
                    f"date: {fix}"
                )
    return problems


def _stored_calls(lesson: Lesson, nb: Any, entry: dict[str, Any]) -> dict[str, list[Any]]:
    """The calls the source says, with the points and references the last build recorded."""
    from dataclasses import replace

    from labkit.course.grading.plan import Call

    stored: dict[tuple[str, str], Any] = {}
    for key, exercise in entry.get("exercises", {}).items():
        for item in exercise.get("calls", []) if isinstance(exercise, dict) else []:
            try:
                call = Call.from_manifest(key, item)
            except ValueError:
                continue
            stored[(key, call.cell)] = call
    try:
        static = _static_calls(lesson, nb)
    except LessonError:
        return {}
    found: dict[str, list[Any]] = {}
    for call in static:
        old = stored.get((call.exercise, call.cell))
        if old is None:
            return {}
        checks = tuple(
            replace(c, title=o.title, reference=o.reference)
            for c, o in zip(call.checks, old.checks, strict=False)
        )
        if len(checks) != len(call.checks):
            return {}
        found.setdefault(call.exercise, []).append(
            replace(call, checks=checks, points=old.points).to_manifest()
        )
    return found


# -- the command line -------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``labkit build``."""
    parser.add_argument(
        "lessons",
        nargs="*",
        metavar="LESSON",
        help="lesson numbers (04) or source files to build; default: every lesson",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and name the files that are out of date with lessons/",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="the kit's folder, holding lessons/ (default: the current folder or a parent)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300,
        help="real seconds one cell may run before the build fails (default: 300)",
    )


def _find_root(start: Path) -> Path:
    for folder in (start, *start.parents):
        if (folder / "lessons").is_dir():
            return folder
    return start


def _progress(message: str) -> None:
    stream = sys.stderr
    if "code cells run" in message:
        if stream.isatty():
            stream.write("\r" + message + "\033[K")
    else:
        if stream.isatty():
            stream.write("\r\033[K")
        stream.write(message + "\n")
    stream.flush()


def run(args: argparse.Namespace) -> int:
    """Run ``labkit build``; returns the exit code."""
    root = args.root if args.root is not None else _find_root(Path.cwd())
    try:
        lessons = find_lessons(root, args.lessons)
        if args.check:
            problems = check_up_to_date(lessons)
            for problem in problems:
                print(f"labkit build --check: {problem}", file=sys.stderr)
            if not problems:
                print(f"labkit build --check: {len(lessons)} lesson(s) up to date")
            return 1 if problems else 0
        build(lessons, timeout=args.timeout, progress=_progress)
    except LessonError as exc:
        print(f"labkit build: {exc}", file=sys.stderr)
        return 1
    return 0
