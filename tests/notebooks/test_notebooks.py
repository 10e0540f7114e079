"""The lessons as CI-checked documents: nbval over every generated notebook.

* ``instructor/NN-*.ipynb`` run on the kit's own kernel and must reproduce their stored outputs
  exactly (``--nbval``), with every check reporting "solved";
* ``notebooks/NN-*.ipynb``, the learner versions, must run top to bottom without an error
  (``--nbval-lax``), with every check reporting "not solved yet".

nbval's strict and lax modes are options of a whole pytest run, so each mode runs in a child
pytest, the two side by side (one per core), each over all the selected lessons at once: a child
pytest costs about two seconds to start, which per lesson and mode was a fifth of the time.
``LABKIT_RESULTS`` collects the check results of each run (a result names its lesson in its
exercise id, "4.2"), and a JUnit XML report says which notebook's cells failed. Each lesson is
still a test of its own; ``-k 04`` runs the children over lesson 4 only. A lesson whose metadata
lists ``needs`` (``labkit.needs: [postgresql]``) is left out of the children and skipped, with one
line saying how to install what is missing, where that cannot run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from labkit.course import postgres_missing

ROOT = Path(__file__).resolve().parents[2]
SANITIZE = Path(__file__).with_name("sanitize.cfg")
INSTRUCTOR = sorted((ROOT / "instructor").glob("[0-9][0-9]-*.ipynb"))
LEARNER = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
LESSONS = sorted({path.stem for path in INSTRUCTOR} & {path.stem for path in LEARNER})
CHILD_TIMEOUT = 1800
_NOTEBOOK = re.compile(r"(\d\d-[a-z0-9-]+)\.ipynb")
_ANSI = re.compile(r"(?:\x1b|#x1B)\[[0-9;]*m")

pytestmark = pytest.mark.notebooks
# What a lesson may need beyond the kit's environment: each says why it cannot run here, or None.
NEEDS = {"postgresql": postgres_missing}


def _missing(lesson: str) -> str | None:
    notebook = ROOT / "instructor" / f"{lesson}.ipynb"
    needs = json.loads(notebook.read_text(encoding="utf-8"))["metadata"]["labkit"].get("needs", [])
    for need in needs:
        if need not in NEEDS:
            pytest.fail(f"{notebook.name}: unknown need {need!r}; known: {', '.join(NEEDS)}")
        reason = NEEDS[need]()
        if reason:
            return f"{lesson}: {reason}"
    return None


@dataclass
class Run:
    """What one child pytest reported about one lesson's notebook."""

    failures: list[str] = field(default_factory=list)
    results: list[dict[str, object]] = field(default_factory=list)


@dataclass(repr=False)
class Runs:
    """Both children's reports, by lesson (a short repr: pytest prints it on a failure)."""

    instructor: dict[str, Run]
    learner: dict[str, Run]

    def __repr__(self) -> str:
        return f"<nbval reports of {len(self.instructor)} lesson(s)>"


def _start(notebooks: list[Path], mode: str, folder: Path) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "pytest",
        mode,
        "--nbval-current-env",
        f"--nbval-sanitize-with={SANITIZE}",
        "--nbval-cell-timeout=300",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={folder / 'junit.xml'}",
        *(str(notebook.relative_to(ROOT)) for notebook in notebooks),
    ]
    env = {**os.environ, "LABKIT_RESULTS": str(folder / "results.jsonl")}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(child: subprocess.Popen[str], what: str, folder: Path) -> dict[str, Run]:
    """Per lesson: the failed cells (with nbval's report) and the check results."""
    try:
        output, _ = child.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        child.kill()
        output, _ = child.communicate()
        pytest.fail(f"{what}: nbval still running after {CHILD_TIMEOUT} s:\n{output}")
    report = folder / "junit.xml"
    if child.returncode not in (0, 1) or not report.exists():
        pytest.fail(f"{what}: nbval did not run (exit code {child.returncode}):\n{output}")
    runs: dict[str, Run] = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        named = _NOTEBOOK.search(case.get("classname", ""))
        run = runs.setdefault(named.group(1) if named else "?", Run())
        for problem in (*case.iter("failure"), *case.iter("error")):
            text = f"{case.get('name')}: {problem.get('message')}\n{problem.text}"
            run.failures.append(_ANSI.sub("", text))
    results = folder / "results.jsonl"
    lines = results.read_text(encoding="utf-8").splitlines() if results.exists() else []
    for line in filter(str.strip, lines):
        result = json.loads(line)
        number = int(str(result["exercise"]).split(".")[0])
        lesson = next((name for name in LESSONS if int(name[:2]) == number), str(number))
        runs.setdefault(lesson, Run()).results.append(result)
    if runs.get("?") is not None or (
        child.returncode == 1 and not any(run.failures for run in runs.values())
    ):
        pytest.fail(f"{what}: nbval failed, and its report names no cell:\n{output}")
    return runs


@pytest.fixture(scope="module")
def nbval(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Both versions of every selected lesson, run once for all the lesson tests."""
    selected = sorted(
        {
            item.callspec.params["lesson"]
            for item in request.session.items
            if getattr(item, "originalname", "") == "test_lesson_notebooks"
        }
    )
    selected = [name for name in selected if _missing(name) is None]
    folders = {mode: tmp_path_factory.mktemp(mode) for mode in ("instructor", "learner")}
    strict = _start(
        [ROOT / "instructor" / f"{n}.ipynb" for n in selected], "--nbval", folders["instructor"]
    )
    lax = _start(
        [ROOT / "notebooks" / f"{n}.ipynb" for n in selected], "--nbval-lax", folders["learner"]
    )
    return Runs(
        _finish(strict, "instructor notebooks", folders["instructor"]),
        _finish(lax, "learner notebooks", folders["learner"]),
    )


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_notebooks(lesson: str, request: pytest.FixtureRequest) -> None:
    if reason := _missing(lesson):
        pytest.skip(reason)
    nbval: Runs = request.getfixturevalue("nbval")
    taught = nbval.instructor.get(lesson, Run())
    learned = nbval.learner.get(lesson, Run())
    assert not taught.failures, f"instructor/{lesson}.ipynb: nbval failed:\n" + "\n".join(
        taught.failures
    )
    assert not learned.failures, f"notebooks/{lesson}.ipynb: nbval failed:\n" + "\n".join(
        learned.failures
    )

    unsolved = [r for r in taught.results if r["status"] != "solved"]
    assert not unsolved, f"instructor/{lesson}: the solutions do not solve {unsolved}"

    assert learned.results, f"notebooks/{lesson}: no check reported a result"
    solved = [r["exercise"] for r in learned.results if r["status"] != "not solved yet"]
    assert not solved, (
        f"notebooks/{lesson}: the checks of {solved} do not report 'not solved yet' on the "
        "placeholder; does the solution region cover all of the solution?"
    )
    hidden = [r for r in learned.results if r["hidden"]]
    assert not hidden, "a hidden check leaked into the learner version"


def test_every_lesson_has_both_versions() -> None:
    assert [p.stem for p in INSTRUCTOR] == [p.stem for p in LEARNER]
    assert INSTRUCTOR, "no generated lesson notebooks: run `labkit build`"
