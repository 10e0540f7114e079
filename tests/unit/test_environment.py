"""environment.yml (conda, Binder, JupyterHub) stays in step with requirements.in / .lock."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def normalize(name: str) -> str:
    """PEP 503: the same package however it is spelled."""
    return re.sub(r"[-_.]+", "-", name).lower()


def direct_requirements(text: str) -> list[str]:
    """The package names of requirements.in, in order."""
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(normalize(re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0]))
    return names


def pins(lines: list[str]) -> dict[str, str]:
    """``name==version`` lines as {normalized name: version}; other lines are ignored."""
    found: dict[str, str] = {}
    for line in lines:
        match = _PIN.match(line.strip())
        if match:
            found[normalize(match.group(1))] = match.group(2)
    return found


def conda_pip_lines(text: str) -> list[str]:
    """The entries under ``- pip:`` in environment.yml."""
    lines: list[str] = []
    inside = False
    indent = 0
    for raw in text.splitlines():
        stripped = raw.split("#", 1)[0].rstrip()
        if not stripped.strip():
            continue
        if re.match(r"^\s*-\s*pip:\s*$", stripped):
            inside, indent = True, len(stripped) - len(stripped.lstrip())
            continue
        if inside:
            if len(stripped) - len(stripped.lstrip()) <= indent:
                inside = False
                continue
            lines.append(stripped.strip().removeprefix("-").strip())
    return lines


def test_parsers_on_a_small_example() -> None:
    yml = "dependencies:\n  - pip\n  - pip:\n      - Foo_Bar==1.0  # why\n      - -e .\n  - zlib\n"
    assert conda_pip_lines(yml) == ["Foo_Bar==1.0", "-e ."]
    assert pins(conda_pip_lines(yml)) == {"foo-bar": "1.0"}
    assert direct_requirements("foo.bar  # x\n# only a comment\nbaz>=2\n") == ["foo-bar", "baz"]


@pytest.fixture(scope="module")
def environment() -> dict[str, str]:
    return pins(conda_pip_lines((ROOT / "environment.yml").read_text()))


@pytest.fixture(scope="module")
def lock() -> dict[str, str]:
    return pins((ROOT / "requirements.lock").read_text().splitlines())


@pytest.fixture(scope="module")
def direct() -> list[str]:
    return direct_requirements((ROOT / "requirements.in").read_text())


def test_every_direct_requirement_is_pinned_in_the_lock(
    direct: list[str], lock: dict[str, str]
) -> None:
    missing = [name for name in direct if name not in lock]
    assert not missing, f"add pins to requirements.lock for: {', '.join(missing)}"


def test_environment_yml_lists_the_same_packages_as_requirements_in(
    direct: list[str], environment: dict[str, str]
) -> None:
    assert sorted(environment) == sorted(direct), (
        "environment.yml and requirements.in list different packages; "
        f"only in environment.yml: {sorted(set(environment) - set(direct))}, "
        f"only in requirements.in: {sorted(set(direct) - set(environment))}"
    )


def test_environment_yml_pins_the_lock_versions(
    environment: dict[str, str], lock: dict[str, str]
) -> None:
    differ = {
        name: (version, lock.get(name))
        for name, version in environment.items()
        if lock.get(name) != version
    }
    assert not differ, (
        "environment.yml pins differ from requirements.lock (yml, lock): "
        f"{differ}; copy the lock's versions into environment.yml"
    )


def test_environment_yml_installs_the_kit_itself() -> None:
    lines = conda_pip_lines((ROOT / "environment.yml").read_text())
    assert "-e ." in lines, "environment.yml must install labkit itself (`- -e .` under pip)"


def test_environment_yml_python_satisfies_requires_python() -> None:
    yml = (ROOT / "environment.yml").read_text()
    conda_python = re.search(r"^\s*-\s*python\s*=+\s*(\d+)\.(\d+)", yml, re.MULTILINE)
    assert conda_python, "environment.yml must pin python (e.g. `- python=3.11`)"
    project = (ROOT / "pyproject.toml").read_text()
    floor = re.search(r'requires-python\s*=\s*">=(\d+)\.(\d+)"', project)
    assert floor, "pyproject.toml must state requires-python"
    version = (int(conda_python.group(1)), int(conda_python.group(2)))
    assert version >= (int(floor.group(1)), int(floor.group(2)))


def test_environment_yml_pins_no_python_with_the_ast_crash() -> None:
    """3.11.0-3.11.7 can crash pytest ("AST constructor recursion depth mismatch")."""
    yml = (ROOT / "environment.yml").read_text()
    pin = re.search(r"^\s*-\s*python\s*(?:=+|>=)\s*([\d.]+)", yml, re.MULTILINE)
    assert pin is not None
    parts = tuple(int(part) for part in pin.group(1).split("."))
    assert parts[:2] != (3, 11) or parts >= (3, 11, 8), f"python={pin.group(1)} may be 3.11.7-"
