"""Trace: the record of a controlled run — which task ran at each step, when, and why it stopped.

A trace names tasks, files and lines, never ids or addresses, so the same schedule always prints
the same text: in a terminal, in a failure report and in a notebook's stored output.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import linecache
import operator
import os
import re
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Location", "Step", "TaskState", "Trace"]

_ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep
_LABKIT_DIR = os.path.dirname(__file__) + os.sep
# asyncio names unnamed tasks Task-N; Python 3.13.0 names them "None" when the loop has a task
# factory (create_task() calls set_name(None)).
_DEFAULT_NAME = re.compile(r"Task-\d+|None")
# Code defined in a notebook cell lives in a temporary file named by the kernel's process id.
_CELL_FILE = re.compile(r"(?:.*[/\\]ipykernel_\d+[/\\]\d+\.py|<ipython-input-\d+-[0-9a-f]+>)")


@dataclass(frozen=True)
class Location:
    """A place in the source: file (base name), line, function and the line's code."""

    file: str
    line: int
    function: str
    code: str

    def __str__(self) -> str:
        place = f"{self.file}:{self.line} in {self.function}"
        return f"{place}: {self.code}" if self.code else place


@dataclass(frozen=True)
class Step:
    """One scheduling step: a task ran from one ``await`` to the next (or to its end).

    Example::

        run = labkit.record(main)
        first = run.trace.steps[0]
        print(first.task, first.time, first.where)
    """

    number: int
    """Position in the schedule, from 1."""
    time: float
    """The virtual time at which the task ran."""
    task: str
    """The task's name (its coroutine's name when it was not named)."""
    ready: tuple[str, ...]
    """Every task that was ready at this point, in the order they became ready."""
    woken_at: float
    """The virtual time at which the task became ready."""
    woken_after: int
    """The last step begun when the task became ready: it was woken during or after it."""
    woken_by: str
    """What made it ready: ``"created by main"``, ``"task producer"``, ``"timer"``, ..."""
    where: Location | None
    """Where the task is suspended after this step; None once it has finished."""
    awaiting: str | None
    """What it waits on after this step: ``"sleep(1)"``, ``"Queue.get"``, ``"task worker"``."""
    until: float | None
    """The virtual time at which a timer will wake it, if one will."""
    outcome: str
    """``"suspended"``, ``"returned"``, ``"cancelled"`` or ``"raised ValueError"``."""

    @property
    def chosen_from(self) -> tuple[str, ...]:
        """The other tasks that were ready and could have run instead."""
        return tuple(name for name in self.ready if name != self.task)

    def __str__(self) -> str:
        head = f"step {self.number} at t={_fmt_time(self.time)}: {self.task}"
        if self.outcome != "suspended":
            return f"{head} {self.outcome}"
        until = f" until t={_fmt_time(self.until)}" if self.until is not None else ""
        where = f" at {self.where}" if self.where is not None else ""
        return f"{head} waits on {self.awaiting}{until}{where}"


@dataclass(frozen=True)
class TaskState:
    """Where one task stands right now: ready to run, waiting, or done.

    Example::

        for state in scheduler.waiting():
            print(state)   # consumer: waiting on Queue.get at app.py:12 in consumer: ...
    """

    task: str
    state: str
    """``"ready"``, ``"waiting"`` or ``"done"``."""
    where: Location | None
    awaiting: str | None
    until: float | None
    woken_by: str | None = None

    def __str__(self) -> str:
        if self.state == "done":
            return f"{self.task}: done"
        if self.state == "ready":
            head = (
                f"{self.task}: ready ({self.woken_by})" if self.woken_by else f"{self.task}: ready"
            )
            return f"{head} at {self.where}" if self.where else f"{head}, not started yet"
        wait = f"waiting on {self.awaiting}" if self.awaiting else "waiting"
        if self.until is not None:
            wait += f" until t={_fmt_time(self.until)}"
        return f"{self.task}: {wait} at {self.where}" if self.where else f"{self.task}: {wait}"


# What a controlled run records per step, cheaply: time, task, ready, woken_at, woken_after,
# woken_by, the code and line where the task stopped (or None), awaiting, until, outcome. A Step
# (with its Location: file name, source line) is made from it only when someone reads the trace.
StepRecord = tuple[
    float,
    str,
    tuple[str, ...],
    float,
    int,
    str,
    "types.CodeType | None",
    int,
    "str | None",
    "float | None",
    str,
]


_TASK_OF_RECORD = operator.itemgetter(1)


class Trace:
    """The steps of one controlled run, in the order they happened.

    Render it with ``str(trace)`` / :meth:`text` (stable text for terminals and notebooks) or
    :meth:`plot` (a matplotlib timeline, one lane per task). A scheduler records each step as a
    cheap :data:`StepRecord` (:meth:`record`); the :class:`Step` objects, with their source
    lines, are made the first time :attr:`steps` is read, so runs nobody looks at cost little.

    Example::

        run = labkit.record(main)
        print(run.trace)          # step, time, task, woken by, then where it stopped
        run.trace.plot()          # the same run as a picture
    """

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, steps: Iterable[Step] = ()) -> None:
        self._steps: list[Step] = list(steps)
        self.pending: list[StepRecord] = []
        """Recorded steps not yet turned into :class:`Step` objects (appended by schedulers)."""

    def record(self, record: StepRecord) -> None:
        """Add one step as a record (labkit's schedulers use ``pending.append`` directly)."""
        self.pending.append(record)

    @property
    def steps(self) -> list[Step]:
        """Every step so far (read it again after more steps ran: new ones are added then)."""
        pending = self.pending
        if pending:
            steps = self._steps
            number = len(steps)
            for time, task, ready, at, after, by, code, line, awaiting, until, end in pending:
                number += 1
                where = None if code is None else location(code, line)
                steps.append(
                    Step(number, time, task, ready, at, after, by, where, awaiting, until, end)
                )
            pending.clear()
        return self._steps

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task that ran, in order of first appearance."""
        return tuple(dict.fromkeys(self.schedule))

    @property
    def schedule(self) -> tuple[str, ...]:
        """The task that ran at each step: the schedule, compact enough to compare."""
        done = tuple(step.task for step in self._steps)
        return done + tuple(map(_TASK_OF_RECORD, self.pending)) if self.pending else done

    def text(self, *, last: int | None = None) -> str:
        """The trace as a table; ``last=N`` keeps only the final N steps."""
        from labkit.timeline import format_timeline

        return format_timeline(self, last=last)

    def plot(self, **options: Any) -> Figure:
        """The trace as a matplotlib figure: one lane per task, time flowing left to right."""
        from labkit.timeline import plot_timeline

        return plot_timeline(self, **options)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return f"Trace(steps={self.steps!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trace):
            return NotImplemented
        return self.steps == other.steps

    def __len__(self) -> int:
        return len(self._steps) + len(self.pending)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def _repr_png_(self) -> bytes:
        from labkit.timeline import timeline_png

        return timeline_png(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text())


class Labels:
    """Stable, readable task names for one run: explicit names, else the coroutine's name.

    Example::

        labels = Labels()
        print(labels(task))     # "worker", then "worker#2" for the next task of worker()
    """

    def __init__(self) -> None:
        self.assigned: dict[asyncio.Task[Any], str] = {}
        """Task -> its label, for every task labelled so far."""
        self._used: dict[str, int] = {}
        self.naming: dict[Any, str] = {}
        """Coroutine -> the name its task is being created with (see :meth:`creating`)."""

    def __call__(self, task: asyncio.Task[Any], coro: Any = None) -> str:
        """The task's label; ``coro`` is its coroutine, when the caller has it at hand.

        A task that an eager task factory ran to completion inside ``create_task`` has no
        coroutine to ask for: ``get_coro()`` returns None on Python 3.13 and crashes the
        interpreter on 3.12.1. Whoever labels such a task passes the coroutine.
        """
        label = self.assigned.get(task)
        if label is None:
            if coro is None:
                coro = task.get_coro()
            name = self.naming.get(coro) if self.naming else None
            if name is None:
                name = task.get_name()
            # Python 3.13.0 names a task made by a task factory "None" (CPython gh-130033).
            if name == "None" or (name.startswith("Task-") and _DEFAULT_NAME.fullmatch(name)):
                qualname = getattr(coro, "__qualname__", "") or "task"
                name = qualname.rsplit(".", 1)[-1]
            count = self._used.get(name, 0) + 1
            self._used[name] = count
            label = name if count == 1 else f"{name}#{count}"
            self.assigned[task] = label
        return label

    @contextlib.contextmanager
    def creating(self, coro: Any, name: object) -> Iterator[None]:
        """Label a task by ``name`` while ``create_task`` makes it.

        An eager task (Python 3.12's ``eager_task_factory``) runs its first step inside
        ``create_task``, before asyncio gives it its name: a label made then must use the name
        the task is about to get.
        """
        if name is None:
            yield
            return
        self.naming[coro] = str(name)
        try:
            yield
        finally:
            self.naming.pop(coro, None)

    def clear(self) -> None:
        self.assigned.clear()


@functools.lru_cache(maxsize=4096)
def location(code: types.CodeType, line: int) -> Location:
    """The Location of ``line`` in ``code`` (file base name, function, source text), cached.

    Example::

        frame = sys._getframe()
        print(location(frame.f_code, frame.f_lineno))   # app.py:12 in main: ...
    """
    source = linecache.getline(code.co_filename, line).strip()
    comment = source.find("  # ")
    if comment > 0:
        source = source[:comment]
    if len(source) > 72:
        source = source[:69] + "..."
    function = code.co_qualname.replace(".<locals>", "")
    filename = code.co_filename
    file = "cell" if _CELL_FILE.fullmatch(filename) else os.path.basename(filename)
    return Location(file, line, function, source)


def _location(frame: Any) -> Location:
    return location(frame.f_code, frame.f_lineno)


def _is_library(filename: str) -> bool:
    return filename.startswith(_ASYNCIO_DIR) or filename.startswith(_LABKIT_DIR)


_LIBRARY_FILES: dict[str, bool] = {}
_PUBLIC_NAMES: dict[str, bool] = {}


def _library_file(filename: str) -> bool:
    known = _LIBRARY_FILES.get(filename)
    if known is None:
        known = _LIBRARY_FILES[filename] = _is_library(filename)
    return known


def _public_name(qualname: str) -> bool:
    known = _PUBLIC_NAMES.get(qualname)
    if known is None:
        known = _PUBLIC_NAMES[qualname] = not any(p.startswith("_") for p in qualname.split("."))
    return known


_COROUTINE = types.CoroutineType
_GENERATOR = types.GeneratorType


def capture(
    task: asyncio.Task[Any], labels: Labels, timers: Mapping[Any, float]
) -> tuple[types.CodeType | None, int, str | None, float | None]:
    """Where a suspended task waits, as cheaply as possible: its code and line, on what, until.

    The same answer as :func:`suspension`, with the place as (code, line) rather than a
    Location (made later, if the trace is read): schedulers call this after every step.

    Example::

        code, line, awaiting, until = capture(task, labels, timers)
        print(awaiting, until, location(code, line))   # sleep(5) 5.0 app.py:12 in worker: ...
    """
    coro: Any = task.get_coro()
    last: Any = None
    last_user: Any = None
    first_library: Any = None
    first_public: Any = None
    seen = 0
    while coro is not None and seen < 100:
        seen += 1
        kind = type(coro)
        if kind is _COROUTINE:
            frame = coro.cr_frame
            following = coro.cr_await
        elif kind is _GENERATOR:
            frame = coro.gi_frame
            following = coro.gi_yieldfrom
        else:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
            if frame is None:
                frame = getattr(coro, "gi_frame", None)
            following = (
                getattr(coro, "cr_await", None)
                or getattr(coro, "ag_await", None)
                or getattr(coro, "gi_yieldfrom", None)
            )
        if frame is None:
            break
        last = frame
        code = frame.f_code
        if _library_file(code.co_filename):
            if first_library is None:
                first_library = frame
            if first_public is None and _public_name(code.co_qualname):
                first_public = frame
        else:
            last_user = frame
        coro = following or None
    where = last_user if last_user is not None else last
    awaiting: str | None = None
    if first_library is not None:
        # The outermost public call (Lock.acquire rather than _ContextManagerMixin.__aenter__).
        frame = first_public if first_public is not None else first_library
        awaiting = frame.f_code.co_qualname
        if awaiting == "sleep":
            delay = frame.f_locals.get("delay")
            awaiting = f"sleep({delay:g})" if isinstance(delay, (int, float)) else "sleep"
    # The one read of a Task internal: the future the task is blocked on, to name it.
    waiter = getattr(task, "_fut_waiter", None)
    if awaiting is None:
        if isinstance(waiter, asyncio.Task):
            awaiting = f"task {labels(waiter)}"
        elif waiter is not None:
            kind_name = type(waiter).__name__
            awaiting = "gather" if kind_name == "_GatheringFuture" else "future"
        else:
            awaiting = "yield"
    until = timers.get(waiter) if waiter is not None else None
    if where is None:
        return None, 0, awaiting, until
    return where.f_code, where.f_lineno, awaiting, until


def suspension(
    task: asyncio.Task[Any], labels: Labels, timers: Mapping[Any, float]
) -> tuple[Location | None, str | None, float | None]:
    """Where a suspended task waits (its innermost frame in user code), on what, and until when."""
    code, line, awaiting, until = capture(task, labels, timers)
    return (None if code is None else location(code, line)), awaiting, until


def outcome(task: asyncio.Task[Any]) -> str:
    """How a task's step ended: still suspended, or finished and how."""
    if not task.done():
        return "suspended"
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return "returned" if exc is None else f"raised {type(exc).__name__}"


def _fmt_time(t: float) -> str:
    return f"{t:g}"


def names(steps: Sequence[Step]) -> list[str]:
    """The task names in order of first appearance."""
    return list(dict.fromkeys(step.task for step in steps))
