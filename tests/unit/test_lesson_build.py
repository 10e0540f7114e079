"""labkit build: learner and instructor notebooks and the manifest, from lesson sources."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from labkit.course.build import (
    LANGUAGE_INFO,
    LessonError,
    build,
    check_up_to_date,
    find_lessons,
    learner_notebook,
    locked_hash,
    replace_regions,
    write_source,
)
from labkit.course.cli import main

ROOT = Path(__file__).resolve().parents[2]

SOLUTION = """\
def double(x):
    ### BEGIN SOLUTION
    return 2 * x
    ### END SOLUTION
"""
CHECK = """\
def doubles_three():
    "double(3) is 6"
    assert double(3) == 6
    return double(3)

check("7.1", doubles_three)
"""
HIDDEN = """\
def doubles_zero():
    assert double(0) == 0
    return double(0)

check("7.1", doubles_zero, hidden=True, points=2)
"""


def _cell(kind: str, source: str, cell_id: str, **labkit: str) -> Any:
    cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
    cell.id = cell_id
    if labkit:
        cell.metadata["labkit"] = labkit
    return cell


def _lesson(root: Path, cells: list[Any], name: str = "07-doubling.md", number: int = 7) -> Path:
    nb = new_notebook(cells=cells)
    nb.metadata["labkit"] = {"lesson": number, "title": "Doubling"}
    path = root / "lessons" / name
    write_source(nb, path)
    return path


def _good_cells(solution: str = SOLUTION) -> list[Any]:
    return [
        _cell("md", "# Doubling", "intro"),
        _cell("code", "from labkit.course.exercise import check", "setup"),
        _cell("code", solution, "ex1-solution", exercise="7.1", role="solution"),
        _cell("code", CHECK, "ex1-check", exercise="7.1", role="check"),
        _cell("code", HIDDEN, "ex1-hidden", exercise="7.1", role="hidden"),
    ]


# -- solution regions -----------------------------------------------------------------------


def test_a_region_becomes_the_placeholder_indented_like_its_marker() -> None:
    assert replace_regions(SOLUTION, "7.1") == (
        "def double(x):\n"
        "    # YOUR CODE HERE\n"
        '    raise NotImplementedError("exercise 7.1: write this code")\n'
    )


def test_a_region_in_a_test_asks_for_a_test() -> None:
    source = (
        "async def test_it(impl):\n    ### BEGIN SOLUTION\n    assert impl()\n    ### END SOLUTION"
    )
    assert 'NotImplementedError("exercise 7.2: write this test")' in replace_regions(source, "7.2")


def test_a_region_may_carry_its_own_placeholder() -> None:
    source = (
        "def f():\n    ### BEGIN SOLUTION placeholder: return None\n    return 1\n"
        "    ### END SOLUTION"
    )
    assert replace_regions(source, "7.1") == "def f():\n    # YOUR CODE HERE\n    return None"


def test_magic_lines_do_not_hide_the_function() -> None:
    source = (
        "%%ipytest\n\ndef test_x(impl):\n    ### BEGIN SOLUTION\n    assert impl\n"
        "    ### END SOLUTION"
    )
    assert "raise NotImplementedError" in replace_regions(source, "7.1")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f():\n    ### BEGIN SOLUTION\n    return 1", "never closed"),
        ("def f():\n    return 1\n    ### END SOLUTION", "never opened"),
        (
            "def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    ### END SOLUTION",
            "inside the region opened on line 2",
        ),
        ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "outside a function body"),
        ("def f():\n    return 1", "needs at least one"),
        (
            "def f():\n    ### BEGIN SOLUTION oops\n    pass\n    ### END SOLUTION",
            "only 'placeholder:",
        ),
        ("def f():\n### BEGIN SOLUTION\n    return 1\n### END SOLUTION", "does not parse"),
    ],
)
def test_bad_regions_are_named(source: str, message: str) -> None:
    with pytest.raises(LessonError, match=message):
        replace_regions(source, "7.1")


def test_locked_hash_ignores_trailing_whitespace() -> None:
    assert locked_hash("x = 1   \ny = 2\n\n") == locked_hash("x = 1\ny = 2")
    assert locked_hash("x = 1") != locked_hash("x = 2")


# -- validating a source --------------------------------------------------------------------


def _error(tmp_path: Path, cells: list[Any], **kwargs: Any) -> str:
    _lesson(tmp_path, cells, **kwargs)
    with pytest.raises(LessonError) as caught:
        learner_notebook(find_lessons(tmp_path)[0])
    return str(caught.value)


def test_a_duplicate_exercise_id_is_named(tmp_path: Path) -> None:
    cells = [*_good_cells(), _cell("code", CHECK, "again", exercise="7.1", role="check")]
    message = _error(tmp_path, cells)
    assert "07-doubling.md, cell 6 (id again): duplicate exercise id 7.1" in message


def test_an_exercise_without_a_check_cell_is_named(tmp_path: Path) -> None:
    message = _error(tmp_path, _good_cells()[:3])
    assert "exercise 7.1 has no check cell" in message


def test_an_exercise_id_of_another_lesson_is_named(tmp_path: Path) -> None:
    cells = [_cell("code", SOLUTION, "s", exercise="4.1", role="solution")]
    assert "exercise id '4.1' must look like \"7.1\"" in _error(tmp_path, cells)


def test_an_unknown_role_is_named(tmp_path: Path) -> None:
    cells = [_cell("code", "x = 1", "s", exercise="7.1", role="answer")]
    assert "unknown labkit role 'answer'" in _error(tmp_path, cells)


def test_markers_outside_a_solution_cell_are_named(tmp_path: Path) -> None:
    assert "solution markers belong in a cell" in _error(tmp_path, [_cell("code", SOLUTION, "s")])


def test_unbalanced_markers_name_the_lesson_and_cell(tmp_path: Path) -> None:
    broken = "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n"
    message = _error(tmp_path, _good_cells(broken))
    assert message.startswith(str(tmp_path / "lessons" / "07-doubling.md") + ", cell 3")
    assert "never closed" in message


def test_a_missing_lesson_number_is_named(tmp_path: Path) -> None:
    path = _lesson(tmp_path, _good_cells())
    path.write_text(path.read_text().replace("  lesson: 7\n", "  lesson: 3\n"))
    with pytest.raises(LessonError, match=re.escape('needs "labkit": {"lesson": 7')):
        learner_notebook(find_lessons(tmp_path)[0])


def test_a_badly_named_source_is_named(tmp_path: Path) -> None:
    _lesson(tmp_path, _good_cells(), name="7-Doubling.md")
    with pytest.raises(LessonError, match=r"NN-slug\.md"):
        find_lessons(tmp_path)


def test_an_unknown_lesson_selector_lists_the_lessons(tmp_path: Path) -> None:
    _lesson(tmp_path, _good_cells())
    with pytest.raises(LessonError, match=r"no lesson '8' .*lessons there: 07"):
        find_lessons(tmp_path, ["8"])


# -- the learner version ---------------------------------------------------------------------


def test_the_learner_version_hides_solutions_and_hidden_checks(tmp_path: Path) -> None:
    cells = _good_cells()
    cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="stale\n")]
    cells[1].execution_count = 3
    _lesson(tmp_path, cells)
    nb = learner_notebook(find_lessons(tmp_path)[0])
    assert [c.id for c in nb.cells] == ["intro", "setup", "ex1-solution", "ex1-check"]
    assert "return 2 * x" not in nb.cells[2].source
    assert "raise NotImplementedError" in nb.cells[2].source
    assert nb.cells[1].outputs == []
    assert nb.cells[1].execution_count is None
    assert nb.cells[3].metadata["editable"] is False
    assert nb.metadata["labkit"]["version"] == "learner"


# -- building ---------------------------------------------------------------------------------


def test_build_writes_both_versions_and_the_manifest(tmp_path: Path) -> None:
    _lesson(tmp_path, _good_cells())
    lessons = find_lessons(tmp_path)
    assert check_up_to_date(lessons) != []
    other = {"version": 1, "lessons": {"03": {"file": "03-other.ipynb"}}}
    (tmp_path / "instructor").mkdir()
    (tmp_path / "instructor" / "manifest.json").write_text(json.dumps(other))
    lines: list[str] = []
    build(lessons, progress=lines.append)
    assert lines[0] == "lesson 07: running 4 code cells"
    assert lines[-1] == "lesson 07: built 07-doubling.ipynb (7.1: 3 points)"

    instructor = nbformat.read(str(tmp_path / "instructor" / "07-doubling.ipynb"), as_version=4)
    check_output = instructor.cells[3].outputs[0]["text"]
    assert check_output == "exercise 7.1: solved (1/1 points)\n  [ok  ] double(3) is 6\n"
    # What JupyterLab would write from the kernel, minus the Python version (see contents.py).
    assert instructor.metadata["language_info"] == LANGUAGE_INFO
    learner = nbformat.read(str(tmp_path / "notebooks" / "07-doubling.ipynb"), as_version=4)
    assert learner.metadata["language_info"] == LANGUAGE_INFO

    manifest = json.loads((tmp_path / "instructor" / "manifest.json").read_text())
    assert manifest["lessons"]["03"] == {"file": "03-other.ipynb"}  # another lesson's entry stays
    entry = manifest["lessons"]["07"]
    calls = entry["exercises"]["7.1"].pop("calls")
    assert entry["exercises"] == {
        "7.1": {
            "points": 3,
            "check_cell": "ex1-check",
            "solution_cells": ["ex1-solution"],
            "hidden_cells": ["ex1-hidden"],
        }
    }
    # The grader's plan: each call, its points, and what the solution's checks returned.
    assert [(c["cell"], c["hidden"], c["points"]) for c in calls] == [
        ("ex1-check", False, 1.0),
        ("ex1-hidden", True, 2.0),
    ]
    assert [(x["title"], x["shows"]) for c in calls for x in c["checks"]] == [
        ("double(3) is 6", "6"),
        ("doubles zero", "0"),
    ]
    assert entry["cells"] == ["intro", "setup", "ex1-solution", "ex1-check", "ex1-hidden"]
    assert entry["locked"]["ex1-check"] == locked_hash(CHECK)
    assert "ex1-solution" not in entry["locked"]
    assert check_up_to_date(lessons) == []

    # --check notices an edited source, and names the fix.
    path = tmp_path / "lessons" / "07-doubling.md"
    path.write_text(path.read_text().replace("# Doubling\n", "# Doubling, revised\n"))
    assert main(["build", "--check", "--root", str(tmp_path)]) == 1
    problems = check_up_to_date(find_lessons(tmp_path))
    assert any("notebooks/07-doubling.ipynb is out of date" in p for p in problems)
    assert all("run `labkit build 07`" in p for p in problems)


def test_outputs_nbval_does_not_check_are_not_stored(tmp_path: Path) -> None:
    # A cell tagged nbval-ignore-output prints what changes from run to run (a measured rate);
    # the instructor version keeps its source and runs it, but stores no output for it.
    measured = _cell("code", "print('measured: 0.123 s')", "measured")
    measured.metadata["tags"] = ["nbval-ignore-output"]
    stable = _cell("code", "print('stable')", "stable")
    _lesson(tmp_path, [*_good_cells(), measured, stable])
    build(find_lessons(tmp_path))
    instructor = nbformat.read(str(tmp_path / "instructor" / "07-doubling.ipynb"), as_version=4)
    cells = {cell.id: cell for cell in instructor.cells}
    assert cells["measured"].outputs == []
    assert cells["measured"].metadata["tags"] == ["nbval-ignore-output"]
    assert cells["measured"].source == "print('measured: 0.123 s')"
    assert cells["stable"].outputs[0]["text"] == "stable\n"


@pytest.mark.parametrize(
    ("returns", "problem"),
    [
        ("", "returns only None or booleans"),
        ("return double(3) == 6", "returns only None or booleans"),
        ("return {'ok': [True, None]}", "returns only None or booleans"),
        ("return {1, 2}", "is a set, which is not plain data"),
    ],
)
def test_a_check_that_returns_no_observation_is_refused_saying_what_to_return(
    tmp_path: Path, returns: str, problem: str
) -> None:
    check = (
        f"def doubles_three():\n    assert double(3) == 6\n    {returns}\n\n"
        'check("7.1", doubles_three)\n'
    )
    cells = _good_cells()
    cells[3] = _cell("code", check, "ex1-check", exercise="7.1", role="check")
    _lesson(tmp_path, cells)
    with pytest.raises(LessonError) as caught:
        build(find_lessons(tmp_path))
    message = str(caught.value)
    assert "cell ex1-check: the check doubles_three()" in message
    assert problem in message
    assert "must return the plain-data value it asserted on" in message
    assert "e.g. `return elapsed`" in message


def test_a_check_cell_the_grader_cannot_plan_is_refused_before_it_runs(tmp_path: Path) -> None:
    cells = _good_cells()
    cells[3] = _cell(
        "code", 'check("7.1", lambda: double(3))\nx = 1', "ex1-check", exercise="7.1", role="check"
    )
    _lesson(tmp_path, cells)
    with pytest.raises(LessonError, match="must end with one check"):
        find_lessons(tmp_path)[0] and build(find_lessons(tmp_path))


def test_a_cell_that_fails_names_the_lesson_cell_and_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cells = [*_good_cells(), _cell("code", "1 / 0", "boom")]
    _lesson(tmp_path, cells)
    assert main(["build", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"labkit build: {tmp_path / 'lessons' / '07-doubling.md'}, cell 6 (id boom) failed: "
        "ZeroDivisionError: division by zero"
    )


def test_a_solution_that_does_not_solve_its_exercise_fails_the_build(tmp_path: Path) -> None:
    wrong = SOLUTION.replace("2 * x", "3 * x")
    _lesson(tmp_path, _good_cells(wrong))
    with pytest.raises(LessonError, match=r"exercise 7\.1: the check reports 'failed'"):
        build(find_lessons(tmp_path))


# -- the committed lessons ---------------------------------------------------------------------


def test_committed_notebooks_are_up_to_date_with_lessons() -> None:
    problems = check_up_to_date(find_lessons(ROOT))
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(
    ("index", "prefix"), [("notebooks/README.md", ""), ("README.md", "notebooks/")]
)
def test_the_lesson_maps_link_every_lesson(index: str, prefix: str) -> None:
    text = (ROOT / index).read_text(encoding="utf-8")
    links = set(re.findall(r"\]\(([^)]+\.ipynb)\)", text))
    missing = [x.name for x in find_lessons(ROOT) if prefix + x.name not in links]
    assert missing == [], f"{index} does not link {missing}"


def test_the_language_info_is_the_kernels_without_its_python_version() -> None:
    from ipykernel.ipkernel import IPythonKernel

    reported = dict(IPythonKernel.language_info)
    assert reported.pop("version")
    assert reported == LANGUAGE_INFO
