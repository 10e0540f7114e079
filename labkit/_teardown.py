"""Teardown checks for the pytest plugin: task hygiene, the watchdog and the resource tracker.

Each async test that asks for one of them (a marker, an ini option or a fixture) gets them
installed on the loop pytest-asyncio runs it on, and at teardown one failure lists everything
they found: two fixtures failing separately would make pytest print an exception group of its
own internals instead.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from labkit.watchdog import BlockingCallError, Watchdog


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


def settings(request: Any) -> tuple[bool, float | None, bool]:
    """(hygiene on?, watchdog threshold or None, explicitly asked for?) for this test."""
    item = request.node
    config = request.config
    names = getattr(item, "fixturenames", ())
    asked = False
    hygiene = _ini_bool(config.getini("labkit_hygiene"))
    marker = item.get_closest_marker("labkit_hygiene")
    if marker is not None:
        hygiene = _enabled(marker)
        asked = asked or hygiene
    if "task_tracker" in names:
        hygiene = asked = True
    threshold = _threshold(config.getini("labkit_watchdog"), "the labkit_watchdog ini option")
    marker = item.get_closest_marker("labkit_watchdog")
    if marker is not None:
        value = marker.kwargs.get("threshold", marker.args[0] if marker.args else 0.1)
        threshold = _threshold(value, f"{item.nodeid}: labkit_watchdog marker")
        asked = asked or threshold is not None
    if "watchdog" in names and threshold is None:
        threshold = 0.1
    if "watchdog" in names:
        asked = True
    return hygiene, threshold, asked


def loop_of(request: Any) -> asyncio.AbstractEventLoop:
    """The loop pytest-asyncio runs this async test on (its runner for the test's loop scope)."""
    marker = request.node.get_closest_marker("asyncio")
    scope = None
    if marker is not None:
        scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")
    scope = scope or request.config.getini("asyncio_default_test_loop_scope") or "function"
    runner = request.getfixturevalue(f"_{scope}_scoped_runner")
    loop: asyncio.AbstractEventLoop = runner.get_loop()
    return loop


def guard(request: Any) -> Any:
    """Generator behind the plugin's autouse fixture: hygiene and watchdog for one test.

    It is also where every labkit teardown check reports: a check that ran earlier in the
    teardown (the ``resource_tracker`` fixture) leaves its message in the test's
    ``REPORTS``, and one failure lists them all. Two fixtures failing at teardown
    would make pytest print an exception group of its own internals instead.
    """
    import pytest
    from pytest_asyncio import is_async_test

    from labkit.hygiene import HygieneError, TaskTracker

    try:
        hygiene, threshold, asked = settings(request)
    except ValueError as error:
        problem = str(error)
    else:
        problem = ""
    if problem:
        pytest.fail(problem, pytrace=False)
    item = request.node
    reports: list[str] = []
    item.stash[REPORTS] = reports
    tracker: TaskTracker | None = None
    dog: Watchdog | None = None
    if (hygiene or threshold is not None) and not watchable(item, is_async_test):
        if asked:
            pytest.fail(
                f"{item.nodeid}: task hygiene and the watchdog watch the loop of an async test "
                "run by pytest-asyncio (@pytest.mark.asyncio), not a sync or labkit_explore test; "
                "use `async with labkit.TaskTracker()` / `labkit.Watchdog()` inside it instead",
                pytrace=False,
            )
    elif hygiene or threshold is not None:
        loop = loop_of(request)
        tracker = TaskTracker(loop).install() if hygiene else None
        dog = Watchdog(threshold, loop=loop).start() if threshold is not None else None
        item.stash[GUARDS] = (tracker, dog)
    try:
        yield None
    finally:
        messages = list(reports)
        if dog is not None:
            blocks = dog.stop()
            if blocks:
                messages.append(str(BlockingCallError(blocks)))
        if tracker is not None:
            problems = tracker.finish()
            if problems:
                messages.append(str(HygieneError(problems)))
    if messages:
        pytest.fail("\n".join(messages), pytrace=False)


def watchable(item: Any, is_async_test: Any) -> bool:
    """Whether the test runs on a loop of pytest-asyncio's that teardown checks can look at."""
    return bool(is_async_test(item)) and item.get_closest_marker("labkit_explore") is None


def _stash_key() -> Any:
    import pytest

    return pytest.StashKey[Any]()


GUARDS = _stash_key()
REPORTS = _stash_key()
