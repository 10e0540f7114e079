"""The lessons as CI-checked documents: nbval over every generated notebook.

* ``instructor/NN-*.ipynb`` run on the kit's own kernel and must reproduce their stored outputs
  exactly (``--nbval``), with every check reporting "solved";
* ``notebooks/NN-*.ipynb``, the learner versions, must run top to bottom without an error
  (``--nbval-lax``), with every check reporting "not solved yet".

nbval's strict and lax modes are options of a whole pytest run, so each notebook runs in a child
pytest; ``LABKIT_RESULTS`` collects the check results of that run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SANITIZE = Path(__file__).with_name("sanitize.cfg")
INSTRUCTOR = sorted((ROOT / "instructor").glob("[0-9][0-9]-*.ipynb"))
LEARNER = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))

pytestmark = pytest.mark.notebooks


def _nbval(notebook: Path, mode: str, results: Path) -> tuple[str, list[dict[str, object]]]:
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
        "-p",
        "no:randomly",
        str(notebook.relative_to(ROOT)),
    ]
    env = {**os.environ, "LABKIT_RESULTS": str(results)}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"nbval {mode} failed on {notebook.name}:\n{output}"
    lines = results.read_text(encoding="utf-8").splitlines() if results.exists() else []
    return output, [json.loads(line) for line in lines if line.strip()]


def _ids(paths: list[Path]) -> list[str]:
    return [path.stem for path in paths]


@pytest.mark.parametrize("notebook", INSTRUCTOR, ids=_ids(INSTRUCTOR))
def test_instructor_notebook_reproduces_its_outputs(notebook: Path, tmp_path: Path) -> None:
    _, results = _nbval(notebook, "--nbval", tmp_path / "results.jsonl")
    unsolved = [r for r in results if r["status"] != "solved"]
    assert not unsolved, f"{notebook.name}: the instructor's solutions do not solve {unsolved}"


@pytest.mark.parametrize("notebook", LEARNER, ids=_ids(LEARNER))
def test_learner_notebook_runs_clean(notebook: Path, tmp_path: Path) -> None:
    _, results = _nbval(notebook, "--nbval-lax", tmp_path / "results.jsonl")
    assert results, f"{notebook.name}: no check reported a result"
    solved = [r["exercise"] for r in results if r["status"] != "not solved yet"]
    assert not solved, (
        f"{notebook.name}: the checks of {solved} do not report 'not solved yet' on the "
        "placeholder; does the solution region cover all of the solution?"
    )
    assert all(not r["hidden"] for r in results), "a hidden check leaked into the learner version"


def test_every_lesson_has_both_versions() -> None:
    assert _ids(INSTRUCTOR) == _ids(LEARNER)
    assert INSTRUCTOR, "no generated lesson notebooks: run `labkit build`"
