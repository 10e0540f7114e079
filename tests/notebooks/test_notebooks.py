"""The lessons as CI-checked documents: nbval over every generated notebook.

* ``instructor/NN-*.ipynb`` run on the kit's own kernel and must reproduce their stored outputs
  exactly (``--nbval``), with every check reporting "solved";
* ``notebooks/NN-*.ipynb``, the learner versions, must run top to bottom without an error
  (``--nbval-lax``), with every check reporting "not solved yet".

nbval's strict and lax modes are options of a whole pytest run, so each version runs in a child
pytest (the two of a lesson side by side, one per core); ``LABKIT_RESULTS`` collects the check
results of each run. A lesson whose metadata lists ``needs`` (``labkit.needs: [postgresql]``) is
skipped, with one line saying how to install what is missing, where that cannot run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.course import postgres_missing

ROOT = Path(__file__).resolve().parents[2]
SANITIZE = Path(__file__).with_name("sanitize.cfg")
INSTRUCTOR = sorted((ROOT / "instructor").glob("[0-9][0-9]-*.ipynb"))
LEARNER = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
LESSONS = sorted({path.stem for path in INSTRUCTOR} & {path.stem for path in LEARNER})

pytestmark = pytest.mark.notebooks
# What a lesson may need beyond the kit's environment: each says why it cannot run here, or None.
NEEDS = {"postgresql": postgres_missing}


def _missing(notebook: Path) -> str | None:
    needs = json.loads(notebook.read_text(encoding="utf-8"))["metadata"]["labkit"].get("needs", [])
    for need in needs:
        if need not in NEEDS:
            pytest.fail(f"{notebook.name}: unknown need {need!r}; known: {', '.join(NEEDS)}")
        reason = NEEDS[need]()
        if reason:
            return f"{notebook.stem}: {reason}"
    return None


def _start(notebook: Path, mode: str, results: Path) -> subprocess.Popen[str]:
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
        str(notebook.relative_to(ROOT)),
    ]
    env = {**os.environ, "LABKIT_RESULTS": str(results)}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(child: subprocess.Popen[str], what: str, results: Path) -> list[dict[str, object]]:
    try:
        output, _ = child.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        child.kill()
        output, _ = child.communicate()
        pytest.fail(f"{what}: nbval still running after 30 minutes:\n{output}")
    assert child.returncode == 0, f"{what}: nbval failed:\n{output}"
    lines = results.read_text(encoding="utf-8").splitlines() if results.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_notebooks(lesson: str, tmp_path: Path) -> None:
    instructor = ROOT / "instructor" / f"{lesson}.ipynb"
    learner = ROOT / "notebooks" / f"{lesson}.ipynb"
    if reason := _missing(instructor):
        pytest.skip(reason)
    strict = _start(instructor, "--nbval", tmp_path / "instructor.jsonl")
    lax = _start(learner, "--nbval-lax", tmp_path / "learner.jsonl")
    taught = _finish(strict, f"instructor/{lesson}.ipynb", tmp_path / "instructor.jsonl")
    learned = _finish(lax, f"notebooks/{lesson}.ipynb", tmp_path / "learner.jsonl")

    unsolved = [r for r in taught if r["status"] != "solved"]
    assert not unsolved, f"instructor/{lesson}: the solutions do not solve {unsolved}"

    assert learned, f"notebooks/{lesson}: no check reported a result"
    solved = [r["exercise"] for r in learned if r["status"] != "not solved yet"]
    assert not solved, (
        f"notebooks/{lesson}: the checks of {solved} do not report 'not solved yet' on the "
        "placeholder; does the solution region cover all of the solution?"
    )
    assert all(not r["hidden"] for r in learned), "a hidden check leaked into the learner version"


def test_every_lesson_has_both_versions() -> None:
    assert [p.stem for p in INSTRUCTOR] == [p.stem for p in LEARNER]
    assert INSTRUCTOR, "no generated lesson notebooks: run `labkit build`"
