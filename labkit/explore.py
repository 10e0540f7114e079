"""Exploration: run a test body under many task orders, and replay the one that fails.

Each run gets a :class:`~labkit.VirtualTimeLoop` as good as new (one loop is reused, put back
as its factory made it after every run, which costs far less than making one). Whenever several
tasks are ready to resume, a :mod:`strategy <labkit.strategy>` picks which one goes next — the
freedom a loop has in production when tasks are woken by independent events — while plain
callbacks keep asyncio's FIFO order. A run is fully determined by its seed, so a failure
report's seed replays the identical schedule, in this process or any other. Runs record only
their schedule; the one that fails is run once more to record where each task stopped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import math
import random
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from labkit.loop import FreshState, VirtualTimeLoop, new_virtual_loop
from labkit.scheduler import Control
from labkit.strategy import FIFO, PCT, Chooser, Exhaustive, Strategy, strategy_from
from labkit.trace import Trace

__all__ = ["Exploration", "ExplorationFailure", "Run", "explore", "record", "replay"]

Body = Callable[[], Awaitable[Any]]


@dataclass
class Run:
    """One run of a test body under one schedule: its seed, its trace, and how it ended.

    Example::

        run = labkit.replay(body, seed=17, strategy="pct", check=False)
        print(run.failed, run.schedule)
        run.trace.plot()
    """

    seed: int | None
    strategy: str
    trace: Trace
    error: BaseException | None
    result: Any = None

    @property
    def failed(self) -> bool:
        """Whether the body raised."""
        return self.error is not None

    @property
    def schedule(self) -> tuple[str, ...]:
        """The task that ran at each step."""
        return self.trace.schedule


class ExplorationFailure(AssertionError):
    """A schedule made the test body fail; the message holds the seed, the replay call and
    the failing schedule, and the original error is chained as ``__cause__``.

    Example::

        try:
            labkit.explore(body, runs=100)
        except labkit.ExplorationFailure as failure:
            failure.run.trace.plot()
            labkit.replay(body, seed=failure.seed, strategy=failure.strategy)   # same failure
    """

    def __init__(
        self, run: Run, *, runs: int, strategy: Strategy, replay_hint: str, note: str = ""
    ) -> None:
        self.run = run
        self.seed = run.seed
        self.strategy = strategy
        self.runs = runs
        self.error = run.error
        error = run.error
        what = f"{type(error).__name__}: {error}" if error is not None else "failed"
        steps = len(run.trace)
        lines = [
            f"a schedule fails (run {runs}, strategy {run.strategy}, seed {run.seed}): {what}",
            f"replay it: {replay_hint}",
            *([note] if note else []),
            f"the failing schedule ({steps} steps):",
            run.trace.text(last=60),
        ]
        super().__init__("\n".join(lines))


@dataclass
class Exploration:
    """What an exploration that found no failure covered.

    Example::

        report = labkit.explore(body, runs=200, strategy="pct")
        print(report)   # runs, distinct schedules, the PCT bound for this test
    """

    strategy: Strategy
    runs: int
    schedules: int
    seeds: range | None
    max_steps: int
    max_tasks: int
    complete: bool = False
    bounded: bool = False
    """Exhaustive with ``delays=``: the bound left schedules out (``complete`` is within it)."""

    def __str__(self) -> str:
        head = (
            f"explored {self.runs} run(s) with {self.strategy.describe()}: "
            f"{self.schedules} distinct schedule(s), up to {self.max_tasks} task(s) and "
            f"{self.max_steps} step(s) per run, no failure"
        )
        if isinstance(self.strategy, Exhaustive):
            if not self.complete:
                tail = "the schedule space was NOT exhausted (raise runs= or limit=)"
            elif self.bounded:
                d = self.strategy.delays
                tail = (
                    f"every schedule within {d} delay(s) of asyncio's own order was tried; "
                    "schedules that need more were not (raise delays= or drop it)"
                )
            else:
                tail = "every schedule was tried"
            return f"{head}; {tail}"
        if isinstance(self.strategy, PCT):
            n, k, d = self.max_tasks, self.max_steps, self.strategy.depth
            p = self.strategy.bound(n, k)
            miss = (1.0 - p) ** self.runs
            return (
                f"{head}; PCT bound: one run finds a depth-{d} bug with p >= 1/({n}*{k}^{d - 1})"
                f" = {p:.3g}, so {self.runs} runs find it with p >= {1.0 - miss:.3g}"
            )
        return head


def _check_body(body: Body, caller: str) -> None:
    """Refuse a body that is not a function, naming the function that got it (``caller``)."""
    if asyncio.iscoroutine(body):
        raise TypeError(
            f"{caller}() needs the async function itself ({caller}(test_body)), not a "
            f"coroutine ({caller}(test_body())): it calls the function on a fresh loop of its own"
        )
    if not callable(body):
        raise TypeError(f"{caller}() needs an async function taking no arguments, got {body!r}")


def _check_jitter(jitter: object) -> None:
    if (
        not isinstance(jitter, (int, float))
        or isinstance(jitter, bool)
        or not math.isfinite(jitter)
        or jitter < 0
    ):
        raise ValueError(f"jitter must be a finite number of seconds >= 0, got {jitter!r}")


def _coroutine(body: Body) -> Coroutine[Any, Any, Any]:
    awaitable = body()
    if asyncio.iscoroutine(awaitable):
        return awaitable

    async def wrapper() -> Any:
        return await awaitable

    if not hasattr(awaitable, "__await__"):
        raise TypeError(
            f"the body {getattr(body, '__qualname__', body)!r} returned "
            f"{type(awaitable).__name__}, not an awaitable: make it an `async def`"
        )
    return wrapper()


class _Session:
    """The loop the runs of one exploration share, made by ``loop_factory`` and reused.

    A fresh loop and ``asyncio.Runner`` per run used to cost more than a small run itself.
    Each run is what ``Runner.run`` does (the body as the main task in a copy of the caller's
    context; Ctrl-C cancels it, a second one interrupts), with the SIGINT handler set once per
    session rather than once per run. After each run the loop is put back as the factory made
    it (:class:`~labkit.loop.FreshState`: leftover tasks cancelled, async generators closed,
    callbacks and timers dropped, clock and settings reset); a run that leaves real resources
    behind (a socket, a subprocess, an executor job) gets its loop closed as before, and the
    next run a new one.
    """

    def __init__(
        self,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
        *,
        jitter: float,
        max_steps: int,
    ) -> None:
        self.factory = loop_factory or new_virtual_loop
        self.window = float(jitter)
        self.max_steps = max_steps
        self.loop: VirtualTimeLoop | None = None
        self.fresh: FreshState | None = None
        self.runs = 0
        self.main: asyncio.Task[Any] | None = None
        self.interrupts = 0
        self.sigint: Callable[[int, Any], None] | None = None

    def _open(self) -> VirtualTimeLoop:
        if self.loop is None:
            loop = self.factory()
            if not isinstance(loop, VirtualTimeLoop):
                loop.close()
                raise TypeError(
                    "explore(), replay() and record() run on labkit's VirtualTimeLoop; "
                    f"loop_factory returned {type(loop).__module__}.{type(loop).__qualname__}: "
                    "pass a factory of virtual loops, e.g. "
                    "functools.partial(labkit.new_virtual_loop, autojump=False)"
                )
            self.loop, self.fresh, self.runs = loop, FreshState(loop), 0
        if (
            self.sigint is None
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            handler = self.sigint = self._on_sigint
            try:
                signal.signal(signal.SIGINT, handler)
            except ValueError:
                self.sigint = None
        return self.loop

    def _on_sigint(self, signum: int, frame: Any) -> None:
        # asyncio.Runner's rule: the first Ctrl-C cancels the main task, the next interrupts.
        self.interrupts += 1
        main = self.main
        if self.interrupts == 1 and main is not None and not main.done():
            main.cancel()
            if self.loop is not None:
                self.loop.call_soon_threadsafe(lambda: None)
            return
        raise KeyboardInterrupt()

    def run(self, body: Body, chooser: Chooser, name: str, *, detail: bool = True) -> Run:
        """Run ``body`` once under ``chooser``'s schedule; ``name`` is the strategy's, for reports.

        ``detail=False`` records only the schedule (see :class:`~labkit.scheduler.Control`).
        """
        loop = self._open()
        try:
            coro = _coroutine(body)
        except BaseException:
            self.close()
            raise
        window = self.window
        control = Control(
            loop,
            choose=chooser.choose,
            jitter=(lambda: chooser.jitter(window)) if window > 0 else None,
            max_steps=self.max_steps,
            detail=detail,
        )
        error: BaseException | None = None
        result: Any = None
        try:
            control.install()
            try:
                result = self._main(loop, coro)
            except (Exception, asyncio.CancelledError) as exc:
                error = exc
            finally:
                control.uninstall()
        finally:
            self._end_run(control)
        return Run(chooser.seed, name, control.recorder.trace, error, result)

    def _main(self, loop: VirtualTimeLoop, coro: Coroutine[Any, Any, Any]) -> Any:
        task = self.main = loop.create_task(coro, context=contextvars.copy_context())
        self.interrupts = 0
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if self.interrupts > 0 and task.uncancel() == 0:
                raise KeyboardInterrupt() from None
            raise
        finally:
            self.main = None

    def _end_run(self, control: Control) -> None:
        fresh, loop = self.fresh, self.loop
        if fresh is None or loop is None:
            return
        # Every task of a run passes through its control: only after the loop's first run
        # (its factory may have made tasks) is asyncio asked for all tasks.
        known = control.tasks() if self.runs else None
        self.runs += 1
        try:
            reusable = fresh.restore(known)
        except BaseException:
            # As asyncio.Runner.close(): the loop is closed even when its shutdown raises.
            self.loop = self.fresh = None
            loop.close()
            self._restore_sigint()
            raise
        if not reusable:
            self.close(keep_sigint=True)

    def close(self, *, keep_sigint: bool = False) -> None:
        """End as ``asyncio.Runner.close`` does: cancel, shut down, close the loop."""
        loop, self.loop, self.fresh = self.loop, None, None
        try:
            if loop is not None and not loop.is_closed():
                try:
                    leftover = asyncio.all_tasks(loop)
                    if leftover:
                        FreshState(loop).restore()  # cancels and awaits them, as Runner does
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.run_until_complete(loop.shutdown_default_executor())
                finally:
                    loop.close()
        finally:
            if not keep_sigint:
                self._restore_sigint()

    def _restore_sigint(self) -> None:
        handler, self.sigint = self.sigint, None
        if handler is not None and signal.getsignal(signal.SIGINT) is handler:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _run_one(
    body: Body,
    chooser: Chooser,
    *,
    strategy: Strategy,
    jitter: float,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
    max_steps: int,
) -> Run:
    """One run on a loop of its own (replay and record)."""
    session = _Session(loop_factory, jitter=jitter, max_steps=max_steps)
    try:
        return session.run(body, chooser, _strategy_name(strategy))
    finally:
        session.close()


def _strategy_name(strategy: Strategy) -> str:
    return strategy.describe().removeprefix("labkit.")


_NOT_REPRODUCED = (
    "note: run again under the same schedule, the body did not fail the same way, so its "
    "outcome does not depend on the schedule alone (it reads real time, unseeded random "
    "numbers, or state an earlier run left behind): replaying the seed may not reproduce "
    "it; the schedule below does not show what woke each task or where it stopped"
)


def _failure(
    session: _Session,
    body: Body,
    run: Run,
    chooser: Chooser,
    *,
    runs: int,
    strategy: Strategy,
    hint: Callable[[Run, Strategy], str],
) -> ExplorationFailure:
    """The report of a failing run that was recorded without detail: it runs once more, with.

    Runs are determined by their schedule, so the second run fails the same way and its trace
    says what woke each task and where it stopped. If it does not fail the same way, the body
    depends on something else too: the first run is reported, with a note saying so.
    """
    again = session.run(body, chooser, run.strategy, detail=True)
    again.seed = run.seed
    note = ""
    if not _same_failure(run, again):
        again, note = run, _NOT_REPRODUCED
    failure = ExplorationFailure(
        again, runs=runs, strategy=strategy, replay_hint=hint(again, strategy), note=note
    )
    failure.__cause__ = again.error
    return failure


def _same_failure(first: Run, second: Run) -> bool:
    # Not the messages: they may name objects by address or tasks by asyncio's global counter.
    return first.schedule == second.schedule and type(first.error) is type(second.error)


def _off_the_running_loop(function: Callable[[], Any]) -> Any:
    """Call function here, or in a worker thread when this thread runs a loop (Jupyter)."""
    __tracebackhide__ = True
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    if not running:
        return function()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="labkit-explore") as pool:
        return pool.submit(function).result()


def _name(body: Body) -> str:
    return getattr(body, "__name__", "body")


def _replay_hint(body: Body, seed: int | None, strategy: Strategy, jitter: float) -> str:
    name = _name(body)
    if seed is None:
        return f"labkit.record({name})   (it fails in asyncio's own order)"
    extra = f", jitter={jitter!r}" if jitter else ""
    return f"labkit.replay({name}, seed={seed}, strategy={strategy.describe()}{extra})"


def _calibrate(
    session: _Session,
    body: Body,
    strategy: Strategy,
    hint: Callable[[Run, Strategy], str] | None,
) -> None:
    """Measure the body in asyncio's own order; a failure there is raised unless ``hint`` is None.

    replay() passes None: it must run the seed it was given, and the size of a failing run in
    asyncio's order is as deterministic as that of a passing one.
    """
    fifo = FIFO()
    run = session.run(body, fifo.chooser(0), _strategy_name(fifo), detail=False)
    if run.failed and hint is not None:
        run.seed = None
        raise _failure(session, body, run, fifo.chooser(0), runs=1, strategy=fifo, hint=hint)
    strategy.calibrate(len(run.trace), len(run.trace.tasks))


def explore(
    body: Body,
    *,
    runs: int = 100,
    strategy: str | Strategy = "pct",
    seed: int | None = 0,
    jitter: float = 0.0,
    max_steps: int = 100_000,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    _hint: Callable[[Run, Strategy], str] | None = None,
) -> Exploration:
    """Run ``body`` (an async function of no arguments) under ``runs`` different schedules.

    Each run uses a VirtualTimeLoop as good as new (one loop, reset between runs) and the seed
    ``seed + i``; ``seed=None`` starts from a random seed (reported on failure). ``strategy`` is
    "pct" (default), "random", "exhaustive" or a :class:`~labkit.Strategy`, such as
    ``labkit.Exhaustive(delays=2)`` (every schedule within two deviations from asyncio's own
    order: far fewer runs than every schedule). ``jitter=s`` also lets every timer fire up to
    ``s`` seconds late, so timers due at nearly the same moment fire in either order. The first
    failing run raises :class:`ExplorationFailure` with the seed and the schedule; otherwise
    the returned :class:`Exploration` says what was covered.

    Example::

        async def two_deposits():
            account = Account(balance=100)
            await asyncio.gather(account.deposit(50), account.deposit(70))
            assert account.balance == 220

        labkit.explore(two_deposits, runs=50)     # ExplorationFailure: ... seed 3 ...
        labkit.replay(two_deposits, seed=3)       # the same failure, every time
    """
    chosen = strategy_from(strategy)
    _check_body(body, "explore")
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise ValueError(f"runs must be a positive number of runs, got {runs!r}")
    _check_jitter(jitter)
    base = random.SystemRandom().randrange(2**32) if seed is None else int(seed)

    def hint(run: Run, used: Strategy) -> str:
        if _hint is not None:
            return _hint(run, used)
        return _replay_hint(body, run.seed, used, jitter)

    def go() -> Exploration:
        __tracebackhide__ = True
        session = _Session(loop_factory, jitter=jitter, max_steps=max_steps)
        try:
            return explore_in(session)
        finally:
            session.close()

    def explore_in(session: _Session) -> Exploration:
        __tracebackhide__ = True
        if chosen.needs_calibration:
            _calibrate(session, body, chosen, hint)
        name = _strategy_name(chosen)
        schedules: set[tuple[str, ...]] = set()
        max_steps_seen = max_tasks = count = 0
        for chooser in chosen.choosers(base, runs):
            run = session.run(body, chooser, name, detail=False)
            chosen.done(chooser)
            run.seed = chooser.seed
            count += 1
            if run.failed:
                assert run.seed is not None
                again = chosen.chooser(run.seed)
                raise _failure(session, body, run, again, runs=count, strategy=chosen, hint=hint)
            schedule = run.schedule
            schedules.add(schedule)
            max_steps_seen = max(max_steps_seen, len(schedule))
            max_tasks = max(max_tasks, len(set(schedule)))
        complete = bool(getattr(chosen, "complete", False))
        bounded = bool(getattr(chosen, "bounded", False))
        seeds = None if isinstance(chosen, Exhaustive) else range(base, base + count)
        return Exploration(
            chosen, count, len(schedules), seeds, max_steps_seen, max_tasks, complete, bounded
        )

    result: Exploration = _off_the_running_loop(go)
    return result


def replay(
    body: Body,
    seed: int,
    *,
    strategy: str | Strategy = "pct",
    jitter: float = 0.0,
    check: bool = True,
    max_steps: int = 100_000,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    _hint: Callable[[Run, Strategy], str] | None = None,
) -> Run:
    """Run ``body`` once more under the schedule of run ``seed``: the same steps, every time.

    Use the strategy (and jitter) of the exploration that reported the seed. With
    ``check=True`` (default) a failure raises :class:`ExplorationFailure` again; with
    ``check=False`` the :class:`Run` comes back either way, to look at its trace.

    Example::

        run = labkit.replay(two_deposits, seed=3, check=False)
        print(run.error)
        run.trace.plot()
    """
    chosen = strategy_from(strategy)
    _check_body(body, "replay")
    if seed is None:
        raise TypeError(
            "replay() got seed=None: a failure without a seed happens in asyncio's own order, "
            f"so there is no schedule to replay; run it with labkit.record({_name(body)})"
        )
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"replay() needs the integer seed from the failure report, got {seed!r}")
    _check_jitter(jitter)

    def hint(run: Run, used: Strategy) -> str:
        if _hint is not None:
            return _hint(run, used)
        return _replay_hint(body, run.seed, used, jitter)

    def go() -> Run:
        __tracebackhide__ = True
        session = _Session(loop_factory, jitter=jitter, max_steps=max_steps)
        try:
            if chosen.needs_calibration:
                _calibrate(session, body, chosen, None)
            run = session.run(body, chosen.chooser(seed), _strategy_name(chosen))
        finally:
            session.close()
        run.seed = seed
        if check and run.failed:
            raise ExplorationFailure(
                run, runs=1, strategy=chosen, replay_hint=hint(run, chosen)
            ) from run.error
        return run

    result: Run = _off_the_running_loop(go)
    return result


def record(
    body: Body,
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> Run:
    """Run ``body`` once in asyncio's own order and record its trace (it does not raise).

    Example::

        run = labkit.record(two_deposits)
        print(run.trace)        # who ran at each step, woken by what, suspended where
    """
    _check_body(body, "record")
    fifo = FIFO()

    def go() -> Run:
        return _run_one(
            body,
            fifo.chooser(0),
            strategy=fifo,
            jitter=0.0,
            loop_factory=loop_factory,
            max_steps=100_000,
        )

    result: Run = _off_the_running_loop(go)
    result.seed = None
    return result


_MARKER_KEYS = (
    "runs",
    "strategy",
    "seed",
    "jitter",
    "max_steps",
    "depth",
    "steps",
    "limit",
    "delays",
)


def run_explore_marker(item: Any) -> bool:
    """Run a pytest test marked ``labkit_explore(...)``: explore it, or replay ``--labkit-seed``.

    Called by labkit's pytest plugin. The test is an ``async def``; each run calls it again on
    a VirtualTimeLoop as good as new (fixtures are made once per test, so build state inside the
    test). ``delays=`` goes to ``strategy="exhaustive"``: ``labkit.Exhaustive(delays=...)``.

    Example::

        @pytest.mark.labkit_explore(runs=200, strategy="pct", depth=2)
        async def test_two_deposits():
            ...
    """
    import functools
    import inspect
    import re

    import pytest

    __tracebackhide__ = True

    marker = item.get_closest_marker("labkit_explore")
    if marker.args:
        pytest.fail(
            "labkit_explore takes keyword arguments only, e.g. "
            "@pytest.mark.labkit_explore(runs=100, strategy='pct')",
            pytrace=False,
        )
    unknown = sorted(set(marker.kwargs) - set(_MARKER_KEYS))
    if unknown:
        pytest.fail(
            f"labkit_explore got unknown option(s) {unknown}; it takes {', '.join(_MARKER_KEYS)}",
            pytrace=False,
        )
    asyncio_marker = item.get_closest_marker("asyncio")
    named = asyncio_marker.kwargs.get("loop_factories") if asyncio_marker is not None else None
    if named is not None and list(named) != ["virtual"]:
        # A module or suite put on the virtual loop (loop_factories=["virtual"], or any
        # asyncio marker without loop_factories) is fine: exploration runs there anyway.
        pytest.fail(
            "a labkit_explore test runs on fresh virtual loops of its own, so its "
            f"loop_factories can only be ['virtual'], not {list(named)!r}",
            pytrace=False,
        )
    # pytest-asyncio wraps an asyncio test's function while it runs it: explore the original.
    function = inspect.unwrap(item.obj)
    if not inspect.iscoroutinefunction(function):
        pytest.fail("labkit_explore marks `async def` tests only", pytrace=False)
    options = dict(marker.kwargs)
    strategy_options = {
        k: options.pop(k) for k in ("depth", "steps", "limit", "delays") if k in options
    }
    try:
        strategy = strategy_from(options.pop("strategy", "pct"), **strategy_options)
    except (TypeError, ValueError) as exc:
        pytest.fail(f"labkit_explore: {exc}", pytrace=False)
    loop_factory = None
    clock = item.get_closest_marker("labkit_clock")
    if clock is not None:
        clock_options = dict(clock.kwargs)

        def loop_factory() -> asyncio.AbstractEventLoop:
            return new_virtual_loop(**clock_options)

    funcargs = {name: item.funcargs[name] for name in item._fixtureinfo.argnames}
    body = functools.partial(function, **funcargs)

    in_notebook = re.fullmatch(r"t_[0-9a-f]{32}\.py", getattr(item.path, "name", "")) is not None
    command = "%%ipytest" if in_notebook else f"pytest '{item.nodeid}'"

    def hint(run: Run, used: Strategy) -> str:
        if run.seed is None:
            return f"{command} (it fails in asyncio's own order, no seed needed)"
        return f"{command} --labkit-seed={run.seed}"

    seed = item.config.getoption("labkit_seed", default=None)
    common: dict[str, Any] = {
        "strategy": strategy,
        "jitter": options.get("jitter", 0.0),
        "max_steps": options.get("max_steps", 100_000),
        "loop_factory": loop_factory,
        "_hint": hint,
    }
    if seed is not None:
        replay(body, seed, **common)
    else:
        report = explore(body, runs=options.get("runs", 100), seed=options.get("seed", 0), **common)
        item.user_properties.append(("labkit_explore", str(report)))
    return True
