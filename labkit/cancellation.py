"""The cancel-at-every-await sweep: cancel a target at each of its suspension points in turn.

A coroutine can be cancelled wherever it awaits something that is not ready yet. Code that is
correct when it runs to completion often leaks a lock, a semaphore slot or a task when the
cancellation lands at one particular ``await``. The sweep finds that ``await``: it runs a fresh
instance of the target once to count its suspension points, then once per point *k*, cancelling
it exactly when it suspends for the *k*-th time. After every run it checks that the
cancellation propagated (the target did not swallow ``CancelledError``), that no task the
target started is still pending, and that the caller's ``check()`` holds.

How the k-th suspension is found, with public API only: the target's coroutine is driven
through a small trampoline that forwards ``send``/``throw``/``close`` and counts every value the
coroutine yields to its task (a future to wait for, or ``None`` for a bare yield such as
``asyncio.sleep(0)``). At the k-th yield it calls ``task.cancel()``, so the task cancels the
future it is about to wait for and the target sees ``CancelledError`` at that very ``await``,
exactly as when another task cancels it there. The timeout flavour instead wraps the target in
``asyncio.timeout(None)`` and reschedules the deadline to "now" at the k-th yield.

Two variations cover code that is correct only when it never finishes or is cancelled twice:
``until_cancelled=True`` sweeps a worker meant to run until it is cancelled (its baseline run
is cancelled once nothing is left for it to do, and must end in ``CancelledError``), and
``twice=True`` cancels again at each suspension point of the clean-up that follows the first
cancellation (the shielded-clean-up pattern must survive it). Tasks the target left running,
such as a shielded clean-up, are waited for before ``check()`` runs, so it sees what they
leave.

Cost: a target with *n* suspension points is run ``n + 1`` times and run *k* executes about *k*
steps, so the sweep costs about ``n²/2`` target steps. For a target with 200 awaits that is 201
runs and about 20,300 steps: 0.4 to 0.9 s of real time on the kit's shared 2-core machine, on
the virtual loop where the target's sleeps cost nothing (``bench/cancellation.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import linecache
import math
import re
import types
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Literal

from labkit._stacks import file_label, in_asyncio, is_machinery, task_label
from labkit.backpressure import settle
from labkit.deadlock import suspension_frames
from labkit.loop import VirtualTimeLoop, new_virtual_loop

__all__ = [
    "CancelSweep",
    "CancelSweepError",
    "SweepPoint",
    "cancel_at_every_await",
    "force_cancel",
    "run_cancel_sweep",
    "timeout_at_every_await",
]

Factory = Callable[[], Awaitable[Any]]
Check = Callable[[], Any]
_Mode = Literal["cancel", "timeout"]
# asyncio names unnamed tasks Task-N; Python 3.13.0 names them "None" when the loop has a task
# factory (create_task() calls set_name(None)).
_AUTO_TASK_NAME = re.compile(r"Task-\d+|None")
# The widest ``await`` column of the table; longer ``file:line  code`` cells end in "...".
_AWAIT_WIDTH = 60
_NEVER_SUSPENDED = (
    "the target never suspended, so there was no await to cancel at: this sweep tested nothing",
    "likely cause: its awaits return at once without waiting, as every call of a "
    "unittest.mock.AsyncMock does, or it has no await at all",
    "fix: give it fakes that really wait (`await asyncio.sleep(0)` is enough, and free on the "
    "virtual loop), or pass min_points=0 if it is meant never to suspend",
)


@dataclass(frozen=True)
class SweepPoint:
    """One row of a sweep: where the target was cancelled and what happened then.

    ``k`` is 1-based; row 0 is the baseline run without any cancellation. A row of a
    ``twice=True`` sweep cancels again ``again`` suspensions after point ``k`` (its label is
    ``k+again``), and ``where``/``code`` name the await of that second cancellation.

    Example::

        point = report.points[2]
        print(point.k, point.where, point.code, point.outcome)   # 2 pool.py:31 ... ok
    """

    k: int
    where: str
    code: str
    outcome: str
    ok: bool
    stack: tuple[str, ...] = ()
    again: int = 0
    inner: str = ""
    """``file:line`` of the innermost await in the caller's own code, when the target's line
    (``where``) awaits a function of its own that suspended deeper (``pool.acquire()``)."""
    inner_code: str = ""

    @property
    def label(self) -> str:
        """The ``k`` column: ``3``, or ``3+1`` for a second cancellation one suspension later."""
        return f"{self.k}+{self.again}" if self.again else str(self.k)

    @property
    def cell(self) -> str:
        """The ``await`` column: ``file:line`` of the await and its source line."""
        return f"{self.where}  {self.code}" if self.code else self.where

    @property
    def inner_cell(self) -> str:
        """The ``await`` column that also names the inner await: ``a.py:30 › a.py:12  code``."""
        if not self.inner:
            return self.cell
        return f"{self.where} › {self.inner}  {self.inner_code}".rstrip()

    def row(self, width: int = 52, *, inner: bool = False) -> str:
        """The point as one line of the report's table, its ``await`` column ``width`` wide.

        ``inner=True`` names the inner await too (the table does so for the rows whose
        target line is the same but whose inner awaits differ).
        """
        cell = self.inner_cell if inner else self.cell
        cell = cell if len(cell) <= width else cell[: width - 3] + "..."
        return f"{self.label:>4}  {cell:<{width}}  {self.outcome}"


@dataclass(frozen=True)
class CancelSweep:
    """The result of a sweep: one :class:`SweepPoint` per suspension point, plus the baseline.

    ``str(report)`` is the table; it is deterministic (file basenames and line numbers, task
    names, no addresses or timings), so a notebook can print it. A sweep that found fewer
    than ``min_points`` suspension points is not ok: it tested (almost) nothing.

    Example::

        report = await labkit.cancel_at_every_await(lambda: job(pool), check=pool.assert_idle)
        print(report)
        assert report.ok, report
    """

    target: str
    mode: _Mode
    points: tuple[SweepPoint, ...] = field(default_factory=tuple)
    min_points: int = 1
    until_cancelled: bool = False
    twice: bool = False

    @property
    def suspension_points(self) -> int:
        """How many suspension points the baseline run found."""
        return sum(1 for point in self.points if point.k > 0 and not point.again)

    @property
    def second_cancellations(self) -> int:
        """How many rows cancelled a second time, during the clean-up (``twice=True``)."""
        return sum(1 for point in self.points if point.again)

    @property
    def failures(self) -> tuple[SweepPoint, ...]:
        """The rows whose outcome is not ``ok``."""
        return tuple(point for point in self.points if not point.ok)

    @property
    def ok(self) -> bool:
        """True when every row, the baseline included, is ``ok``, and enough points were swept."""
        return not self.failures and not self.too_few_points

    @property
    def too_few_points(self) -> bool:
        """True when the target suspended fewer than ``min_points`` times."""
        return self.suspension_points < self.min_points

    def table(self) -> str:
        """The report as a text table: point k, the ``file:line`` of the await, the outcome."""
        verb = "cancel" if self.mode == "cancel" else "timeout"
        failing = len(self.failures)
        found = self.suspension_points
        if found == 0 and self.too_few_points:
            verdict = "nothing tested"
        elif self.too_few_points:
            verdict = f"fewer than min_points={self.min_points}"
            verdict += f", {failing} failing" if failing else ""
        else:
            verdict = "all ok" if not failing else f"{failing} failing"
        kind = " (runs until cancelled)" if self.until_cancelled else ""
        again = (
            f", {self.second_cancellations} second cancellation(s) in clean-up"
            if self.twice
            else ""
        )
        lines = [
            f"{verb} sweep of {self.target}{kind}: {found} suspension point(s){again}, {verdict}"
        ]
        if found == 0 and self.too_few_points:
            lines.extend(_NEVER_SUSPENDED)
        elif self.too_few_points:
            lines.append(
                f"the target suspended {found} time(s), fewer than min_points={self.min_points}: "
                "some awaits returned at once without waiting (an AsyncMock, or a fake that "
                "does not wait) and were not tested"
            )
        first = next((point for point in self.points if not point.ok), None)
        repeated = first is not None and any(
            point.k > first.k and point.outcome == first.outcome for point in self.failures
        )
        if first is not None and first.k > 0 and repeated and "check" in first.outcome:
            lines.append(
                f"first failure: point {first.k} ({first.where}); later rows may inherit the "
                "state it left behind"
            )
        deeper = self._ambiguous()
        cells = [point.inner_cell if point.k in deeper else point.cell for point in self.points]
        width = min(max((len(cell) for cell in cells), default=0), _AWAIT_WIDTH)
        width = max(width, len("await"))
        if self.twice and not self.second_cancellations and found:
            lines.append(
                "twice=True: no clean-up suspended after any point, so nothing was cancelled twice"
            )
        lines.append(f"{'k':>4}  {'await':<{width}}  outcome")
        lines.extend(point.row(width, inner=point.k in deeper) for point in self.points)
        return "\n".join(lines)

    def _ambiguous(self) -> set[int]:
        """The rows that share their target line with a row suspended at another inner await."""
        inner: dict[str, set[str]] = {}
        for point in self.points:
            if point.k > 0:
                inner.setdefault(point.where, set()).add(point.inner)
        return {
            point.k for point in self.points if point.k > 0 and len(inner.get(point.where, ())) > 1
        }

    def __str__(self) -> str:
        return self.table()

    def assert_ok(self) -> None:
        """Raise :class:`CancelSweepError` (an AssertionError) with the table unless ``ok``."""
        if not self.ok:
            raise CancelSweepError(self)


class CancelSweepError(AssertionError):
    """A cancellation sweep found points where the target misbehaves; the message is the table.

    Example::

        try:
            await labkit.cancel_at_every_await(lambda: job(pool))
        except labkit.CancelSweepError as error:
            print(error.report.failures)
    """

    def __init__(self, report: CancelSweep) -> None:
        super().__init__(report.table())
        self.report = report


async def cancel_at_every_await(
    factory: Factory,
    *,
    check: Check | None = None,
    limit: float = 600.0,
    raise_on_failure: bool = True,
    min_points: int = 1,
    until_cancelled: bool | float = False,
    twice: bool = False,
) -> CancelSweep:
    """Cancel a fresh instance of the target at each of its suspension points in turn.

    ``factory()`` must return a new coroutine each call (``lambda: job(pool)``); build fresh
    state in it when you can, so each row starts clean. Every run must end with
    ``CancelledError`` propagating out of the target, no task the target started still pending
    once the loop is idle, and ``check()`` (sync or async) holding: it fails by raising
    ``AssertionError`` or by returning ``False``. Each run may take ``limit`` seconds of loop
    time before it counts as hung; on the virtual loop that costs no real time. Raises
    :class:`CancelSweepError` with the table when a row fails, unless ``raise_on_failure`` is
    false; returns the :class:`CancelSweep` report either way. A target that fails on its own,
    in the baseline run without any cancellation, cannot be swept: its exception propagates.

    A target that suspends fewer than ``min_points`` times (default 1) fails the sweep too: a
    target that never suspends has nothing to cancel, so a sweep of it tests nothing. That is
    what happens when its I/O is patched with ``unittest.mock.AsyncMock``, whose calls return
    without ever waiting. Pass ``min_points=0`` for a target that is meant never to suspend,
    or the number of awaits you expect, to catch fakes that stopped waiting.

    ``until_cancelled=True`` is for a worker meant to run until it is cancelled
    (``while True: await queue.get() ...``): its baseline run is cancelled where it waits once
    nothing is left for it to do (on the virtual loop: once every timer has fired; on a real
    loop: once the loop is idle), instead of being reported hung, and must end in
    ``CancelledError`` too; the points swept are those it passed until then. For a worker that
    polls on a timer (and so always has one pending), pass the seconds of loop time to let it
    run instead of ``True``.
    ``twice=True`` also cancels a second time at each suspension point of the clean-up that
    follows each first cancellation (rows ``k+1``, ``k+2``...): clean-up that must not be cut
    short (``await asyncio.shield(...)``) has to survive it, and every such run must end in
    ``CancelledError``. Tasks the target leaves running when it ends (a shielded clean-up)
    are reported ``left pending``, and waited for (up to ``limit``) before ``check()`` runs.

    Example::

        @pytest.mark.asyncio(loop_factories=["virtual"])
        async def test_pool_survives_cancellation():
            pool = Pool(size=2)
            await labkit.cancel_at_every_await(
                lambda: pool.run(job), check=lambda: pool.assert_all_free()
            )
    """
    return await _sweep(
        factory, "cancel", check, limit, raise_on_failure, min_points, until_cancelled, twice
    )


async def timeout_at_every_await(
    factory: Factory,
    *,
    check: Check | None = None,
    limit: float = 600.0,
    raise_on_failure: bool = True,
    min_points: int = 1,
    until_cancelled: bool | float = False,
    twice: bool = False,
) -> CancelSweep:
    """Like :func:`cancel_at_every_await`, with an ``asyncio.timeout`` expiring at each point.

    Run *k* wraps the target in ``asyncio.timeout(None)`` and moves the deadline to "now" when
    the target suspends for the *k*-th time; the run must end in ``TimeoutError``. With
    ``twice=True`` the second interruption is a plain cancellation (an impatient caller),
    so those runs must end in ``CancelledError``.

    Example::

        report = await labkit.timeout_at_every_await(lambda: fetch(client), check=client.idle)
        print(report)
    """
    return await _sweep(
        factory, "timeout", check, limit, raise_on_failure, min_points, until_cancelled, twice
    )


def run_cancel_sweep(
    factory: Factory,
    *,
    check: Check | None = None,
    timeout: bool = False,
    limit: float = 600.0,
    raise_on_failure: bool = True,
    min_points: int = 1,
    until_cancelled: bool | float = False,
    twice: bool = False,
) -> CancelSweep:
    """Run the sweep from synchronous code, on a fresh virtual loop of its own.

    Usable from a plain (non-async) pytest test and from a notebook cell: when the calling
    thread already runs an event loop (as Jupyter's does) the sweep runs in a worker thread.
    ``timeout=True`` selects the ``asyncio.timeout`` flavour.

    Example::

        def test_worker_is_cancel_safe():
            labkit.run_cancel_sweep(lambda: worker(queue), check=queue.empty)
    """
    mode: _Mode = "timeout" if timeout else "cancel"

    def main() -> CancelSweep:
        with asyncio.Runner(loop_factory=new_virtual_loop) as runner:
            sweep = _sweep(
                factory, mode, check, limit, raise_on_failure, min_points, until_cancelled, twice
            )
            return runner.run(sweep)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return main()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="labkit-sweep") as pool:
        return pool.submit(main).result()


async def force_cancel(task: asyncio.Task[Any]) -> None:
    """End a task that swallows its cancellation, so a test (and its loop) can finish cleanly.

    A task that catches ``CancelledError`` and carries on waiting cannot be ended by
    cancelling it again, and it deadlocks the loop's shutdown, which cancels every task left
    and waits for them. This closes the task's coroutine instead: ``GeneratorExit`` is raised
    where it waits, so its ``finally:`` blocks and ``with`` exits run (they cannot await), and
    the task is done once this returns. Its outcome is retrieved, so nothing is logged; it is
    not marked cancelled, since it never honoured a cancellation. A task that is already done
    is left alone.

    Example::

        worker.cancel()
        await labkit.run_until_idle()      # it caught the CancelledError and waits again
        assert not worker.done()
        await labkit.force_cancel(worker)
        assert worker.done()
    """
    if task.done():
        return
    if task is asyncio.current_task():
        raise RuntimeError(
            "force_cancel() ends another task; a task ends itself by letting CancelledError "
            "propagate (or by returning)"
        )
    close = getattr(task.get_coro(), "close", None)
    if close is not None:
        try:
            close()
        except RuntimeError as error:  # "coroutine ignored GeneratorExit"
            raise RuntimeError(
                f"{task_label(task)} cannot be ended: it catches GeneratorExit too ({error}); "
                "catch CancelledError only to clean up, then re-raise it"
            ) from None
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # the closed coroutine's RuntimeError: retrieved, never logged


# -- the trampoline ------------------------------------------------------------------------


class _Trampoline:
    """Drives the target's coroutine for its task, counting the values it yields."""

    def __init__(
        self, target: Any, at: tuple[int, ...] = (), on_point: Callable[[int], None] | None = None
    ) -> None:
        self._target = target
        self._iterator: Any = target if _is_driveable(target) else target.__await__()
        self._at = at
        self._on_point = on_point
        self.name = f"{getattr(target, '__qualname__', type(target).__name__)}()"
        self.count = 0
        self.delivered_at: int | None = None
        self.where = ""
        self.code = ""
        self.stack: tuple[str, ...] = ()
        self.inner = ""
        self.inner_code = ""

    def __await__(self) -> Generator[Any, Any, Any]:
        return self

    def __iter__(self) -> _Trampoline:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        return self._suspended(self._iterator.send(value))

    def throw(self, *args: Any) -> Any:
        error = _exception_from(args)
        if isinstance(error, asyncio.CancelledError) and self.delivered_at is None:
            self.delivered_at = self.count
        return self._suspended(self._iterator.throw(error))

    def close(self) -> None:
        self._iterator.close()

    def _suspended(self, yielded: Any) -> Any:
        self.count += 1
        if self.count in self._at:
            # The row names its last cancellation's await: the second one in a twice row.
            self.where, self.code, self.stack = _locate(self._target)
            self.inner, self.inner_code = _inner(self._target)
            if self._on_point is not None:
                self._on_point(self._at.index(self.count))
        return yielded

    def locate_now(self) -> tuple[str, str, tuple[str, ...]]:
        """Where the target is suspended right now."""
        return _locate(self._target)


def _is_driveable(target: Any) -> bool:
    return inspect.iscoroutine(target) or inspect.isgenerator(target)


def _exception_from(args: tuple[Any, ...]) -> BaseException:
    """Normalize both throw() signatures, ``throw(exc)`` and ``throw(type, value, tb)``."""
    first = args[0]
    if isinstance(first, BaseException):
        return first
    value = args[1] if len(args) > 1 else None
    error: BaseException = value if isinstance(value, BaseException) else first()
    if len(args) > 2 and args[2] is not None:
        error = error.with_traceback(args[2])
    return error


def _frame_label(frame: types.FrameType) -> str:
    code = frame.f_code
    return f"{file_label(code.co_filename)}:{frame.f_lineno} in {code.co_qualname}"


def _locate(target: Any) -> tuple[str, str, tuple[str, ...]]:
    frames = list(suspension_frames(target))
    if not frames:
        return "?", "", ()
    own = frames[0]
    where = f"{file_label(own.f_code.co_filename)}:{own.f_lineno}"
    code = linecache.getline(own.f_code.co_filename, own.f_lineno).strip()
    return where, code, tuple(_frame_label(frame) for frame in frames)


def _inner(target: Any) -> tuple[str, str]:
    """Where the target's await went deepest in the caller's code, if below the target's frame."""
    frames = list(suspension_frames(target))
    own = frames[:1] + [frame for frame in frames[1:] if not is_machinery(frame.f_code.co_filename)]
    if len(own) < 2:
        return "", ""
    frame = own[-1]
    where = f"{file_label(frame.f_code.co_filename)}:{frame.f_lineno}"
    return where, linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()


# -- one run -------------------------------------------------------------------------------


@dataclass
class _Run:
    trampoline: _Trampoline
    task: asyncio.Task[Any]
    timeout: asyncio.Timeout | None = None
    problems: list[str] = field(default_factory=list)
    error: BaseException | None = None
    notes: list[str] = field(default_factory=list)
    # until_cancelled: how many times the baseline had suspended when it was cancelled
    cancelled_at: int | None = None


def _new_target(factory: Factory) -> Any:
    target = factory()
    if isinstance(target, asyncio.Future):
        raise TypeError(
            f"the factory returned a {type(target).__name__}, which is already scheduled and "
            "cannot be driven point by point: return a fresh coroutine instead, e.g. "
            "`lambda: job(pool)`"
        )
    if not (_is_driveable(target) or hasattr(target, "__await__")):
        raise TypeError(
            f"the factory returned {type(target).__name__!s}, not an awaitable: pass a "
            "function that makes a fresh coroutine each call, e.g. `lambda: job(pool)`"
        )
    return target


async def _start(factory: Factory, mode: _Mode, points: tuple[int, ...]) -> _Run:
    target = _new_target(factory)
    holder: list[_Run] = []

    def on_point(index: int) -> None:
        run = holder[0]
        if index == 0 and run.timeout is not None:
            run.timeout.reschedule(asyncio.get_running_loop().time())
        else:
            run.task.cancel()  # a cancellation, or the second one of a twice row

    trampoline = _Trampoline(target, points, on_point if points else None)

    async def drive() -> Any:
        if mode == "timeout":
            async with asyncio.timeout(None) as deadline:
                holder[0].timeout = deadline
                return await trampoline
        return await trampoline

    label = "+".join(str(point) for point in points) or "0"
    # Built directly, not by the loop's task factory: an eager factory would run the target's
    # first step, and reach its first point, before this task exists to be cancelled.
    task = asyncio.Task(drive(), loop=asyncio.get_running_loop(), name=f"cancel-sweep:{label}")
    holder.append(_Run(trampoline, task))
    return holder[0]


def _task_label(task: asyncio.Task[Any]) -> str:
    name = task.get_name()
    coro = task.get_coro()
    qualname = getattr(coro, "__qualname__", type(coro).__name__)
    name = f"{qualname}()" if _AUTO_TASK_NAME.fullmatch(name) else repr(name)
    frames = list(suspension_frames(coro))
    own = [frame for frame in frames if not in_asyncio(frame)]
    if own:
        frame = own[-1]
        if frame.f_code.co_qualname == qualname:
            return f"{name} at {file_label(frame.f_code.co_filename)}:{frame.f_lineno}"
        return f"{name} at {_frame_label(frame)}"
    if frames:
        return f"{name} waiting inside asyncio.{frames[-1].f_code.co_qualname}"
    return f"{name} (not started)"


async def _let_run(run: _Run, until: bool | float, limit: float) -> None:
    """until_cancelled: let the baseline run until nothing is left to do, then cancel it.

    On the virtual loop that is when every timer has fired (the clock then jumps to ``limit``,
    at no cost); on a real loop, when the loop is idle; ``until`` seconds if it is a number.
    """
    task = run.task
    if until is True and isinstance(asyncio.get_running_loop(), VirtualTimeLoop):
        await asyncio.wait({task}, timeout=limit)
    elif until is True:
        try:
            await settle(any_loop=True)
        except AssertionError as error:  # it never blocks: cancel it anyway, and say so
            run.problems.append(str(error))
    else:
        await asyncio.wait({task}, timeout=float(until))
    if not task.done():
        run.cancelled_at = run.trampoline.count
        task.cancel()


async def _finish(
    run: _Run, mode: _Mode, points: tuple[int, ...], limit: float, until: bool | float
) -> None:
    task = run.task
    if not points and until is not False:
        await _let_run(run, until, limit)
    cancelled = bool(points) or run.cancelled_at is not None
    done, _ = await asyncio.wait({task}, timeout=limit)
    if not done:
        where = run.trampoline.locate_now()[0]
        run.problems.append(f"hung: still waiting at {where} after {_seconds(limit)}")
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=limit)
        if not done:
            run.problems.append("and it ignores cancellation")
            await force_cancel(task)
            return
        if cancelled:
            return
    if not cancelled:
        if not task.cancelled():
            run.error = task.exception()
        return
    # A single cancellation of the timeout flavour must come out as TimeoutError; a second
    # cancellation, or the one ending a run-until-cancelled baseline, as CancelledError.
    timeout = mode == "timeout" and len(points) == 1
    expected = TimeoutError if timeout else asyncio.CancelledError
    delivered = run.trampoline.delivered_at
    if points and delivered is not None and delivered != points[0]:
        # The deadline's callback ran after the awaited future was already resolved.
        run.notes.append(f"the deadline landed at point {delivered}")
    if task.cancelled():
        if timeout:
            run.problems.append("CancelledError escaped instead of TimeoutError")
        return
    error = task.exception()
    if error is None:
        run.problems.append(f"swallowed: returned {_short(task.result())} after the cancellation")
    elif not isinstance(error, expected):
        run.problems.append(f"replaced {expected.__name__} with {_short(error)}")


async def _check_after(check: Check | None) -> str | None:
    if check is None:
        return None
    try:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result is False:
            name = getattr(check, "__qualname__", "check")
            label = "check()" if name.endswith("<lambda>") else f"{name}()"
            return f"check failed: {label} returned False"
    except AssertionError as error:
        message = str(error).strip().splitlines()
        return f"check failed: {message[0] if message else 'AssertionError'}"
    except Exception as error:
        return f"check raised {_short(error)}"
    return None


async def _wait_for_leftovers(run: _Run, before: set[asyncio.Task[Any]], limit: float) -> None:
    """Report the tasks the run left running; let them finish (a shielded clean-up) first."""
    loop = asyncio.get_running_loop()
    try:
        await settle(any_loop=True)
    except (AssertionError, RuntimeError) as error:  # a leftover task that never blocks
        run.problems.append(str(error))
    leftovers = sorted(
        (t for t in asyncio.all_tasks(loop) - before if t is not run.task and not t.done()),
        key=_task_label,
    )
    if not leftovers:
        return
    labels = ", ".join(_task_label(t) for t in leftovers)
    run.problems.append(f"left pending: {labels}")
    _, still = await asyncio.wait(leftovers, timeout=limit)
    for leftover in still:
        leftover.cancel()
    if still:
        _, stuck = await asyncio.wait(still, timeout=limit)
        for leftover in stuck:
            await force_cancel(leftover)


async def _run_once(
    factory: Factory,
    mode: _Mode,
    check: Check | None,
    points: tuple[int, ...],
    limit: float,
    until: bool | float,
) -> tuple[SweepPoint, _Run]:
    loop = asyncio.get_running_loop()
    before = asyncio.all_tasks(loop)
    run = await _start(factory, mode, points)
    await _finish(run, mode, points, limit, until)
    await _wait_for_leftovers(run, before, limit)
    if run.error is not None:
        raise run.error
    problem = await _check_after(check)
    if problem is not None:
        run.problems.append(problem)
    if not points:
        where = "(baseline)"
        if run.cancelled_at is None:
            code = "no cancellation"
        else:
            code = "cancelled once idle" if until is True else f"cancelled after {until:g} s"
    elif run.trampoline.count < points[-1]:
        where, code = "?", ""
        run.problems.insert(
            0,
            f"not reached: finished after {run.trampoline.count} suspension(s); the target "
            "suspends a different number of times per run (make it deterministic)",
        )
    else:
        where, code = run.trampoline.where, run.trampoline.code
    outcome = "; ".join(run.problems) or "; ".join(["ok", *run.notes])
    k = points[0] if points else 0
    again = points[-1] - points[0] if len(points) > 1 else 0
    inner = run.trampoline.inner if points and where != "?" else ""
    inner_code = run.trampoline.inner_code if inner else ""
    point = SweepPoint(
        k, where, code, outcome, not run.problems, run.trampoline.stack, again, inner, inner_code
    )
    return point, run


async def _sweep(
    factory: Factory,
    mode: _Mode,
    check: Check | None,
    limit: float,
    raise_on_failure: bool,
    min_points: int,
    until: bool | float = False,
    twice: bool = False,
) -> CancelSweep:
    _validate(factory, limit)
    if not isinstance(min_points, int) or isinstance(min_points, bool) or min_points < 0:
        raise ValueError(
            f"min_points must be a whole number of suspension points >= 0, got {min_points!r}"
        )
    if not isinstance(until, (bool, int, float)) or (
        not isinstance(until, bool) and not (until > 0 and math.isfinite(until))
    ):
        raise ValueError(
            "until_cancelled must be True (cancel the worker once the loop is idle), a number "
            f"of seconds of loop time > 0 to let it run first, or False; got {until!r}"
        )
    if not isinstance(twice, bool):
        raise TypeError(f"twice must be True or False, got {twice!r}")
    if check is not None and not callable(check):
        raise TypeError(
            f"check must be a function the sweep calls after each run, got "
            f"{type(check).__name__} {_short(check)}: pass e.g. `check=queue.empty`, not "
            "`check=queue.empty()`"
        )
    loop = asyncio.get_running_loop()
    if isinstance(loop, VirtualTimeLoop) and not loop.autojump:
        raise RuntimeError(
            "the cancellation sweep needs a clock that moves by itself, but this VirtualTimeLoop "
            "has autojump=False: run it on an autojump loop (the default) or a real loop"
        )
    baseline, run = await _run_once(factory, mode, check, (), limit, until)
    count = run.cancelled_at if run.cancelled_at is not None else run.trampoline.count
    points = [baseline]
    for k in range(1, count + 1):
        point, single = await _run_once(factory, mode, check, (k,), limit, until)
        points.append(point)
        if not twice:
            continue
        # The suspensions after the first cancellation are the clean-up's: cancel at each again.
        for again in range(1, single.trampoline.count - k + 1):
            point, _ = await _run_once(factory, mode, check, (k, k + again), limit, until)
            points.append(point)
    until_cancelled = until is not False
    report = CancelSweep(
        run.trampoline.name, mode, tuple(points), min_points, until_cancelled, twice
    )
    if raise_on_failure:
        report.assert_ok()
    return report


def _validate(factory: Any, limit: float) -> None:
    if inspect.isawaitable(factory):
        if inspect.iscoroutine(factory):
            factory.close()
        raise TypeError(
            "the sweep runs the target many times, so it needs a factory that makes a fresh "
            "coroutine each call, not an awaitable: pass `job` or `lambda: job(pool)`, "
            "not `job(pool)`"
        )
    if not callable(factory):
        raise TypeError(
            f"factory must be a callable returning a coroutine, got {type(factory).__name__}: "
            "pass e.g. `lambda: job(pool)`"
        )
    if not isinstance(limit, (int, float)) or not limit > 0:
        raise ValueError(f"limit must be a positive number of seconds, got {limit!r}")


def _short(value: object) -> str:
    text = repr(value)
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", text)
    return text if len(text) <= 60 else text[:57] + "..."


def _seconds(value: float) -> str:
    return f"{value:g} s"
