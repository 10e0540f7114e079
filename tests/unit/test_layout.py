"""The house explains itself: the library never imports the course, no cycles, no reaching in.

These are the layout rules of docs/DEVELOPING.md, checked on the source tree: an import that
breaks one fails here with the module and line to fix.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import labkit

PACKAGE = Path(labkit.__file__).resolve().parent
COURSE = "labkit.course"
# Old module names kept working with a DeprecationWarning; they only re-export the course.
ALIASES = {"labkit.exercise", "labkit.jupyter", "labkit.__main__"}
HEAVY = ("nbformat", "nbclient", "IPython", "ipytest", "matplotlib", "jupytext", "ipykernel")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, name: str) -> list[tuple[str, list[str], int]]:
    """Every labkit import a module runs, function-level ones included: (module, names, line)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # `if TYPE_CHECKING:` blocks never run: types only
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, list[str], int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("labkit")]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, target] if target else base)
            if target.startswith("labkit"):
                found.append((target, [a.name for a in node.names], node.lineno))
    return found


def resolve(target: str, names: list[str], known: dict[str, Path]) -> list[str]:
    """The labkit modules an import statement loads (``from labkit import mocks`` included)."""
    hits = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
    return hits or ([target] if target in known else [])


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target, names, _ in imports(path, name):
            edges[name].update(t for t in resolve(target, names, known) if t != name)
    return edges


def test_the_library_never_imports_the_course() -> None:
    bad = []
    for name, path in modules().items():
        if name.startswith(COURSE) or name in ALIASES:
            continue
        for target, _, line in imports(path, name):
            if target == COURSE or target.startswith(COURSE + "."):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not bad, "the library must not import the course:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            # A package's __init__ importing its own submodules is not a cycle of concern.
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_imports_another_modules_private_names() -> None:
    bad = []
    known = modules()
    for name, path in known.items():
        for target, names, line in imports(path, name):
            if target == name:
                continue
            private = [
                n
                for n in names
                if n.startswith("_") and not n.endswith("__") and f"{target}.{n}" not in known
            ]
            if private:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {target}: {private}")
    assert not bad, "imports of another module's private names:\n" + "\n".join(bad)


def test_the_cycle_check_can_fail(tmp_path: Path) -> None:
    """The graph really sees function-level imports (so a cycle through one is caught)."""
    source = "def f():\n    from labkit.trace import Trace\n"
    path = PACKAGE / "timeline.py"
    assert ("labkit.trace", ["Trace"], 2) in imports_of_text(source, path, "labkit.timeline")


def imports_of_text(source: str, path: Path, name: str) -> list[tuple[str, list[str], int]]:
    probe = path.parent / "_probe_for_layout_test.py"
    try:
        probe.write_text(source)
        return imports(probe, name)
    finally:
        probe.unlink()


def test_import_labkit_loads_no_course_tools() -> None:
    code = (
        "import sys, labkit, labkit.plugin\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "course = [m for m in sys.modules if m.startswith('labkit.course')]\n"
        "print(loaded + course)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"import labkit loaded {out.stdout.strip()}"


@pytest.mark.parametrize("old", ["labkit.exercise", "labkit.jupyter"])
def test_old_module_names_still_work_with_a_warning(old: str) -> None:
    code = f"import warnings\nwarnings.simplefilter('error')\nimport {old}\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "DeprecationWarning" in out.stderr
    assert "labkit.course" in out.stderr
    code = (
        f"import warnings\nwarnings.simplefilter('ignore')\nimport {old} as m\n"
        "print(m.setup if hasattr(m, 'setup') else m.check)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "function" in out.stdout
