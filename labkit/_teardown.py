"""The plugin's checks of what a test did: task hygiene, the watchdog and resource trackers.

What happens while the test body runs is part of the test's own outcome: when the body
returns, while the test's loop is still alive, the checks look at the tasks the body started,
the resources it acquired and the blocking calls the watchdog saw, and fail the test right
there, in its call phase. So ``xfail``, ``-x``, reruns and junit treat a finding as they treat
an assertion in the body. When the body failed already, the findings become a note on that
failure: one report, not two. What fixtures leave behind (tasks they started, resources they
acquired in setup, blocking in their setup or teardown) is theirs, and fails at teardown,
as a fixture's error does.

Private to labkit's pytest plugin. A check is active only when the test asks for it: the
``labkit_hygiene`` / ``labkit_watchdog`` markers and ini options, or labkit's own
``task_tracker``, ``watchdog`` and ``resource_tracker`` fixtures being the ones resolved (a
project fixture of the same name keeps its meaning).
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from pytest_asyncio import is_async_test

from labkit._stacks import task_label, waiting_at, waiting_on
from labkit.cancellation import force_cancel
from labkit.deadlock import DeadlockError
from labkit.hygiene import HygieneError, TaskTracker
from labkit.loop import VirtualTimeLoop
from labkit.tracker import ResourceTracker
from labkit.watchdog import BlockingCallError, Watchdog

_T = TypeVar("_T")
DEFAULT_THRESHOLD = 0.1
# pytest-asyncio's fixtures that own each test's loop: `_<scope>_scoped_runner`.
RUNNERS = frozenset(
    f"_{scope}_scoped_runner" for scope in ("function", "class", "module", "package", "session")
)
# Virtual seconds a task left at loop teardown may take to end once cancelled; the clock jumps
# straight there unless real work is in flight, so this never costs real time by itself.
_SHUTDOWN_LIMIT = 86_400.0
# Tasks a DeadlockError of the test body already named as swallowing their cancellation.
_DIAGNOSED: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


@dataclass
class Checks:
    """The checks one test asked for, and where its call phase began and ended."""

    loop: asyncio.AbstractEventLoop | None = None
    tracker: TaskTracker | None = None
    dog: Watchdog | None = None
    resources: list[ResourceTracker] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    block_marks: tuple[int, int] | None = None
    resource_marks: dict[int, tuple[int, int]] = field(default_factory=dict)
    # The tasks pending when the body returned, kept alive until the loop's teardown cancels
    # them: one nobody references would otherwise be garbage-collected mid-flight, at any
    # moment, its `finally:` running (and releasing resources) in the middle of a report.
    alive: list[asyncio.Task[Any]] = field(default_factory=list)


CHECKS = pytest.StashKey[Checks]()
RAISED = pytest.StashKey[BaseException]()


# -- settings --------------------------------------------------------------------------------


def _enabled(marker: Any) -> bool:
    if marker.args:
        return bool(marker.args[0])
    return bool(marker.kwargs.get("enabled", True))


def _ini_bool(value: object) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _threshold(value: object, where: str) -> float | None:
    if value is None or value is False or str(value).strip().lower() in {"", "off", "false", "no"}:
        return None
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(
            f"{where}: the watchdog threshold must be a number of real seconds > 0 "
            f"(e.g. 0.1), or off; got {value!r}"
        )
    return seconds


def settings(item: pytest.Item) -> tuple[bool, float | None, bool]:
    """(hygiene on?, watchdog threshold or None, asked for by a marker?) from markers and ini."""
    config = item.config
    asked = False
    hygiene = _ini_bool(config.getini("labkit_hygiene"))
    marker = item.get_closest_marker("labkit_hygiene")
    if marker is not None:
        hygiene = _enabled(marker)
        asked = hygiene
    threshold = _threshold(config.getini("labkit_watchdog"), "the labkit_watchdog ini option")
    marker = item.get_closest_marker("labkit_watchdog")
    if marker is not None:
        threshold = _marker_threshold(item, marker)
        asked = asked or threshold is not None
    return hygiene, threshold, asked


def _marker_threshold(item: pytest.Item, marker: Any) -> float | None:
    value = marker.kwargs.get("threshold", marker.args[0] if marker.args else DEFAULT_THRESHOLD)
    return _threshold(value, f"{item.nodeid}: labkit_watchdog marker")


def watchable(item: pytest.Item) -> bool:
    """Whether the test runs on a loop of pytest-asyncio's that the checks can look at."""
    return bool(is_async_test(item)) and item.get_closest_marker("labkit_explore") is None


def loop_of(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoop:
    """The loop pytest-asyncio runs this async test on (its runner for the test's loop scope)."""
    marker = request.node.get_closest_marker("asyncio")
    scope = None
    if marker is not None:
        scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")
    scope = scope or request.config.getini("asyncio_default_test_loop_scope") or "function"
    runner = request.getfixturevalue(f"_{scope}_scoped_runner")
    loop: asyncio.AbstractEventLoop = runner.get_loop()
    return loop


def _or_fail(compute: Callable[[], _T]) -> _T:
    """compute(), or a one-line failure naming the bad setting (raised outside the except, so
    pytest shows no chained traceback)."""
    try:
        return compute()
    except ValueError as error:
        problem = str(error)
    pytest.fail(problem, pytrace=False)


def _not_watchable(item: pytest.Item, what: str) -> str:
    return (
        f"{item.nodeid}: labkit's {what} can only watch the loop of an async test run by "
        "pytest-asyncio (@pytest.mark.asyncio), not a sync or labkit_explore test; use "
        "`async with labkit.TaskTracker()` / `labkit.Watchdog()` inside it instead"
    )


# -- setting up ------------------------------------------------------------------------------


def guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Generator behind the plugin's autouse fixture: the markers' checks, and the teardown.

    Nothing happens for a test that asks for no check. The teardown reports what fixtures
    left behind, in one failure with what the ``resource_tracker`` fixture found (two
    fixtures failing at teardown would make pytest print an exception group instead).
    """
    item = request.node
    hygiene, threshold, asked = _or_fail(lambda: settings(item))
    checks = Checks()
    item.stash[CHECKS] = checks
    if hygiene or threshold is not None:
        if watchable(item):
            checks.loop = loop_of(request)
            if hygiene:
                checks.tracker = TaskTracker(checks.loop).install()
            if threshold is not None:
                checks.dog = Watchdog(threshold, loop=checks.loop).start()
        elif asked:
            pytest.fail(_not_watchable(item, "task hygiene and watchdog"), pytrace=False)
    yield None
    messages = list(checks.reports)
    if checks.dog is not None:
        blocks = checks.dog.stop()
        if checks.block_marks is not None:
            start, end = checks.block_marks
            blocks = blocks[:start] + blocks[end:]  # those of the call were reported there
        if blocks:
            messages.append(str(BlockingCallError(blocks)))
    if checks.tracker is not None:
        problems = checks.tracker.finish()
        if problems:
            messages.append(str(HygieneError(problems)))
    checks.alive.clear()
    if messages:
        pytest.fail("\n".join(messages), pytrace=False)


def task_tracker(request: pytest.FixtureRequest) -> TaskTracker:
    """The ``task_tracker`` fixture: the test's tracker, installed now if no marker did it."""
    checks: Checks = request.node.stash[CHECKS]
    if checks.tracker is None:
        if not watchable(request.node):
            pytest.fail(_not_watchable(request.node, "the task_tracker fixture"), pytrace=False)
        checks.loop = checks.loop or loop_of(request)
        checks.tracker = TaskTracker(checks.loop).install()
    return checks.tracker


def watchdog(request: pytest.FixtureRequest) -> Watchdog:
    """The ``watchdog`` fixture: the test's watchdog, started now if no marker did it."""
    checks: Checks = request.node.stash[CHECKS]
    if checks.dog is None:
        item = request.node
        if not watchable(item):
            pytest.fail(_not_watchable(item, "the watchdog fixture"), pytrace=False)
        marker = item.get_closest_marker("labkit_watchdog")
        threshold = _or_fail(lambda: _marker_threshold(item, marker) if marker else None)
        checks.loop = checks.loop or loop_of(request)
        checks.dog = Watchdog(threshold or DEFAULT_THRESHOLD, loop=checks.loop).start()
    return checks.dog


def resource_tracker(request: pytest.FixtureRequest) -> Iterator[ResourceTracker]:
    """Generator behind the ``resource_tracker`` fixture.

    Asking for the test's loop runner here makes pytest tear this fixture down first, so its
    teardown check also runs while the loop is alive.
    """
    checks: Checks = request.node.stash[CHECKS]
    loop = checks.loop
    if loop is None and watchable(request.node):
        loop = checks.loop = loop_of(request)
    tracker = ResourceTracker()
    checks.resources.append(tracker)
    yield tracker
    start, end = checks.resource_marks.get(id(tracker), (tracker.mark(), tracker.mark()))
    found = [tracker.error(loop=loop, before=start), tracker.error(loop=loop, since=end)]
    checks.reports.extend(str(error) for error in found if error is not None)


# -- the call phase --------------------------------------------------------------------------


def call(item: pytest.Item) -> Iterator[None]:
    """Generator behind the plugin's ``pytest_runtest_call`` wrapper: the body's verdicts."""
    checks = item.stash.get(CHECKS, None)
    if checks is None or not (checks.tracker or checks.dog or checks.resources):
        yield None
        return
    task_start = checks.tracker.mark() if checks.tracker is not None else 0
    block_start = len(checks.dog.blocks) if checks.dog is not None else 0
    resource_start = {id(tracker): tracker.mark() for tracker in checks.resources}
    try:
        yield None
    except BaseException as failure:
        found = _verdicts(checks, task_start, block_start, resource_start)
        if found is not None:
            failure.add_note(f"(and labkit's checks found more) {found}")
        raise
    found = _verdicts(checks, task_start, block_start, resource_start)
    if found is not None:
        item.stash[RAISED] = found
        raise found


def _verdicts(
    checks: Checks, task_start: int, block_start: int, resource_start: dict[int, int]
) -> AssertionError | None:
    """What the body left: one error, of the check's own type when only one check found some
    (a plain AssertionError listing them all otherwise)."""
    if checks.loop is not None and not checks.loop.is_closed():
        checks.alive = [task for task in asyncio.all_tasks(checks.loop) if not task.done()]
    errors: list[AssertionError] = []
    for tracker in checks.resources:
        start = resource_start.get(id(tracker), 0)
        error = tracker.error(loop=checks.loop, since=start)
        checks.resource_marks[id(tracker)] = (start, tracker.mark())
        if error is not None:
            errors.append(error)
    if checks.dog is not None:
        blocks = checks.dog.blocks
        checks.block_marks = (block_start, len(blocks))
        if blocks[block_start:]:
            errors.append(BlockingCallError(blocks[block_start:]))
    if checks.tracker is not None:
        problems = checks.tracker.check(since=task_start)
        if problems:
            errors.append(HygieneError(problems))
    if not errors:
        return None
    if len(errors) == 1:
        return errors[0]
    return AssertionError("\n".join(str(error) for error in errors))


def raised_by_checks(item: pytest.Item, error: BaseException) -> bool:
    """Whether the checks raised this error after the body: its message is the whole report."""
    return item.stash.get(RAISED, None) is error


# -- loop teardown -----------------------------------------------------------------------------


def on_runner_setup(fixturedef: Any, runner: object) -> None:
    """Ahead of a runner's own teardown, end the tasks left on its virtual loop (see below)."""
    if fixturedef.argname not in RUNNERS or not isinstance(runner, asyncio.Runner):
        return
    loop = runner.get_loop()
    if isinstance(loop, VirtualTimeLoop):
        fixturedef.addfinalizer(lambda: close_out(loop))


def close_out(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks left on a virtual loop before its runner closes it, as asyncio would.

    asyncio's runner does the same, then waits for ever for a task that swallows its
    cancellation: on the virtual loop that is a DeadlockError, which pytest-asyncio reports
    as "you closed the event loop". Here such a task is ended with labkit.force_cancel, and
    reported (unless the test's own DeadlockError named it already); so are the tasks that
    waited for it, silently. Exceptions the other tasks raise once cancelled reach the loop's
    exception handler, as in asyncio's runner.
    """
    if loop.is_closed() or loop.is_running():
        return
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    if not pending:
        return
    for task in pending:
        task.cancel()
    _wait(loop, pending)
    stubborn = [task for task in pending if not task.done()]
    for task in pending:
        if task.done() and not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during asyncio.run() shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
    # The root causes: stubborn tasks that do not merely wait for another stubborn task.
    roots = [task for task in stubborn if waiting_on(task) not in stubborn]
    manual = isinstance(loop, VirtualTimeLoop) and not loop.autojump
    why = (
        "its clean-up waits for a clock nobody advances (autojump=False)"
        if manual
        else "it caught CancelledError and kept waiting"
    )
    reports = [
        f"{task_label(task)} did not end when cancelled at loop teardown: {why} "
        f"({waiting_at(task)}); labkit.force_cancel ended it"
        for task in roots
        if task not in _DIAGNOSED
    ]
    for task in [*roots, *(task for task in stubborn if task not in roots)]:
        if task.done():
            continue
        try:
            loop.run_until_complete(force_cancel(task))
        except RuntimeError as error:  # it ignores GeneratorExit too
            reports.append(str(error))
    for task in stubborn:
        if task.done() and not task.cancelled():
            task.exception()  # ended by force_cancel: retrieved, never logged
    if reports:
        pytest.fail("\n".join(reports), pytrace=False)


def _wait(loop: asyncio.AbstractEventLoop, tasks: list[asyncio.Task[Any]]) -> None:
    try:
        loop.run_until_complete(asyncio.wait(tasks, timeout=_SHUTDOWN_LIMIT))
    except DeadlockError:  # a manual clock (autojump=False): the timeout cannot fire either
        pass


def diagnosed(error: BaseException) -> None:
    """Remember the tasks a DeadlockError named as swallowing their cancellation."""
    if isinstance(error, DeadlockError):
        _DIAGNOSED.update(task for task in error.tasks if task.cancelling())
