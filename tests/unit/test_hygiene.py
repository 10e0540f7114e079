"""labkit.TaskTracker: tasks left pending, exceptions never retrieved, coroutines never awaited."""

from __future__ import annotations

import asyncio
import inspect
import warnings
from typing import Any

import pytest

import labkit
from labkit import HygieneError, TaskTracker

pytest_plugins = ["pytester"]

ALL_LOOPS = pytest.mark.asyncio(loop_factories=["asyncio", "uvloop", "virtual"])


def line_of(func: Any, text: str) -> int:
    """The line number of the first line of ``func`` containing ``text``."""
    lines, first = inspect.getsourcelines(func)
    return first + next(i for i, line in enumerate(lines) if text in line)


# -- the code under test: each bug next to its fix ---------------------------------------------


async def write_audit(log: list[str], request: str) -> None:
    await asyncio.sleep(0.01)
    log.append(request)


async def handle_fire_and_forget(log: list[str], request: str) -> str:
    asyncio.create_task(write_audit(log, request), name="audit")  # noqa: RUF006 (the bug)
    return "ok"


async def handle_awaited(log: list[str], request: str) -> str:
    async with asyncio.TaskGroup() as group:
        group.create_task(write_audit(log, request), name="audit")
    return "ok"


async def flaky_refresh() -> None:
    await asyncio.sleep(0)
    raise ConnectionError("cache refresh failed")


async def start_refresh_dropped() -> None:
    task = asyncio.create_task(flaky_refresh(), name="refresh")
    await asyncio.wait([task])  # waits for it to end, without looking at the outcome
    del task  # its exception is never looked at


async def start_refresh_checked() -> None:
    task = asyncio.create_task(flaky_refresh(), name="refresh")
    await asyncio.sleep(0.01)
    with pytest.raises(ConnectionError):
        await task


async def send_email(outbox: list[str], user: str) -> None:
    outbox.append(user)


async def notify_forgets_await(outbox: list[str], user: str) -> None:
    send_email(outbox, user)  # type: ignore[unused-coroutine]  # the seeded bug


async def notify_fixed(outbox: list[str], user: str) -> None:
    await send_email(outbox, user)


# -- the three bugs, caught; their fixes, passing ----------------------------------------------


@ALL_LOOPS
async def test_fire_and_forget_task_is_named_with_its_creation_site() -> None:
    with pytest.raises(HygieneError) as caught:
        async with TaskTracker():
            assert await handle_fire_and_forget([], "GET /") == "ok"
    [problem] = caught.value.problems
    assert problem.kind == "pending"
    text = str(caught.value)
    assert text.startswith("task hygiene: 1 problem\n  task 'audit' is still pending")
    assert "created at" in text
    line = line_of(handle_fire_and_forget, "create_task")
    assert (
        f"test_hygiene.py:{line} in handle_fire_and_forget: "
        'asyncio.create_task(write_audit(log, request), name="audit")' in text
    )


@ALL_LOOPS
async def test_awaited_task_passes() -> None:
    log: list[str] = []
    async with TaskTracker():
        assert await handle_awaited(log, "GET /") == "ok"
    assert log == ["GET /"]


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_pending_task_shows_where_it_waits_and_is_cancelled_afterwards() -> None:
    seen: list[asyncio.Task[Any]] = []

    async def body() -> None:
        async with TaskTracker() as tracker:
            await handle_fire_and_forget([], "GET /")
            await asyncio.sleep(0)
            seen.extend(tracker.pending())

    with pytest.raises(HygieneError) as caught:
        await body()
    [task] = seen
    line = line_of(write_audit, "sleep")
    waiting = f"waiting at test_hygiene.py:{line} in write_audit: await asyncio.sleep(0.01)"
    assert waiting in str(caught.value)
    assert task.cancelled()


@ALL_LOOPS
async def test_unretrieved_exception_is_reported() -> None:
    with pytest.raises(HygieneError) as caught:
        async with TaskTracker():
            await start_refresh_dropped()
    [problem] = caught.value.problems
    assert problem.kind == "unretrieved"
    assert str(problem).startswith(
        "task 'refresh' raised ConnectionError: cache refresh failed, and nobody retrieved "
        "the exception\n    raised at "
        f"test_hygiene.py:{line_of(flaky_refresh, 'raise')} in flaky_refresh: "
        'raise ConnectionError("cache refresh failed")\n    created at'
    )
    assert "in start_refresh_dropped: task = asyncio.create_task" in str(problem)


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_unretrieved_exception_in_a_reference_cycle_is_reported() -> None:
    async def fails_holding_itself() -> None:
        me = asyncio.current_task()  # task -> exception -> traceback -> frame -> task
        raise RuntimeError(f"{me is not None}")

    async def start() -> None:
        await asyncio.wait([asyncio.create_task(fails_holding_itself(), name="cyclic")])

    with pytest.raises(HygieneError, match="task 'cyclic' raised RuntimeError: True"):
        async with TaskTracker():
            await start()


@ALL_LOOPS
async def test_retrieved_exception_passes() -> None:
    async with TaskTracker():
        await start_refresh_checked()


@ALL_LOOPS
async def test_coroutine_never_awaited_is_reported_with_its_creation_site() -> None:
    outbox: list[str] = []
    with pytest.raises(HygieneError) as caught:
        async with TaskTracker():
            await notify_forgets_await(outbox, "ada")
    [problem] = caught.value.problems
    assert problem.kind == "unawaited"
    assert str(problem).startswith("coroutine 'send_email' was never awaited\n    created at")
    assert "in notify_forgets_await: send_email(outbox, user)" in str(problem)
    assert outbox == []


@ALL_LOOPS
async def test_awaited_coroutine_passes() -> None:
    outbox: list[str] = []
    async with TaskTracker():
        await notify_fixed(outbox, "ada")
    assert outbox == ["ada"]


# -- details -------------------------------------------------------------------------------------


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_cancelled_but_not_awaited_says_so() -> None:
    async def body() -> None:
        async with TaskTracker():
            task = asyncio.create_task(asyncio.sleep(10), name="sleeper")
            await asyncio.sleep(0)
            task.cancel()

    with pytest.raises(HygieneError, match="was cancelled but nobody awaited it"):
        await body()


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_pending_tasks_without_user_frames_still_say_where_they_are() -> None:
    async def body() -> None:
        async with TaskTracker():
            asyncio.create_task(asyncio.sleep(10), name="started")  # noqa: RUF006
            await asyncio.sleep(0)
            asyncio.create_task(asyncio.sleep(10), name="unstarted")  # noqa: RUF006

    with pytest.raises(HygieneError) as caught:
        await body()
    assert [(p.subject, p.at) for p in caught.value.problems] == [
        ("task 'started'", "waiting in sleep()"),
        ("task 'unstarted'", "not started yet"),
    ]


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_unnamed_tasks_are_labelled_by_their_coroutine() -> None:
    with pytest.raises(HygieneError, match=r"task running write_audit\(\) is still pending"):
        async with TaskTracker():
            asyncio.create_task(write_audit([], "x"))  # noqa: RUF006


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_tracker_lists_tasks_and_their_origin() -> None:
    async with TaskTracker() as tracker:
        task = asyncio.create_task(asyncio.sleep(1), name="one")
        assert tracker.tasks == [task]
        assert tracker.pending() == [task]
        [where] = tracker.origin(task)
        assert where.function == "test_tracker_lists_tasks_and_their_origin"
        assert where.code.startswith("task = asyncio.create_task(")
        await task
        assert tracker.pending() == []


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_hooks_are_chained_and_restored() -> None:
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    made: list[str] = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        seen.append(context["message"])

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_exception_handler(handler)
    loop.set_task_factory(factory)  # type: ignore[arg-type]
    try:
        async with TaskTracker() as tracker:
            loop.call_exception_handler({"message": "something else"})
            task = asyncio.create_task(send_email([], "x"), name="mail")
            await task
            assert tracker.origin(task)[-1].code.startswith("task = asyncio.create_task(")
        assert seen == ["something else"]
        assert made == ["send_email"]
        assert loop.get_exception_handler() is handler
        assert loop.get_task_factory() is factory
    finally:
        loop.set_exception_handler(None)
        loop.set_task_factory(None)


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_other_warnings_still_reach_the_caller() -> None:
    with pytest.warns(UserWarning, match="unrelated"):
        async with TaskTracker():
            warnings.warn("unrelated", UserWarning, stacklevel=1)


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_a_body_error_is_not_masked() -> None:
    async def body() -> None:
        async with TaskTracker():
            asyncio.create_task(asyncio.sleep(10), name="left")  # noqa: RUF006
            raise KeyError("body")

    with pytest.raises(KeyError) as caught:
        await body()
    assert any("task 'left' is still pending" in note for note in caught.value.__notes__)


def test_sync_form_around_run_until_complete() -> None:
    loop = labkit.new_virtual_loop()
    try:
        with (
            pytest.raises(HygieneError, match="task 'audit' is still pending"),
            TaskTracker(loop),
        ):
            loop.run_until_complete(handle_fire_and_forget([], "x"))
        with TaskTracker(loop):
            loop.run_until_complete(handle_awaited([], "x"))
    finally:
        loop.close()


def test_install_needs_a_loop_and_only_once() -> None:
    with pytest.raises(RuntimeError, match="needs a loop"):
        TaskTracker().install()
    loop = labkit.new_virtual_loop()
    try:
        tracker = TaskTracker(loop).install()
        with pytest.raises(RuntimeError, match="already installed"):
            tracker.install()
        assert tracker.finish() == []
        with pytest.raises(RuntimeError, match="not installed"):
            tracker.finish()
    finally:
        loop.close()


# -- pytest: marker, ini option, fixture ---------------------------------------------------------

SUITE = """
import asyncio
import pytest

async def audit():
    await asyncio.sleep(1)

async def handle():
    asyncio.create_task(audit(), name="audit")

@pytest.mark.asyncio
{marker}
async def test_leaky():
    await handle()

@pytest.mark.asyncio
async def test_clean():
    await asyncio.sleep(0)
"""

INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
"""


def test_marker_opts_a_test_in(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(SUITE.format(marker="@pytest.mark.labkit_hygiene"))
    result = pytester.runpytest("-q", "--labkit-loop=virtual")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_leaky _*",
            "task hygiene: 1 problem",
            "  task 'audit' is still pending: nobody awaited it or cancelled it",
            "*waiting at test_marker_opts_a_test_in.py:5 in audit: await asyncio.sleep(1)",
            "*test_marker_opts_a_test_in.py:8 in handle: "
            'asyncio.create_task(audit(), name="audit")',
        ]
    )
    assert "Task was destroyed" not in result.stdout.str() + result.stderr.str()


def test_without_marker_nothing_is_checked(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(SUITE.format(marker=""))
    pytester.runpytest("-q", "--labkit-loop=virtual").assert_outcomes(passed=2)


def test_ini_option_covers_the_suite_and_a_test_can_opt_out(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI + "labkit_hygiene = true\n")
    pytester.makepyfile(SUITE.format(marker=""))
    pytester.runpytest("-q").assert_outcomes(passed=1, failed=1)
    pytester.makepyfile(SUITE.format(marker="@pytest.mark.labkit_hygiene(False)"))
    pytester.runpytest("-q").assert_outcomes(passed=2)


def test_fixture_gives_the_tracker_and_turns_hygiene_on(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
import asyncio
import pytest

@pytest.mark.asyncio
async def test_uses_tracker(task_tracker):
    task = asyncio.create_task(asyncio.sleep(0), name="quick")
    assert task_tracker.pending() == [task]
    await task
    assert task_tracker.pending() == []

@pytest.mark.asyncio
async def test_forgets(task_tracker):
    async def boom():
        raise ValueError("lost")
    asyncio.create_task(boom(), name="boom")
    await asyncio.sleep(0.1)
"""
    )
    result = pytester.runpytest("-q", "--labkit-loop=virtual")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*task 'boom' raised ValueError: lost, and nobody retrieved*"])


def test_marker_on_a_sync_test_is_a_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
import pytest

@pytest.mark.labkit_hygiene
def test_sync():
    pass
"""
    )
    result = pytester.runpytest("-q")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*watch the loop of an async test*"])


def test_module_scoped_loop_is_tracked(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
import asyncio
import pytest

pytestmark = pytest.mark.asyncio(loop_scope="module")

@pytest.mark.labkit_hygiene
async def test_leaky():
    asyncio.create_task(asyncio.sleep(1), name="stray")

async def test_next():
    await asyncio.sleep(0)
"""
    )
    result = pytester.runpytest("-q", "--labkit-loop=virtual")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*task 'stray' is still pending*"])
