"""labkit release writes the learner-only tree a workshop hands out, and checks it."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from labkit.course import cli
from labkit.course.release import ReleaseError, release, verify

ROOT = Path(__file__).resolve().parents[2]


def _release(target: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["release", str(target), "--root", str(ROOT)])
    return code, out.getvalue(), err.getvalue()


def test_a_release_holds_the_learner_notebooks_and_nothing_of_the_instructor(
    tmp_path: Path,
) -> None:
    target = tmp_path / "workshop"
    code, out, err = _release(target)
    assert code == 0, err
    lessons = len(list((ROOT / "lessons").glob("[0-9][0-9]-*.md")))
    assert f"{lessons} learner notebooks" in out
    names = {p.name for p in target.iterdir()}
    assert {"README.md", "environment.yml", "requirements.lock", "pyproject.toml"} <= names
    assert {"notebooks", "labkit", "jupyter"} <= names
    assert not names & {"instructor", "lessons", ".git", "tests", "bench", "docs"}
    learner = sorted(p.name for p in (target / "notebooks").glob("*.ipynb"))
    assert learner == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert not list(target.rglob("manifest.json"))
    assert not list(target.rglob("__pycache__"))
    for path in (target / "notebooks").glob("*.ipynb"):
        text = path.read_text()
        assert "### BEGIN SOLUTION" not in text
        notebook = json.loads(text)
        assert notebook["metadata"]["labkit"]["version"] == "learner"
        assert not any(
            c.get("metadata", {}).get("labkit", {}).get("role") == "hidden"
            for c in notebook["cells"]
        )
    assert verify(target) == []


def test_a_release_refuses_a_folder_in_use_and_instructor_material(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine")
    code, _, err = _release(tmp_path / "busy")
    assert code == 1
    assert (
        err.strip()
        == f"labkit release: {tmp_path / 'busy'} exists and is not empty; choose a new folder"
    )
    with pytest.raises(ReleaseError, match="inside the kit"):
        release(ROOT, ROOT / "notebooks" / "out")


def test_verify_names_what_is_not_learner_only(tmp_path: Path) -> None:
    (tmp_path / "notebooks").mkdir()
    instructor = json.loads(next((ROOT / "instructor").glob("00-*.ipynb")).read_text())
    (tmp_path / "notebooks" / "00.ipynb").write_text(json.dumps(instructor))
    (tmp_path / ".git").mkdir()
    found = verify(tmp_path)
    assert ".git/ is in it" in found
    assert "notebooks/00.ipynb is not a learner version" in found
    assert any("holds the hidden cell" in line for line in found)
    assert any("holds a solution" in line for line in found)
