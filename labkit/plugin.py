"""The labkit pytest plugin: the "asyncio", "uvloop" and "virtual" loops for pytest-asyncio 1.x.

Installing labkit changes nothing until a suite asks for it: asyncio tests keep their loops,
and a project fixture named ``virtual_clock``, ``task_tracker``, ``watchdog`` or
``resource_tracker`` keeps its meaning (labkit reacts only when its own fixture is the one
pytest resolves). A suite asks with ``--labkit-loop=virtual`` (or the ``labkit_loop`` ini
option), a test with ``@pytest.mark.asyncio(loop_factories=[...])``, labkit's fixtures or
its markers. The loops come through pytest-asyncio's own ``pytest_asyncio_loop_factories``
hook; when the project implements that hook too, its loops stay for every test the user did
not move to one of labkit's, and the loop asked for explicitly wins over it. The pytest
header says which loop the suite runs on.

Example::

    @pytest.mark.asyncio(loop_factories=["asyncio", "uvloop", "virtual"])
    async def test_timeout_fires():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.Event().wait()
"""

from __future__ import annotations

import asyncio
import inspect
import os
import types
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from labkit import _teardown
from labkit._stacks import is_machinery
from labkit.clock import VirtualClock
from labkit.deadlock import DeadlockError, suspension_frames
from labkit.loop import new_virtual_loop
from labkit.tracker import ResourceTracker

if TYPE_CHECKING:
    from labkit.hygiene import TaskTracker
    from labkit.watchdog import Watchdog

__all__ = ["LOOP_NAMES", "loop_factories"]

LOOP_NAMES = ("asyncio", "uvloop", "virtual")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]
_UVLOOP_MISSING = (
    "the 'uvloop' loop was asked for, but uvloop is not installed in this environment: "
    "`pip install uvloop` (or `pip install labkit[uvloop]`), or choose another loop"
)
_HOOK = "pytest_asyncio_loop_factories"
# Frames a failure report skips to show the user's code first.
_INTERNAL_DIRS = tuple(
    os.path.normcase(os.path.dirname(os.path.abspath(path))) + os.sep
    for path in (asyncio.__file__, __file__, pytest_asyncio.__file__)
)


def _uvloop_factory() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError as exc:
        raise RuntimeError(_UVLOOP_MISSING) from exc
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def loop_factories() -> dict[str, LoopFactory]:
    """The loop factories the plugin offers, by name.

    Example::

        with asyncio.Runner(loop_factory=loop_factories()["virtual"]) as runner:
            runner.run(main())
    """
    return {
        "asyncio": asyncio.new_event_loop,
        "uvloop": _uvloop_factory,
        "virtual": new_virtual_loop,
    }


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("labkit")
    group.addoption(
        "--labkit-loop",
        dest="labkit_loop",
        default=None,
        choices=LOOP_NAMES,
        help="run every asyncio test without its own loop_factories under this loop "
        "(default: the labkit_loop ini option, else the loop the suite uses without labkit)",
    )
    group.addoption(
        "--labkit-seed",
        dest="labkit_seed",
        default=None,
        type=int,
        metavar="N",
        help="replay schedule N in every labkit_explore test instead of exploring "
        "(the seed comes from a failure report)",
    )
    parser.addini(
        "labkit_loop",
        help="loop for the asyncio tests without their own loop_factories: asyncio, uvloop "
        "or virtual (default: unchanged)",
        default="",
    )
    parser.addini(
        "labkit_hygiene",
        help="fail every async test that leaves a task pending, drops a task's exception or "
        "never awaits a coroutine (labkit.TaskTracker); a test opts out with "
        "@pytest.mark.labkit_hygiene(False)",
        type="bool",
        default=False,
    )
    parser.addini(
        "labkit_watchdog",
        help="fail every async test in which one callback or task step blocks the event loop "
        "for more than this many real seconds (labkit.Watchdog), e.g. 0.1; empty: off",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    chosen, _source = _suite_loop(config)
    if chosen is not None and chosen not in LOOP_NAMES:
        raise pytest.UsageError(
            f"labkit_loop = {chosen!r} is not a loop labkit knows; "
            f"use one of {', '.join(LOOP_NAMES)}"
        )
    if chosen == "uvloop" and not _uvloop_installed():
        raise pytest.UsageError(_UVLOOP_MISSING)
    config.addinivalue_line(
        "markers",
        "labkit_clock(autojump=True, start=0.0): options for the virtual loop of this test",
    )
    config.addinivalue_line(
        "markers",
        "labkit_hygiene(enabled=True): fail this async test if it leaves a task pending, drops "
        "a task's exception or never awaits a coroutine (labkit.TaskTracker)",
    )
    config.addinivalue_line(
        "markers",
        "labkit_watchdog(threshold=0.1): fail this async test if one callback or task step "
        "blocks the loop for more than threshold real seconds (labkit.Watchdog); None: off",
    )
    config.addinivalue_line(
        "markers",
        "labkit_explore(runs=100, strategy='pct', seed=0, jitter=0.0, depth=2): run this async "
        "test under many task orders (labkit.explore); --labkit-seed=N replays one",
    )
    config.pluginmanager.register(_ExploreSummary(config), "labkit-explore-summary")


def _suite_loop(config: pytest.Config) -> tuple[str | None, str]:
    """The suite's loop if the user chose one explicitly, and where they chose it."""
    option = config.getoption("labkit_loop", default=None)
    if option:
        return str(option), f"--labkit-loop={option}"
    ini = str(config.getini("labkit_loop") or "").strip()
    if ini:
        return ini, f"labkit_loop = {ini} in {config.inipath.name if config.inipath else 'ini'}"
    return None, ""


def _uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _other_hooks(hook: Any) -> list[str]:
    """Where the project's own pytest_asyncio_loop_factories are: a conftest's path, a plugin."""
    places = []
    for impl in hook.get_hookimpls():
        if impl.plugin is _this_module():
            continue
        code = getattr(impl.function, "__code__", None)
        where = code.co_filename if code is not None else impl.plugin_name
        try:
            where = os.path.relpath(where)
        except ValueError:
            pass
        places.append(where)
    return places


def _this_module() -> types.ModuleType:
    import sys

    return sys.modules[__name__]


def pytest_report_header(config: pytest.Config) -> str:
    """One line: which loop the suite's asyncio tests run on, and who chose it."""
    from labkit import __version__

    chosen, source = _suite_loop(config)
    others = _other_hooks(config.pluginmanager.hook.pytest_asyncio_loop_factories)
    theirs = f"{_HOOK} in {', '.join(others)}" if others else ""
    head = f"labkit {__version__}: asyncio tests run on"
    if chosen is not None:
        line = f"{head} the {chosen} loop ({source})"
        return line + (f", not on the loops of {theirs}" if theirs else "")
    if theirs:
        return f"{head} the loops of {theirs} (virtual time: --labkit-loop=virtual)"
    return f"{head} asyncio's own loop (virtual time: --labkit-loop=virtual)"


@pytest.hookimpl(wrapper=True)
def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Generator[None, Mapping[str, LoopFactory] | None, Mapping[str, LoopFactory] | None]:
    """labkit's loops, beside the project's own hook (whose loops stay unless asked otherwise).

    A test that names its loop_factories may pick any of them. Every other test runs on the
    loop the suite chose explicitly (--labkit-loop, labkit_loop), on the virtual loop if it
    asks for labkit's clock, and else where it would run without labkit.
    """
    theirs = yield
    ours = _our_loops(item)
    marker = item.get_closest_marker("asyncio")
    if marker is not None and "loop_factories" in marker.kwargs:
        return {**ours, **(theirs or {})}
    chosen, _source = _suite_loop(config)
    if item.get_closest_marker("labkit_clock") is not None or _uses_our(item, "virtual_clock"):
        chosen = "virtual"
    if chosen is None:
        if theirs is not None:
            return theirs
        chosen = "asyncio"
    return {chosen: ours[chosen]}


def _our_loops(item: pytest.Item) -> dict[str, LoopFactory]:
    factories = loop_factories()
    factories["uvloop"] = _uvloop_or_skip
    clock = item.get_closest_marker("labkit_clock")
    if clock is not None:
        if clock.args:
            raise pytest.UsageError(
                f"{item.nodeid}: labkit_clock takes keyword arguments only, "
                "e.g. @pytest.mark.labkit_clock(autojump=False, start=0.0)"
            )
        options: dict[str, Any] = dict(clock.kwargs)

        def configured() -> asyncio.AbstractEventLoop:
            try:
                return new_virtual_loop(**options)
            except (TypeError, ValueError) as exc:
                problem = str(exc)
            pytest.fail(f"labkit_clock marker: {problem}", pytrace=False)

        factories["virtual"] = configured
    return factories


def _uses_our(item: pytest.Item, name: str) -> bool:
    """Whether the fixture pytest resolves for ``name`` in this test is labkit's own."""
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.get(name, ()) if info is not None else ()
    # As in pytest-asyncio: the last definition is the closest, the one the test gets.
    func = getattr(definitions[-1], "func", None) if definitions else None
    return getattr(func, "__module__", None) == __name__


def _uvloop_or_skip() -> asyncio.AbstractEventLoop:
    if not _uvloop_installed():
        pytest.skip("uvloop is not installed here: `pip install uvloop` to run this variant")
    return _uvloop_factory()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> object | None:
    """Run a test marked labkit_explore under many schedules (see labkit.explore)."""
    if pyfuncitem.get_closest_marker("labkit_explore") is None:
        return None
    from labkit.explore import run_explore_marker

    return run_explore_marker(pyfuncitem)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """The checks of labkit's fixtures and markers, as part of the test's own outcome."""
    return (yield from _teardown.call(item))


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Iterator[None]:
    """Give a virtual loop's runner a teardown that survives tasks swallowing cancellation."""
    result = yield
    _teardown.on_runner_setup(fixturedef, result)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Failure reports that start with the user's code, not labkit's or asyncio's frames."""
    excinfo = call.excinfo
    if excinfo is not None:
        _teardown.diagnosed(excinfo.value)
        if not item.config.getoption("fulltrace", False):
            _user_code_first(item, excinfo)
    report = yield
    if excinfo is not None and report.failed and _teardown.raised_by_checks(item, excinfo.value):
        report.longrepr = excinfo.getrepr(style="value")
    return report


def _user_code_first(item: pytest.Item, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    error = excinfo.value
    tb: types.TracebackType | None = None
    if isinstance(error, DeadlockError):
        tb = _where_the_test_waits(item, error)
    elif type(error).__module__.startswith("labkit.") or (
        isinstance(error, AssertionError) and _internal(_last(excinfo.tb))
    ):
        tb = _without_internal_frames(excinfo.tb)
    if tb is not None:
        # pytest rebuilds its view from the raw traceback: hand it a raw one of our frames.
        excinfo.traceback = pytest.ExceptionInfo.from_exc_info((type(error), error, tb)).traceback


def _last(tb: types.TracebackType) -> types.FrameType:
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame


def _internal(frame: types.FrameType) -> bool:
    return os.path.normcase(frame.f_code.co_filename).startswith(_INTERNAL_DIRS)


def _without_internal_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback without labkit's, asyncio's and pytest-asyncio's frames; None if that
    would leave none of the user's."""
    kept: list[types.TracebackType] = []
    while tb is not None:
        if not _internal(tb.tb_frame):
            kept.append(tb)
        tb = tb.tb_next
    if not any(not is_machinery(entry.tb_frame.f_code.co_filename) for entry in kept):
        return None
    rebuilt: types.TracebackType | None = None
    for entry in reversed(kept):
        rebuilt = types.TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return rebuilt


def _where_the_test_waits(item: pytest.Item, error: DeadlockError) -> types.TracebackType | None:
    """A traceback through the frames where the test's own task is suspended, outermost first.

    A DeadlockError is raised by the loop, so its traceback holds only the loop's frames; the
    place to show is the ``await`` of the test (and of its helpers) that can never return.
    """
    obj = getattr(item, "obj", None)
    test = getattr(inspect.unwrap(obj), "__code__", None) if callable(obj) else None
    path = os.path.normcase(str(getattr(item, "path", "")))
    chains = [
        [f for f in suspension_frames(task.get_coro()) if not is_machinery(f.f_code.co_filename)]
        for task in error.tasks
    ]
    # The test's own task first; else a task waiting in the test's module.
    chosen = next((frames for frames in chains if frames and frames[0].f_code is test), None)
    if chosen is None:
        chosen = next(
            (f for f in chains if any(os.path.normcase(x.f_code.co_filename) == path for x in f)),
            None,
        )
    if not chosen:
        return None
    tb: types.TracebackType | None = None
    for frame in reversed(chosen):
        tb = types.TracebackType(tb, frame, -1, frame.f_lineno)  # -1: no column, no carets
    return tb


class _ExploreSummary:
    """With ``-v``, the line an exploration sums itself up in, under the test's result."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" or not report.passed or self.config.get_verbosity() < 1:
            return
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        for name, value in report.user_properties:
            if name == "labkit_explore":
                # Under the test's result line, left open as pytest leaves its own lines.
                reporter.write(f"\n    labkit_explore: {value}")


@pytest.fixture
def virtual_clock() -> VirtualClock:
    """The running test's virtual clock: read ``now``, ``await advance(seconds)``.

    A test that uses it without choosing its loops runs on the virtual loop.

    Example::

        @pytest.mark.asyncio
        async def test_retry_backs_off(virtual_clock):
            task = asyncio.create_task(retry())
            await virtual_clock.advance(30)
            assert virtual_clock.now == 30.0
    """
    return VirtualClock()


@pytest.fixture(autouse=True)
def _labkit_guards(request: pytest.FixtureRequest) -> Iterator[None]:
    """Task hygiene and the blocking-call watchdog, for the tests whose markers ask for them."""
    yield from _teardown.guard(request)


@pytest.fixture
def task_tracker(request: pytest.FixtureRequest, _labkit_guards: None) -> TaskTracker:
    """The running test's :class:`labkit.TaskTracker`; asking for it turns task hygiene on.

    When the test body returns, the test fails if a task it started is still pending, a
    task's exception was never retrieved, or a coroutine was never awaited.

    Example::

        @pytest.mark.asyncio
        async def test_worker_stops(task_tracker):
            await service.stop()
            assert task_tracker.pending() == []
    """
    return _teardown.task_tracker(request)


@pytest.fixture
def watchdog(request: pytest.FixtureRequest, _labkit_guards: None) -> Watchdog:
    """The running test's :class:`labkit.Watchdog` (threshold 0.1 s unless the marker says).

    When the test body returns, the test fails if one callback or task step blocked the
    loop too long meanwhile.

    Example::

        @pytest.mark.asyncio
        async def test_retry_does_not_block(watchdog):
            await fetch_with_retry(flaky)
            assert watchdog.blocks == []
    """
    return _teardown.watchdog(request)


@pytest.fixture
def resource_tracker(
    request: pytest.FixtureRequest, _labkit_guards: None
) -> Iterator[ResourceTracker]:
    """A fresh :class:`labkit.ResourceTracker`; what the test body acquired must be released.

    When the body returns, while an async test's loop is still alive (before pytest-asyncio
    closes it and cancels the tasks left on it), everything the body acquired must have been
    released: a resource a background task still holds is reported "still held", naming that
    task and where it waits. What fixtures acquired around the body is checked after their
    teardown. Its report and those of the other labkit checks make one failure.

    Example::

        @pytest.mark.asyncio
        async def test_error_path_releases(resource_tracker):
            pool = Pool(track=resource_tracker)
            with pytest.raises(ValueError):
                await handle(pool, bad_request)
    """
    yield from _teardown.resource_tracker(request)
