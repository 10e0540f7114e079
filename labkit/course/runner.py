"""The ``%%ipytest`` runner: a cell's tests in a worker thread, fast, bounded, and interruptible.

The kernel's main thread already runs an event loop, so pytest runs in a worker thread, where
pytest-asyncio can start loops of its own. :class:`CellRunner` runs it there in a way that a
learner can rely on:

* **Its own configuration.** The run reads the settings labkit ships (:data:`PYTEST_INI`,
  written to a private folder in the system's temporary directory, which is also the run's
  rootdir), never the ``pyproject.toml`` or ``pytest.ini`` of the folder the notebook sits in,
  and no module file lands next to the notebook.
* **A time limit per test that leaves the kernel alive.** pytest-timeout ends the whole process
  when a test outlives its limit in a thread; it is not loaded here. Instead a test that runs
  longer than the limit (:data:`DEFAULT_TIME_LIMIT`, ``setup(time_limit=...)``,
  ``@pytest.mark.timeout(seconds)`` or ``%%ipytest --timeout=seconds``) fails with the place
  where it was, and the next test runs.
* **Interrupt stops the test.** Kernel → Interrupt raises ``KeyboardInterrupt`` in the main
  thread, which waits for the worker; the runner passes it on to the running test, which fails
  with where it was, the run stops, and the cell ends in error (so "Run All" stops too).
* **Fast.** pytest starts afresh for every cell (a fresh ``Config`` is what keeps one cell's
  options, fixtures and plugins' state out of the next), but without what made that slow: the
  installed plugins are found once per kernel and registered by their entry-point names (pytest
  would scan every installed distribution for each cell), and the objects that existed before
  the run are frozen out of the garbage collector's way (``gc.freeze``) while it lasts, because
  pytest collects garbage twice per session and the kernel holds a large heap. A test that
  counts on ``gc.collect()`` to free a reference cycle made before the run (outside the test)
  sees it freed at the next collection after the run instead.

How a test is stopped, in order, each step only if the previous one did not end it: the tasks
of the loop the test runs on are cancelled (after their await chains are recorded for the
report); then the exception is raised in the worker thread itself (which also ends a busy loop in
Python code); last, a test blocked in a call that Python cannot interrupt from another thread
(``time.sleep``, a lock, a socket without timeout) is left behind with a message that says so.

Example::

    runner = CellRunner(PYTEST_ARGS, plugins=[notebook_plugin], time_limit=30)
    runner.run(sys.modules["__main__"], ["--tb=short"])
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import ctypes
import functools
import gc
import importlib.metadata
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import types
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from labkit._stacks import format_stack, locations, raw_stack
from labkit.course.labels import clean_text, wrap
from labkit.deadlock import describe_task

__all__ = [
    "DEFAULT_TIME_LIMIT",
    "PYTEST_INI",
    "SKIPPED_PLUGINS",
    "CellRunner",
    "CellStopped",
    "installed_plugins",
]

#: Real seconds a test of a notebook cell may run before it is stopped (``setup(time_limit=)``).
DEFAULT_TIME_LIMIT = 30.0

#: The pytest configuration of every ``%%ipytest`` run; the run never reads the folder's own.
PYTEST_INI = """\
# pytest settings of the %%ipytest cells of a labkit notebook (labkit.course.runner), so that a
# notebook behaves the same wherever it is opened: no project's pyproject.toml applies here.
[pytest]
addopts = --strict-markers
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
filterwarnings =
    error::pytest.PytestUnraisableExceptionWarning
"""

#: Installed pytest plugins (by module) that a cell never loads, and why.
SKIPPED_PLUGINS: dict[str, str] = {
    "pytest_timeout": "it ends the whole kernel when a test runs too long in a thread; the "
    "runner's own time limit (setup(time_limit=...), @pytest.mark.timeout) replaces it",
    "nbval.plugin": "it checks .ipynb files, which a cell's run never collects, and importing "
    "it (nbformat, jsonschema) would cost the kernel's first test cell about a second",
}

# Seconds each way of stopping a test gets before the next, harsher one is tried.
_CANCEL_GRACE = 1.0
_RAISE_GRACE = 2.0
_MAX_TASKS_SHOWN = 8
_POLL = 0.1
_FOLDER_PREFIX = "labkit-cells-"
_LOOP_CODES = frozenset(
    {asyncio.BaseEventLoop.run_forever.__code__, asyncio.BaseEventLoop.run_until_complete.__code__}
)
_RUNNER_RUN = asyncio.Runner.run.__code__
_MODULE_KEY = re.compile(r"^[A-Z]+$")

Reason = Literal["timeout", "interrupt"]


class CellStopped(KeyboardInterrupt):
    """The cell's run was interrupted, or left a test it could not stop: the cell ends in error.

    It derives from ``KeyboardInterrupt`` so that "Run All" stops at this cell, as after any
    interrupt; IPython shows its one-line message instead of a traceback.

    Example::

        try:
            runner.run(module)
        except CellStopped as stopped:
            print(stopped)
    """

    def _render_traceback_(self) -> list[str]:
        return [f"KeyboardInterrupt: {self}"]


class _Stopped(BaseException):
    """Raised inside the worker thread to end a test that cancelling its tasks did not end."""


class Timeout(Exception):
    """A test ran past its real-time limit and was stopped (not exported: reports name it)."""


class Interrupted(Exception):
    """Kernel → Interrupt stopped a test (not exported: reports name it)."""


@functools.cache
def installed_plugins() -> tuple[tuple[str, object], ...]:
    """The installed pytest plugins (entry-point name, plugin), found once per process.

    pytest's own autoload reads the metadata of every installed distribution for each run,
    which costs more than the rest of a small cell's run; a kernel's installed packages do not
    change between two cells. :data:`SKIPPED_PLUGINS` are left out.

    Example::

        names = [name for name, _plugin in installed_plugins()]   # ["asyncio", "labkit", ...]
    """
    found: list[tuple[str, object]] = []
    seen: set[str] = set()
    for entry in importlib.metadata.entry_points(group="pytest11"):
        module = entry.value.partition(":")[0].strip()
        if entry.name in seen or module in SKIPPED_PLUGINS:
            continue
        seen.add(entry.name)
        try:
            found.append((entry.name, entry.load()))
        except Exception as exc:
            print(
                f"labkit: the installed pytest plugin {entry.name!r} ({module}) cannot be "
                f"loaded, so notebook cells run without it: {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
    return tuple(found)


class _InstalledPlugins:
    """Registers :func:`installed_plugins` under their entry-point names, as autoload does.

    The names matter: ``%%ipytest -p no:asyncio`` blocks a plugin by that name.
    """

    def __init__(self, plugins: Sequence[tuple[str, object]]) -> None:
        self._plugins = plugins

    def pytest_addhooks(self, pluginmanager: pytest.PytestPluginManager) -> None:
        for name, plugin in self._plugins:
            if not pluginmanager.is_blocked(name) and not pluginmanager.is_registered(plugin):
                pluginmanager.register(plugin, name)


class CellRunner:
    """Runs the tests of a notebook module with pytest, one run per cell.

    ``args`` are passed to every run, before the cell's own (the magic line); ``plugins`` are
    registered in every run; ``time_limit`` is the real-time limit per test, in seconds (0: none);
    ``columns`` is the width of pytest's report; ``folder`` is another runner's folder to share
    (a new private one by default).

    Example::

        runner = CellRunner(["-q"], time_limit=30)
        exit_code = runner.run(sys.modules["__main__"])
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        plugins: Sequence[object] = (),
        *,
        time_limit: float = DEFAULT_TIME_LIMIT,
        columns: int = 100,
        folder: Path | None = None,
    ) -> None:
        if not isinstance(time_limit, (int, float)) or time_limit < 0:
            raise ValueError(
                f"time_limit must be a number of seconds >= 0 (0: no limit), got {time_limit!r}"
            )
        self.args = tuple(args)
        self.plugins = tuple(plugins)
        self.time_limit = float(time_limit)
        self.columns = columns
        self._folder: Path | None = folder

    @property
    def folder(self) -> Path:
        """The runner's private folder: the pytest configuration and the runs' module files."""
        if self._folder is None or not self._folder.is_dir():
            _remove_stale_folders()
            folder = Path(tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}{os.getpid()}-"))
            (folder / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            self._folder = folder
        return self._folder

    def arguments(self, module_path: Path, line: Sequence[str] = ()) -> list[str]:
        """The command line of one run: the runner's own settings, ``args``, the cell's ``line``.

        As in ipytest, ``{MODULE}`` in the line stands for the cell's module and ``{test_x}``
        for its test ``test_x``; the module is added at the end unless the line names it.
        """
        folder = module_path.parent
        names = _ModuleNames(str(module_path))
        line = [arg.format_map(names) for arg in line]
        own = [
            "-c",
            str(folder / "pytest.ini"),
            f"--rootdir={folder}",
            "--disable-plugin-autoload",
        ]
        named = any(
            not arg.startswith("-") and arg.startswith(str(module_path)) and prev not in _VALUED
            for prev, arg in zip(["", *line], line, strict=False)
        )
        return [*own, *self.args, *line, *([] if named else ["--", str(module_path)])]

    def run(self, module: types.ModuleType, line: Sequence[str] = ()) -> int:
        """Run the tests defined in ``module`` (the notebook's ``__main__``); pytest's exit code.

        Raises :class:`CellStopped` after printing pytest's report when Kernel → Interrupt
        stopped the run, or when a test could not be stopped.
        """
        name = f"t_{uuid.uuid4().hex}"
        path = self.folder / f"{name}.py"
        path.write_text("", encoding="utf-8")
        args = self.arguments(path, line)
        plugins = [*self.plugins, _InstalledPlugins(installed_plugins())]
        missing = object()
        saved_file = module.__dict__.get("__file__", missing)
        sys.modules[name] = module
        module.__file__ = str(path)
        saved_columns = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = str(self.columns)  # pytest's width, as ipytest sets it
        try:
            return _Run(self.time_limit).execute(args, plugins)
        finally:
            if saved_columns is None:
                os.environ.pop("COLUMNS", None)
            else:
                os.environ["COLUMNS"] = saved_columns
            if saved_file is missing:
                module.__dict__.pop("__file__", None)
            else:
                module.__file__ = saved_file
            if sys.modules.get(name) is module:
                del sys.modules[name]
            path.unlink(missing_ok=True)


_VALUED = frozenset({"-k", "-m", "--deselect", "-p", "-c", "-o", "-W"})


class _ModuleNames(dict[str, str]):
    """``{MODULE}`` is the cell's module file, ``{test_x}`` its test ``test_x`` (ipytest's keys)."""

    def __init__(self, module: str) -> None:
        super().__init__(MODULE=module)

    def __missing__(self, key: str) -> str:
        if _MODULE_KEY.fullmatch(key):
            raise KeyError(f"%%ipytest knows {{MODULE}} and {{test_name}}, not {{{key}}}")
        return f"{self['MODULE']}::{key}"


def _remove_stale_folders() -> None:
    """Remove the folders of runners whose kernel died without cleaning up (killed, crashed)."""
    root = Path(tempfile.gettempdir())
    for folder in root.glob(f"{_FOLDER_PREFIX}*-*"):
        pid = folder.name[len(_FOLDER_PREFIX) :].partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, and belongs to someone else
    return True


@dataclass
class _Phase:
    """The test phase the worker is in: setup, call or teardown of one item."""

    item: pytest.Item
    when: str
    token: int
    deadline: float
    limit: float


@dataclass
class _Stop:
    """A request to stop the worker's test: why, which phase, how far it has gone."""

    reason: Reason
    phase: _Phase | None
    step: int = 0
    next_at: float = 0.0
    where: list[str] = field(default_factory=list)


class _Run:
    """One run of pytest for one cell: the worker thread, and the plugin that watches it."""

    def __init__(self, time_limit: float) -> None:
        self.time_limit = time_limit
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.exit_code: int = int(pytest.ExitCode.INTERNAL_ERROR)
        self.crash: BaseException | None = None
        self.worker: threading.Thread | None = None
        self.finished = False
        self.phase: _Phase | None = None
        self.stop: _Stop | None = None
        self.stopped: dict[int, _Stop] = {}
        self.interrupted = False
        self.abandoned = False
        self.pending = False
        self.config: pytest.Config | None = None
        self.session: pytest.Session | None = None
        self.item_deadline = 0.0
        self.item_limit = 0.0
        self._tokens = 0
        self._stdout = sys.stdout

    # -- the kernel's main thread -------------------------------------------------------------

    def execute(self, args: list[str], plugins: list[object]) -> int:
        context = contextvars.copy_context()  # the worker's output goes to this cell
        worker = threading.Thread(
            target=context.run, args=(self._work, args, plugins), name="labkit-cell", daemon=True
        )
        self.worker = worker
        worker.start()
        interrupts = 0
        abandoned = False
        while not abandoned:
            try:
                if self.done.wait(self._wait()):
                    break
                abandoned = self._tick()
            except KeyboardInterrupt:
                interrupts += 1
                abandoned = self._interrupt(urgent=interrupts > 1)
        if abandoned:
            self._abandon()
        if self.interrupted or abandoned:
            what = "left a test running" if abandoned else "stopped the tests"
            raise CellStopped(f"Kernel → Interrupt {what}" if not abandoned else what)
        return self.exit_code

    def _wait(self) -> float:
        """Seconds until the next deadline, at most _POLL (the worker may enter a test)."""
        with self.lock:
            if self.stop is not None:
                due = self.stop.next_at
            elif self.phase is not None and self.phase.limit:
                due = self.phase.deadline
            else:
                return _POLL
        return min(_POLL, max(0.0, due - time.monotonic()))

    def _tick(self) -> bool:
        """Start or advance a stop when a deadline has passed; True: give the test up."""
        now = time.monotonic()
        with self.lock:
            if self.finished:
                return False
            stop = self.stop
            if stop is None:
                phase = self.phase
                if phase is None or not phase.limit or now < phase.deadline:
                    return False
                stop = self.stop = _Stop("timeout", phase)
            elif now < stop.next_at:
                return False
            return self._advance(stop, now)

    def _interrupt(self, *, urgent: bool) -> bool:
        now = time.monotonic()
        with self.lock:
            self.interrupted = True
            if self.finished:
                return False
            stop = self.stop
            if stop is None or stop.reason != "interrupt":
                stop = self.stop = _Stop("interrupt", self.phase)
            elif not urgent:
                return False
            return self._advance(stop, now)

    def _advance(self, stop: _Stop, now: float) -> bool:
        """The next way of stopping the test (called with the lock held); True: none is left."""
        if stop.step == 0:
            stop.step = 1
            loop = self._worker_loop() if stop.phase is not None else None
            if loop is not None:
                try:
                    loop.call_soon_threadsafe(self._cancel_tasks, loop, stop)
                except RuntimeError:
                    pass  # the loop is closed: raising in the thread is what is left
                else:
                    stop.next_at = now + _CANCEL_GRACE
                    return False
        if stop.step == 1:
            stop.step = 2
            if not stop.where:
                stop.where = self._worker_stack()
            self._raise_in_worker(_Stopped if stop.phase is not None else KeyboardInterrupt)
            stop.next_at = now + _RAISE_GRACE
            return False
        return True

    def _worker_loop(self) -> asyncio.AbstractEventLoop | None:
        """The innermost event loop running in the worker thread, if any."""
        worker = self.worker
        frame = sys._current_frames().get(worker.ident) if worker and worker.ident else None
        while frame is not None:
            code = frame.f_code
            watched = code in _LOOP_CODES or code is _RUNNER_RUN
            owner = frame.f_locals.get("self") if watched else None
            if isinstance(owner, asyncio.AbstractEventLoop):
                return owner
            if isinstance(owner, asyncio.Runner):
                try:
                    return owner.get_loop()
                except RuntimeError:
                    return None
            frame = frame.f_back
        return None

    def _worker_stack(self) -> list[str]:
        worker = self.worker
        frame = sys._current_frames().get(worker.ident) if worker and worker.ident else None
        if frame is None:
            return []
        return [clean_text("running at\n" + format_stack(locations(raw_stack(frame, 8), 8)))]

    def _raise_in_worker(self, kind: type[BaseException]) -> None:
        worker = self.worker
        if worker is None or worker.ident is None:
            return
        # The C API's documented way to raise in another thread (asynchronously, at its next
        # bytecode): what lets a test in a busy `while True:` loop be stopped at all.
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(worker.ident), ctypes.py_object(kind)
        )
        self.pending = True

    def _clear_pending(self) -> None:
        """Withdraw an exception not yet raised in the worker (called in it, with the lock).

        A run given up keeps it: should the blocking call ever return, the test ends there.
        """
        if self.pending and not self.abandoned:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.get_ident()), None)
            self.pending = False

    def _abandon(self) -> None:
        """Give up a test that cannot be stopped: tell the learner, give the kernel its streams."""
        with self.lock:
            stop = self.stop
            self.abandoned = True
        capture = self.config.pluginmanager.get_plugin("capturemanager") if self.config else None
        try:
            if capture is not None:
                capture.suspend_global_capture(in_=True)
        except Exception:
            pass
        gc.unfreeze()
        name = stop.phase.item.name if stop is not None and stop.phase is not None else "pytest"
        where = " ".join(" ".join(stop.where).split()) if stop is not None else ""
        print(
            f"labkit: {name} could not be stopped: it is blocked in a call that Python cannot "
            f"interrupt from another thread{f' ({where})' if where else ''}. It goes on in the "
            "background, and should the call return, its report appears here; Kernel → Restart "
            "Kernel ends it (your variables are kept until then).",
            file=self._stdout,
            flush=True,
        )

    # -- the worker thread --------------------------------------------------------------------

    def _work(self, args: list[str], plugins: list[object]) -> None:
        gc.freeze()
        try:
            self.exit_code = int(pytest.main(args, plugins=[*plugins, self]))
        except BaseException as exc:  # an interrupt that reached pytest's own code
            self.crash = exc
            self.exit_code = int(pytest.ExitCode.INTERRUPTED)
        while True:
            try:
                with self.lock:
                    self.finished = True
                    self._clear_pending()
                break
            except BaseException:  # a stop that arrived on the way out
                continue
        gc.unfreeze()
        self.done.set()

    def _cancel_tasks(self, loop: asyncio.AbstractEventLoop, stop: _Stop) -> None:
        """Record where each task waits, then cancel them all (runs on the test's loop)."""
        tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
        where = [clean_text(describe_task(task)) for task in tasks[:_MAX_TASKS_SHOWN]]
        if len(tasks) > _MAX_TASKS_SHOWN:
            where.append(f"... and {len(tasks) - _MAX_TASKS_SHOWN} more task(s)")
        with self.lock:
            if self.stop is not stop or stop.step > 1:
                return  # the test ended meanwhile, or a harsher way is under way
            stop.where = where or stop.where
        for task in tasks:
            task.cancel("stopped by the notebook")

    def _enter(self, item: pytest.Item, when: str) -> int:
        with self.lock:
            self._tokens += 1
            self.phase = _Phase(item, when, self._tokens, self.item_deadline, self.item_limit)
            return self._tokens

    def _leave(self, token: int) -> None:
        with self.lock:
            if self.phase is not None and self.phase.token == token:
                self.phase = None
            stop = self.stop
            if stop is not None and stop.phase is not None and stop.phase.token == token:
                self.stopped[token] = stop
                self.stop = None
                if stop.reason == "timeout":
                    self.item_deadline = time.monotonic() + self.item_limit
            self._clear_pending()

    def _replacement(self, token: int, error: BaseException) -> BaseException | None:
        """What a phase stopped by the runner fails with instead of what stopping it raised."""
        with self.lock:
            stop = self.stop
            if stop is None or stop.phase is None or stop.phase.token != token:
                return None
            self.stopped[token] = stop
            self.stop = None
            self._clear_pending()
            if stop.reason == "timeout":
                self.item_deadline = time.monotonic() + self.item_limit
        message = _message(stop)
        if self.session is not None and self.abandoned:
            self.session.shouldstop = "the notebook had given this run up"
        if stop.reason == "interrupt":
            if self.session is not None:
                self.session.shouldstop = "Kernel → Interrupt stopped the tests"
            return Interrupted(message)
        return Timeout(message)

    def _phase(self, item: pytest.Item, when: str) -> Generator[None, Any, Any]:
        token = self._enter(item, when)
        try:
            return (yield)
        except BaseException as error:
            replacement = self._replacement(token, error)
            if replacement is None:
                raise
            raise replacement from None
        finally:
            self._leave(token)

    # -- the plugin's hooks (in the worker thread) --------------------------------------------

    def pytest_addoption(self, parser: pytest.Parser) -> None:
        parser.prog = "%%ipytest"
        try:
            parser.addoption(
                "--timeout",
                dest="labkit_timeout",
                type=float,
                default=None,
                metavar="SECONDS",
                help="real-time limit of each test of this cell (default: setup(time_limit=...)); "
                "0: none",
            )
        except ValueError:
            pass  # pytest-timeout was loaded after all (PYTEST_PLUGINS): its option stays

    def pytest_configure(self, config: pytest.Config) -> None:
        self.config = config
        config.addinivalue_line(
            "markers",
            "timeout(seconds): this test's real-time limit in a notebook cell; past it the test "
            "fails with where it was, and the kernel keeps running",
        )

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, Any, Any]:
        limit = self._limit(item)
        with self.lock:
            self.item_limit = limit
            self.item_deadline = time.monotonic() + limit
        try:
            return (yield)
        finally:
            with self.lock:
                self.phase = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, Any, Any]:
        return (yield from self._phase(item, "setup"))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, Any]:
        return (yield from self._phase(item, "call"))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, Any, Any]:
        return (yield from self._phase(item, "teardown"))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, Any]:
        report = yield
        excinfo = call.excinfo
        if excinfo is not None and isinstance(excinfo.value, _Stopped):
            # Raised on the way out of a phase, after the phase itself was done with.
            stop = next(reversed(self.stopped.values()), None)
            text = _message(stop) if stop is not None else "the test was stopped"
            report.longrepr = "\n".join("E   " + line for line in text.splitlines())
        return report

    def _limit(self, item: pytest.Item) -> float:
        marker = item.get_closest_marker("timeout")
        if marker is not None:
            value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
            if isinstance(value, (int, float)) and value >= 0:
                return float(value)
        option = item.config.getoption("labkit_timeout", default=None)
        if isinstance(option, (int, float)) and option >= 0:
            return float(option)
        return self.time_limit


def _message(stop: _Stop) -> str:
    """The failure text of a stopped test: what happened, where it was, what to do."""
    name = stop.phase.item.name if stop.phase is not None else "the test"
    when = ""
    if stop.phase is not None and stop.phase.when != "call":
        when = f" (in its {stop.phase.when})"
    if stop.reason == "timeout":
        limit = stop.phase.limit if stop.phase is not None else 0.0
        head = (
            f"{name} was still running after {limit:g} s of real time{when}, so it was stopped; "
            "the kernel keeps running."
        )
        tail = (
            "Is it waiting on real time? On the virtual loop "
            '(@pytest.mark.asyncio(loop_factories=["virtual"])) sleeps and timeouts take none. '
            "The limit is setup(time_limit=...), or @pytest.mark.timeout(seconds) on the test."
        )
    else:
        head = f"{name} was stopped by Kernel → Interrupt{when}."
        tail = ""
    where = "\n".join(stop.where) if stop.where else "(no frame of your code on the stack)"
    return "\n".join(part for part in (wrap(head), where, wrap(tail)) if part)
