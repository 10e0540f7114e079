"""Trace: the record of a controlled run — which task ran at each step, when, and why it stopped.

A trace names tasks, files and lines, never ids or addresses, so the same schedule always prints
the same text: in a terminal, in a failure report and in a notebook's stored output.
"""

from __future__ import annotations

import asyncio
import linecache
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labkit.deadlock import suspension_frames

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


@dataclass
class Trace:
    """The steps of one controlled run, in the order they happened.

    Render it with ``str(trace)`` / :meth:`text` (stable text for terminals and notebooks) or
    :meth:`plot` (a matplotlib timeline, one lane per task).

    Example::

        run = labkit.record(main)
        print(run.trace)          # step, time, task, woken by, then where it stopped
        run.trace.plot()          # the same run as a picture
    """

    steps: list[Step] = field(default_factory=list)

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task that ran, in order of first appearance."""
        return tuple(dict.fromkeys(step.task for step in self.steps))

    @property
    def schedule(self) -> tuple[str, ...]:
        """The task that ran at each step: the schedule, compact enough to compare."""
        return tuple(step.task for step in self.steps)

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

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def _repr_png_(self) -> bytes:
        from labkit.timeline import timeline_png

        return timeline_png(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text())


class Labels:
    """Stable, readable task names for one run: explicit names, else the coroutine's name."""

    def __init__(self) -> None:
        self._labels: dict[asyncio.Task[Any], str] = {}
        self._used: dict[str, int] = {}

    def __call__(self, task: asyncio.Task[Any]) -> str:
        label = self._labels.get(task)
        if label is None:
            name = task.get_name()
            if _DEFAULT_NAME.fullmatch(name):
                qualname = getattr(task.get_coro(), "__qualname__", "") or "task"
                name = qualname.rsplit(".", 1)[-1]
            count = self._used.get(name, 0) + 1
            self._used[name] = count
            label = name if count == 1 else f"{name}#{count}"
            self._labels[task] = label
        return label

    def clear(self) -> None:
        self._labels.clear()


def _location(frame: Any) -> Location:
    code = frame.f_code
    source = linecache.getline(code.co_filename, frame.f_lineno).strip()
    comment = source.find("  # ")
    if comment > 0:
        source = source[:comment]
    if len(source) > 72:
        source = source[:69] + "..."
    function = code.co_qualname.replace(".<locals>", "")
    filename = code.co_filename
    file = "cell" if _CELL_FILE.fullmatch(filename) else os.path.basename(filename)
    return Location(file, frame.f_lineno, function, source)


def _is_library(filename: str) -> bool:
    return filename.startswith(_ASYNCIO_DIR) or filename.startswith(_LABKIT_DIR)


def suspension(
    task: asyncio.Task[Any], labels: Labels, timers: Mapping[Any, float]
) -> tuple[Location | None, str | None, float | None]:
    """Where a suspended task waits (its innermost frame in user code), on what, and until when."""
    frames = list(suspension_frames(task.get_coro()))
    user = [f for f in frames if not _is_library(f.f_code.co_filename)]
    where = _location(user[-1]) if user else (_location(frames[-1]) if frames else None)
    awaiting: str | None = None
    library = [f for f in frames if _is_library(f.f_code.co_filename)]
    if library:
        # The outermost public call (Lock.acquire rather than _ContextManagerMixin.__aenter__).
        public = [
            f
            for f in library
            if not any(p.startswith("_") for p in f.f_code.co_qualname.split("."))
        ]
        frame = public[0] if public else library[0]
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
            kind = type(waiter).__name__
            awaiting = "gather" if kind == "_GatheringFuture" else "future"
        else:
            awaiting = "yield"
    until: float | None = None
    if waiter is not None:
        until = timers.get(waiter)
    return where, awaiting, until


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
