"""Releases: ``labkit release DIR`` writes the learner-only tree a workshop hands out.

A clone of the kit holds every solution and hidden check (``instructor/``, ``lessons/``, and
the ``.git`` history). What learners get must hold none of it: the learner notebooks, the README,
the environment files (``environment.yml``, ``requirements.*``, ``pyproject.toml``, the
``Makefile`` for ``make lab``), the JupyterLab settings and the ``labkit`` package itself. The
release is checked after it is written: no instructor notebook or manifest, no hidden check
cell, no solution region, no git metadata.

Example::

    $ labkit release ../workshop-kit     # then publish ../workshop-kit (its own git repo)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

__all__ = ["ReleaseError", "configure", "release", "run", "verify"]

FILES = (
    "README.md",
    "LICENSE",
    "LICENSE.md",
    "pyproject.toml",
    "environment.yml",
    "requirements.in",
    "requirements.lock",
    "Makefile",
)
FOLDERS = ("labkit", "jupyter")
_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


class ReleaseError(Exception):
    """The release cannot be written or is not learner-only; the message says why and the fix."""


def _ignore(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n in ("__pycache__", ".ipynb_checkpoints") or n.endswith(".pyc")}


def release(root: Path, target: Path) -> list[Path]:
    """Write the learner-only tree of the kit at ``root`` into the new folder ``target``.

    Example::

        written = release(Path("."), Path("/tmp/workshop"))
    """
    notebooks = root / "notebooks"
    if not (notebooks / "README.md").is_file():
        raise ReleaseError(f"{root}: no notebooks/README.md; run this from the kit's folder")
    if target.exists() and any(target.iterdir()):
        raise ReleaseError(f"{target} exists and is not empty; choose a new folder")
    if target.resolve().is_relative_to(root.resolve()):
        raise ReleaseError(f"{target} is inside the kit; choose a folder outside it")
    problems = _stale(root)
    if problems:
        raise ReleaseError(f"the learner notebooks are out of date ({problems[0]})")
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name in FILES:
        if (root / name).is_file():
            shutil.copy2(root / name, target / name)
            written.append(target / name)
    for name in FOLDERS:
        if (root / name).is_dir():
            shutil.copytree(root / name, target / name, ignore=_ignore, symlinks=False)
            written.append(target / name)
    (target / "notebooks").mkdir()
    for path in sorted(notebooks.iterdir()):
        if path.suffix == ".ipynb" or path.name == "README.md":
            shutil.copy2(path, target / "notebooks" / path.name)
            written.append(target / "notebooks" / path.name)
    found = verify(target)
    if found:
        shutil.rmtree(target)
        raise ReleaseError(f"the release would not be learner-only: {found[0]}")
    return written


def _stale(root: Path) -> list[str]:
    if not (root / "lessons").is_dir():
        return []
    try:
        from labkit.course.build import check_up_to_date, find_lessons
    except ImportError:  # pragma: no cover - the course tools are missing
        return []
    problems: list[str] = check_up_to_date(find_lessons(root))
    return [p for p in problems if "notebooks" in p]


def verify(tree: Path) -> list[str]:
    """What in ``tree`` is instructor-only (empty for a good release).

    Example::

        assert verify(Path("/tmp/workshop")) == []
    """
    found: list[str] = []
    for name in ("instructor", "lessons", ".git", "tests"):
        if (tree / name).exists():
            found.append(f"{name}/ is in it")
    for path in sorted(tree.rglob("*")):
        if path.name == "manifest.json":
            found.append(f"{path.relative_to(tree)} is a lesson manifest")
        if path.suffix != ".ipynb" or not path.is_file():
            continue
        try:
            notebook = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found.append(f"{path.relative_to(tree)} is not a readable notebook")
            continue
        meta = notebook.get("metadata", {}).get("labkit", {})
        if meta.get("version") != "learner":
            found.append(f"{path.relative_to(tree)} is not a learner version")
        for cell in notebook.get("cells", []):
            role = cell.get("metadata", {}).get("labkit", {}).get("role")
            source = cell.get("source", "")
            text = "".join(source) if isinstance(source, list) else str(source)
            if role == "hidden":
                found.append(f"{path.relative_to(tree)} holds the hidden cell {cell.get('id')}")
            if any(marker in text for marker in _MARKERS):
                found.append(f"{path.relative_to(tree)} holds a solution ({cell.get('id')})")
    return found


# -- the command line ---------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``labkit release``.

    Example::

        $ labkit release ../workshop-kit
    """
    parser.add_argument("target", type=Path, metavar="DIR", help="a new folder for the release")
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="the kit's folder (default: the current folder or a parent holding notebooks/)",
    )


def _find_root(start: Path) -> Path:
    for folder in (start, *start.parents):
        if (folder / "notebooks" / "README.md").is_file():
            return folder
    return start


def run(args: argparse.Namespace) -> int:
    """Run ``labkit release``; returns the exit code."""
    root = args.root if args.root is not None else _find_root(Path.cwd())
    try:
        written = release(root, args.target)
    except (ReleaseError, OSError) as exc:
        print(f"labkit release: {exc}", file=sys.stderr)
        return 1
    notebooks = sum(1 for p in written if p.suffix == ".ipynb")
    print(
        f"labkit release: wrote {args.target} ({notebooks} learner notebooks, the README, the "
        "environment files and the labkit package; no instructor notebooks, lesson sources, "
        "hidden checks or git history)"
    )
    return 0
