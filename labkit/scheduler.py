"""Deterministic scheduling: run until idle, step tasks one at a time, see what is ready.

Asyncio resumes tasks in the order they were woken. Races hide in that order, and the usual
tools to control it from a test (``await asyncio.sleep(0)`` "to let the other task run",
peeking at ``loop._ready``) are guesses about the loop's internals. On labkit's
:class:`~labkit.VirtualTimeLoop` a test can instead hold task wake-ups and release them
explicitly: :func:`run_until_idle`, :func:`step_through` and :class:`Scheduler` do that with
asyncio's public API from the test's side (plain callbacks keep asyncio's FIFO order).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import types
import weakref
from collections.abc import Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from labkit.loop import (
    HeldHandle,
    VirtualTimeLoop,
    advance,
    enqueue,
    only_selecting,
    standard_loop_idle,
)
from labkit.trace import Labels, Step, StepRecord, TaskState, Trace, capture, outcome, suspension

__all__ = ["Round", "Scheduler", "StepLimitError", "Stepper", "run_until_idle", "step_through"]

_WAKEUP_NAMES = frozenset({"task_wakeup", "__wakeup", "__step"})


class StepLimitError(RuntimeError):
    """A controlled run took more scheduling steps than allowed: a task probably never blocks."""


_current_task = asyncio.current_task


def _naming_code() -> frozenset[types.CodeType]:
    """Functions that give a task its name only after ``loop.create_task`` returns (3.12)."""
    functions: list[Any] = [asyncio.create_task, asyncio.TaskGroup.create_task]
    return frozenset(
        code for code in (getattr(f, "__code__", None) for f in functions) if code is not None
    )


_NAMING_CODE = _naming_code()


def _name_being_given() -> object:
    """The name a caller two frames up is about to give the task being created, if any.

    Python 3.12's ``asyncio.create_task(coro, name=...)`` (and ``TaskGroup.create_task``)
    names the task after the loop made it; an eager task has taken its first step by then,
    and must be labelled by the name it will have.
    """
    frame = sys._getframe(2)
    if frame.f_code in _NAMING_CODE:
        return frame.f_locals.get("name")
    return None


# Whether objects of a type are tasks (future-like, with get_coro), per type: asked per call_soon.
_TASK_TYPES: dict[type, bool] = {}


def _task_of(callback: Any) -> asyncio.Task[Any] | None:
    """The task whose step or wake-up this callback is, or None for a plain callback."""
    owner = getattr(callback, "__self__", None)
    if owner is None:
        return None
    kind = type(owner)
    is_task = _TASK_TYPES.get(kind)
    if is_task is None:
        is_task = _TASK_TYPES[kind] = hasattr(owner, "get_coro") and asyncio.isfuture(owner)
    if not is_task:
        return None
    if type(callback).__name__ == "TaskStepMethWrapper":
        return owner  # type: ignore[no-any-return]
    if getattr(callback, "__name__", "") in _WAKEUP_NAMES:
        return owner  # type: ignore[no-any-return]
    return None


# Awaitables whose state says whether they have started (see _unstarted).
_SAYS_IF_STARTED = frozenset({types.CoroutineType, types.GeneratorType})


def _unstarted(coro: Any) -> bool | None:
    """Whether a coroutine has not begun to run (an eager task's has, before its first wake-up).

    None for an awaitable of another kind (``agen.aclose()``): it does not say.
    """
    kind = type(coro)
    if kind is types.CoroutineType:
        return coro.cr_frame is not None and not coro.cr_suspended and not coro.cr_running
    if kind is types.GeneratorType:
        return coro.gi_frame is not None and not coro.gi_suspended and not coro.gi_running
    return None


class _Entry(HeldHandle):
    """One held task wake-up: the handle ``call_soon`` returned for it, and who made it ready.

    It is the handle the caller got (so ``cancel()`` on it keeps the step from running), but
    the loop never runs it: releasing it runs :meth:`Control._run` with it, or runs the step
    inline (exploration).
    """

    __slots__ = (
        "args",
        "callback",
        "context",
        "label",
        "ready",
        "task",
        "woken_after",
        "woken_at",
        "woken_by",
    )

    ready: tuple[str, ...]
    """The tasks that were ready when this one was released."""

    def __init__(
        self,
        task: asyncio.Task[Any],
        label: str | None,
        callback: Callable[..., Any],
        args: tuple[Any, ...],
        loop: VirtualTimeLoop,
        context: contextvars.Context,
        woken_at: float,
        woken_after: int,
        woken_by: str,
    ) -> None:
        HeldHandle.__init__(self, callback, args, loop, context)
        self.task = task
        self.label = label
        self.callback = callback
        self.args = args
        self.context = context
        self.woken_at = woken_at
        self.woken_after = woken_after
        self.woken_by = woken_by


class _Recorder:
    """What a controlled run remembers: the trace, task names, timers, steps begun."""

    def __init__(self) -> None:
        self.trace = Trace()
        self.labels = Labels()
        self._timers: weakref.WeakKeyDictionary[Any, float] | None = None
        self._started: weakref.WeakSet[asyncio.Task[Any]] | None = None
        self.in_flight = 0
        self.steps_begun = 0

    # Made when first needed: most exploration runs need neither, and each costs a little.

    @property
    def timers(self) -> weakref.WeakKeyDictionary[Any, float]:
        """Future -> when the timer that will resolve it is due."""
        if self._timers is None:
            self._timers = weakref.WeakKeyDictionary()
        return self._timers

    @property
    def started(self) -> weakref.WeakSet[asyncio.Task[Any]]:
        """Tasks of awaitables that cannot tell whether they started, once stepped."""
        if self._started is None:
            self._started = weakref.WeakSet()
        return self._started


class Control:
    """Holds a VirtualTimeLoop's task wake-ups in a pool and releases them on demand.

    Installed, it shadows the loop's ``call_soon``, ``call_at`` and ``create_task`` with
    instance attributes (asyncio's C Task looks ``call_soon`` up on the instance) and sets the
    loop's select hook. A task wake-up goes to the pool; any other callback goes straight to
    the loop, so asyncio's FIFO order for plain callbacks is kept. With ``choose`` set
    (exploration), each select releases one pooled task that ``choose`` picks, and while the
    loop would do nothing else before asking again, the next choice runs at once; otherwise the
    pool is released in FIFO order at the next select, unless an operation of a Scheduler or
    step_through holds it. With ``detail=False`` a step's record leaves out what woke the task
    and where it stopped (the costly part), for runs whose trace nobody reads. A task that an
    eager task factory (Python 3.12+) starts inside ``create_task`` runs its first step there,
    uncontrolled; that step is recorded all the same. Shared by labkit.scheduler and
    labkit.explore, so not underscored, and not exported.

    Example::

        control = Control(loop, choose=lambda ready: len(ready) - 1)   # always the newest
        control.install()
        try:
            loop.run_until_complete(main())
        finally:
            control.uninstall()
        print(control.recorder.trace)
    """

    def __init__(
        self,
        loop: VirtualTimeLoop,
        recorder: _Recorder | None = None,
        *,
        choose: Callable[[Sequence[str]], int] | None = None,
        jitter: Callable[[], float] | None = None,
        exempt: asyncio.Task[Any] | None = None,
        max_steps: int | None = None,
        detail: bool = True,
    ) -> None:
        self.loop = loop
        self.recorder = recorder if recorder is not None else _Recorder()
        self.choose = choose
        self.jitter = jitter
        self.exempt = exempt
        self.max_steps = max_steps
        # detail=False (exploration): each step records only its task, time and who else was
        # ready, not what woke it or where it stopped: labelling happens exactly as with
        # detail, so the schedule is the same; a failing run is run again with detail.
        self.detail = detail
        self.pool: list[_Entry] = []
        self.holding = 0
        self.release_all = False
        self.on_pool: asyncio.Future[None] | None = None
        self.installed = False
        # Eager first steps taken inside a controlled step: recorded after it, in the order
        # they began, so step numbers follow the order steps began in.
        self._stepping = False
        self._eager: list[StepRecord] = []
        self._real_call_soon = types.MethodType(type(loop).call_soon, loop)
        self._real_call_at = types.MethodType(type(loop).call_at, loop)
        self._real_create_task = types.MethodType(type(loop).create_task, loop)

    # -- installing --------------------------------------------------------------------

    def install(self) -> None:
        loop = self.loop
        if loop.select_hook is not None:
            raise RuntimeError(
                "this loop is already under a labkit scheduler (a Scheduler block, a "
                "step_through() or an exploration); finish that one before starting another"
            )
        attributes = vars(loop)
        attributes["call_soon"] = self._call_soon
        attributes["call_at"] = self._call_at
        attributes["create_task"] = self._create_task
        loop.select_hook = self._hook
        self.installed = True

    def uninstall(self) -> None:
        """Stop holding; wake-ups still held are handed to the loop in FIFO order."""
        if not self.installed:
            return
        self.installed = False
        attributes = vars(self.loop)
        attributes.pop("call_soon", None)
        attributes.pop("call_at", None)
        attributes.pop("create_task", None)
        self.loop.select_hook = None
        if not self.loop.is_closed():
            self.release_pool()
        self.pool.clear()

    # -- the loop's side ---------------------------------------------------------------

    def _call_soon(
        self, callback: Callable[..., Any], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        task = _task_of(callback) if hasattr(callback, "__self__") else None
        if task is None or task is self.exempt:
            handle: asyncio.Handle = self._real_call_soon(callback, *args, context=context)
            return handle
        loop = self.loop
        if loop.is_closed():
            raise RuntimeError("Event loop is closed")
        if context is None:
            context = contextvars.copy_context()
        if self.detail:
            woken_by = self._waker(task, args)
        else:
            # What _waker would label, and nothing else: labels number tasks in order.
            woken_by = ""
            current = _current_task(loop)
            if (
                current is not None
                and current is not task
                and current not in self.recorder.labels.assigned
            ):
                self.recorder.labels(current)
        recorder = self.recorder
        entry = _Entry(
            task,
            recorder.labels.assigned.get(task),  # a new task is labelled when first offered
            callback,
            args,
            loop,
            context,
            loop.time(),
            recorder.steps_begun,
            woken_by,
        )
        self.pool.append(entry)
        waiter = self.on_pool
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return entry

    def _call_at(
        self,
        when: float,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        if self.jitter is not None:
            when += self.jitter()
        timer: asyncio.TimerHandle = self._real_call_at(when, callback, *args, context=context)
        for arg in args:
            if asyncio.isfuture(arg):
                self.recorder.timers[arg] = timer.when()
        return timer

    def _create_task(self, coro: Any, **options: Any) -> asyncio.Task[Any]:
        recorder = self.recorder
        loop = self.loop
        real: Callable[..., asyncio.Task[Any]] = self._real_create_task
        if loop.get_task_factory() is None or not _unstarted(coro):
            return real(coro, **options)  # asyncio's Task starts lazily
        creator = asyncio.current_task(loop)
        woken_by = f"created by {recorder.labels(creator)}" if creator is not None else "created"
        now = loop.time()
        begun = recorder.steps_begun
        eager = self._eager
        position = len(eager)
        name = options.get("name")
        if name is None:
            name = _name_being_given()
        with recorder.labels.creating(coro, name):
            task = real(coro, **options)
            if _unstarted(coro):
                return task
            # An eager task factory ran the task's first step inside create_task.
            recorder.steps_begun += 1
            label = recorder.labels(task, coro)  # task.get_coro() is unsafe once it is done
            record = self._record(task, label, now, (), now, begun, woken_by)
        if self._stepping:
            eager.insert(position, record)
        else:
            recorder.trace.pending.append(record)
        return task

    def _unstarted(self, task: asyncio.Task[Any]) -> bool:
        unstarted = _unstarted(task.get_coro())
        return task not in self.recorder.started if unstarted is None else unstarted

    def _waker(self, task: asyncio.Task[Any], args: tuple[Any, ...]) -> str:
        recorder = self.recorder
        current = _current_task(self.loop)
        if not args and self._unstarted(task):
            return f"created by {recorder.labels(current)}" if current is not None else "created"
        if current is task:
            return "itself"
        if current is not None:
            return f"task {recorder.labels(current)}"
        if args and asyncio.isfuture(args[0]):
            if args[0] in recorder.timers:
                return "timer"
            if type(args[0]).__name__ == "_GatheringFuture":
                return "gather"
        return "callback"

    def _hook(self, timeout: float | None) -> bool:
        pool = self.pool
        if not pool:
            return False
        if self.choose is not None:
            limit = self.max_steps
            if limit is not None and len(self.recorder.trace) >= limit:
                raise StepLimitError(
                    f"the run took more than {self.max_steps} scheduling steps without "
                    "finishing: some task never blocks (a `while True: await "
                    "asyncio.sleep(0)` loop?); pass max_steps= to allow more"
                )
            ready = [entry.label or self._label(entry) for entry in pool]
            index = self.choose(ready)
            self.release(pool.pop(index), tuple(ready))
            return True
        if self.release_all or not self.holding:
            self.release_pool()
            return True
        return False

    # -- releasing ---------------------------------------------------------------------

    def _label(self, entry: _Entry) -> str:
        # Labelled when first offered, not when pooled: asyncio.create_task names a task
        # only after the loop has made it (and asked to schedule its first step).
        label = entry.label = self.recorder.labels(entry.task)
        return label

    def tasks(self) -> list[asyncio.Task[Any]]:
        """Every task this control has seen (held, offered or started eagerly)."""
        return list(self.recorder.labels.assigned)

    def ready_names(self) -> tuple[str, ...]:
        return tuple(entry.label or self._label(entry) for entry in self.pool)

    def release_pool(self) -> None:
        pool, self.pool = self.pool, []
        ready = tuple(entry.label or self._label(entry) for entry in pool)
        for entry in pool:
            self.release(entry, ready)

    def release(self, entry: _Entry, ready: tuple[str, ...]) -> None:
        if entry.cancelled():
            return
        entry.ready = ready
        self.recorder.in_flight += 1
        enqueue(self.loop, asyncio.Handle(self._run, (entry,), self.loop, entry.context))

    def _run(self, entry: _Entry) -> None:
        self.recorder.in_flight -= 1
        self._step(entry)
        if self.choose is None:
            return
        # Exploration: while the loop's next iteration would only come back to the select hook
        # to pick the next task, pick it and run it here, in the context it would run in.
        entered = entry.context
        while True:
            chosen = self._inline()
            if chosen is None:
                return
            if chosen.context is entered:
                self._step(chosen)
            else:
                chosen.context.run(self._step, chosen)

    def _inline(self) -> _Entry | None:
        """The hook's next choice, made now, if nothing else would happen before it."""
        pool = self.pool
        limit = self.max_steps
        while pool and only_selecting(self.loop):
            if limit is not None and len(self.recorder.trace) >= limit:
                return None  # the hook raises StepLimitError, outside any callback
            ready = [entry.label or self._label(entry) for entry in pool]
            assert self.choose is not None
            entry = pool.pop(self.choose(ready))
            entry.ready = tuple(ready)
            return entry  # if cancelled, _step skips it and the next choice follows
        return None

    def _step(self, entry: _Entry) -> None:
        recorder = self.recorder
        task = entry.task
        if entry.cancelled() or task.done():
            return
        now = self.loop.time()
        recorder.steps_begun += 1
        if type(task.get_coro()) not in _SAYS_IF_STARTED:
            recorder.started.add(task)
        self._stepping = True
        try:
            entry.callback(*entry.args)
        finally:
            self._stepping = False
        label = entry.label or self._label(entry)
        ready = entry.ready
        if (
            self.detail
            or task.done()
            or (
                isinstance(waiter := getattr(task, "_fut_waiter", None), asyncio.Task)
                and waiter not in recorder.labels.assigned
            )
        ):
            record = self._record(
                task, label, now, ready, entry.woken_at, entry.woken_after, entry.woken_by
            )
        else:  # the common case of exploration: a step that suspended, recorded cheaply
            record = (now, label, ready, entry.woken_at, entry.woken_after, "", None, 0,
                      None, None, "suspended")  # fmt: skip
        pending = recorder.trace.pending
        pending.append(record)
        if self._eager:
            pending.extend(self._eager)
            self._eager.clear()

    def _record(
        self,
        task: asyncio.Task[Any],
        label: str,
        now: float,
        ready: tuple[str, ...],
        woken_at: float,
        woken_after: int,
        woken_by: str,
    ) -> StepRecord:
        """The record of the step ``task`` just took (it is suspended or done)."""
        if task.done():
            end = outcome(task)
            return (now, label, ready or (label,), woken_at, woken_after, woken_by, None, 0,
                    None, None, end)  # fmt: skip
        recorder = self.recorder
        if not self.detail:
            # capture() labels a task awaited directly, if it is new: that much, it must do.
            waiter = getattr(task, "_fut_waiter", None)
            if not isinstance(waiter, asyncio.Task) or waiter in recorder.labels.assigned:
                return (now, label, ready or (label,), woken_at, woken_after, woken_by, None,
                        0, None, None, "suspended")  # fmt: skip
        code, line, awaiting, until = capture(task, recorder.labels, recorder.timers)
        return (now, label, ready or (label,), woken_at, woken_after, woken_by, code, line,
                awaiting, until, "suspended")  # fmt: skip

    async def wait_for_pool(self) -> None:
        """Block until some task wake-up is held (time may move meanwhile)."""
        waiter: asyncio.Future[None] = self.loop.create_future()
        self.on_pool = waiter
        try:
            await waiter
        finally:
            self.on_pool = None

    def state(self, task: asyncio.Task[Any]) -> TaskState:
        labels = self.recorder.labels
        if task.done():
            return TaskState(labels(task), "done", None, None, None)
        for entry in self.pool:
            if entry.task is task:
                started = not self._unstarted(task)
                where = suspension(task, labels, self.recorder.timers)[0] if started else None
                return TaskState(labels(task), "ready", where, None, None, entry.woken_by)
        where, awaiting, until = suspension(task, labels, self.recorder.timers)
        return TaskState(labels(task), "waiting", where, awaiting, until)


def _virtual_loop(what: str) -> VirtualTimeLoop:
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualTimeLoop):
        raise TypeError(
            f"{what} needs labkit's virtual loop, but the test runs on "
            f"{type(loop).__module__}.{type(loop).__qualname__}: mark the test "
            "@pytest.mark.asyncio(loop_factories=['virtual']) or run it with labkit.run()"
        )
    return loop


def _creation_order(task: asyncio.Task[Any]) -> tuple[int, str]:
    name = task.get_name()
    number = name[5:] if name.startswith("Task-") else ""
    return (int(number) if number.isdigit() else 0, name)


async def run_until_idle() -> None:
    """Return once every other task is blocked and no callback is ready, before time moves.

    On labkit's VirtualTimeLoop this is exact: it returns at the first moment the loop has
    nothing to run but timers in the future (trio's ``wait_all_tasks_blocked``). On asyncio's
    own loop it is the honest equivalent at that instant: it yields until no callback is queued
    and no timer is due, and raises if that never happens within 10 000 rounds. uvloop keeps
    its queue in C, so there it raises a TypeError naming the fix.

    Example::

        task = asyncio.create_task(consumer(queue))
        await queue.put("job")
        await labkit.run_until_idle()        # the consumer has taken the job and blocked again
        assert queue.empty()
    """
    loop = asyncio.get_running_loop()
    if isinstance(loop, VirtualTimeLoop):
        await loop.wait_idle()
        return
    if standard_loop_idle(loop) is None:
        raise TypeError(
            "run_until_idle() cannot see the ready queue of "
            f"{type(loop).__module__}.{type(loop).__qualname__}; run the test on labkit's "
            "virtual loop (loop_factories=['virtual']) or asyncio's own loop"
        )
    for _ in range(10_000):
        await asyncio.sleep(0)
        if standard_loop_idle(loop):
            return
    raise RuntimeError(
        "run_until_idle(): the loop was still busy after 10000 rounds: some task never blocks "
        "(a `while True: await asyncio.sleep(0)` loop?)"
    )


class Scheduler:
    """Precise control over which task runs next on a VirtualTimeLoop, for a test.

    Inside ``async with Scheduler() as s:`` the other tasks' wake-ups are held while the test
    looks at them: :meth:`ready` lists tasks that could run, :meth:`waiting` the blocked ones
    (where they wait, on what, until when); :meth:`step` runs exactly one of them to its next
    ``await``; :meth:`run_until_idle` and :meth:`advance` let everything run. Whenever the test
    task awaits anything else, held tasks run in asyncio's own order, so holding never
    deadlocks a test. Every step is recorded in :attr:`trace`. Under an eager task factory
    (``asyncio.eager_task_factory``, Python 3.12+) ``create_task`` runs a new task's first step
    at once, before it can be held: that step is in the trace, and the task is ready (or
    waiting) at its first ``await``.

    Example::

        async with labkit.Scheduler() as s:
            a = asyncio.create_task(deposit(account, 50), name="a")
            b = asyncio.create_task(deposit(account, 70), name="b")
            await s.step("b")            # b runs first, up to its first await
            await s.step("a")
            await s.run_until_idle()
            print(s.trace)
    """

    def __init__(self) -> None:
        self._control: Control | None = None
        self._recorder = _Recorder()

    async def __aenter__(self) -> Scheduler:
        loop = _virtual_loop("labkit.Scheduler")
        control = Control(loop, self._recorder, exempt=asyncio.current_task())
        control.install()
        self._control = control
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        control, self._control = self._control, None
        if control is not None:
            control.uninstall()

    def _require(self) -> Control:
        if self._control is None:
            raise RuntimeError(
                "the Scheduler is not active: use it as `async with labkit.Scheduler() as s:`"
            )
        return self._control

    @property
    def now(self) -> float:
        """The loop's virtual time."""
        return self._require().loop.time()

    @property
    def trace(self) -> Trace:
        """Every step the scheduler has seen so far (also after the block)."""
        return self._recorder.trace

    def ready(self) -> list[TaskState]:
        """The tasks that are ready to run, in the order they became ready."""
        control = self._require()
        return [control.state(entry.task) for entry in control.pool]

    def waiting(self) -> list[TaskState]:
        """The tasks that are blocked: where each waits, on what, and until when."""
        control = self._require()
        pooled = {entry.task for entry in control.pool}
        tasks = sorted(
            (
                t
                for t in asyncio.all_tasks(control.loop)
                if t not in pooled and t is not control.exempt and not t.done()
            ),
            key=_creation_order,
        )
        return [control.state(t) for t in tasks]

    async def step(self, task: asyncio.Task[Any] | str | None = None) -> Step:
        """Run exactly one ready task (the first ready, or the one named) to its next ``await``.

        Plain callbacks it schedules run too; tasks it wakes are held. Returns its step.
        """
        control = self._require()
        if not control.pool:
            waiting = "; ".join(str(state) for state in self.waiting()) or "no other task"
            raise RuntimeError(
                f"no task is ready to step (waiting: {waiting}); move the clock with "
                "`await scheduler.advance(seconds)` or let everything run with "
                "`await scheduler.run_until_idle()`"
            )
        index = 0
        if task is not None:
            names = control.ready_names()
            matches = [
                i for i, entry in enumerate(control.pool) if entry.task is task or names[i] == task
            ]
            if not matches:
                wanted = task if isinstance(task, str) else control.recorder.labels(task)
                raise RuntimeError(
                    f"task {wanted!r} is not ready to run; ready: {', '.join(names)}"
                )
            index = matches[0]
        ready = control.ready_names()
        entry = control.pool.pop(index)
        trace = control.recorder.trace
        mark = len(trace)
        control.release(entry, ready)
        control.holding += 1
        try:
            await control.loop.wait_idle()
        finally:
            control.holding -= 1
        label = entry.label or control.recorder.labels(entry.task)
        for step in trace.steps[mark:]:
            if step.task == label:
                return step
        raise RuntimeError(f"task {label!r} was cancelled before it could run")

    async def run_until_idle(self) -> None:
        """Let every task run (asyncio's order) until all are blocked; time does not move."""
        control = self._require()
        control.release_all = True
        try:
            await control.loop.wait_idle()
        finally:
            control.release_all = False

    async def advance(self, seconds: float) -> None:
        """Move the virtual clock by ``seconds``, running everything that falls due, until idle."""
        control = self._require()
        control.release_all = True
        try:
            await advance(seconds)
            await control.loop.wait_idle()
        finally:
            control.release_all = False


@dataclass(frozen=True)
class Round:
    """One scheduling round of :func:`step_through`: every ready task ran one step.

    Example::

        async for rnd in labkit.step_through(producer(q), consumer(q)):
            print(rnd)      # round 1 at t=0: producer -> Queue.put, consumer -> Queue.get
    """

    number: int
    time: float
    ran: tuple[Step, ...]
    tasks: tuple[asyncio.Task[Any], ...]

    @property
    def done(self) -> bool:
        """Whether every stepped task has finished."""
        return all(task.done() for task in self.tasks)

    def __str__(self) -> str:
        parts = []
        for step in self.ran:
            after = step.awaiting if step.outcome == "suspended" else step.outcome
            parts.append(f"{step.task} -> {after}")
        ran = ", ".join(parts) if parts else "nothing ran"
        return f"round {self.number} at t={self.time:g}: {ran}"


class Stepper:
    """Runs coroutines one scheduling round at a time; made by :func:`step_through`.

    Iterate it (``async for rnd in stepper``) to look at the state between rounds, or await it
    to run every round; either way :attr:`tasks` holds the tasks. Leaving the loop early
    (``break``) hands the loop back once the stepper is dropped; a stepper kept in a variable
    does so at ``await stepper.aclose()`` (or ``async with contextlib.aclosing(stepper):``).

    Example::

        stepper = labkit.step_through(producer(q), consumer(q), steps=20)
        async for rnd in stepper:
            assert q.qsize() <= 1
        assert all(t.done() for t in stepper.tasks)
    """

    def __init__(
        self, coros: Sequence[Coroutine[Any, Any, Any]], steps: int, names: Sequence[str] | None
    ) -> None:
        self._coros = list(coros)
        self._names = list(names) if names is not None else None
        self._limit = steps
        self._recorder = _Recorder()
        self._control: Control | None = None
        self._release: weakref.finalize[[], Stepper] | None = None
        self._closed = False
        self._mark = 0
        self.rounds = 0
        """How many rounds have run."""
        self.tasks: tuple[asyncio.Task[Any], ...] = ()
        """The stepped tasks, in the order their coroutines were given."""

    @property
    def trace(self) -> Trace:
        """Every step of every round."""
        return self._recorder.trace

    def __aiter__(self) -> Stepper:
        return self

    async def __anext__(self) -> Round:
        loop = _virtual_loop("labkit.step_through()")
        if self._control is None:
            if self.tasks or self._closed:
                raise StopAsyncIteration
            self._control = Control(loop, self._recorder, exempt=asyncio.current_task())
            self._control.install()
            # A stepper dropped mid-way (``break``) must not keep holding the loop's wake-ups.
            self._release = weakref.finalize(self, self._control.uninstall)
            self.tasks = tuple(self._start(loop))
            if len(self._recorder.trace) > self._mark:
                # An eager task factory ran the tasks' first steps inside create_task, one
                # task after the other: that was the first round.
                return self._round(loop)
        control = self._control
        if self.rounds >= self._limit or all(task.done() for task in self.tasks):
            self._finish()
            raise StopAsyncIteration
        control.holding += 1
        try:
            if not control.pool and not self._recorder.in_flight:
                await control.wait_for_pool()
            control.release_pool()
            await loop.wait_idle()
        except BaseException:
            self._finish()
            raise
        finally:
            control.holding -= 1
        return self._round(loop)

    def _round(self, loop: VirtualTimeLoop) -> Round:
        self.rounds += 1
        steps = self._recorder.trace.steps
        ran, self._mark = tuple(steps[self._mark :]), len(steps)
        time = ran[0].time if ran else loop.time()
        if all(task.done() for task in self.tasks):
            self._finish()
        return Round(self.rounds, time, ran, self.tasks)

    def _start(self, loop: VirtualTimeLoop) -> list[asyncio.Task[Any]]:
        tasks = []
        used: dict[str, int] = {}
        for i, coro in enumerate(self._coros):
            if self._names is not None:
                name = self._names[i]
            else:
                name = getattr(coro, "__qualname__", "task").rsplit(".", 1)[-1]
                used[name] = used.get(name, 0) + 1
                name = name if used[name] == 1 else f"{name}#{used[name]}"
            tasks.append(loop.create_task(coro, name=name))
        return tasks

    def _finish(self) -> None:
        control, self._control = self._control, None
        release, self._release = self._release, None
        if release is not None:
            release.detach()
        if control is not None:
            control.uninstall()

    async def aclose(self) -> None:
        """Stop stepping: unfinished tasks are left running, in asyncio's own order again."""
        if self._control is None and not self.tasks and not self._closed:
            for coro in self._coros:  # never started: do not leave them un-awaited
                coro.close()
        self._closed = True
        self._finish()

    async def _run_all(self) -> tuple[asyncio.Task[Any], ...]:
        async for _ in self:
            pass
        return self.tasks

    def __await__(self) -> Generator[Any, None, tuple[asyncio.Task[Any], ...]]:
        return self._run_all().__await__()


def step_through(
    *coros: Coroutine[Any, Any, Any], steps: int = 1000, names: Sequence[str] | None = None
) -> Stepper:
    """Run coroutines as tasks, one scheduling round at a time, and hand back their tasks.

    In each round every task that is ready runs exactly one step (to its next ``await``);
    tasks it wakes wait for the next round. When no task is ready, the round first moves the
    virtual clock to the next timer. Stops when all tasks are done or after ``steps`` rounds
    (unfinished tasks are left running). Tasks are named ``names`` or after their coroutines.
    Under an eager task factory (``asyncio.eager_task_factory``, Python 3.12+) the tasks take
    their first step as they are created, in the order given: that is the first round.

    Example::

        stepper = labkit.step_through(producer(q), consumer(q), names=["producer", "consumer"])
        async for rnd in stepper:
            print(rnd, q.qsize())
        tasks = await labkit.step_through(worker(1), worker(2))   # or just run all rounds
    """
    if not coros:
        raise TypeError("step_through() needs at least one coroutine, e.g. step_through(worker())")
    for coro in coros:
        if not asyncio.iscoroutine(coro):
            what = getattr(coro, "__qualname__", type(coro).__name__)
            raise TypeError(
                f"step_through() takes coroutine objects such as worker(), got {what!r}: "
                "call the async function"
            )
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive number of rounds, got {steps!r}")
    if names is not None and len(names) != len(coros):
        raise ValueError(f"names has {len(names)} names for {len(coros)} coroutines")
    return Stepper(coros, steps, names)
