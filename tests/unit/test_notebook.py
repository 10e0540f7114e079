"""labkit.course.notebook: the pytest plugin keeps notebook reports free of what changes per run."""

from __future__ import annotations

import importlib.machinery
import re
from pathlib import Path

import pytest

from labkit.course import runner
from labkit.course.labels import cell_label, wrap
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
    assert "--color=no" in PYTEST_ARGS


@pytest.mark.parametrize(
    ("filename", "label"),
    [
        ("/tmp/ipykernel_4242/1326271889.py", "<cell>"),
        ("<ipython-input-3-0123abcd>", "<cell>"),
        ("/tmp/labkit-cells-1-x/t_0123456789abcdef0123456789abcdef.py", "<cell>"),
        ("/usr/lib/python3.11/asyncio/locks.py", "locks.py"),
    ],
)
def test_a_cell_is_labelled_the_same_everywhere(filename: str, label: str) -> None:
    assert cell_label(filename) == label
    if label == "<cell>" and not filename.endswith(".py"):
        assert clean_text(f"at {filename}:12 in f") == "at <cell>:12 in f"


def test_wrap_breaks_between_words_only() -> None:
    text = "word " * 30 + "https://example.org/" + "x" * 120
    lines = wrap(text, 40).splitlines()
    assert all(len(line) <= 40 for line in lines[:-1])
    assert lines[-1].endswith("x" * 120)  # a long word stays whole


def test_an_async_test_without_the_marker_says_what_is_missing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("async def test_waits():\n    pass\n")
    result = pytester.runpytest_inprocess(*PYTEST_ARGS, "-p", "labkit.course.notebook")
    text = result.stdout.str()
    assert result.ret == 1
    assert "test_waits is an `async def` test without `@pytest.mark.asyncio`" in text
    assert "install a suitable plugin" not in text


def test_without_pytest_asyncio_the_install_advice_stays(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("async def test_waits():\n    pass\n")
    result = pytester.runpytest_inprocess(
        *PYTEST_ARGS, "-p", "labkit.course.notebook", "-p", "no:asyncio", "-p", "no:labkit"
    )
    assert "install a suitable plugin" in result.stdout.str()


def test_a_cell_never_reads_the_folders_configuration() -> None:
    assert "timeout" not in runner.PYTEST_INI
    names = [name for name, _plugin in runner.installed_plugins()]
    assert {"asyncio", "labkit"} <= set(names)
    assert "timeout" not in names  # pytest-timeout would end the kernel
    assert "nbval" not in names
    cells = runner.CellRunner(["-q"])
    module = cells.folder / "t_0123456789abcdef0123456789abcdef.py"
    args = cells.arguments(module, ["--tb=short"])
    assert args[:4] == [
        "-c",
        str(cells.folder / "pytest.ini"),
        f"--rootdir={cells.folder}",
        "--disable-plugin-autoload",
    ]
    assert args[-3:] == ["--tb=short", "--", str(module)]
    assert (cells.folder / "pytest.ini").read_text() == runner.PYTEST_INI


def test_the_magic_line_can_name_the_cells_tests() -> None:
    cells = runner.CellRunner()
    module = cells.folder / "t_0123456789abcdef0123456789abcdef.py"
    assert cells.arguments(module, ["{test_one}"])[-1] == f"{module}::test_one"
    assert cells.arguments(module, ["-k", "{MODULE}"])[-2:] == ["--", str(module)]
    with pytest.raises(KeyError, match="MODULE"):
        cells.arguments(module, ["{NOPE}"])


def test_a_dead_kernels_folder_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    stale = tmp_path / f"labkit-cells-{child.pid}-abc"
    stale.mkdir()
    (stale / "t_0123456789abcdef0123456789abcdef.py").write_text("")
    mine = tmp_path / "labkit-cells-1-abc"  # pid 1 is alive
    mine.mkdir()
    folder = runner.CellRunner().folder
    assert folder.parent == tmp_path
    assert not stale.exists()
    assert mine.exists()


def test_the_time_limit_must_be_a_number() -> None:
    with pytest.raises(ValueError, match="time_limit must be a number of seconds >= 0"):
        runner.CellRunner(time_limit=-1)


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
