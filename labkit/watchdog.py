"""Watchdog: catch a callback or task step that blocks the event loop, measured in real time.

A ``time.sleep`` in a retry loop, a synchronous DNS lookup or a long CPU loop inside a coroutine
freezes every other task. asyncio's debug mode reports callbacks slower than
``loop.slow_callback_duration``, but it measures them with ``loop.time()``: on a virtual-time
loop that clock stands still while a callback runs, so the report never comes.

The :class:`Watchdog` measures real time from a thread of its own, with public API only. Every
``threshold / 5`` seconds it posts a heartbeat to the loop (``call_soon_threadsafe``) and looks
at the loop thread's stack (``sys._current_frames``) and at the task the loop is stepping
(``asyncio.current_task(loop)``). When the same callback or task step is still on the stack
after ``threshold`` seconds and the heartbeat has not been served in between, the loop was
blocked by that step: the watchdog records it with the stack at that moment. It works on
asyncio's loops and :class:`labkit.VirtualTimeLoop` for every callback and task step; on uvloop,
which runs callbacks from C, for task steps only.

In pytest, use ``@pytest.mark.labkit_watchdog(threshold=0.1)``, the ini option
``labkit_watchdog = 0.1`` for a whole suite, or the ``watchdog`` fixture.

Example::

    async with labkit.Watchdog(threshold=0.1):
        await fetch_with_retry(flaky_server)
    # BlockingCallError: task 'fetch' blocked the event loop for more than 0.1 s of real time
    #     client.py:12 in fetch_with_retry: time.sleep(backoff)
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import sys
import threading
import time
import types
import weakref
from dataclasses import dataclass
from typing import Any

from labkit._stacks import Raw, format_stack, locations, task_label
from labkit.trace import Location

__all__ = ["BlockingCall", "BlockingCallError", "Watchdog"]

_ASYNCIO = os.path.normcase(os.path.dirname(asyncio.__file__)) + os.sep
_LABKIT = os.path.normcase(os.path.dirname(os.path.abspath(__file__))) + os.sep
_DRIVERS = frozenset({"_run", "_run_once"})
_IDLE_FILES = frozenset({"selectors.py", "loop.py"})


@dataclass(frozen=True)
class BlockingCall:
    """One step that blocked the loop: who ran it, the stack while it blocked, for how long."""

    culprit: str
    """``task 'fetch'``, ``task running fetch()`` or ``callback on_timer()``."""
    stack: tuple[Location, ...]
    """The loop thread's stack while it was blocked, most recent call last (your code only)."""
    threshold: float
    """The watchdog's threshold in real seconds."""
    seconds: float
    """Real seconds the step was seen blocking (a lower bound; varies from run to run)."""

    def __str__(self) -> str:
        head = (
            f"{self.culprit} blocked the event loop for more than {self.threshold:g} s of real time"
        )
        return f"{head}\n{format_stack(self.stack, '    ')}"


class BlockingCallError(AssertionError):
    """A callback or task step blocked the event loop for longer than the threshold.

    With several blocks the message counts them and numbers each one, so the same line
    blocking twice reads as two blocks, not as a report printed twice.
    """

    def __init__(self, blocks: list[BlockingCall]) -> None:
        if len(blocks) == 1:
            message = str(blocks[0])
        else:
            numbered = (f"{n}. {block}" for n, block in enumerate(blocks, 1))
            message = "\n".join([f"{len(blocks)} blocking calls:", *numbered])
        super().__init__(message)
        self.blocks = blocks


def _is_driver(frame: types.FrameType) -> bool:
    path = os.path.normcase(frame.f_code.co_filename)
    if frame.f_code.co_name not in _DRIVERS:
        return False
    return path.startswith(_ASYNCIO) or path == os.path.join(_LABKIT, "scheduler.py")


def _callback_frame(leaf: types.FrameType | None) -> types.FrameType | None:
    """The frame of the callback or task step the loop thread is running, or None when idle."""
    child: types.FrameType | None = None
    frame = leaf
    outermost_coroutine: types.FrameType | None = None
    while frame is not None:
        if _is_driver(frame):
            if child is None:
                return None
            if os.path.basename(child.f_code.co_filename) in _IDLE_FILES:
                return None  # in the selector: waiting for I/O or timers, not blocked
            return child
        if frame.f_code.co_flags & inspect.CO_COROUTINE:
            outermost_coroutine = frame
        child = frame
        frame = frame.f_back
    # No asyncio frame (uvloop runs callbacks from C): a task step is its outermost coroutine.
    return outermost_coroutine


def _stack_until(leaf: types.FrameType, callback: types.FrameType) -> tuple[Raw, ...]:
    raw: list[Raw] = []
    frame: types.FrameType | None = leaf
    while frame is not None:
        raw.append((frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_qualname))
        if frame is callback:
            break
        frame = frame.f_back
    return tuple(raw)


class Watchdog:
    """Record every callback or task step that blocks the loop for over ``threshold`` real seconds.

    Use it as ``async with Watchdog():`` inside the loop, ``with Watchdog(loop=loop):`` around
    ``loop.run_until_complete``, or by :meth:`start` / :meth:`stop` (best called from the loop's
    thread; otherwise the loop's first heartbeat tells the watchdog which thread to watch). On
    exit it raises :class:`BlockingCallError` naming each blocking step with its stack. Blocks
    shorter than ``threshold`` are never reported; blocks between ``threshold`` and
    ``1.2 * threshold`` may be missed (the watchdog looks five times per threshold). It only
    watches while the loop is running.

    Example::

        with labkit.Watchdog(threshold=0.05, loop=loop) as dog:
            loop.run_until_complete(main())
        print(dog.blocks)   # [] when nothing blocked
    """

    def __init__(
        self, threshold: float = 0.1, *, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        if (
            not isinstance(threshold, (int, float))
            or isinstance(threshold, bool)
            or not math.isfinite(threshold)
            or threshold <= 0
        ):
            raise ValueError(
                f"threshold must be a number of real seconds > 0 (e.g. 0.1), got {threshold!r}"
            )
        self.threshold = float(threshold)
        self._loop = loop
        self._interval = max(self.threshold / 5, 0.001)
        self._blocks: list[BlockingCall] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._loop_thread = 0
        self._served = 0
        self._outstanding = False

    @property
    def blocks(self) -> list[BlockingCall]:
        """The blocks seen so far, in the order they started."""
        return list(self._blocks)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> Watchdog:
        """Start watching ``loop`` (default: the constructor's, else the running loop)."""
        if self._thread is not None:
            raise RuntimeError("this Watchdog is already running")
        loop = loop or self._loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    "Watchdog.start() needs a loop: pass loop=..., or use "
                    "`async with Watchdog():` inside a coroutine"
                ) from None
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._watch, name="labkit-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[BlockingCall]:
        """Stop watching; return every block seen."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            thread.join()
        return self.blocks

    def assert_no_blocking(self) -> None:
        """Raise :class:`BlockingCallError` if any step blocked the loop past the threshold."""
        if self._blocks:
            raise BlockingCallError(self.blocks)

    def _beat(self) -> None:
        self._loop_thread = threading.get_ident()  # the loop's thread, whoever called start()
        self._served += 1
        self._outstanding = False

    def _watch(self) -> None:
        loop = self._loop
        assert loop is not None
        run_key: tuple[int, Any] | None = None
        run_task: weakref.ref[asyncio.Task[Any]] | None = None
        run_since = 0.0
        run_served = -1
        run_block: int | None = None
        while not self._stopping.wait(self._interval):
            if loop.is_closed() or not loop.is_running():
                run_key = run_task = run_block = None
                self._outstanding = False
                continue
            if not self._outstanding:
                self._outstanding = True
                try:
                    loop.call_soon_threadsafe(self._beat)
                except RuntimeError:  # closed in between
                    continue
            now = time.monotonic()
            leaf = sys._current_frames().get(self._loop_thread)
            callback = _callback_frame(leaf)
            if leaf is None or callback is None:
                run_key = run_task = run_block = None
                continue
            task = asyncio.current_task(loop)
            key = (id(callback), callback.f_code)
            same = (
                key == run_key
                and self._served == run_served
                and (run_task() if run_task is not None else None) is task
            )
            if not same:
                run_key, run_since, run_served, run_block = key, now, self._served, None
                run_task = weakref.ref(task) if task is not None else None
            elif now - run_since >= self.threshold:
                if run_block is None:
                    culprit = (
                        task_label(task)
                        if task is not None
                        else f"callback {callback.f_code.co_qualname}()"
                    )
                    stack = locations(_stack_until(leaf, callback), 8)
                    run_block = len(self._blocks)
                    self._blocks.append(
                        BlockingCall(culprit, stack, self.threshold, now - run_since)
                    )
                else:
                    old = self._blocks[run_block]
                    self._blocks[run_block] = BlockingCall(
                        old.culprit, old.stack, old.threshold, now - run_since
                    )
            del leaf, callback, task

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._exit(exc)

    async def __aenter__(self) -> Watchdog:
        return self.start(asyncio.get_running_loop())

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._exit(exc)

    def _exit(self, exc: BaseException | None) -> None:
        blocks = self.stop()
        if not blocks:
            return
        if exc is None:
            raise BlockingCallError(blocks)
        exc.add_note(f"(and labkit.Watchdog saw blocking) {BlockingCallError(blocks)}")

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped"
        return f"<Watchdog {state}, threshold {self.threshold:g} s: {len(self._blocks)} block(s)>"
