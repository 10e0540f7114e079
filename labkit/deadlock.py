"""DeadlockError: raised when no task can ever run again, naming where each one waits."""

from __future__ import annotations

import asyncio
import inspect
import linecache
import os
import types
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["DeadlockError", "describe_task", "suspension_frames"]


class DeadlockError(RuntimeError):
    """No callback is ready, no timer is pending and nothing real can wake the loop.

    The message lists every pending task and the line where it is suspended, so a hung
    test fails at once with the reason instead of hanging until a CI timeout.

    Example::

        async def main():
            await asyncio.Event().wait()   # nobody will ever set it

        labkit.run(main())  # DeadlockError: ... main() ... await asyncio.Event().wait()
    """

    def __init__(self, message: str, tasks: Iterable[asyncio.Task[Any]] = ()) -> None:
        super().__init__(message)
        self.tasks: list[asyncio.Task[Any]] = list(tasks)


def suspension_frames(coro: Any) -> Iterator[types.FrameType]:
    """Yield the frames of a suspended coroutine chain, outermost first."""
    seen = 0
    while coro is not None and seen < 100:
        seen += 1
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            frame = getattr(coro, "gi_frame", None)
        if frame is None:
            return
        yield frame
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "ag_await", None)
            or getattr(coro, "gi_yieldfrom", None)
        )


def _where(frame: types.FrameType) -> str:
    code = frame.f_code
    line = linecache.getline(code.co_filename, frame.f_lineno).strip()
    place = f"{os.path.basename(code.co_filename)}:{frame.f_lineno} in {code.co_qualname}"
    return f"{place}: {line}" if line else place


def describe_task(task: asyncio.Task[Any]) -> str:
    """One readable paragraph: the task's name, its coroutine, and each frame it waits in."""
    coro = task.get_coro()
    qualname = getattr(coro, "__qualname__", type(coro).__name__)
    lines = [f"task {task.get_name()!r} running {qualname}()"]
    started = not (inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == "CORO_CREATED")
    frames = list(suspension_frames(coro)) if started else []
    if not frames:
        lines.append("    (not started yet)")
    for frame in frames:
        lines.append(f"    waiting at {_where(frame)}")
    cancels = task.cancelling()
    if cancels and frames:
        times = "once" if cancels == 1 else f"{cancels} times"
        lines.append(
            f"    it holds a swallowed cancellation: cancelled {times}, it caught CancelledError "
            "and waits again (or its clean-up waits for something that never comes). Let "
            "CancelledError propagate; a test can end it with `await labkit.force_cancel(task)`"
        )
    return "\n".join(lines)


def deadlock_message(tasks: list[asyncio.Task[Any]], *, manual_clock: bool) -> str:
    """The text of a DeadlockError for these pending tasks."""
    if manual_clock:
        head = (
            "deadlock: the loop is idle, timers are pending, but the clock is manual "
            "(autojump=False) and nothing advances it. Call `await labkit.advance(seconds)` "
            "from a task, or `loop.advance(seconds)` from outside the loop."
        )
    else:
        head = (
            "deadlock: no callback is ready, no timer is pending and no real I/O, "
            "subprocess or executor job can wake the loop."
        )
    if not tasks:
        return head + " No task is pending."
    body = "\n".join(describe_task(t) for t in tasks)
    swallowed = sum(1 for task in tasks if task.cancelling())
    if swallowed:
        head += (
            f" {swallowed} of the tasks {'was' if swallowed == 1 else 'were'} cancelled and "
            "kept waiting: a swallowed cancellation."
        )
    return f"{head}\n{len(tasks)} pending task(s):\n{body}"
