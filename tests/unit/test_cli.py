"""The `labkit` command: a course command without the course tools names the extra to install."""

from __future__ import annotations

import importlib.util

import pytest

from labkit.course import cli


@pytest.mark.parametrize("command", ["build", "grade", "lab"])
def test_a_course_command_without_its_tools_names_the_extra(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    gone = set(cli.NEEDS[command][:1])
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in gone else real(name, *a)
    )
    argv = [command] + (["x.ipynb"] if command == "grade" else [])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"labkit {command}: needs the course tools")
    assert f"missing: {sorted(gone)[0]}" in err
    assert "pip install 'labkit[course]'" in err


def test_in_the_kits_environment_nothing_is_missing() -> None:
    assert {command: cli.missing_tools(command) for command in cli.NEEDS} == {
        command: [] for command in cli.NEEDS
    }
