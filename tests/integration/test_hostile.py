"""Hostile submissions: every known route to points without work earns 0 and is flagged.

Each route is a lesson-0 notebook with no real work in it, only the cheat (the routes issue 11
found against the old in-process grader, and the ones the new design could open: forging the
job's reply, telling the candidates apart). Every one must grade 0 points and be marked
tampered. Then the same submissions are graded with the tamper scan switched off, to show what
the process boundary holds by itself: every route that does not read the machinery's memory
still earns 0; the two that do (forging a reply from inside the job, identifying a candidate by
its code object) are the residual the threat model in docs/grading.md names, and that is what
the scan is for.
"""

from __future__ import annotations

import json
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from labkit.course.grading.gradebook import Grade
from labkit.course.grading.grader import grade_submission
from labkit.course.grading.sandbox import Limits
from labkit.course.grading.submission import load_lessons, load_submission

ROOT = Path(__file__).resolve().parents[2]
LESSON = "00-getting-started.ipynb"
LIMITS = Limits(wall=120, cpu=60, memory_mb=1024, cell=10)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux-only")


def _code(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


# route -> (source for ex1-solution, source for ex2-solution); None keeps the placeholder.
ROUTES: dict[str, tuple[str | None, str | None]] = {
    "wraps json.loads so any dict with max_points gets them": (
        _code(
            """
            import json
            _real = json.loads

            def _generous(text, *args, **kwargs):
                data = _real(text, *args, **kwargs)
                if isinstance(data, dict) and "max_points" in data:
                    data["points"], data["status"] = data["max_points"], "solved"
                return data

            json.loads = _generous
            """
        ),
        None,
    ),
    "finds the grading code through gc and replaces it": (
        _code(
            """
            import gc

            class Passed:
                value, error, timed_out, passed = None, None, False, True

            for thing in gc.get_objects():
                if isinstance(thing, dict) and "run_trial" in thing:
                    thing["run_trial"] = lambda *args, **kwargs: Passed()
                if isinstance(thing, dict) and "read_result" in thing:
                    thing["read_result"] = lambda *args, **kwargs: None
            """
        ),
        None,
    ),
    "appends full-points lines to $LABKIT_RESULTS": (
        _code(
            """
            import json, os
            line = {"exercise": "0.1", "hidden": False, "status": "solved", "points": 4,
                    "max_points": 4, "items": []}
            path = os.environ.get("LABKIT_RESULTS", "/tmp/labkit-results.jsonl")
            with open(path, "a") as stream:
                for exercise in ("0.1", "0.2"):
                    stream.write(json.dumps({**line, "exercise": exercise}) + "\\n")
            """
        ),
        None,
    ),
    "patches the outcome, rebinds all/sum, fakes the module in sys.modules": (
        _code(
            """
            import sys, types
            import labkit.course.exercise as exercise
            import labkit.course.trial as trial
            trial.Trial.passed = property(lambda self: True)
            exercise.all = lambda *args: True
            exercise.sum = lambda *args: 10**6
            fake = types.ModuleType("labkit.course.exercise")
            fake.check = fake.check_test = lambda *args, **kwargs: None
            sys.modules["labkit.course.exercise"] = fake
            """
        ),
        None,
    ),
    "writes forged results on every descriptor, then exits": (
        _code(
            """
            import json, os, struct
            from labkit.course.grading.wire import encode
            forged = [
                {"items": [{"status": "ok", "observation": v} for v in (3.0, 0.0)]},
                {"outcome": "failed"},
                {"event": "cell", "id": "ex1-check", "ok": True, "results": [{"points": 4}]},
            ]
            for fd in range(0, 256):
                for message in forged:
                    payload = encode(message)
                    for data in (struct.pack(">I", len(payload)) + payload,
                                 json.dumps(message).encode() + b"\\n"):
                        try:
                            os.write(fd, data)
                        except OSError:
                            pass
            os._exit(0)
            """
        ),
        None,
    ),
    "returns an always-equal object; a test asserting retry is retry": (
        _code(
            """
            class Anything:
                def __eq__(self, other):
                    return True

                def __hash__(self):
                    return 0

            async def sleep_all(delays):
                return Anything()
            """
        ),
        _code(
            """
            %%ipytest

            @pytest.mark.asyncio(loop_factories=["virtual"])
            async def test_retry(retry):
                assert retry is retry
            """
        ),
    ),
    "forges the job's reply from inside it (new route)": (
        _code(
            """
            import sys
            # The zygote's gc.freeze() hides the machinery from gc walks; sys.modules does not.
            job = sys.modules["labkit.course.grading.job"]
            forged = {"items": [{"status": "ok", "observation": value, "problem": ""}
                                for value in (3.0, 0.0)]}
            job._job = lambda runner, spec: (
                {"outcome": "failed"} if spec["kind"] == "test" else forged
            )
            """
        ),
        None,
    ),
    "identifies the candidate by its code object (new route)": (
        None,
        _code(
            """
            %%ipytest
            original = retry.__code__.co_code

            @pytest.mark.asyncio(loop_factories=["virtual"])
            async def test_retry(retry):
                assert retry.__code__.co_code == original
            """
        ),
    ),
}
# What the boundary alone (the scan off) lets a route earn: the residual docs/grading.md names.
RESIDUAL = {
    # The visible check's values are in the notebook; the hidden ones it did not guess.
    "forges the job's reply from inside it (new route)": {"0.1": 2.0},
    # Every mutant but one has other bytecode than retry (retry_on_every_error differs only in
    # a name it looks up): code objects tell candidates apart, so the scan flags them.
    "identifies the candidate by its code object (new route)": {"0.2": 4.0},
}

# Attempts that need no flag: they simply cannot tell the candidates apart.
HARMLESS = {
    "identifies the candidate by identity, names and docstrings": _code(
        """
        %%ipytest
        original = retry

        @pytest.mark.asyncio(loop_factories=["virtual"])
        async def test_retry(retry):
            assert retry is original
            assert retry.__name__ == "retry" and retry.__module__ == "__main__"
        """
    ),
    "tells the correct candidate by its name and docstring only": _code(
        """
        %%ipytest

        @pytest.mark.asyncio(loop_factories=["virtual"])
        async def test_retry(retry):
            assert (retry.__name__, retry.__qualname__, retry.__doc__) == ("retry", "retry", None)
            assert repr(retry).startswith("<function retry at ")
        """
    ),
}


def _notebook(ex1: str | None, ex2: str | None) -> dict[str, Any]:
    notebook: dict[str, Any] = json.loads((ROOT / "notebooks" / LESSON).read_text())
    for cell in notebook["cells"]:
        if cell["id"] == "ex1-solution" and ex1 is not None:
            cell["source"] = ex1
        if cell["id"] == "ex2-solution" and ex2 is not None:
            cell["source"] = ex2
    return notebook


def _grade(path: Path, scan: bool) -> Grade:
    lessons = load_lessons(ROOT / "instructor")
    submission = load_submission(path, lessons, learner=path.stem)
    if not scan:
        submission.forbidden = {}
    return grade_submission(submission, LIMITS)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    for number, (ex1, ex2) in enumerate(ROUTES.values()):
        (folder / f"route{number}.ipynb").write_text(json.dumps(_notebook(ex1, ex2)))
    instructor = json.loads((ROOT / "instructor" / LESSON).read_text())
    (folder / "instructor.ipynb").write_text(json.dumps(instructor))
    for number, source in enumerate(HARMLESS.values()):
        (folder / f"harmless{number}.ipynb").write_text(json.dumps(_notebook(None, source)))
    return folder


@pytest.fixture(scope="module")
def grades(folder: Path) -> dict[tuple[str, bool], Grade]:
    paths = {route: folder / f"route{n}.ipynb" for n, route in enumerate(ROUTES)}
    paths["hands in the instructor notebook"] = folder / "instructor.ipynb"
    paths.update({route: folder / f"harmless{n}.ipynb" for n, route in enumerate(HARMLESS)})
    work = [(route, scan) for route in paths for scan in (True, False)]
    work = [(r, s) for r, s in work if s or r != "hands in the instructor notebook"]
    with ThreadPoolExecutor(2) as pool:
        done = pool.map(lambda item: _grade(paths[item[0]], item[1]), work)
        return dict(zip(work, done, strict=True))


ALL = [*ROUTES, "hands in the instructor notebook"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("route", ALL)
def test_every_route_earns_nothing_and_is_flagged(
    grades: dict[tuple[str, bool], Grade], route: str
) -> None:
    grade = grades[(route, True)]
    assert grade.points == 0, [(e.exercise, e.points, e.status) for e in grade.exercises]
    assert grade.tampered, route
    assert any(e.status == "tampered" for e in grade.exercises)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("route", list(HARMLESS))
def test_identity_names_and_docstrings_do_not_tell_candidates_apart(
    grades: dict[tuple[str, bool], Grade], route: str
) -> None:
    grade = grades[(route, True)]
    assert not grade.tampered
    test = next(e for e in grade.exercises if e.exercise == "0.2")
    assert test.points == 0  # passes on all candidates alike, or fails on all alike
    assert test.caught == [] or test.failed


@pytest.mark.timeout(900)
@pytest.mark.parametrize("route", list(ROUTES))
def test_the_boundary_alone_gives_nothing_but_the_named_residual(
    grades: dict[tuple[str, bool], Grade], route: str
) -> None:
    grade = grades[(route, False)]
    earned = {e.exercise: e.points for e in grade.exercises if e.points}
    assert earned == RESIDUAL.get(route, {}), [
        (e.exercise, e.points, e.status, e.reason, e.failed) for e in grade.exercises
    ]


def test_the_forged_descriptors_route_ends_its_own_jobs_not_the_grader(
    grades: dict[tuple[str, bool], Grade],
) -> None:
    grade = grades[("writes forged results on every descriptor, then exits", False)]
    # Its own job pipe was the only descriptor it could reach: the bytes it wrote there were
    # no frames of its job, so the job was stopped ("flooded") or ended with no reply.
    assert grade.outcome in ("broken", "exited")
    assert grade.reason.startswith("In your solution cell for exercise 0.1")
    assert {e.status for e in grade.exercises} == {"not graded"}
