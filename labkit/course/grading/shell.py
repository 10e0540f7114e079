"""The grading shell: runs notebook cells inside the sandbox the way JupyterLab's kernel does.

An IPython shell whose cells run inside a running asyncio loop in the main thread, as under
ipykernel: ``asyncio.get_running_loop()`` works in a cell, ``asyncio.run()`` refuses as it does
in JupyterLab, top-level ``await`` runs on that loop, magics work, and ``%matplotlib inline``
selects matplotlib's inline backend (the bare ``InteractiveShell`` raises ``NotImplementedError:
Implement enable_gui`` there; ipykernel's shell implements it, and so does this one).

``%%ipytest`` cells define their tests without running pytest: grading calls tests directly,
so pytest's report would only cost time. The cell does what ipytest's magic does to the
namespace: it deletes the names matching ipytest's clean pattern (``[Tt]est*``) defined by
earlier cells, then runs the cell's code. (ipytest's magic then runs pytest on the tests
defined; ``tests/unit/test_shell.py`` checks that every lesson's namespace ends up the same
either way.)

Each cell has a wall-time limit (``SIGALRM`` raises :class:`CellTimeout` in it) and its output
goes to a bounded sink. The runner also keeps, after each of the lesson's own cells, the
objects those cells bound to *protected* names (see :class:`~labkit.course.grading.plan.Plan`).

Example::

    runner = CellRunner(cell_limit=60)
    runner.start_loop()
    assert runner.run_cell("x = await asyncio.sleep(0, 41) + 1") == ""   # after import asyncio
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import io
import re
import signal
import sys
from collections.abc import Iterator
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

__all__ = ["IPYTEST_CLEAN", "CellRunner", "CellTimeout", "GradingShell", "describe"]

IPYTEST_CLEAN = "[Tt]est*"
_MAX_OUTPUT = 4000
_MAX_ERROR = 600
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class CellTimeout(BaseException):
    """Raised in the main thread when one cell runs past its time limit."""


class GradingShell(InteractiveShell):
    """An IPython shell with ipykernel's GUI hook: ``%matplotlib inline`` works, GUIs refuse.

    Example::

        shell = GradingShell.instance()
        shell.run_line_magic("matplotlib", "inline")
    """

    def enable_gui(self, gui: str | None = None) -> None:
        """Accept the inline backend (no event loop needed); refuse desktop GUI loops."""
        if gui not in (None, "inline"):
            raise UsageError(f"the {gui!r} GUI event loop is not available while grading")


def _shell() -> GradingShell:
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "nocolor"
    config.InteractiveShell.xmode = "Plain"
    shell: GradingShell = GradingShell.instance(config=config)
    shell.user_ns["__name__"] = "__main__"
    return shell


class _Sink(io.TextIOBase):
    """A bounded text sink standing in for sys.stdout and sys.stderr while a cell runs."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def write(self, text: str) -> int:
        if self.size < _MAX_OUTPUT:
            self.parts.append(text[: _MAX_OUTPUT - self.size])
        self.size += len(text)
        return len(text)

    def writable(self) -> bool:
        return True

    def text(self) -> str:
        return "".join(self.parts)


class CellRunner:
    """Runs cells in one shell and one event loop, and keeps the lesson's protected objects.

    ``run_pytest=True`` leaves ``%%ipytest`` cells to ipytest's own magic (pytest runs), as in
    JupyterLab; grading uses the default, which only defines the tests.

    Example::

        runner = CellRunner(cell_limit=30)
        runner.start_loop()
        error = runner.run_cell("import asyncio\\nawait asyncio.sleep(1)")
    """

    def __init__(self, cell_limit: float, *, run_pytest: bool = False) -> None:
        self.shell = _shell()
        self.cell_limit = cell_limit
        self.run_pytest = run_pytest
        self.loop: asyncio.AbstractEventLoop | None = None
        self.protected: dict[str, Any] = {}
        self.output = ""

    @property
    def namespace(self) -> dict[str, Any]:
        """The notebook's namespace (what cells see as their globals)."""
        ns: dict[str, Any] = self.shell.user_ns
        return ns

    def start_loop(self) -> None:
        """Give this process a fresh event loop for the cells (a forked process needs its own)."""
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

    def close_loop(self) -> None:
        """Join the loop's worker threads and close it, so the process can fork safely."""
        loop = self.loop
        if loop is None:
            return
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_default_executor())
        with contextlib.suppress(Exception):
            loop.close()
        asyncio.set_event_loop(None)
        self.loop = None

    def remember(self, names: list[str]) -> None:
        """After a lesson cell ran: keep the objects it bound to these protected names."""
        for name in names:
            if name in self.namespace:
                self.protected[name] = self.namespace[name]

    def run_cell(self, source: str) -> str:
        """Run one cell; return "" or one line describing the error it stopped with."""
        assert self.loop is not None, "start_loop() first"
        sink = _Sink()
        error: BaseException | None
        with _redirected(sink), _alarm(self.cell_limit):
            try:
                error = self.loop.run_until_complete(self._cell(source))
            except CellTimeout as raised:
                error = raised
        self.output = sink.text()
        return "" if error is None else describe(error, self.cell_limit)

    async def _cell(self, source: str) -> BaseException | None:
        first, _, body = source.partition("\n")
        if first.strip().split(" ")[0] == "%%ipytest" and not self.run_pytest:
            # What ipytest's magic does to the namespace, without running pytest.
            for name in [k for k in self.namespace if fnmatch.fnmatchcase(k, IPYTEST_CLEAN)]:
                del self.namespace[name]
            source = body
        outcome = await self._execute(source)
        error: BaseException | None = outcome.error_before_exec or outcome.error_in_exec
        return error

    async def _execute(self, source: str) -> Any:
        """Run one cell the way ipykernel does: inside the running loop, in the main thread."""
        shell = self.shell
        transformed: str | None = None
        preprocessing: Any = None
        try:
            transformed = shell.transform_cell(source)  # type: ignore[no-untyped-call]
        except Exception:
            preprocessing = sys.exc_info()
        if shell.should_run_async(
            source, transformed_cell=transformed, preprocessing_exc_tuple=preprocessing
        ):
            return await shell.run_cell_async(
                source,
                store_history=True,
                silent=False,
                transformed_cell=transformed,
                preprocessing_exc_tuple=preprocessing,
            )
        return shell.run_cell(source, store_history=True, silent=False)  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def _redirected(sink: _Sink) -> Iterator[None]:
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = sink
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def fire(signum: int, frame: Any) -> None:
        raise CellTimeout

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def describe(error: BaseException, cell_limit: float) -> str:
    """One line for a person about the error a cell stopped with.

    Example::

        describe(ZeroDivisionError("division by zero"), 60)   # "ZeroDivisionError: division ..."
    """
    if isinstance(error, CellTimeout):
        return (
            f"the cell ran longer than the {cell_limit:g} s limit per cell "
            "(an endless loop, or waiting on real time?)"
        )
    if isinstance(error, SystemExit):
        return "SystemExit: the cell called sys.exit() or exit(), which a graded notebook must not"
    if isinstance(error, MemoryError):
        return "MemoryError: the cell tried to use more memory than the limit allows"
    try:
        message = _ADDRESS.sub("", str(error)).strip()
    except Exception:
        message = ""
    if len(message) > _MAX_ERROR:
        message = message[:_MAX_ERROR] + " ..."
    name = type(error).__name__
    return f"{name}: {message}" if message else name
