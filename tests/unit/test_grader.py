"""The grader validates submissions, plans cells, scores results, and never crashes on bad input."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labkit.course import cli
from labkit.course.grading.feedback import render_markdown, write_feedback
from labkit.course.grading.gradebook import ExerciseGrade, Grade, Gradebook
from labkit.course.grading.grader import (
    JobReport,
    Progress,
    find_submissions,
    read_result,
    score,
)
from labkit.course.grading.job import sign
from labkit.course.grading.plan import Job, Plan, make_plan
from labkit.course.grading.sandbox import JobResult, Limits
from labkit.course.grading.submission import (
    Lesson,
    Submission,
    SubmissionError,
    learner_name,
    load_lessons,
    load_submission,
)
from labkit.course.grading.wire import encode

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "grading"


def _fixture_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lesson98", FIXTURE / "lesson98.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lesson98 = _fixture_module()
INSTRUCTOR = FIXTURE / "instructor"


@pytest.fixture(scope="module")
def lessons() -> dict[int, Lesson]:
    return load_lessons(INSTRUCTOR)


def write(path: Path, notebook: Any) -> Path:
    return lesson98.write(path, notebook)  # type: ignore[no-any-return]


# -- lessons and plans --------------------------------------------------------------------


def test_lesson_is_read_from_the_instructor_notebook_and_manifest(
    lessons: dict[int, Lesson],
) -> None:
    lesson = lessons[98]
    assert lesson.slug == "98-grading-fixture"
    assert lesson.exercises == {"98.1": 3.0, "98.2": 3.0}
    assert [c.role for c in lesson.cells if c.role != "locked"] == [
        "solution",
        "check",
        "hidden",
        "solution",
        "check",
    ]


def test_missing_manifest_says_to_run_labkit_build(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match="labkit build"):
        load_lessons(tmp_path)


def test_an_instructor_notebook_edited_after_the_build_refuses_only_its_lesson(
    tmp_path: Path,
) -> None:
    instructor = lesson98.write_instructor(tmp_path / "instructor")
    notebook = lesson98.instructor()
    lesson98.cell(notebook, "ex1-check")["source"] += "\nprint('edited')"
    write(instructor / "98-grading-fixture.ipynb", notebook)
    (instructor / "97-half-built.ipynb").write_text("{")
    lessons = load_lessons(instructor)
    path = write(tmp_path / "ann.ipynb", lesson98.learner())
    with pytest.raises(SubmissionError) as caught:
        load_submission(path, lessons)
    assert str(caught.value) == (
        f"{path}: lesson 98 cannot be graded: {instructor / '98-grading-fixture.ipynb'}: cell "
        "'ex1-check' does not match instructor/manifest.json (the lesson was edited after "
        "`labkit build`); run `labkit build` again"
    )
    assert "not a JSON notebook" in lessons[97].problem


def test_plan_runs_locked_cells_as_written_and_hidden_cells_last(
    tmp_path: Path, lessons: dict[int, Lesson]
) -> None:
    path = write(tmp_path / "ann.ipynb", lesson98.learner(**lesson98.SUBMISSIONS["solved"]))
    submission = load_submission(path, lessons)
    assert submission.learner == "ann"
    assert [(c.id, c.kind) for c in submission.cells] == [
        ("setup", "locked"),
        ("ex1-solution", "learner"),
        ("ex1-check", "check"),
        ("ex2-solution", "learner"),
        ("ex2-check", "check"),
    ]
    assert [(c.id, c.kind) for c in submission.hidden] == [("ex1-hidden", "hidden")]
    assert submission.tampered == []


def test_changed_check_cell_is_flagged_and_the_original_runs(
    tmp_path: Path, lessons: dict[int, Lesson]
) -> None:
    notebook = lesson98.learner()
    lesson98.cell(notebook, "ex1-check")["source"] = 'check("98.1", lambda: None, points=2)'
    lesson98.cell(notebook, "setup")["source"] += "   \n\n"  # trailing whitespace is no tampering
    submission = load_submission(write(tmp_path / "eve.ipynb", notebook), lessons)
    assert submission.tampered == ["check cell 'ex1-check' was changed (graded with the original)"]
    check = next(c for c in submission.cells if c.id == "ex1-check")
    assert check.source == lesson98.CHECK_98_1


def test_deleted_locked_cell_is_flagged_and_restored(
    tmp_path: Path, lessons: dict[int, Lesson]
) -> None:
    notebook = lesson98.learner()
    notebook["cells"] = [c for c in notebook["cells"] if c["id"] != "ex2-check"]
    submission = load_submission(write(tmp_path / "eve.ipynb", notebook), lessons)
    assert "'ex2-check' was deleted" in submission.tampered[0]
    assert "ex2-check" in [c.id for c in submission.cells]


def test_cells_the_learner_added_run_where_they_put_them(
    tmp_path: Path, lessons: dict[int, Lesson]
) -> None:
    notebook = lesson98.learner()
    scratch = {
        "cell_type": "code",
        "id": "scratch",
        "metadata": {},
        "source": "helper = 1",
        "outputs": [],
        "execution_count": None,
    }
    notebook["cells"].insert(3, scratch)  # after the markdown of exercise 98.1
    submission = load_submission(write(tmp_path / "sam.ipynb", notebook), lessons)
    ids = [c.id for c in submission.cells]
    assert ids.index("setup") < ids.index("scratch") < ids.index("ex1-solution")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("collected/alice/98-grading-fixture.ipynb", "alice"),
        ("collected/bob.ipynb", "bob"),
        ("home/carol/notebooks/98-grading-fixture.ipynb", "carol"),
    ],
)
def test_learner_name_comes_from_the_file_or_its_folder(
    path: str, expected: str, lessons: dict[int, Lesson]
) -> None:
    assert learner_name(Path("/srv") / path, lessons) == expected


def _mangle(kind: str) -> tuple[bytes | Any, dict[str, Any]]:
    notebook = lesson98.learner()
    options: dict[str, Any] = {}
    if kind == "not JSON":
        return b'{"cells": [', options
    if kind == "binary":
        return b"\xff\xfe\x00PK\x03\x04", options
    if kind == "not a notebook":
        return ["a", "list"], options
    if kind == "old format":
        notebook["nbformat"] = 3
    elif kind == "unknown lesson":
        notebook["metadata"]["labkit"]["lesson"] = 42
    elif kind == "different lesson":
        notebook["metadata"]["labkit"]["lesson"] = 7
        options["lesson"] = 98
    elif kind == "missing exercise cells":
        notebook["cells"] = [c for c in notebook["cells"] if c["id"] != "ex2-solution"]
    elif kind == "duplicated cells":
        notebook["cells"].append(copy.deepcopy(lesson98.cell(notebook, "ex1-solution")))
    elif kind == "no ids":
        for cell in notebook["cells"]:
            del cell["id"]
    elif kind == "too large":
        options["max_bytes"] = 100
    elif kind == "lesson true":
        notebook["metadata"]["labkit"]["lesson"] = True
    elif kind == "deeply nested":
        return b"[" * 100_000 + b"]" * 100_000, options
    return notebook, options


BAD_INPUT = {
    "not JSON": "not JSON (line 1, column 12",
    "binary": "not JSON (the bytes are not UTF-8",
    "not a notebook": "not a Jupyter notebook",
    "old format": "format 4",
    "unknown lesson": "unknown lesson 42",
    "different lesson": "a notebook from a different lesson (lesson 7, not lesson 98)",
    "missing exercise cells": "missing exercise cells: exercise 98.2's solution cell",
    "duplicated cells": "duplicated cells (cell id 'ex1-solution' appears 2 times)",
    "no ids": "has no id",
    "too large": "too large (0.00",
    "lesson true": "the notebook's metadata says lesson true, which is not a lesson number",
    "deeply nested": "nested too deeply",
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUT))
def test_bad_input_is_one_line_naming_the_file_and_the_problem(
    kind: str, tmp_path: Path, lessons: dict[int, Lesson]
) -> None:
    content, options = _mangle(kind)
    path = tmp_path / f"{kind.replace(' ', '-')}.ipynb"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write(path, content)
    with pytest.raises(SubmissionError) as caught:
        load_submission(path, lessons, **options)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert BAD_INPUT[kind] in message
    assert "\n" not in message


def test_a_notebook_relabelled_as_another_lesson_is_refused(
    tmp_path: Path, lessons: dict[int, Lesson]
) -> None:
    """A lesson-98 notebook whose metadata says lesson 97 is not graded as lesson 97."""
    instructor = lesson98.write_instructor(tmp_path / "instructor")
    other = copy.deepcopy(lesson98.instructor())
    other["metadata"]["labkit"]["lesson"] = 97
    for cell in other["cells"]:
        cell["id"] = "x-" + cell["id"]
        if cell["cell_type"] == "code":
            cell["source"] += "\n# lesson 97"
    write(instructor / "97-other.ipynb", other)
    relabelled = lesson98.learner()
    relabelled["metadata"]["labkit"]["lesson"] = 97
    path = write(tmp_path / "mallory.ipynb", relabelled)
    with pytest.raises(SubmissionError) as caught:
        load_submission(path, load_lessons(instructor))
    assert "its cells are those of 98-grading-fixture, but its metadata says lesson 97" in str(
        caught.value
    )


def test_another_lessons_notebook_is_recognised_by_its_cells(tmp_path: Path) -> None:
    instructor = lesson98.write_instructor(tmp_path / "instructor")
    other = copy.deepcopy(lesson98.instructor())
    other["metadata"]["labkit"]["lesson"] = 97
    for cell in other["cells"]:
        cell["id"] = "x-" + cell["id"]
    write(instructor / "97-other.ipynb", other)
    mine = lesson98.learner()
    del mine["metadata"]["labkit"]["lesson"]
    for cell in mine["cells"]:
        cell["id"] = "x-" + cell["id"]
    path = write(tmp_path / "98-grading-fixture.ipynb", mine)
    with pytest.raises(
        SubmissionError,
        match=r"a notebook from a different lesson: its cells are those of 97-other, but its "
        r"file name says lesson 98",
    ):
        load_submission(path, load_lessons(instructor))


# -- scoring ------------------------------------------------------------------------------


def _submission(tmp_path: Path, lessons: dict[int, Lesson], kind: str = "solved") -> Submission:
    path = write(tmp_path / "ann.ipynb", lesson98.learner(**lesson98.SUBMISSIONS[kind]))
    return load_submission(path, lessons)


def _plan(submission: Submission) -> Plan:
    lesson = submission.lesson
    return make_plan(submission.cells, lesson.cells, lesson.calls)


def _replies(plan: Plan, **by_role: Any) -> dict[str, JobReport]:
    """Reports as if each job replied ``by_role[role]`` (a reply dict, or a function of the job)."""
    reports = {}
    for job in plan.jobs:
        reply = by_role.get(job.role)
        reply = reply(job) if callable(reply) else reply
        reports[job.id] = JobReport(job, reply=reply)
    return reports


def _observed(values: dict[str, Any]) -> Any:
    def reply(job: Job) -> dict[str, Any]:
        items = [
            {"status": "ok", "observation": values.get(name), "problem": "", "hint": ""}
            for name in job.spec["checks"]
        ]
        return {"items": items}

    return reply


PASSED = {"outcome": "passed", "hint": ""}
FAILED = {"outcome": "failed", "hint": "AssertionError"}


def test_points_come_from_observations_and_verdicts_read_here(
    tmp_path: Path, lessons: dict[int, Lesson]
) -> None:
    submission = _submission(tmp_path, lessons)
    plan = _plan(submission)
    right = _observed(lesson98.REFERENCES)
    grade = score(submission, plan, _replies(plan, check=right, correct=PASSED, mutant=FAILED))
    assert [(e.points, e.status) for e in grade.exercises] == [(3, "solved"), (3, "solved")]
    assert grade.exercises[1].caught == ["adds two instead of doubling", "squares"]


def test_a_check_that_did_not_raise_but_observed_something_else_earns_nothing(
    tmp_path: Path, lessons: dict[int, Lesson]
) -> None:
    submission = _submission(tmp_path, lessons)
    plan = _plan(submission)
    # The forged reply of a patched runner: every check "ok", with no value or a wrong one.
    forged = _observed({"doubles_two": None, "takes_its_time": 2.0, "negative": True})
    grade = score(submission, plan, _replies(plan, check=forged, correct=PASSED, mutant=FAILED))
    first = grade.exercises[0]
    assert (first.points, first.status) == (0, "failed")
    assert (
        "double_later waits one second\nthe check passed in your process but observed 2.0"
        in (first.failed[1])
    )


def test_a_test_that_passes_everywhere_earns_nothing_and_one_failing_on_correct_code_neither(
    tmp_path: Path, lessons: dict[int, Lesson]
) -> None:
    submission = _submission(tmp_path, lessons)
    plan = _plan(submission)
    right = _observed(lesson98.REFERENCES)
    everywhere = score(submission, plan, _replies(plan, check=right, correct=PASSED, mutant=PASSED))
    assert everywhere.exercises[1].points == 0
    assert everywhere.exercises[1].missed == ["adds two instead of doubling", "squares"]
    nowhere = score(submission, plan, _replies(plan, check=right, correct=FAILED, mutant=FAILED))
    assert nowhere.exercises[1].points == 0
    assert nowhere.exercises[1].failed[0].startswith("passes on the correct implementation")


def test_half_the_mutants_caught_is_half_the_points(
    tmp_path: Path, lessons: dict[int, Lesson]
) -> None:
    submission = _submission(tmp_path, lessons)
    plan = _plan(submission)
    right = _observed(lesson98.REFERENCES)

    def half(job: Job) -> dict[str, Any]:
        return FAILED if job.index == 0 else PASSED

    grade = score(submission, plan, _replies(plan, check=right, correct=PASSED, mutant=half))
    second = grade.exercises[1]
    assert (second.points, second.status) == (1.5, "partly solved")
    assert (second.caught, second.missed) == (["adds two instead of doubling"], ["squares"])


def test_a_placeholder_is_not_solved_yet(tmp_path: Path, lessons: dict[int, Lesson]) -> None:
    submission = _submission(tmp_path, lessons, "empty")
    plan = _plan(submission)
    grade = score(
        submission,
        plan,
        _replies(
            plan,
            check={
                "items": [{"status": "placeholder", "observation": None, "problem": "", "hint": ""}]
            },
            correct={"outcome": "placeholder", "hint": ""},
            mutant={"outcome": "placeholder", "hint": ""},
        ),
    )
    assert [e.status for e in grade.exercises] == ["not solved yet", "not solved yet"]


def test_a_job_stopped_in_a_learner_cell_leaves_its_exercises_not_graded(
    tmp_path: Path, lessons: dict[int, Lesson]
) -> None:
    submission = _submission(tmp_path, lessons)
    plan = _plan(submission)
    where = [e["id"] for e in plan.table].index("ex2-solution")
    reports = _replies(plan, check=_observed(lesson98.REFERENCES))
    for job in plan.jobs:
        if job.exercise == "98.2":
            reports[job.id] = JobReport(job, stop="timeout", reason="it ran too long", at=where)
    grade = score(submission, plan, reports)
    assert [e.status for e in grade.exercises] == ["solved", "not graded"]
    assert grade.outcome == "timeout"
    assert grade.reason == "In your solution cell for exercise 98.2: it ran too long."


KEY = b"k" * 32


def _result(job: Job, *values: Any, key: bytes = KEY, **ending: Any) -> JobResult:
    frames = [sign(key, encode(v)) for v in values]
    return JobResult(frames=frames, **({"status": "exit", "code": 0} | ending))


def test_only_frames_signed_with_the_jobs_key_count(
    tmp_path: Path, lessons: dict[int, Lesson]
) -> None:
    submission = _submission(tmp_path, lessons)
    plan = _plan(submission)
    job = next(j for j in plan.jobs if j.role == "mutant")
    honest = read_result(job, _result(job, {"cell": 0}, FAILED), plan, 60, Limits(), KEY)
    assert honest.reply == FAILED
    forged = _result(job, PASSED, key=b"x" * 32)
    forged.frames.insert(0, encode(PASSED))  # unsigned bytes on the pipe
    report = read_result(job, forged, plan, 60, Limits(), KEY)
    assert report.reply is None
    assert report.stop == "exited"  # nothing signed came back: it ended without replying


@pytest.mark.parametrize(
    ("ending", "stop", "phrase"),
    [
        ({"status": "signal", "signal": 11}, "crashed", "crashed (SIGSEGV)"),
        ({"status": "signal", "signal": 9, "cpu": 1.0, "cpu_limit": 30.0}, "exited", "SIGKILL"),
        ({"status": "signal", "signal": 9, "cpu": 30.0, "cpu_limit": 30.0}, "cpu", "CPU-time"),
        ({"status": "signal", "signal": 24}, "cpu", "CPU-time"),
        ({"status": "exit", "code": 3}, "exited", "exit status 3"),
        ({"status": "exit", "code": 0, "killed": "wall"}, "timeout", "ignored the per-cell"),
        ({"status": "lost"}, "crashed", "sandbox ended"),
    ],
)
def test_how_a_job_ended_is_named_as_the_docs_table_says(
    ending: dict[str, Any], stop: str, phrase: str, tmp_path: Path, lessons: dict[int, Lesson]
) -> None:
    submission = _submission(tmp_path, lessons)
    plan = _plan(submission)
    job = plan.jobs[0]
    report = read_result(
        job, _result(job, {"cell": job.cells[-1]}, **ending), plan, 60, Limits(), KEY
    )
    assert report.stop == stop
    assert phrase in report.reason
    assert report.at == job.cells[-1]


def test_exercises_with_instructor_material_earn_nothing(
    tmp_path: Path, lessons: dict[int, Lesson]
) -> None:
    notebook = lesson98.instructor()
    path = write(tmp_path / "eve.ipynb", notebook)
    assert set(load_submission(path, lessons).forbidden) == {"98.1"}  # its hidden cell
    notebook["metadata"]["labkit"]["version"] = "instructor"
    path = write(tmp_path / "eve.ipynb", notebook)
    submission = load_submission(path, lessons)
    assert set(submission.forbidden) == {"98.1", "98.2"}
    plan = make_plan(
        submission.cells,
        submission.lesson.cells,
        submission.lesson.calls,
        skip=submission.forbidden,
    )
    assert plan.jobs == []
    grade = score(submission, plan, {})
    assert [(e.points, e.status) for e in grade.exercises] == [(0, "tampered"), (0, "tampered")]
    assert any("hidden check cell 'ex1-hidden'" in t for t in grade.tampering)


# -- progress and the command line --------------------------------------------------------


def test_progress_prints_one_line_per_submission_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(2, stream)
    progress.done("graded", "ann (98-grading-fixture): 6/6")
    progress.done("rejected", "junk.ipynb")
    assert stream.getvalue().splitlines() == [
        "[1/2] graded ann (98-grading-fixture): 6/6",
        "[2/2] rejected junk.ipynb",
    ]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_one_bar_on_a_terminal() -> None:
    stream = _Terminal()
    progress = Progress(2, stream)
    progress.done("graded", "ann")
    progress.note("labkit grade: junk.ipynb: not JSON")
    progress.done("rejected", "junk.ipynb")
    assert stream.getvalue() == (
        "\r\x1b[K[###############...............] 1/2 (1 graded) ann"
        "\r\x1b[Klabkit grade: junk.ipynb: not JSON\n"
        "\r\x1b[K[##############################] 2/2 (1 graded, 1 rejected) junk.ipynb\n"
    )


def test_find_submissions_searches_folders_and_skips_checkpoints(tmp_path: Path) -> None:
    for name in ("a/one.ipynb", "a/.ipynb_checkpoints/one-checkpoint.ipynb", "b.ipynb"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    found = find_submissions([tmp_path / "a", tmp_path / "b.ipynb", tmp_path / "a" / "one.ipynb"])
    assert found == [tmp_path / "a" / "one.ipynb", tmp_path / "b.ipynb"]


def _grade(tmp_path: Path, *paths: Path, extra: tuple[str, ...] = ()) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    argv = [
        "grade",
        *map(str, paths),
        "--instructor",
        str(INSTRUCTOR),
        "--jobs",
        "1",
        "--gradebook",
        str(tmp_path / "book.sqlite"),
        "--feedback",
        str(tmp_path / "fb"),
        *extra,
    ]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def test_cli_reports_each_bad_file_in_one_line_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "junk.ipynb").write_text("hello")
    write(bad / "list.ipynb", [1, 2])
    code, out, err = _grade(tmp_path, bad)
    assert code == 1
    assert "Traceback" not in err
    complaints = [line for line in err.splitlines() if line.startswith("labkit grade: ")]
    assert len(complaints) == 2
    assert "junk.ipynb: not JSON" in complaints[0]
    assert "list.ipynb: not a Jupyter notebook" in complaints[1]
    assert "0 graded, 0 unchanged, 2 rejected" in out


def test_cli_without_lessons_says_how_to_build_them(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["grade", str(tmp_path), "--instructor", str(tmp_path / "nowhere")])
    assert code == 2
    assert "run `labkit build`" in err.getvalue()


# -- property: mangled notebooks never crash the grader nor lose earlier grades -----------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _nodes(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _nodes(item, (*path, index))
    return found


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    notebook = lesson98.learner(**lesson98.SUBMISSIONS["half"])
    for _ in range(draw(st.integers(1, 4))):
        paths = _nodes(notebook)
        where = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "duplicate"]))
        if not where:
            notebook = draw(JSON) if action == "replace" else notebook
            continue
        parent = notebook
        for step in where[:-1]:
            parent = parent[step]
        key = where[-1]
        if action == "replace":
            parent[key] = draw(JSON)
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
    data = json.dumps(notebook).encode()
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=4))
    return data


def _fake_grade(submission: Submission, limits: Limits, hide: Any = ()) -> Grade:
    """Plan and score for real; only the sandbox is left out (every job "replies" correctly)."""
    lesson = submission.lesson
    plan = make_plan(submission.cells, lesson.cells, lesson.calls, skip=submission.forbidden)
    reports = _replies(plan, check=_observed(lesson98.REFERENCES), correct=PASSED, mutant=FAILED)
    return score(submission, plan, reports)


def _grade_mangled(tmp_path: Path, data: bytes) -> int:
    """Grade one mangled file into a gradebook holding an earlier grade; check nothing was lost."""
    book_path = tmp_path / "book.sqlite"
    earlier = Grade(
        "earlier",
        98,
        "98-grading-fixture",
        "v0",
        "e.ipynb",
        "e" * 64,
        "completed",
        exercises=[ExerciseGrade("98.1", 3, 3, "solved")],
    )
    with Gradebook(book_path) as book:
        if not book.has("earlier", 98, "e" * 64, "v0"):
            book.record(earlier)
    path = tmp_path / "mallory.ipynb"
    path.write_bytes(data)
    with mock.patch("labkit.course.grading.grader.grade_submission", _fake_grade):
        code, _, err = _grade(tmp_path, path, extra=("--regrade",))
    assert code in (0, 1), err
    assert "Traceback" not in err
    if code == 1:
        assert err.startswith(f"labkit grade: {path}: ")
    with Gradebook(book_path) as book:
        kept = [g for g in book.latest() if g.learner == "earlier"]
    assert [(g.points, g.sha256) for g in kept] == [(3, "e" * 64)]
    return code


GRADED: list[int] = []


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=mangled())
def test_mangled_notebooks_never_crash_the_grader_nor_lose_earlier_grades(
    tmp_path: Path, data: bytes
) -> None:
    GRADED.append(_grade_mangled(tmp_path, data))


def test_the_mangled_notebooks_included_gradable_ones() -> None:
    if GRADED:  # not when run alone with -k
        assert 0 in GRADED
        assert 1 in GRADED


def test_the_property_fails_for_a_grader_that_loses_grades(tmp_path: Path) -> None:
    """The seeded bug: a gradebook that replaced a lesson's grades on each write."""
    real = Gradebook.record

    def forgetful(self: Gradebook, grade: Grade) -> None:
        self.db.execute("DELETE FROM submissions WHERE learner_id IN (SELECT id FROM learners)")
        real(self, grade)

    data = json.dumps(lesson98.learner()).encode()
    assert _grade_mangled(tmp_path, data) == 0
    with mock.patch.object(Gradebook, "record", forgetful), pytest.raises(AssertionError):
        _grade_mangled(tmp_path, data)


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="the grader's sandbox is Linux-only")


# -- feedback -----------------------------------------------------------------------------


def _feedback_grade() -> Grade:
    return Grade(
        "<script>x</script>",
        98,
        "98-grading-fixture",
        "v1",
        "x.ipynb",
        "f" * 64,
        "timeout",
        reason="In your solution cell for exercise 98.2: the notebook ran longer than 5 s.",
        tampering=["check cell 'ex1-check' was changed (graded with the original)"],
        exercises=[
            ExerciseGrade("98.1", 1, 3, "partly solved", failed=["doubles\nAssertionError: <no>"]),
            ExerciseGrade("98.2", 2, 3, "partly solved", caught=["adds two"], missed=["squares"]),
        ],
        graded_at="2026-01-01T00:00:00+00:00",
    )


def test_markdown_feedback_lists_points_failures_bugs_and_tampering() -> None:
    text = render_markdown(_feedback_grade())
    assert "**3 / 6 points**" in text
    assert "> **The run stopped early (timeout):** In your solution cell for exercise 98.2" in text
    assert "> - check cell 'ex1-check' was changed (graded with the original)" in text
    assert "| 98.1 | 1 / 3 | partly solved |" in text
    assert "- doubles\n  AssertionError: <no>" in text
    assert "- caught: adds two\n- **missed**: squares" in text


def test_html_feedback_escapes_everything_the_learner_wrote(tmp_path: Path) -> None:
    path = write_feedback(_feedback_grade(), tmp_path, fmt="html")
    assert path == tmp_path / "script_x_script" / "98-grading-fixture.html"
    page = path.read_text()
    assert "<script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert '<li class="missed">missed: squares</li>' in page


def test_learner_option_names_a_single_notebook(tmp_path: Path, lessons: dict[int, Lesson]) -> None:
    path = write(tmp_path / "98-grading-fixture.ipynb", lesson98.learner())
    assert load_submission(path, lessons, learner="zoe").learner == "zoe"
    other = write(tmp_path / "sub" / "ann.ipynb", lesson98.learner())
    code, _, err = _grade(tmp_path, path, other, extra=("--learner", "zoe"))
    assert code == 2
    assert "--learner names one learner, but 2 notebooks were given" in err


def test_a_real_lesson_02_notebook_labelled_lesson_0_is_refused(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    lessons = load_lessons(root / "instructor")
    notebook = json.loads((root / "notebooks" / "02-virtual-time.ipynb").read_text())
    notebook["metadata"]["labkit"]["lesson"] = 0
    path = write(tmp_path / "sneaky.ipynb", notebook)
    with pytest.raises(SubmissionError) as caught:
        load_submission(path, lessons)
    assert str(caught.value) == (
        f"{path}: a notebook from a different lesson: its cells are those of 02-virtual-time, "
        "but its metadata says lesson 0; submit 00-getting-started.ipynb, or grade it with "
        "--lesson 2"
    )


def test_a_lesson_whose_modules_are_missing_is_refused_in_one_line_and_nothing_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lesson98, "SETUP", lesson98.SETUP + "\nimport labkit_absent_module")
    instructor = lesson98.write_instructor(tmp_path / "instructor")
    for name in ("ann", "bob"):
        write(tmp_path / "in" / f"{name}.ipynb", lesson98.learner(**lesson98.SUBMISSIONS["solved"]))
    argv = [
        "grade",
        str(tmp_path / "in"),
        "--instructor",
        str(instructor),
        "--gradebook",
        str(tmp_path / "book.sqlite"),
        "--feedback",
        str(tmp_path / "fb"),
    ]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    assert code == 2
    (line,) = [x for x in err.getvalue().splitlines() if x.startswith("labkit grade:")]
    assert line.startswith(
        "labkit grade: lesson 98 cannot be graded on this machine: its cells import "
        "labkit_absent_module, which this Python cannot find; install"
    )
    assert "2 notebook(s) not graded, nothing recorded" in line
    with Gradebook(tmp_path / "book.sqlite") as book:
        assert book.count() == 0
        assert book.rejections() == []
