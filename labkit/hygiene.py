"""Task hygiene: catch tasks left pending, exceptions never retrieved, coroutines never awaited.

These three bugs are silent in asyncio: a fire-and-forget task outlives its test (and may be
garbage-collected mid-flight), a failed task's exception only reaches a log line when the task
is collected, and a forgotten ``await`` only prints a ``RuntimeWarning``. A :class:`TaskTracker`
turns each into a test failure that names the place the task or coroutine was created.

It uses asyncio's public hooks only: a task factory (records each task's creation stack), the
loop's exception handler (receives "exception was never retrieved"), coroutine origin tracking
(``sys.set_coroutine_origin_tracking_depth``) and the ``warnings`` machinery. It works on any
loop: asyncio's, uvloop and :class:`labkit.VirtualTimeLoop`.

In pytest, turn it on per test with ``@pytest.mark.labkit_hygiene`` or for a whole suite with
the ini option ``labkit_hygiene = true``; the ``task_tracker`` fixture gives the test its
tracker. A task left pending by the test body fails the test itself (so ``xfail`` and ``-x``
treat it as an assertion); one a fixture left behind fails at teardown.

Example::

    async with labkit.TaskTracker():
        await handle(request)    # calls asyncio.create_task(audit(request), name="audit")
    # HygieneError: task hygiene: 1 problem
    #   task 'audit' is still pending: nobody awaited it or cancelled it
    #       waiting at service.py:30 in audit: await db.write(entry)
    #       created at
    #           service.py:21 in handle: asyncio.create_task(audit(request), name="audit")
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import re
import sys
import threading
import warnings
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, cast

from labkit._stacks import (
    Raw,
    file_label,
    format_stack,
    is_machinery,
    locations,
    raw_stack,
    task_label,
    waiting_at,
)
from labkit.cancellation import force_cancel
from labkit.trace import Location

__all__ = ["HygieneError", "HygieneProblem", "TaskTracker"]

_UNAWAITED = re.compile(r"coroutine '([^']*)' was never awaited")
_NEVER_RETRIEVED = "exception was never retrieved"
_ORIGIN_ATTRIBUTE = "_labkit_origin"
# Frames CPython records where each coroutine is created: the creating line and two callers.
# Deeper costs more than the task itself (each frame's line number is computed on creation).
_ORIGIN_DEPTH = 3


@dataclass(frozen=True)
class HygieneProblem:
    """One hygiene failure: what went wrong, with which task or coroutine, created where."""

    kind: str
    """``"pending"``, ``"unretrieved"`` or ``"unawaited"``."""
    subject: str
    """``task 'audit'``, ``task running audit()`` or ``coroutine 'send_email'``."""
    detail: str
    """What happened to it, in words."""
    created_at: tuple[Location, ...]
    """Where it was created, most recent call last (your code only)."""
    at: str = ""
    """Where a pending task waits (``waiting at ...``) or a failed one raised (``raised at``)."""

    def __str__(self) -> str:
        stack = format_stack(self.created_at, "        ")
        at = f"\n    {self.at}" if self.at else ""
        return f"{self.subject} {self.detail}{at}\n    created at\n{stack}"


class HygieneError(AssertionError):
    """A test left tasks pending, dropped a task's exception or never awaited a coroutine."""

    def __init__(self, problems: list[HygieneProblem]) -> None:
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        body = "\n".join(f"  {problem}".replace("\n", "\n  ") for problem in problems)
        super().__init__(f"task hygiene: {count}\n{body}")
        self.problems = problems


class _TrackedTask(asyncio.Task[Any]):
    """asyncio's Task with room for its creation stack (the C Task has no ``__dict__``)."""

    def set_name(self, value: object) -> None:
        # CPython 3.13.0 to 3.13.2 call set_name(None) on every task a factory made (CPython
        # gh-130033), which names each unnamed task 'None': keep asyncio's 'Task-N' instead.
        if value is not None:
            super().set_name(value)


# A loop that runs eager tasks (3.12+) keeps doing so while tracked: the tracker makes them.
_EAGER_FACTORY: Any = None
_EAGER_TRACKED: Any = None
if sys.version_info >= (3, 12):
    _EAGER_FACTORY = asyncio.eager_task_factory
    _EAGER_TRACKED = asyncio.create_eager_task_factory(_TrackedTask)


def _raised_at(error: BaseException) -> str:
    tb = error.__traceback__
    place: Location | None = None
    import linecache

    while tb is not None:
        code = tb.tb_frame.f_code
        if not is_machinery(code.co_filename):
            line = linecache.getline(code.co_filename, tb.tb_lineno).strip()
            place = Location(file_label(code.co_filename), tb.tb_lineno, code.co_qualname, line)
        tb = tb.tb_next
    return f"raised at {place}" if place is not None else ""


class TaskTracker:
    """Track the tasks and coroutines created on a loop, and fail on any left in a bad state.

    Installed (``async with TaskTracker():`` on the running loop, ``with
    TaskTracker(loop):`` around ``loop.run_until_complete``, or :meth:`install` /
    :meth:`finish` by hand), it records every task created on the loop with the stack that
    created it. On exit it fails with :class:`HygieneError` on

    * a task still pending: nobody awaited it or cancelled it (a fire-and-forget task);
    * a task or future whose exception nobody retrieved ("exception was never retrieved");
    * a coroutine that was created and never awaited.

    Pending tasks are checked the moment the block ends, without sleeping "to let cleanup
    happen": code that needs a delay before its tasks are done has not awaited its own
    cleanup. After the check, leftover tasks are cancelled and awaited so they cannot leak
    into the next test. While installed, the objects that existed before are frozen out of the
    garbage collector (``gc.freeze``), so the collection at the end, which makes dropped tasks
    and coroutines report, scans only what was created meanwhile.

    Example::

        async with labkit.TaskTracker() as tracker:
            task = asyncio.create_task(worker(), name="worker")
            ...
            assert tracker.pending() == [task]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, *, depth: int = 6) -> None:
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"depth must be a number of stack frames >= 1, got {depth!r}")
        self.depth = depth
        self._loop = loop
        self._installed = False
        self._origins: weakref.WeakKeyDictionary[asyncio.Future[Any], tuple[Raw, ...]] = (
            weakref.WeakKeyDictionary()
        )
        self._numbers: weakref.WeakKeyDictionary[asyncio.Future[Any], int] = (
            weakref.WeakKeyDictionary()
        )
        self._created = 0
        self._problems: list[HygieneProblem] = []
        self._previous_factory: Any = None
        self._previous_handler: Any = None
        self._previous_depth = 0
        self._thread = 0
        self._warnings: warnings.catch_warnings[list[warnings.WarningMessage]] | None = None
        self._caught: list[warnings.WarningMessage] = []
        self._froze = False

    # -- installing ---------------------------------------------------------------------------

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> TaskTracker:
        """Start tracking on ``loop`` (default: the one given to the constructor, else running).

        Call it from the thread that runs the loop. Pair it with :meth:`finish`.
        """
        if self._installed:
            raise RuntimeError("this TaskTracker is already installed; use one per test")
        loop = loop or self._loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    "TaskTracker.install() needs a loop: pass one, or use "
                    "`async with TaskTracker():` inside a coroutine"
                ) from None
        self._loop = loop
        self._previous_factory = loop.get_task_factory()
        loop.set_task_factory(cast(Any, self._factory))  # its stub differs per Python version
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._handler)
        self._thread = threading.get_ident()
        self._previous_depth = sys.get_coroutine_origin_tracking_depth()
        sys.set_coroutine_origin_tracking_depth(max(self._previous_depth, _ORIGIN_DEPTH))
        # Objects older than the tracker are frozen out of the collector, so the collection in
        # finish() only scans what the test created: milliseconds instead of a full-heap pass.
        self._froze = gc.get_freeze_count() == 0
        if self._froze:
            gc.freeze()
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        warnings.filterwarnings("always", message=_UNAWAITED.pattern, category=RuntimeWarning)
        self._installed = True
        return self

    def _factory(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Future[Any]:
        raw = raw_stack(sys._getframe(1), self.depth)
        task: asyncio.Future[Any]
        previous = self._previous_factory
        if previous is not None and previous is _EAGER_FACTORY:
            task = _EAGER_TRACKED(loop, coro, **kwargs)
        elif previous is not None:
            task = previous(loop, coro, **kwargs)
        else:
            task = _TrackedTask(coro, loop=loop, **kwargs)
        try:
            setattr(task, _ORIGIN_ATTRIBUTE, raw)
        except AttributeError:
            pass
        self._created += 1
        self._origins[task] = raw
        self._numbers[task] = self._created
        return task

    def _handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        future = context.get("future")
        error = context.get("exception")
        if _NEVER_RETRIEVED not in message or future is None or error is None:
            previous = self._previous_handler
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        raw = getattr(future, _ORIGIN_ATTRIBUTE, None) or self._origins.get(future, ())
        raised = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        detail = f"raised {raised}, and nobody retrieved the exception"
        self._problems.append(
            HygieneProblem(
                "unretrieved",
                task_label(future),
                detail,
                locations(raw, self.depth),
                _raised_at(error),
            )
        )

    # -- looking ------------------------------------------------------------------------------

    @property
    def tasks(self) -> list[asyncio.Task[Any]]:
        """Every task created since :meth:`install` that is still alive, oldest first."""
        return [t for t in list(self._origins) if isinstance(t, asyncio.Task)]

    def pending(self) -> list[asyncio.Task[Any]]:
        """The tracked tasks that are not done yet, oldest first, except the one asking."""
        try:
            me = asyncio.current_task()
        except RuntimeError:  # not called from a coroutine
            me = None
        return [t for t in self.tasks if not t.done() and t is not me]

    def mark(self) -> int:
        """How many tasks were created while tracking so far: a bookmark for :meth:`check`.

        Example::

            mark = tracker.mark()
            await handle(request)
            assert tracker.check(since=mark) == []
        """
        return self._created

    def origin(self, task: asyncio.Future[Any]) -> tuple[Location, ...]:
        """Where a tracked task was created (your code only, most recent call last)."""
        raw = getattr(task, _ORIGIN_ATTRIBUTE, None) or self._origins.get(task, ())
        return locations(raw, self.depth)

    # -- finishing ----------------------------------------------------------------------------

    def _pending_problems(
        self, exclude: asyncio.Task[Any] | None = None, since: int = 0
    ) -> tuple[list[HygieneProblem], list[asyncio.Task[Any]]]:
        pending = [
            t
            for t in self.tasks
            if not t.done() and t is not exclude and self._numbers.get(t, 0) > since
        ]
        problems = []
        for task in pending:
            if task.cancelling():
                what = "was cancelled but nobody awaited it, so its cleanup has not run"
            else:
                what = "is still pending: nobody awaited it or cancelled it"
            problems.append(
                HygieneProblem(
                    "pending", task_label(task), what, self.origin(task), waiting_at(task)
                )
            )
        return problems, pending

    def _late_problems(self) -> list[HygieneProblem]:
        """Collect garbage (so dropped tasks report); take the problems found since last time."""
        gc.collect()
        problems, self._problems = self._problems, []
        others: list[warnings.WarningMessage] = []
        for message in self._caught:
            found = _UNAWAITED.match(str(message.message))
            if found and issubclass(message.category, RuntimeWarning):
                origin = getattr(message.source, "cr_origin", None) or ()
                problems.append(
                    HygieneProblem(
                        "unawaited",
                        f"coroutine {found.group(1)!r}",
                        "was never awaited",
                        locations(tuple(origin), self.depth),
                    )
                )
            else:
                others.append(message)
        self._caught[:] = others  # the list the warnings machinery appends to
        return problems

    def _uninstall(self) -> list[HygieneProblem]:
        """Restore every hook (after a last collection); the late problems."""
        loop = self._loop
        assert loop is not None
        problems = self._late_problems()
        if self._froze:
            gc.unfreeze()
            self._froze = False
        if loop.get_exception_handler() == self._handler:
            loop.set_exception_handler(self._previous_handler)
        if threading.get_ident() == self._thread:
            sys.set_coroutine_origin_tracking_depth(self._previous_depth)
        caught, self._caught = self._caught, []
        if self._warnings is not None:
            self._warnings.__exit__(None, None, None)
            self._warnings = None
        for message in caught:
            warnings.warn_explicit(
                message.message,
                message.category,
                message.filename,
                message.lineno,
                source=message.source,
            )
        self._installed = False
        return problems

    def _stop_tracking(self) -> None:
        loop = self._loop
        assert loop is not None
        if loop.get_task_factory() == self._factory:
            loop.set_task_factory(self._previous_factory)

    def check(self, *, since: int = 0) -> list[HygieneProblem]:
        """Every problem found so far, and keep tracking; call it from outside the loop.

        Tasks created after the :meth:`mark` ``since`` that are still pending are problems;
        they are then cancelled and run to their end on the (stopped) loop, so each problem
        is reported once. So are exceptions nobody retrieved and coroutines never awaited,
        found so far. This is what the pytest plugin calls when the test body returns.

        Example::

            mark = tracker.mark()
            loop.run_until_complete(handle(request))
            assert tracker.check(since=mark) == []
        """
        if not self._installed:
            raise RuntimeError("this TaskTracker is not installed; call install() first")
        loop = self._loop
        assert loop is not None
        problems, pending = self._pending_problems(since=since)
        if pending and not loop.is_closed() and not loop.is_running():
            for task in pending:
                task.cancel()
            stubborn = loop.run_until_complete(_reap(pending))
            problems = _note_stubborn(problems, pending, stubborn)
        return problems + self._late_problems()

    def finish(self) -> list[HygieneProblem]:
        """Stop tracking (from outside the loop) and return every problem found.

        Leftover tasks are cancelled and run to their end on the (stopped) loop first.
        """
        if not self._installed:
            raise RuntimeError("this TaskTracker is not installed; call install() first")
        self._stop_tracking()
        return self.check() + self._uninstall()

    async def afinish(self) -> list[HygieneProblem]:
        """Stop tracking (from a task on the loop) and return every problem found."""
        if not self._installed:
            raise RuntimeError("this TaskTracker is not installed; call install() first")
        self._stop_tracking()
        problems, pending = self._pending_problems(exclude=asyncio.current_task())
        for task in pending:
            task.cancel()
        stubborn = await _reap(pending)
        return _note_stubborn(problems, pending, stubborn) + self._uninstall()

    def __enter__(self) -> TaskTracker:
        return self.install()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        _raise(self.finish(), exc)

    async def __aenter__(self) -> TaskTracker:
        return self.install(asyncio.get_running_loop())

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        _raise(await self.afinish(), exc)

    def __repr__(self) -> str:
        state = "installed" if self._installed else "not installed"
        return f"<TaskTracker {state}: {len(self.tasks)} live task(s)>"


async def _reap(tasks: list[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """Wait for cancelled leftovers and mark their outcomes retrieved (no log noise); end
    those that swallow the cancellation with :func:`labkit.force_cancel`, and return them."""
    if not tasks:
        return []
    await asyncio.wait(tasks, timeout=1.0)
    stubborn = [task for task in tasks if not task.done()]
    for task in stubborn:
        try:
            await force_cancel(task)
        except RuntimeError:
            pass  # it catches GeneratorExit too: left to the loop's shutdown
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()
    return stubborn


def _note_stubborn(
    problems: list[HygieneProblem],
    pending: list[asyncio.Task[Any]],
    stubborn: list[asyncio.Task[Any]],
) -> list[HygieneProblem]:
    """The pending problems, those of tasks that swallowed the cleanup's cancellation marked."""
    if not stubborn:
        return problems
    by_task = dict(zip(pending, problems, strict=False))
    for task in stubborn:
        problem = by_task.get(task)
        if problem is not None:
            by_task[task] = dataclasses.replace(
                problem,
                detail=problem.detail + "; cancelled, it caught CancelledError and kept waiting "
                "(a swallowed cancellation), so labkit.force_cancel ended it",
            )
    return [by_task.get(task, problem) for task, problem in zip(pending, problems, strict=False)]


def _raise(problems: list[HygieneProblem], exc: BaseException | None) -> None:
    if not problems:
        return
    error = HygieneError(problems)
    if exc is None:
        raise error
    exc.add_note(f"(and labkit.TaskTracker found problems) {error}")
