"""VirtualTimeLoop: an asyncio event loop whose clock is virtual, so sleeps cost no real time.

The clock rule, in one place:

* **Autojump** (default). When the loop is idle (nothing ready) it jumps the clock straight to
  the next timer, unless *real work is in flight*: an executor job, a running subprocess, a
  connected socket or pipe registered with the selector, a real-time interval timer
  (``signal.alarm``/``setitimer``) armed while the loop handles SIGALRM, or a block inside
  ``loop.real_time()``.
  While real work is in flight the virtual clock follows the real one: the loop waits for real
  I/O exactly as long as the next timer is away, and advances the clock by the real time that
  passed. So a 5 s ``wait_for`` on a real socket read gets its 5 real seconds, as in production.
  ``autojump_threshold=T`` relaxes this, trio-style: after ``T`` real seconds in which nothing
  real happened, the clock jumps anyway. Listening sockets and other signal handlers do not
  hold the clock (they wait on the outside world), but they do count as possible wake-ups, so
  a loop with only those is never declared deadlocked.
* **Manual** (``autojump=False``). Time moves only through ``loop.advance(s)`` from outside the
  loop or ``await labkit.advance(s)`` on it.
* **Deadlock**. Idle, with no timer the clock may reach and nothing real that could wake the
  loop: :class:`labkit.DeadlockError`, naming every pending task and where it waits. A raw
  thread (not an executor job) that will call ``call_soon_threadsafe`` is invisible to the
  loop: await its result inside ``with loop.real_time():``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import os
import selectors
import signal
import socket
import time as _time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from typing import Any, TypeVar, TypeVarTuple, Unpack

from labkit.deadlock import DeadlockError, deadlock_message

__all__ = ["VirtualTimeLoop", "advance", "new_virtual_loop", "run"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")
_EVENT_MASK = selectors.EVENT_READ | selectors.EVENT_WRITE
_LABKIT_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_REAL_RESOLUTION = _time.get_clock_info("monotonic").resolution
_ULP_SAFE = 2.0**21  # below this, 2 * ulp(t) < 1 ns: the real clock's resolution is enough


class _VirtualSelector(selectors.BaseSelector):
    """Wraps a real selector; remembers which registrations are real work."""

    def __init__(self, real: selectors.BaseSelector) -> None:
        self.real = real
        self.loop: VirtualTimeLoop | None = None
        self.internal: set[int] = set()
        self.listeners: set[int] = set()
        # Registered fds that are not the loop's own self-pipe: counted without get_map(),
        # which costs a Python-level __len__ on every loop iteration.
        self.outside: set[int] = set()
        self.constructing = True

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = self.real.register(fileobj, events, data)
        if self.constructing:
            self.internal.add(key.fd)
            return key
        self.outside.add(key.fd)
        if _is_listening_socket(key.fd):
            self.listeners.add(key.fd)
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        key = self.real.unregister(fileobj)
        self.listeners.discard(key.fd)
        self.internal.discard(key.fd)
        self.outside.discard(key.fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self.real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        assert self.loop is not None
        return self.loop._select(timeout)

    def close(self) -> None:
        self.real.close()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self.real.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self.real.get_map()

    def external_fds(self) -> int:
        """How many registered fds belong to real I/O that can hold the clock."""
        return len(self.outside) - len(self.listeners)

    def wake_sources(self) -> int:
        return len(self.outside)


def _is_listening_socket(fd: int) -> bool:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return False
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        return False
    finally:
        sock.detach()


def _check_options(autojump: object, autojump_threshold: object, start: object) -> None:
    if not isinstance(autojump, bool):
        raise TypeError(
            f"autojump must be True (the clock jumps to the next timer when the loop is idle) "
            f"or False (it moves only when advanced), got {autojump!r}"
        )
    if autojump_threshold is not None and (
        not isinstance(autojump_threshold, (int, float))
        or isinstance(autojump_threshold, bool)
        or not autojump_threshold >= 0
    ):
        raise ValueError(
            f"autojump_threshold must be a number of real seconds >= 0, or None to follow real "
            f"time exactly, got {autojump_threshold!r}"
        )
    if not isinstance(start, (int, float)) or isinstance(start, bool) or not math.isfinite(start):
        raise ValueError(f"start must be a finite number of seconds, got {start!r}")


def _later(now: float, delta: float) -> float:
    """now + delta, but always strictly later than now (floats stall at large magnitudes)."""
    new = now + delta
    return new if new > now else math.nextafter(now, math.inf)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop with a virtual clock: ``await asyncio.sleep(3600)`` returns at once.

    Everything else is asyncio's own selector loop: tasks, timeouts, queues, streams,
    subprocesses and executors behave exactly as in production. See the module docstring for
    the clock rule.

    Example::

        loop = VirtualTimeLoop()
        loop.run_until_complete(asyncio.sleep(3600))
        assert loop.time() == 3600.0
    """

    def __new__(
        cls,
        selector: selectors.BaseSelector | None = None,
        *,
        autojump: bool = True,
        autojump_threshold: float | None = None,
        start: float = 0.0,
        **extra: Any,
    ) -> VirtualTimeLoop:
        # Arguments are checked here, not in __init__: a loop whose __init__ raised would fail
        # again in BaseEventLoop.__del__ (an "Exception ignored" warning for the user).
        # ``extra`` is for subclasses that take options of their own.
        if extra and cls is VirtualTimeLoop:
            raise TypeError(
                f"VirtualTimeLoop() got an unexpected keyword argument {next(iter(extra))!r}; "
                "it takes selector, autojump, autojump_threshold and start"
            )
        _check_options(autojump, autojump_threshold, start)
        return super().__new__(cls)

    def __init__(
        self,
        selector: selectors.BaseSelector | None = None,
        *,
        autojump: bool = True,
        autojump_threshold: float | None = None,
        start: float = 0.0,
    ) -> None:
        self._vt_now = float(start)
        self._vt_start = float(start)
        self._vt_autojump = autojump
        self._vt_autojump_threshold = autojump_threshold
        self._vt_executor_jobs = 0
        self._vt_subprocesses: list[asyncio.SubprocessTransport] = []
        self._vt_signal_handlers = 0
        self._vt_real_holds = 0
        self._vt_advance_target: float | None = None
        self._vt_advance_waiter: asyncio.Future[None] | None = None
        self._vt_idle_waiters: list[asyncio.Future[None]] = []
        #: Called with the select timeout before the loop waits; labkit.scheduler sets it while it
        #: holds task wake-ups, and it returns True when it released some (they run at once).
        self.select_hook: Callable[[float | None], bool] | None = None
        self._vt_selector = _VirtualSelector(
            selector if selector is not None else selectors.DefaultSelector()
        )
        super().__init__(self._vt_selector)
        self._vt_selector.loop = self
        # The hot path: asyncio calls selector.select() once per iteration; go straight to us.
        self._vt_selector.select = self._select  # type: ignore[method-assign,assignment]
        self._vt_selector.constructing = False

    # -- the clock ----------------------------------------------------------------------

    def time(self) -> float:
        """The virtual time in seconds, starting at ``start`` (0.0 by default)."""
        return self._vt_now

    # asyncio runs a timer once ``when < time() + _clock_resolution``. With the real clock's 1 ns
    # resolution that sum stops moving past ~1e7 s (116 days) of virtual time, and a timer due
    # "now" would never run: the loop spins. The resolution grows with the clock instead.
    @property
    def _clock_resolution(self) -> float:
        now = self._vt_now
        if -_ULP_SAFE < now < _ULP_SAFE:  # the common case, read once per loop iteration
            return _REAL_RESOLUTION
        return max(_REAL_RESOLUTION, 2 * math.ulp(now))

    @_clock_resolution.setter
    def _clock_resolution(self, _value: float) -> None:
        pass  # BaseEventLoop.__init__ assigns the real clock's resolution; the property rules

    @property
    def autojump(self) -> bool:
        """Whether the clock jumps to the next timer by itself when the loop is idle."""
        return self._vt_autojump

    def advance(self, seconds: float) -> None:
        """From outside the loop: run it until the clock has moved by ``seconds``.

        Every callback falling due on the way runs at its own scheduled time; returns once the
        loop is idle at the new time.

        Example::

            loop = VirtualTimeLoop(autojump=False)
            task = loop.create_task(asyncio.sleep(10))
            loop.advance(10)
            assert task.done() and loop.time() == 10.0
        """
        if self.is_running():
            raise RuntimeError(
                "loop.advance() was called while the loop is running; from a coroutine on the "
                "loop use `await labkit.advance(seconds)` instead"
            )
        self.run_until_complete(self._advance_by(seconds))

    async def _advance_by(self, seconds: float) -> None:
        if (
            not isinstance(seconds, (int, float))
            or isinstance(seconds, bool)
            or math.isnan(seconds)
            or seconds < 0
        ):
            raise ValueError(f"advance() needs a number of seconds >= 0, got {seconds!r}")
        if math.isinf(seconds):
            raise ValueError(
                "advance() needs a finite number of seconds, got inf: the clock would pass "
                "every timer and never move again; advance by the time the test needs"
            )
        if self._vt_advance_waiter is not None:
            raise RuntimeError("another advance() is already in progress on this loop")
        waiter: asyncio.Future[None] = self.create_future()
        self._vt_advance_target = self._vt_now + float(seconds)
        self._vt_advance_waiter = waiter
        try:
            await waiter
        finally:
            self._vt_advance_target = None
            self._vt_advance_waiter = None

    async def wait_idle(self) -> None:
        """Return when every other task is blocked and nothing is ready; no virtual time passes.

        The building block of :func:`labkit.run_until_idle` and of stepping.

        Example::

            asyncio.create_task(worker())
            await asyncio.get_running_loop().wait_idle()   # worker now waits on its queue
        """
        waiter: asyncio.Future[None] = self.create_future()
        self._vt_idle_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._vt_idle_waiters:
                self._vt_idle_waiters.remove(waiter)

    @contextlib.contextmanager
    def real_time(self) -> Iterator[None]:
        """Hold the clock to real time while real work the loop cannot see is in flight.

        Use it around a raw thread that will call ``call_soon_threadsafe``; executor jobs,
        subprocesses and sockets are detected without it.

        Example::

            with loop.real_time():
                post = lambda: loop.call_soon_threadsafe(fut.set_result, 1)
                threading.Thread(target=post).start()
                await fut
        """
        self._vt_real_holds += 1
        try:
            yield
        finally:
            self._vt_real_holds -= 1

    # -- what counts as real work ------------------------------------------------------

    def _clock_held(self) -> bool:
        if self._vt_real_holds or self._vt_executor_jobs or self._vt_selector.external_fds() > 0:
            return True
        if self._vt_signal_handlers and self._alarm_armed():
            return True
        if self._vt_subprocesses:
            # A closed transport still holds the clock until its process is reaped: close()
            # kills the child, and the exit arrives later from the child watcher.
            self._vt_subprocesses = [t for t in self._vt_subprocesses if t.get_returncode() is None]
        return bool(self._vt_subprocesses)

    def _alarm_armed(self) -> bool:
        # The one signal whose arrival time the loop can know: a real-time interval timer.
        sigalrm = getattr(signal, "SIGALRM", None)
        handlers: Mapping[int, Any] = getattr(self, "_signal_handlers", {})
        return sigalrm in handlers and signal.getitimer(signal.ITIMER_REAL)[0] > 0

    def _can_be_woken(self) -> bool:
        return (
            self._clock_held()
            or self._vt_signal_handlers > 0
            or self._vt_selector.wake_sources() > 0
        )

    def run_in_executor(
        self, executor: Any, func: Callable[[Unpack[_Ts]], _T], *args: *_Ts
    ) -> asyncio.Future[_T]:
        future = super().run_in_executor(executor, func, *args)
        self._vt_executor_jobs += 1
        future.add_done_callback(self._executor_job_done)
        return future

    def _executor_job_done(self, _future: asyncio.Future[Any]) -> None:
        self._vt_executor_jobs -= 1

    async def shutdown_default_executor(self, *args: Any, **kwargs: Any) -> None:
        with self.real_time():
            await super().shutdown_default_executor(*args, **kwargs)

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:
        with self.real_time():
            transport, protocol = await super().subprocess_exec(*args, **kwargs)
        self._vt_subprocesses.append(transport)
        return transport, protocol

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> Any:
        with self.real_time():
            transport, protocol = await super().subprocess_shell(*args, **kwargs)
        self._vt_subprocesses.append(transport)
        return transport, protocol

    def add_signal_handler(
        self, sig: int, callback: Callable[[Unpack[_Ts]], object], *args: *_Ts
    ) -> None:
        super().add_signal_handler(sig, callback, *args)
        self._vt_signal_handlers += 1

    def remove_signal_handler(self, sig: int) -> bool:
        removed = super().remove_signal_handler(sig)
        if removed:
            self._vt_signal_handlers -= 1
        return removed

    # -- the select step ---------------------------------------------------------------

    def _poll(self) -> list[tuple[selectors.SelectorKey, int]]:
        return self._vt_selector.real.select(0)

    def _select(self, timeout: float | None) -> list[tuple[selectors.SelectorKey, int]]:
        hook = self.select_hook
        if hook is not None and hook(timeout):
            timeout = 0  # held tasks were just made ready: they run in this iteration
        if timeout is not None and timeout <= 0:
            # Busy: poll real I/O only if some exists; callbacks from threads are already queued.
            if self._vt_signal_handlers or self._vt_selector.outside:
                return self._poll()
            return []
        # Idle: nothing is ready. Idle waiters first: they observe the loop before time moves.
        if self._vt_idle_waiters:
            waiters, self._vt_idle_waiters = self._vt_idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            return self._poll()
        now = self._vt_now
        next_due = math.inf if timeout is None else now + timeout
        target = self._vt_advance_target
        if target is not None:
            limit = target
        elif self._vt_autojump:
            if self._clock_held():
                return self._follow_real_time(timeout)
            limit = math.inf
        else:
            limit = now
        if timeout is not None and next_due <= limit:
            events = self._poll()
            if not events:
                self._vt_now = _later(now, timeout)
            return events
        if target is not None:
            self._vt_now = max(now, target)
            advanced = self._vt_advance_waiter
            if advanced is not None and not advanced.done():
                advanced.set_result(None)
            return self._poll()
        if self._can_be_woken():
            events = self._vt_selector.real.select(None)
            return events
        events = self._poll()
        if events:
            return events
        tasks = sorted((t for t in asyncio.all_tasks(self) if not t.done()), key=_task_order)
        raise DeadlockError(
            deadlock_message(tasks, manual_clock=not self._vt_autojump and timeout is not None),
            tasks,
        )

    def _follow_real_time(self, timeout: float | None) -> list[tuple[selectors.SelectorKey, int]]:
        threshold = self._vt_autojump_threshold
        wait = (
            timeout
            if threshold is None
            else min(math.inf if timeout is None else timeout, threshold)
        )
        started = _time.monotonic()
        events = self._vt_selector.real.select(wait)
        elapsed = _time.monotonic() - started
        if timeout is not None and (not events or elapsed >= timeout):
            # The next timer is due: either its real wait elapsed, or nothing real happened for
            # autojump_threshold seconds and the clock may jump to it.
            self._vt_now = _later(self._vt_now, timeout)
        elif events and elapsed > 0:
            self._vt_now = _later(self._vt_now, elapsed)
        return events


def new_virtual_loop(**options: Any) -> VirtualTimeLoop:
    """A loop factory for ``asyncio.Runner(loop_factory=...)`` and pytest-asyncio.

    Example::

        with asyncio.Runner(loop_factory=labkit.new_virtual_loop) as runner:
            runner.run(main())
    """
    return VirtualTimeLoop(**options)


def run(main: Coroutine[Any, Any, _T], *, virtual: bool = True, debug: bool | None = None) -> _T:
    """Run a coroutine to completion on a fresh loop, like ``asyncio.run``, in virtual time.

    Example::

        async def main():
            await asyncio.sleep(86_400)
            return asyncio.get_running_loop().time()

        assert labkit.run(main()) == 86_400.0
    """
    factory = new_virtual_loop if virtual else None
    with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
        return runner.run(main)


def advance(seconds: float) -> Awaitable[None]:
    """From a task on a VirtualTimeLoop: move the clock by ``seconds``, running what falls due.

    Works in both clock modes; returns once the loop is idle at the new time.

    Example::

        task = asyncio.create_task(asyncio.sleep(5))
        await labkit.advance(5)
        assert task.done()
    """
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualTimeLoop):
        raise TypeError(
            f"labkit.advance() needs a VirtualTimeLoop, but the running loop is "
            f"{type(loop).__module__}.{type(loop).__qualname__}; run the test with "
            "loop_factory=labkit.new_virtual_loop (or the pytest marker loop_factories=['virtual'])"
        )
    return loop._advance_by(seconds)


def _task_order(task: asyncio.Task[Any]) -> tuple[int, str]:
    name = task.get_name()
    number = name[5:] if name.startswith("Task-") else ""
    return (int(number) if number.isdigit() else -1, name)


def standard_loop_idle(loop: asyncio.AbstractEventLoop) -> bool | None:
    """On asyncio's own loops: whether no callback is queued and no timer is due right now.

    None when the loop keeps its queue out of sight (uvloop). Used by labkit.run_until_idle
    (shared with labkit.scheduler, so not underscored, and not exported).

    Example::

        assert standard_loop_idle(asyncio.new_event_loop()) is True
    """
    if not isinstance(loop, asyncio.BaseEventLoop):
        return None
    ready = getattr(loop, "_ready", None)
    scheduled = getattr(loop, "_scheduled", None)
    if ready is None or scheduled is None:
        return None
    if ready:
        return False
    due = loop.time() + getattr(loop, "_clock_resolution", 0.0)
    return all(timer.cancelled() or timer.when() >= due for timer in scheduled)


def enqueue(loop: VirtualTimeLoop, handle: asyncio.Handle) -> None:
    """Queue an existing handle to run in the loop's next iteration, as ``call_soon`` queues a
    new one: labkit's scheduler makes the handle when it holds a task wake-up, and queues it
    when it releases the wake-up. Shared with labkit.scheduler, so not underscored, and not
    exported.

    Example::

        handle = asyncio.Handle(print, ("released",), loop, contextvars.copy_context())
        enqueue(loop, handle)       # runs in the loop's next iteration
    """
    base: Any = loop  # asyncio's BaseEventLoop internals, untyped
    base._ready.append(handle)


class HeldHandle(asyncio.Handle):
    """asyncio's Handle, made cheaply: for the task wake-ups labkit's scheduler holds.

    Exploration makes one handle per task step, so the few field assignments of
    ``Handle.__init__`` plus its debug-mode check add up; this sets asyncio's fields directly
    (in debug mode it is ``Handle.__init__``, source traceback and all). It behaves as a Handle
    in every way (``cancel()``, ``cancelled()``, ``repr``); subclasses add their own slots.
    Shared with labkit.scheduler, so not underscored, and not exported.

    Example::

        handle = HeldHandle(print, ("held",), loop, contextvars.copy_context())
        handle.cancel()
        assert handle.cancelled()
    """

    __slots__ = ()

    def __init__(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: VirtualTimeLoop,
        context: contextvars.Context,
    ) -> None:
        base: Any = loop  # asyncio's BaseEventLoop internals, untyped
        fields: Any = self
        if base._debug:
            super().__init__(callback, args, loop, context)
            # Where it was made, as asyncio's call_soon reports it: the caller, not labkit.
            stack = fields._source_traceback
            while stack and stack[-1].filename.startswith(_LABKIT_DIR):
                stack.pop()
            return
        fields._context = context
        fields._loop = loop
        fields._callback = callback
        fields._args = args
        fields._cancelled = False
        fields._repr = None
        fields._source_traceback = None


def only_selecting(loop: VirtualTimeLoop) -> bool:
    """Whether the loop's next iteration would do nothing before its select hook runs a task.

    True when no callback is queued, no timer is due, no real I/O or signal could be polled,
    the loop is not stopping and not in debug mode (which times each callback): then labkit's
    exploration may run the next chosen task step at once instead of in a new iteration, with
    the same result. Shared with labkit.scheduler, so not underscored, and not exported.

    Example::

        if only_selecting(loop):
            run_next_step()       # what the next iteration would have done, minus its cost
    """
    base: Any = loop  # asyncio's BaseEventLoop internals, untyped
    if (
        base._ready
        or base._stopping
        or base._debug
        or loop._vt_signal_handlers
        or loop._vt_selector.outside
    ):
        return False
    scheduled = base._scheduled
    return not scheduled or scheduled[0]._when >= loop._vt_now + loop._clock_resolution


async def _nothing() -> None:
    """A coroutine that returns at once: one more turn of the loop."""


class FreshState:
    """A VirtualTimeLoop as its factory made it, to put it back after each run of an exploration.

    Exploration runs a body hundreds of times; a fresh loop per run costs more than the run
    itself. :meth:`restore` ends a run the way ``asyncio.Runner.close`` would (leftover tasks
    cancelled and awaited, their errors reported, async generators closed), then drops every
    pending callback and timer and resets the clock, the task factory, the exception handler and
    the debug settings, so the next run sees a loop indistinguishable from a new one. It refuses
    (returns False) when the run left real resources behind that a new loop would not have: an
    executor job or subprocess in flight, a registered socket or pipe, a signal handler, a
    ``real_time()`` block, a replaced or shut-down executor. Shared with labkit.explore, so not
    underscored, and not exported.

    Example::

        loop = new_virtual_loop()
        fresh = FreshState(loop)
        loop.run_until_complete(asyncio.sleep(5))
        assert fresh.restore() and loop.time() == 0.0
    """

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self.loop = loop
        self.now = loop._vt_now
        self.task_factory = loop.get_task_factory()
        self.exception_handler = loop.get_exception_handler()
        self.debug = loop.get_debug()
        self.slow_callback_duration = loop.slow_callback_duration
        base: Any = loop  # asyncio's BaseEventLoop internals, untyped
        self.executor = base._default_executor

    def restore(self, tasks: Iterable[asyncio.Task[Any]] | None = None) -> bool:
        """End the run (as ``asyncio.Runner.close`` would) and reset the loop; False if it cannot.

        ``tasks``: every task the run made, if the caller knows them (saves asking asyncio for
        all tasks of every loop); by default, ``asyncio.all_tasks(loop)``.
        """
        loop = self.loop
        base: Any = loop  # asyncio's BaseEventLoop internals, untyped
        if loop.is_closed() or loop.is_running():
            return False
        if tasks is None:
            leftover = asyncio.all_tasks(loop)
        else:
            leftover = {task for task in tasks if not task.done()}
        ended = bool(leftover)
        if leftover:
            for task in leftover:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            for task in leftover:
                if not task.cancelled() and task.exception() is not None:
                    loop.call_exception_handler(
                        {
                            "message": "unhandled exception during asyncio.run() shutdown",
                            "exception": task.exception(),
                            "task": task,
                        }
                    )
        scheduled = base._scheduled
        if (
            base._asyncgens
            or base._ready
            or (scheduled and scheduled[0]._when < loop._vt_now + loop._clock_resolution)
        ):
            # Runner.close() would now run the loop twice (to close async generators and the
            # default executor), so callbacks still queued, or timers due, get to run: so here.
            ended = True
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(_nothing())
        if ended and asyncio.all_tasks(loop):
            return False  # ending the run started new tasks: a new loop would not have them
        if (
            base._executor_shutdown_called
            or base._default_executor is not self.executor
            or loop._vt_signal_handlers
            or loop._vt_selector.outside
            or loop._vt_advance_waiter is not None
            or loop._clock_held()
        ):
            return False
        base._asyncgens_shutdown_called = False
        if base._ready:
            for handle in base._ready:
                handle.cancel()
            base._ready.clear()
        if base._scheduled:
            for timer in base._scheduled:
                timer._scheduled = False  # dropped here, so cancel() must not count it again
                timer.cancel()
            base._scheduled.clear()
        base._timer_cancelled_count = 0
        loop._vt_idle_waiters.clear()
        loop._vt_advance_target = None
        loop._vt_now = self.now
        if base._task_factory is not self.task_factory:
            loop.set_task_factory(self.task_factory)
        if base._exception_handler is not self.exception_handler:
            loop.set_exception_handler(self.exception_handler)
        if base._debug != self.debug:
            loop.set_debug(self.debug)
        loop.slow_callback_duration = self.slow_callback_duration
        return True
