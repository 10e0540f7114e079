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
tracker.

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
import gc
import re
import sys
import threading
import warnings
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

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
        loop.set_task_factory(self._factory)  # type: ignore[arg-type]
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
        if self._previous_factory is not None:
            task = self._previous_factory(loop, coro, **kwargs)
            try:
                setattr(task, _ORIGIN_ATTRIBUTE, raw)
            except AttributeError:
                pass
        else:
            task = _TrackedTask(coro, loop=loop, **kwargs)
            setattr(task, _ORIGIN_ATTRIBUTE, raw)
        self._origins[task] = raw
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

    def origin(self, task: asyncio.Future[Any]) -> tuple[Location, ...]:
        """Where a tracked task was created (your code only, most recent call last)."""
        raw = getattr(task, _ORIGIN_ATTRIBUTE, None) or self._origins.get(task, ())
        return locations(raw, self.depth)

    # -- finishing ----------------------------------------------------------------------------

    def _pending_problems(
        self, exclude: asyncio.Task[Any] | None = None
    ) -> tuple[list[HygieneProblem], list[asyncio.Task[Any]]]:
        pending = [t for t in self.tasks if not t.done() and t is not exclude]
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

    def _uninstall(self) -> list[HygieneProblem]:
        """Collect garbage (so dropped tasks report), restore every hook; the late problems."""
        loop = self._loop
        assert loop is not None
        gc.collect()
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
        problems = list(self._problems)
        for message in caught:
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

    def finish(self) -> list[HygieneProblem]:
        """Stop tracking (from outside the loop) and return every problem found.

        Leftover tasks are cancelled and run to their end on the (stopped) loop first.
        """
        if not self._installed:
            raise RuntimeError("this TaskTracker is not installed; call install() first")
        loop = self._loop
        assert loop is not None
        self._stop_tracking()
        problems, pending = self._pending_problems()
        if pending and not loop.is_closed() and not loop.is_running():
            for task in pending:
                task.cancel()
            loop.run_until_complete(_reap(pending))
        return problems + self._uninstall()

    async def afinish(self) -> list[HygieneProblem]:
        """Stop tracking (from a task on the loop) and return every problem found."""
        if not self._installed:
            raise RuntimeError("this TaskTracker is not installed; call install() first")
        self._stop_tracking()
        problems, pending = self._pending_problems(exclude=asyncio.current_task())
        for task in pending:
            task.cancel()
        await _reap(pending)
        return problems + self._uninstall()

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


async def _reap(tasks: list[asyncio.Task[Any]]) -> None:
    """Wait for cancelled leftovers, and mark their outcomes retrieved (no log noise)."""
    if not tasks:
        return
    await asyncio.wait(tasks, timeout=1.0)  # a task that ignores cancellation is left to the runner
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()


def _raise(problems: list[HygieneProblem], exc: BaseException | None) -> None:
    if not problems:
        return
    error = HygieneError(problems)
    if exc is None:
        raise error
    exc.add_note(f"(and labkit.TaskTracker found problems) {error}")
