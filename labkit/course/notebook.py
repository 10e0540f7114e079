"""Notebook setup: make ``%%ipytest`` cells run async tests, with deterministic output.

Jupyter's kernel already runs an asyncio loop in its main thread, so pytest-asyncio, which starts
a loop per test, fails there with ``Runner.run() cannot be called from a running event loop``.
:func:`setup` configures ipytest to run pytest in a worker thread instead, and loads this module
as a pytest plugin that keeps the output free of timings, addresses and temporary paths, so
stored notebook outputs stay the same from run to run. (PYTEST_DONT_REWRITE: pytest loads this
module as a plugin after the notebook imported it.)

Example::

    import labkit.course.notebook
    labkit.course.notebook.setup()

    %%ipytest
    async def test_sleep_is_free():
        await asyncio.sleep(3600)
"""

from __future__ import annotations

import io
import re
from collections.abc import Generator
from typing import Any

import pytest

__all__ = ["PYTEST_ARGS", "clean_text", "setup"]

#: What every ``%%ipytest`` cell passes to pytest after :func:`setup`.
PYTEST_ARGS: tuple[str, ...] = (
    "-q",
    "--color=no",
    "-rN",
    "-o",
    "console_output_style=classic",
    # Full assertion diffs always: pytest otherwise shortens them unless $CI is set, and stored
    # outputs would differ between a laptop and CI.
    "-o",
    "verbosity_assertions=2",
    # In a long-lived kernel every plugin's package (labkit's, hypothesis's) is imported before
    # pytest starts, from the second run on at the latest: the warning that it is too late to
    # rewrite its asserts would fill every cell, and nothing in a notebook can act on it.
    "-W",
    "ignore::pytest.PytestAssertRewriteWarning",
    "-p",
    "no:cacheprovider",
    "-p",
    "labkit.course.notebook",
    "-o",
    "asyncio_mode=strict",
    "-o",
    "asyncio_default_fixture_loop_scope=function",
    "-o",
    "asyncio_default_test_loop_scope=function",
)

_CELL_FILE = re.compile(r"(?:[A-Za-z]:)?[^\s\"'()<>]*?[/\\]ipykernel_\d+[/\\]\d+\.py")
_CELL_BASENAME = re.compile(r"(?<![\w/\\.])\d{5,}\.py\b")
_IPYTHON_INPUT = re.compile(r"<ipython-input-\d+-[0-9a-f]+>")
_IPYTEST_MODULE = re.compile(r"\bt_[0-9a-f]{32}\.py")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_SOURCE_PATH = re.compile(r"(?:[A-Za-z]:)?(?:\.\.)?[/\\][^\s:'\"<>()]*[/\\]([\w.-]+\.py)\b")
_TASK_COUNTER = re.compile(r"\bTask-\d+\b")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def setup() -> None:
    """Configure this notebook's ``%%ipytest`` magic for async tests and stable output.

    Call it once, in the first code cell. It may be called again (it only re-applies the same
    settings).

    Example::

        import labkit.course.notebook
        labkit.course.notebook.setup()
    """
    import ipytest

    ipytest.autoconfig(run_in_thread=True, addopts=PYTEST_ARGS, raise_on_error=False)


def clean_text(text: str) -> str:
    """Remove what changes between runs from a report: cell file paths, addresses, task counters.

    Example::

        clean_text("/tmp/ipykernel_4242/1234567.py:5: AssertionError")  # "<cell>:5: ..."
    """
    text = _ANSI.sub("", text)
    text = _CELL_FILE.sub("<cell>", text)
    text = _CELL_BASENAME.sub("<cell>", text)
    text = _IPYTHON_INPUT.sub("<cell>", text)
    text = _IPYTEST_MODULE.sub("notebook.py", text)
    text = _SOURCE_PATH.sub(r"\1", text)
    text = _TASK_COUNTER.sub("Task-N", text)
    return _ADDRESS.sub("", text)


def _in_cell(path: object) -> bool:
    text = str(path)
    return bool(_CELL_FILE.fullmatch(text) or _IPYTHON_INPUT.fullmatch(text))


def _cells_only(excinfo: pytest.ExceptionInfo[BaseException]) -> Any:
    """Keep the traceback entries of notebook cells: the learner's code, not the machinery."""
    return excinfo.traceback.filter(lambda entry: _in_cell(entry.path))


# -- the pytest plugin (loaded by ``-p labkit.course.notebook``) -----------------------------


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Replace the final "2 passed in 0.01s" line by the same line without the duration."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return

    def summary_stats() -> None:
        parts, color = reporter.build_summary_stats_line()
        message = ", ".join(text for text, _markup in parts)
        reporter.write_line(message, **{color: True})

    reporter.summary_stats = summary_stats


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    """Report a failure through the notebook's own frames, without paths or addresses."""
    report = yield
    if not report.failed or report.longrepr is None:
        return report
    excinfo = call.excinfo
    if excinfo is not None and _cells_only(excinfo):
        text = _plain(excinfo.getrepr(style="long", tbfilter=_cells_only))
    elif excinfo is not None:
        lines = [f"{excinfo.typename}: {excinfo.value}".rstrip()]
        text = "\n".join("E   " + line for line in "\n".join(lines).splitlines())
    else:
        text = _plain(report.longrepr)
    report.longrepr = clean_text(text)
    return report


def _plain(longrepr: Any) -> str:
    """A report as plain text: no colors, whatever the environment asks for."""
    if not hasattr(longrepr, "toterminal"):
        return str(longrepr)
    from _pytest._io import TerminalWriter

    stream = io.StringIO()
    writer = TerminalWriter(file=stream)
    writer.hasmarkup = False
    writer.fullwidth = 100
    longrepr.toterminal(writer)
    return stream.getvalue().strip("\n").rstrip()
