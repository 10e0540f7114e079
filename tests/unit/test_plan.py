"""The check plan: check cells read statically, and jobs whose specs carry no labels."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from labkit.course.grading.plan import (
    Cell,
    PlanError,
    closure,
    make_plan,
    parse_call,
    rename,
)
from labkit.course.grading.submission import Lesson, load_lessons

ROOT = Path(__file__).resolve().parents[2]
LESSONS = load_lessons(ROOT / "instructor")


def solved_cells(lesson: Lesson) -> list[Cell]:
    kinds = {"solution": "learner", "check": "check"}
    return [
        Cell(c.id, c.source, kinds.get(c.role, "locked"), c.exercise)  # type: ignore[arg-type]
        for c in lesson.cells
        if c.cell_type == "code" and c.role != "hidden"
    ]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('check("0.1", f)\nx = 1', "must end with one check(...) or check_test(...) call"),
        ('check("0.2", f)', "the check call is for exercise '0.2' but the cell is exercise '0.1'"),
        ('check("0.1", lambda: 1)', "each check must be a name defined in the lesson"),
        ('check("0.1", f, record=False)', "record=False is for demonstrations"),
        ('check("0.1", *checks)', "write the check call's arguments out"),
        ('check("0.1", f, colour=1)', "unknown argument colour="),
        ('check_test("0.1", t, correct=c, mutants=m)', "mutants= must be a dict literal"),
        ('check_test("0.1", t, correct=c, mutants={"x": lambda i: i})', "must be a name"),
        ('check_test("0.1", t, correct=c, mutants={"x": a, "x": b})', "the same description"),
    ],
)
def test_a_check_cell_the_grader_cannot_plan_is_named(source: str, message: str) -> None:
    with pytest.raises(PlanError, match=re.escape(message)):
        parse_call(source, exercise="0.1", cell="ex1-check")


def test_a_call_is_read_with_its_titles_and_options() -> None:
    source = (
        "async def fast():\n    'a fast check'\n    return 1\n\n"
        "def slow_thing():\n    return 2\n\n"
        'check("0.1", fast, slow_thing, hidden=True, points=3, time_limit=5)'
    )
    call = parse_call(source, exercise="0.1", cell="ex1-hidden")
    assert (call.kind, call.hidden, call.points, call.time_limit) == ("check", True, 3.0, 5.0)
    assert [(c.expr, c.title) for c in call.checks] == [
        ("fast", "a fast check"),
        ("slow_thing", "slow thing"),
    ]


def test_closure_takes_what_a_name_needs_and_nothing_else() -> None:
    pool = ast.parse(
        "import functools\n"
        "def helper(): return 1\n"
        "def other_mutant(): return 3\n"
        "def mutant(x=functools.partial(int)): return helper()\n"
    ).body
    chosen = closure(pool, ["mutant"])
    assert [ast.unparse(s).split("(")[0] for s in chosen] == [
        "import functools",
        "def helper",
        "def mutant",
    ]


def test_renaming_keeps_locals_and_parameters_that_share_a_global_name() -> None:
    source = (
        "def mutant(helper):\n"
        "    def inner():\n"
        "        return helper + glob\n"
        "    return [helper for helper in range(2)], inner(), glob\n"
        "class K(Base):\n"
        "    glob = 1\n"
        "    def m(self):\n"
        "        return glob\n"
    )
    renamed = rename(ast.parse(source).body, {"helper": "H", "glob": "G", "Base": "B"})
    text = "\n".join(ast.unparse(s) for s in renamed)
    namespace: dict[str, object] = {"G": 10, "B": object}
    exec(text, namespace)
    assert namespace["mutant"](5)[1:] == (15, 10)  # type: ignore[operator]
    assert namespace["K"]().m() == 10  # type: ignore[operator]
    assert "glob = 1" in text  # the class attribute keeps its name
    assert "class K(B)" in text


@pytest.mark.parametrize("number", sorted(LESSONS))
def test_no_job_of_any_lesson_carries_a_label(number: int) -> None:
    lesson = LESSONS[number]
    plan = make_plan(solved_cells(lesson), lesson.cells, lesson.calls)
    ids = [job.id for job in plan.jobs]
    assert len(set(ids)) == len(ids)
    for exercise, calls in lesson.calls.items():
        for index, call in enumerate(calls):
            jobs = [j for j in plan.jobs if j.exercise == exercise and j.call == index]
            if call.kind == "check":
                assert [j.role for j in jobs] == ["check"]
                continue
            assert len(jobs) == len(call.correct) + len(call.mutants)
            canonical = call.correct[0].expr
            descriptions = [c.label for c in (*call.correct, *call.mutants) if c.label]
            for job in jobs:
                text = json.dumps(job.spec)
                assert job.spec["name"] == canonical
                # The candidate's own name never reaches the sandbox (another candidate's may,
                # when a definition builds on that lesson object, as 3.1's mutants build on
                # the lesson's CachedStore, and so does its correct LockedStore).
                own = (call.correct if job.role == "correct" else call.mutants)[job.index].expr
                if own != canonical:
                    assert not re.search(rf"\b{re.escape(own)}\b", text), (exercise, own)
                for description in descriptions:
                    assert description not in text, (exercise, description)
                assert "buggy" not in text.lower()
                assert job.id not in text
            shapes = {tuple(sorted(j.spec)) for j in jobs}
            assert len(shapes) == 1  # every candidate's spec has the same fields


def test_jobs_run_the_cells_up_to_their_exercise_only() -> None:
    lesson = LESSONS[2]
    plan = make_plan(solved_cells(lesson), lesson.cells, lesson.calls)
    table_ids = [entry["id"] for entry in plan.table]
    for job in plan.jobs:
        ran = [table_ids[i] for i in job.cells]
        check = next(c.id for c in lesson.cells if c.role == "check" and c.exercise == job.exercise)
        assert check not in ran
        later = [
            c.id
            for c in lesson.cells
            if c.role == "solution"
            and c.exercise is not None
            and tuple(map(int, c.exercise.split("."))) > tuple(map(int, job.exercise.split(".")))
        ]
        assert not set(later) & set(ran), job.exercise
    assert plan.prerun
    assert all(entry["kind"] == "locked" for entry in plan.prerun)
    assert {"asyncio", "labkit", "call_with_backoff"} <= plan.protected
