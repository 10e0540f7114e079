"""labkit.course.notebook: the pytest plugin keeps notebook reports free of what changes per run."""

from __future__ import annotations

import importlib.machinery
import re
from pathlib import Path

import pytest

from labkit.course.notebook import PYTEST_ARGS, clean_text

pytest_plugins = ["pytester"]

QUIET = ("-q", "--color=no", "-o", "asyncio_default_fixture_loop_scope=function")
TIMED_SUMMARY = re.compile(r"\d+ (passed|failed)[^\n]* in \d+\.\d+s")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("/tmp/ipykernel_4242/1234567.py:5: AssertionError", "<cell>:5: AssertionError"),
        ("waiting at 3109437223.py:8 in test_x", "waiting at <cell>:8 in test_x"),
        ("<object object at 0x7f3a2b1c>", "<object object>"),
        ("task 'Task-12' running main()", "task 'Task-N' running main()"),
        (
            "notebooks/t_0123456789abcdef0123456789abcdef.py::test_x",
            "notebooks/notebook.py::test_x",
        ),
        (
            "cb=[f() at /root/.pyenv/versions/3.11.7/lib/python3.11/asyncio/base_events.py:180]",
            "cb=[f() at base_events.py:180]",
        ),
        ("\x1b[31mE   assert 1 == 2\x1b[0m", "E   assert 1 == 2"),
    ],
)
def test_clean_text_removes_what_changes_between_runs(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_the_plugin_drops_the_duration_from_the_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_one():
            assert 1 == 1

        def test_two():
            assert [object()] == []
        """
    )
    result = pytester.runpytest_inprocess(*QUIET, "-p", "labkit.course.notebook")
    text = result.stdout.str()
    assert result.ret == 1
    assert text.rstrip().endswith("1 failed, 1 passed")
    assert not TIMED_SUMMARY.search(text)
    assert " at 0x" not in text


def test_without_the_plugin_pytest_prints_a_duration(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_one():\n    pass\n")
    result = pytester.runpytest_inprocess(*QUIET)
    assert TIMED_SUMMARY.search(result.stdout.str())


def test_the_notebook_arguments_set_the_loop_scope_and_run_quietly() -> None:
    assert "asyncio_default_fixture_loop_scope=function" in PYTEST_ARGS
    assert "labkit.course.notebook" in PYTEST_ARGS
    assert "--color=no" in PYTEST_ARGS


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_failed_comparison_reads_the_same_on_ci_and_off(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    # pytest shortens assertion diffs unless $CI is set; stored notebook outputs must not care.
    pytester.makepyfile("def test_names():\n    assert ['ticker'] == []\n")
    monkeypatch.setenv("CI", ci)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
    result = pytester.runpytest_inprocess(*PYTEST_ARGS)
    text = result.stdout.str()
    assert "Use -v to get more diff" not in text
    assert "Full diff:" in text
    assert "+     'ticker'," in text


ALREADY_IMPORTED = "Module already imported so cannot be rewritten"


def test_no_rewrite_warnings_in_a_notebook_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel imports plugin packages before pytest starts: no cell may fill with warnings.

    pytest marks the package of every plugin (labkit's pytest11 entry point, hypothesis's, a
    user's) for assertion rewriting when it starts, too late in a kernel that imported them.
    """
    import labkit

    kit = Path(labkit.__file__).resolve().parent.parent
    monkeypatch.syspath_prepend(str(kit))
    # As in a kernel: imported by Python's own loader (this run's pytest imported it rewritten).
    plain = importlib.machinery.SourceFileLoader("labkit", labkit.__file__)
    monkeypatch.setattr(labkit, "__loader__", plain)
    pytester.makepyfile(early_plugin="def pytest_configure(config):\n    pass\n")
    pytester.makepyfile("def test_one():\n    assert 1 == 1\n")
    monkeypatch.syspath_prepend(str(pytester.path))
    __import__("early_plugin")
    without = pytester.runpytest_inprocess(*QUIET, "-p", "early_plugin").stdout.str()
    assert f"{ALREADY_IMPORTED}; early_plugin" in without  # the warning the setting removes
    result = pytester.runpytest_inprocess(*PYTEST_ARGS, "-p", "early_plugin")
    text = result.stdout.str()
    assert result.ret == 0, text
    assert ALREADY_IMPORTED not in text
