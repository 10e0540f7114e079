"""Notebook setup: ``%%ipytest`` cells that run async tests fast, bounded, with stable output.

Jupyter's kernel already runs an asyncio loop in its main thread, so pytest-asyncio, which starts
a loop per test, fails there with ``Runner.run() cannot be called from a running event loop``.
:func:`setup` replaces ipytest's ``%%ipytest`` magic by one that runs pytest in a worker thread
(:mod:`labkit.course.runner`: the kit's own pytest settings, a time limit per test that leaves the
kernel alive, Kernel → Interrupt that stops the test, and a fraction of the start-up cost), and
loads this module as a pytest plugin that keeps the output free of timings, addresses and
temporary paths, so stored notebook outputs stay the same from run to run. (PYTEST_DONT_REWRITE:
pytest loads this module as a plugin after the notebook imported it.)

Example::

    import labkit.course.notebook
    labkit.course.notebook.setup()

    %%ipytest
    async def test_sleep_is_free():
        await asyncio.sleep(3600)
"""

from __future__ import annotations

import io
import shlex
import sys
from collections.abc import Generator
from typing import Any, Literal

import pytest

from labkit.course.labels import clean_text, is_cell_file, wrap
from labkit.course.runner import DEFAULT_TIME_LIMIT, CellRunner

__all__ = ["PYTEST_ARGS", "clean_text", "setup"]

#: What every ``%%ipytest`` cell passes to pytest after :func:`setup` (the runner adds its own
#: configuration file, rootdir and plugins, this module among them).
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
    # anyio's plugin imports trio when it is installed, and trio registers its random generator
    # with Hypothesis when Hypothesis is loaded too; Hypothesis then warns about trio's own code,
    # in the first test cell of every kernel. It is no concern of the notebook's.
    "-W",
    "ignore::Warning:trio._core._run",
    "-p",
    "no:cacheprovider",
    "-o",
    "asyncio_mode=strict",
    "-o",
    "asyncio_default_fixture_loop_scope=function",
    "-o",
    "asyncio_default_test_loop_scope=function",
)

# What ipytest passed before labkit had its own runner: kept so that bench/notebook_cells.py can
# measure both paths in one run (setup(runner="ipytest")).
_IPYTEST_ARGS = (*PYTEST_ARGS, "-p", "labkit.course.notebook")

_ASYNC_UNSUPPORTED = "async def functions are not natively supported"
_runner: CellRunner | None = None


def setup(
    *, time_limit: float = DEFAULT_TIME_LIMIT, runner: Literal["labkit", "ipytest"] = "labkit"
) -> None:
    """Configure this notebook's ``%%ipytest`` magic for async tests and stable output.

    Call it once, in the first code cell; calling it again only re-applies the settings.
    ``time_limit`` is the real-time limit of each test, in seconds (0: none): a test that runs
    longer fails with the place where it was, and the kernel keeps running.
    ``runner="ipytest"`` runs cells through plain ``ipytest.run`` instead, as before labkit had
    its own runner (slower, and a hung test can end the kernel): it exists to be measured.

    Example::

        import labkit.course.notebook
        labkit.course.notebook.setup(time_limit=10)
    """
    global _runner
    import ipytest
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError(
            "setup() configures the %%ipytest cells of a notebook: call it in a Jupyter "
            "notebook or IPython, not in a plain Python script"
        )
    if runner not in ("labkit", "ipytest"):
        raise ValueError(f"runner must be 'labkit' or 'ipytest', got {runner!r}")
    folder = _runner.folder if _runner is not None else None
    cells = CellRunner(
        PYTEST_ARGS, plugins=[sys.modules[__name__]], time_limit=time_limit, folder=folder
    )
    if runner == "ipytest":
        ipytest.autoconfig(run_in_thread=True, addopts=_IPYTEST_ARGS, raise_on_error=False)
        _runner = None
    else:
        # ipytest.run(), called directly, still works: with the kit's settings, not the folder's,
        # and without pytest-timeout, which would end the kernel.
        own = ["-c", str(cells.folder / "pytest.ini"), f"--rootdir={cells.folder}"]
        addopts = (*own, *_IPYTEST_ARGS, "-p", "no:timeout")
        ipytest.autoconfig(run_in_thread=True, addopts=addopts, raise_on_error=False)
        _runner = cells
    shell.register_magic_function(_ipytest_magic, "cell", "ipytest")


def _ipytest_magic(line: str, cell: str) -> None:
    """``%%ipytest [pytest options]``: run the cell, then the tests it defines."""
    import ipytest
    from IPython import get_ipython

    module = sys.modules["__main__"]
    args = shlex.split(line)
    ipytest.clean(module=module)
    get_ipython().run_cell(cell)
    if _runner is None:
        ipytest.run(*args, module=module)
    else:
        _runner.run(module, args)


_ipytest_magic._ipython_magic_no_var_expand = True  # type: ignore[attr-defined]


def _cells_only(excinfo: pytest.ExceptionInfo[BaseException]) -> Any:
    """Keep the traceback entries of notebook cells: the learner's code, not the machinery."""
    return excinfo.traceback.filter(lambda entry: is_cell_file(entry.path))


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
    if excinfo is not None and _unmarked_async(item, excinfo):
        text = _missing_marker(item)
    elif excinfo is not None and _cells_only(excinfo):
        text = _plain(excinfo.getrepr(style="long", tbfilter=_cells_only))
    elif excinfo is not None:
        lines = [f"{excinfo.typename}: {excinfo.value}".rstrip()]
        text = "\n".join("E   " + line for line in "\n".join(lines).splitlines())
    else:
        text = _plain(report.longrepr)
    report.longrepr = clean_text(text)
    return report


def _unmarked_async(item: pytest.Item, excinfo: pytest.ExceptionInfo[BaseException]) -> bool:
    """Whether pytest refused an ``async def`` test that no one asked pytest-asyncio to run."""
    return (
        isinstance(excinfo.value, pytest.fail.Exception)
        and str(excinfo.value).startswith(_ASYNC_UNSUPPORTED)
        and item.get_closest_marker("asyncio") is None
        and item.config.pluginmanager.has_plugin("asyncio")
    )


def _missing_marker(item: pytest.Item) -> str:
    """What is missing when an ``async def`` test has no ``@pytest.mark.asyncio``: the marker."""
    name = getattr(item, "originalname", item.name)
    lines = [
        f"{name} is an `async def` test without `@pytest.mark.asyncio`, so nothing ran it.",
        "pytest-asyncio is installed, but in strict mode (the kit's setting) it runs only the "
        "async tests marked for it.",
        f'Add `@pytest.mark.asyncio` (or `@pytest.mark.asyncio(loop_factories=["virtual"])`) '
        f"on the line above `async def {name}`.",
    ]
    return "\n".join("E   " + line for text in lines for line in wrap(text).splitlines())


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
