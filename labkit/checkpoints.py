"""Checkpoint assertions: prove that async code really yields to the event loop, or never does.

What a *checkpoint* is, in asyncio: a point where the running task suspends and hands control
to the event loop, so that other ready callbacks and tasks run before it continues. Precisely:

* ``await asyncio.sleep(0)`` is a checkpoint (the task yields once and is rescheduled).
* Awaiting a future, task or event that is **not done yet** is a checkpoint (the task waits).
* Awaiting an **already-done** future or task is not: ``await`` returns its result at once.
* A coroutine is a checkpoint only if something inside it is: calling and awaiting an
  ``async def`` does not suspend by itself. An uncontended ``Lock.acquire()``, a
  ``Queue.put()`` with room, a ``StreamWriter.drain()`` with nothing to wait for, and every
  call of a ``unittest.mock.AsyncMock`` complete without suspending.
* A cancellation delivered to the task counts: asyncio can only deliver one to a suspended
  task, and that suspension is the checkpoint. A ``CancelledError`` raised without
  suspending (awaiting an already-cancelled future) is not one.
* With the eager task factory (Python 3.12+), ``create_task()`` runs the child's first step
  inline: that is not a checkpoint of the calling task.

The probe is one callback scheduled with ``loop.call_soon`` when the block is entered. The
loop can only run it once the task has suspended, and anything that resumes the task is queued
after it, so "the callback ran by the end of the block" is exactly "the task yielded at least
once". This holds on asyncio's own loop, on labkit's virtual loop and on uvloop, with or
without eager tasks; it uses the public API only.

Example::

    with labkit.assert_checkpoints():
        await client.fetch()          # fails if fetch() never yields (say, an AsyncMock inside)
    with labkit.assert_no_checkpoints():
        cache.update(key, value)      # fails if another task could run in the middle
        await cache.flush_if_full()
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from typing import Any

from labkit.backpressure import suspended_at

__all__ = ["assert_checkpoints", "assert_no_checkpoints"]


class _Probe(contextlib.AbstractContextManager[None]):
    """The context manager: a callback queued on entry; whether it ran tells if the task yielded."""

    def __init__(self, expected: bool) -> None:
        self.expected = expected
        self.who = "assert_checkpoints()" if expected else "assert_no_checkpoints()"
        self.task: asyncio.Task[Any] | None = None
        self.ran = False
        self.where = ""
        self.handle: asyncio.Handle | None = None

    def __enter__(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                f"{self.who} needs a running event loop: use it inside a coroutine "
                f"(an `async def` test), as `with labkit.{self.who}: await ...`"
            ) from None
        self.task = asyncio.current_task(loop)
        self.ran = False
        self.handle = loop.call_soon(self._run)

    def _run(self) -> None:
        self.ran = True
        if self.task is not None:
            self.where = suspended_at(self.task)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        __tracebackhide__ = True
        if self.handle is not None:
            self.handle.cancel()
        if self.expected and exc is None and not self.ran:
            raise AssertionError(
                "assert_checkpoints(): the block finished without suspending the task even "
                "once (no other callback ran between entering and leaving it), so it is no "
                "checkpoint: every await in it completed at once. Likely causes: an AsyncMock "
                "(its calls return at once, they never suspend), awaiting a future or task that "
                "was already done, or awaits that all had their result at hand (an uncontended "
                "Lock, a Queue with room, a drain() with nothing buffered). If the code must "
                "yield here, make it (a fake can `await asyncio.sleep(0)` in its side_effect)"
            )
        if not self.expected and self.ran:
            where = f" at {self.where}" if self.where else ""
            how = (
                " (and was cancelled while suspended)"
                if isinstance(exc, asyncio.CancelledError)
                else ""
            )
            raise AssertionError(
                f"assert_no_checkpoints(): the block suspended the task{where}{how}: other "
                "callbacks and tasks ran before it resumed. Something in it awaited a future "
                "that was not done yet (a Queue that was full or empty, a Lock held by "
                "another task, a sleep, I/O), or yielded with asyncio.sleep(0)"
            ) from None if exc is None else exc


def assert_checkpoints() -> contextlib.AbstractContextManager[None]:
    """Assert that the block suspends the task to the event loop at least once (a checkpoint).

    Use it to prove that an operation really yields, so that other tasks get to run while it
    works (and a cancellation can reach it): a fake that never suspends hides those bugs. A
    block that raises is not checked; its exception propagates unchanged (an operation may fail
    before it reaches its checkpoint). See the module docstring for what counts.

    Example::

        with labkit.assert_checkpoints():
            await asyncio.sleep(0)                  # passes

        fetch = unittest.mock.AsyncMock(return_value=b"data")
        with labkit.assert_checkpoints():           # AssertionError: an AsyncMock never
            await fetch()                           # suspends
    """
    return _Probe(expected=True)


def assert_no_checkpoints() -> contextlib.AbstractContextManager[None]:
    """Assert that the block never suspends the task: no other task or callback runs inside it.

    Use it to prove that a critical section is atomic with respect to the other tasks (nothing
    can interleave with it, and no cancellation can land in it), or that a fast path really
    avoids the event loop. It is checked even when the block raises; the failure then names
    that exception as its cause.

    Example::

        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        with labkit.assert_no_checkpoints():
            await queue.put(1)                      # room in the queue: no suspension
        asyncio.get_running_loop().call_soon(queue.get_nowait)
        with labkit.assert_no_checkpoints():        # AssertionError: the task suspended at
            await queue.put(2)                      # ... in asyncio Queue.put (it was full)
    """
    return _Probe(expected=False)
