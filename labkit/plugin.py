"""The labkit pytest plugin: the "asyncio", "uvloop" and "virtual" loops for pytest-asyncio 1.x.

It uses pytest-asyncio's own ``pytest_asyncio_loop_factories`` hook, so one test can run under
all three loops, and ``--labkit-loop`` picks the loop for a whole suite.

Example::

    @pytest.mark.asyncio(loop_factories=["asyncio", "uvloop", "virtual"])
    async def test_timeout_fires():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.Event().wait()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

from labkit.clock import VirtualClock
from labkit.loop import new_virtual_loop
from labkit.tracker import ResourceLeakError, ResourceTracker

if TYPE_CHECKING:
    from labkit.hygiene import TaskTracker
    from labkit.watchdog import Watchdog

__all__ = ["LOOP_NAMES", "loop_factories"]

LOOP_NAMES = ("asyncio", "uvloop", "virtual")
_UVLOOP_MISSING = (
    "the 'uvloop' loop was asked for, but uvloop is not installed in this environment: "
    "`pip install uvloop` (it is part of the kit's environment; `make test` installs it), "
    "or choose --labkit-loop=asyncio / virtual"
)


def _uvloop_factory() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError as exc:
        raise RuntimeError(_UVLOOP_MISSING) from exc
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
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
        "(default: the labkit_loop ini option, else 'asyncio')",
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
        help="default loop for asyncio tests: asyncio, uvloop or virtual",
        default="asyncio",
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
    chosen = _suite_loop(config)
    if chosen not in LOOP_NAMES:
        raise pytest.UsageError(
            f"labkit_loop = {chosen!r} is not a loop labkit knows; "
            f"use one of {', '.join(LOOP_NAMES)}"
        )
    if chosen == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise pytest.UsageError(_UVLOOP_MISSING) from None
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


def _suite_loop(config: pytest.Config) -> str:
    option = config.getoption("labkit_loop", default=None)
    return str(option or config.getini("labkit_loop") or "asyncio")


@pytest.hookimpl(trylast=True)
def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]] | None:
    """All three loops for a test that names its loop_factories; else the suite's loop."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = loop_factories()
    factories["uvloop"] = _uvloop_for_pytest
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
    marker = item.get_closest_marker("asyncio")
    if marker is not None and "loop_factories" in marker.kwargs:
        return factories
    # A test that asks for the virtual clock (marker or fixture) gets the virtual loop.
    wants_clock = clock is not None or "virtual_clock" in getattr(item, "fixturenames", ())
    chosen = "virtual" if wants_clock else _suite_loop(config)
    return {chosen: factories[chosen]}


def _uvloop_for_pytest() -> asyncio.AbstractEventLoop:
    try:
        return _uvloop_factory()
    except RuntimeError:
        pass
    pytest.fail(_UVLOOP_MISSING, pytrace=False)  # outside the except: a one-line report


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> object | None:
    """Run a test marked labkit_explore under many schedules (see labkit.explore)."""
    if pyfuncitem.get_closest_marker("labkit_explore") is None:
        return None
    from labkit.explore import run_explore_marker

    return run_explore_marker(pyfuncitem)


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
    """Task hygiene and the blocking-call watchdog, for the tests that ask for them."""
    from labkit._teardown import guard

    yield from guard(request)


@pytest.fixture
def task_tracker(request: pytest.FixtureRequest, _labkit_guards: None) -> TaskTracker:
    """The running test's :class:`labkit.TaskTracker`; asking for it turns task hygiene on.

    At teardown the test fails if a task it started is still pending, a task's exception was
    never retrieved, or a coroutine was never awaited.

    Example::

        @pytest.mark.asyncio
        async def test_worker_stops(task_tracker):
            await service.stop()
            assert task_tracker.pending() == []
    """
    from labkit._teardown import GUARDS

    tracker, _dog = request.node.stash[GUARDS]
    assert tracker is not None
    return tracker  # type: ignore[no-any-return]


@pytest.fixture
def watchdog(request: pytest.FixtureRequest, _labkit_guards: None) -> Watchdog:
    """The running test's :class:`labkit.Watchdog` (threshold 0.1 s unless the marker says).

    At teardown the test fails if one callback or task step blocked the loop too long.

    Example::

        @pytest.mark.asyncio
        async def test_retry_does_not_block(watchdog):
            await fetch_with_retry(flaky)
            assert watchdog.blocks == []
    """
    from labkit._teardown import GUARDS

    _tracker, dog = request.node.stash[GUARDS]
    assert dog is not None
    return dog  # type: ignore[no-any-return]


@pytest.fixture
def resource_tracker(
    request: pytest.FixtureRequest, _labkit_guards: None
) -> Iterator[ResourceTracker]:
    """A fresh :class:`labkit.ResourceTracker`; at teardown it asserts all were released.

    In an async test the check runs while the test's loop is still alive: before
    pytest-asyncio closes it and cancels the tasks left on it. So a resource that a background
    task still holds is reported "still held", naming that task and where it waits, and one
    that only such a task's ``finally:`` would release, once cancelled at loop teardown, is a
    leak too. Its report and those of the other labkit checks at teardown (task hygiene, the
    watchdog) make one failure.

    Example::

        @pytest.mark.asyncio
        async def test_error_path_releases(resource_tracker):
            pool = Pool(track=resource_tracker)
            with pytest.raises(ValueError):
                await handle(pool, bad_request)
    """
    from pytest_asyncio import is_async_test

    from labkit._teardown import REPORTS, loop_of, watchable

    # Asking for the test's loop runner here makes pytest tear this fixture down first.
    loop = loop_of(request) if watchable(request.node, is_async_test) else None
    tracker = ResourceTracker()
    yield tracker
    try:
        tracker.assert_all_released(loop=loop)
    except ResourceLeakError as error:
        request.node.stash[REPORTS].append(str(error))
