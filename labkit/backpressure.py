"""Backpressure checks: prove that a producer blocks on a full queue, and advances one by one.

A bounded queue only protects memory if producers really wait for room. The classic test of
that guesses with ``await asyncio.sleep(0)`` how many scheduling rounds the producer needs; it
breaks as soon as the producer's path gains or loses an ``await``. These helpers settle the loop
instead (run it until nothing is ready), then look at where the task is suspended.

Example::

    queue = labkit.CountingQueue(maxsize=5)
    producer = asyncio.create_task(produce(queue, range(100)), name="producer")
    blocked = await labkit.assert_blocks(producer, at="put", progress=queue)
    queue.get_nowait()                         # consume one item
    await blocked.assert_advanced(1)           # exactly one more put, then blocked again
"""

from __future__ import annotations

import asyncio
import linecache
import re
import threading
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from labkit._stacks import file_label, in_asyncio
from labkit.deadlock import suspension_frames
from labkit.loop import VirtualTimeLoop

__all__ = ["Blocked", "CountingQueue", "assert_blocks", "is_blocked", "suspended_at"]

_T = TypeVar("_T")
_REAL_LOOP_SETTLE_ROUNDS = 50
_SETTLE_GUARD = 5.0
Progress = Callable[[], int]


class CountingQueue(asyncio.Queue[_T]):
    """An ``asyncio.Queue`` that counts the items that went in and out, for progress checks.

    ``put_count`` and ``get_count`` grow with every item put and taken (blocking or not), so a
    test can tell "the producer put exactly one more item" from "the queue is full again".

    Example::

        queue = labkit.CountingQueue(maxsize=2)
        queue.put_nowait("a")
        queue.get_nowait()
        assert (queue.put_count, queue.get_count) == (1, 1)
    """

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self.put_count = 0
        self.get_count = 0

    def put_nowait(self, item: _T) -> None:
        super().put_nowait(item)
        self.put_count += 1

    def get_nowait(self) -> _T:
        item = super().get_nowait()
        self.get_count += 1
        return item


def is_blocked(task: asyncio.Future[Any], *, at: str | None = None) -> bool:
    """True when the task is pending and waits for something that has not happened yet.

    A task that is merely ready to run (woken, or yielding with ``sleep(0)``) is not blocked.
    ``at`` narrows the question to a place: a function name (``"put"``, ``"Queue.put"``) or
    text of the awaiting line (``"queue.put"``). Call it once the loop has settled; the
    :func:`assert_blocks` helper settles for you.

    Example::

        queue = asyncio.Queue(maxsize=1)
        queue.put_nowait(0)
        task = asyncio.create_task(queue.put(1), name="put")
        await labkit.run_until_idle()
        assert labkit.is_blocked(task, at="put")
    """
    if task.done():
        return False
    if isinstance(task, asyncio.Task):
        # The future a task waits on is only reachable through Task._fut_waiter; asyncio has
        # kept it in both of its Task implementations since 3.4.
        waiter = getattr(task, "_fut_waiter", None)
        if waiter is None or waiter.done():
            return False
    return at is None or _matches(task, at)


def suspended_at(task: asyncio.Future[Any]) -> str:
    """Where a task is suspended, innermost frame of its own code first, as readable text.

    A task that is done says so instead: ``not suspended: finished (returned None)``,
    ``not suspended: finished (raised ValueError('x'))`` or ``not suspended: cancelled``.

    Example::

        print(labkit.suspended_at(producer))
        # produce.py:12 in produce: await queue.put(item) -> in asyncio Queue.put
    """
    if task.done():
        return f"not suspended: {_outcome(task)}"
    if not isinstance(task, asyncio.Task):
        return "waiting for a future to be resolved"
    frames = list(suspension_frames(task.get_coro()))
    if not frames:
        return "not started yet"
    own = [frame for frame in frames if not in_asyncio(frame)]
    inside = [frame for frame in frames if in_asyncio(frame)]
    text = _describe(own[-1]) if own else ""
    if inside:
        library = f"in asyncio {inside[0].f_code.co_qualname}"
        text = f"{text} -> {library}" if text else library
    return text


@dataclass
class Blocked:
    """A task proven blocked; it can then prove the task advanced by an exact amount.

    Returned by :func:`assert_blocks`. ``where`` says where the task waits; ``progress`` is the
    value of the progress measure at that moment (``None`` without one).

    Example::

        blocked = await labkit.assert_blocks(producer, at="put", progress=queue)
        queue.get_nowait()
        blocked = await blocked.assert_advanced(1)
    """

    task: asyncio.Future[Any] = field(repr=False)
    where: str
    progress: int | None = None
    at: str | None = None
    measure: Progress | None = field(default=None, repr=False)

    async def assert_advanced(
        self, by: int = 1, *, at: str | None = None, then_blocked: bool = True
    ) -> Blocked:
        """Settle the loop; assert progress grew by exactly ``by`` and the task waits again.

        ``at`` defaults to the place given to :func:`assert_blocks`; ``then_blocked=False``
        allows the task to have finished (after its last item).
        """
        if self.measure is None or self.progress is None:
            raise TypeError(
                "assert_advanced() needs a progress measure: pass progress=queue (a "
                "labkit.CountingQueue) or progress=<callable returning a count> to assert_blocks()"
            )
        await settle()
        now = self.measure()
        moved = now - self.progress
        name = _name(self.task)
        if moved != by:
            raise AssertionError(
                f"{name} advanced {moved} item(s), expected exactly {by}; it {_state(self.task)}"
            )
        place = self.at if at is None else at
        if then_blocked and not is_blocked(self.task, at=place):
            raise AssertionError(_not_blocked_message(self.task, place, "after advancing"))
        return Blocked(self.task, suspended_at(self.task), now, place, self.measure)


async def assert_blocks(
    target: Awaitable[Any],
    *,
    at: str | None = None,
    progress: CountingQueue[Any] | Progress | None = None,
) -> Blocked:
    """Settle the loop, then assert the task (or awaitable) is blocked, optionally at ``at``.

    Given a task, it keeps running afterwards. Given any other awaitable (``queue.put(x)``),
    the helper runs it as a task named ``assert_blocks``, proves it blocks, then cancels it.
    ``progress`` (a :class:`CountingQueue`, whose ``put_count`` is used, or a callable
    returning a count) lets the returned :class:`Blocked` check exact progress later. Settling
    is :func:`labkit.run_until_idle`: exact on the virtual loop, honest on asyncio's own loop;
    uvloop hides its ready queue, so there it raises a TypeError.

    Example::

        queue = asyncio.Queue(maxsize=1)
        queue.put_nowait("first")
        await labkit.assert_blocks(queue.put("second"), at="put")
    """
    try:
        measure = _measure(progress)
    except TypeError:
        if asyncio.iscoroutine(target):
            target.close()
        raise
    if isinstance(target, asyncio.Future):
        task: asyncio.Future[Any] = target
        owned = False
    elif asyncio.iscoroutine(target) or hasattr(target, "__await__"):
        task = asyncio.ensure_future(target)
        if isinstance(task, asyncio.Task):
            task.set_name("assert_blocks")
        owned = True
    else:
        raise TypeError(
            f"assert_blocks() needs a task or an awaitable, got {type(target).__name__}: pass "
            "the task (`asyncio.create_task(produce(q), name='producer')`) or e.g. `queue.put(x)`"
        )
    try:
        await settle()
        if not is_blocked(task, at=at):
            raise AssertionError(_not_blocked_message(task, at, "once the loop settled"))
        return Blocked(
            task, suspended_at(task), None if measure is None else measure(), at, measure
        )
    finally:
        if owned and not task.done():
            task.cancel()
            await asyncio.wait({task})


def _measure(progress: CountingQueue[Any] | Progress | None) -> Progress | None:
    if progress is None:
        return None
    if isinstance(progress, CountingQueue):
        queue = progress
        return lambda: queue.put_count
    if isinstance(progress, asyncio.Queue):
        raise TypeError(
            "progress= needs a count that only grows, and a plain asyncio.Queue has none: use "
            "labkit.CountingQueue(maxsize=...) in the test, or pass a callable returning a count"
        )
    if not callable(progress):
        raise TypeError(
            f"progress= must be a labkit.CountingQueue or a callable returning a count, got "
            f"{type(progress).__name__}"
        )
    return progress


async def settle(*, any_loop: bool = False) -> None:
    """Run the loop until every task is blocked and nothing is ready (labkit.run_until_idle).

    On the virtual loop a task that never blocks (``while True: await asyncio.sleep(0)``)
    would keep the loop busy for ever, so a real-time guard of ``_SETTLE_GUARD`` seconds turns
    that into an AssertionError naming the busy tasks. ``any_loop`` lets loops whose ready
    queue is out of sight (uvloop) settle approximately, by letting them run 50 rounds.
    """
    from labkit.scheduler import run_until_idle

    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualTimeLoop):
        if any_loop and not isinstance(loop, asyncio.BaseEventLoop):
            for _ in range(_REAL_LOOP_SETTLE_ROUNDS):
                await asyncio.sleep(0)
            return
        await run_until_idle()
        return
    idle = loop.create_task(run_until_idle(), name="labkit-settle")
    expired: list[bool] = []

    def expire() -> None:
        if not idle.done():
            expired.append(True)
            idle.cancel()

    guard = threading.Timer(_SETTLE_GUARD, loop.call_soon_threadsafe, (expire,))
    guard.daemon = True
    guard.start()
    try:
        await asyncio.shield(idle)
    except asyncio.CancelledError:
        if not expired:
            idle.cancel()
            raise
        busy = sorted(
            f"{_name(task)} at {suspended_at(task)}"
            for task in asyncio.all_tasks(loop)
            if task is not idle and task is not asyncio.current_task() and not is_blocked(task)
        )
        raise AssertionError(
            f"the loop never became idle in {_SETTLE_GUARD:g} real seconds: "
            f"{'; '.join(busy) or 'some callback'} never blocks (a loop polling with "
            "`await asyncio.sleep(0)`?); make it wait on an Event, a Queue or a Condition"
        ) from None
    finally:
        guard.cancel()


def _not_blocked_message(task: asyncio.Future[Any], at: str | None, when: str) -> str:
    name = _name(task)
    if not task.done() and is_blocked(task) and at is not None:
        return f"{name} is blocked {when}, but not in {at!r}: it {_place(task, 'waits')}"
    return f"{name} is not blocked {when}: it {_state(task)}"


def _place(task: asyncio.Future[Any], verb: str) -> str:
    """``waits at app.py:3 in f: ...``, or ``waits in asyncio Queue.put`` with no frame of ours."""
    where = suspended_at(task)
    return f"{verb} {where}" if where.startswith("in asyncio ") else f"{verb} at {where}"


def _outcome(task: asyncio.Future[Any]) -> str:
    """``cancelled``, ``finished (returned None)`` or ``finished (raised ValueError('x'))``."""
    if task.cancelled():
        return "cancelled"
    error = task.exception()
    if error is not None:
        return f"finished (raised {_short(error)})"
    return f"finished (returned {_short(task.result())})"


def _ending(task: asyncio.Future[Any]) -> str:
    """The outcome after "it": ``was cancelled`` or ``already finished (returned None)``."""
    if task.cancelled():
        return "was cancelled"
    return f"already {_outcome(task)}"


def _state(task: asyncio.Future[Any]) -> str:
    if task.done():
        return _ending(task)
    if not is_blocked(task):
        return _place(task, "is ready to run (not waiting)")
    return _place(task, "waits")


def _name(task: asyncio.Future[Any]) -> str:
    if isinstance(task, asyncio.Task):
        return f"task {task.get_name()!r}"
    return "the future"


def _matches(task: asyncio.Future[Any], at: str) -> bool:
    if not isinstance(task, asyncio.Task):
        return False
    for frame in suspension_frames(task.get_coro()):
        code = frame.f_code
        if at in (code.co_name, code.co_qualname) or code.co_qualname.endswith("." + at):
            return True
        if not in_asyncio(frame) and at in linecache.getline(code.co_filename, frame.f_lineno):
            return True
    return False


def _describe(frame: types.FrameType) -> str:
    code = frame.f_code
    line = linecache.getline(code.co_filename, frame.f_lineno).strip()
    place = f"{file_label(code.co_filename)}:{frame.f_lineno} in {code.co_qualname}"
    return f"{place}: {line}" if line else place


def _short(value: object) -> str:
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))
    return text if len(text) <= 60 else text[:57] + "..."
