"""Strategies: how an exploration picks which ready task runs next, from a replayable seed.

A strategy turns a seed into the choices of one run, so the seed alone reproduces the run:
:class:`RandomOrder` (seeded random choices), :class:`PCT` (probabilistic concurrency testing,
with its bound on the chance of finding a bug of a given depth) and :class:`Exhaustive` (every
schedule of a small test, in order, up to a limit). :class:`FIFO` is asyncio's own order.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

__all__ = ["FIFO", "PCT", "Chooser", "Exhaustive", "RandomOrder", "Strategy"]


class Chooser(ABC):
    """The choices of one run: which ready task goes next, and how late each timer fires."""

    seed: int | None = None

    @abstractmethod
    def choose(self, ready: Sequence[str]) -> int:
        """Index into ``ready`` (task names, in the order they became ready) of the next task."""

    def jitter(self, window: float) -> float:
        """How late (0 to ``window`` seconds) the timer being scheduled fires."""
        return 0.0


class Strategy(ABC):
    """A way of exploring schedules; one :class:`Chooser` per run, derived from its seed.

    Example::

        labkit.explore(body, strategy=labkit.PCT(depth=3), runs=200)
    """

    name: str = "strategy"

    def calibrate(self, steps: int, tasks: int) -> None:  # noqa: B027 -- optional hook
        """Learn the size of the test (steps and tasks in asyncio's own order) before the runs."""

    @property
    def needs_calibration(self) -> bool:
        """Whether :meth:`calibrate` must run before :meth:`chooser` (replay does it again)."""
        return False

    @abstractmethod
    def chooser(self, seed: int) -> Chooser:
        """The chooser that replays run ``seed``."""

    def choosers(self, seed: int, runs: int) -> Iterator[Chooser]:
        """The choosers of an exploration: runs ``seed``, ``seed + 1``, ..."""
        for i in range(runs):
            yield self.chooser(seed + i)

    def done(self, chooser: Chooser) -> None:  # noqa: B027 -- optional hook
        """Called after each run of an exploration with that run's chooser."""

    def describe(self) -> str:
        """How to write this strategy in Python, for failure reports."""
        return f"labkit.{type(self).__name__}()"

    def __repr__(self) -> str:
        return self.describe().removeprefix("labkit.")


class _FIFOChooser(Chooser):
    def choose(self, ready: Sequence[str]) -> int:
        return 0


class FIFO(Strategy):
    """Asyncio's own order: the task that became ready first runs first (one schedule).

    Example::

        run = labkit.record(body)     # records the natural schedule with this strategy
    """

    name = "fifo"

    def chooser(self, seed: int) -> Chooser:
        chooser = _FIFOChooser()
        chooser.seed = seed
        return chooser


class _RandomChooser(Chooser):
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)

    def choose(self, ready: Sequence[str]) -> int:
        return self.rng.randrange(len(ready)) if len(ready) > 1 else 0

    def jitter(self, window: float) -> float:
        return self.rng.uniform(0.0, window)


class RandomOrder(Strategy):
    """At every step, a uniformly random ready task runs next (seeded, so replayable).

    Example::

        labkit.explore(body, strategy=labkit.RandomOrder(), runs=100, seed=0)
    """

    name = "random"

    def chooser(self, seed: int) -> Chooser:
        return _RandomChooser(seed)


class _PCTChooser(Chooser):
    def __init__(self, seed: int, depth: int, steps: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.depth = depth
        self.priority: dict[str, float] = {}
        self.step = 0
        # Change point i (at step k_i) drops the running task's priority to i, below every
        # initial priority (those are all > depth). The steps are distinct: two change points
        # on one step would be one demotion, a lower depth than asked for. A draw that hits a
        # step already taken is drawn again, so seeds without such a collision keep their
        # schedules. With fewer steps than depth - 1, every step is a change point.
        steps = max(steps, 1)
        self.change_points: dict[int, int] = {}
        for i in range(1, min(depth, steps + 1)):
            step = self.rng.randint(1, steps)
            while step in self.change_points:
                step = self.rng.randint(1, steps)
            self.change_points[step] = i

    def _highest(self, ready: Sequence[str]) -> int:
        """The first ready task of the highest priority; a task seen first draws its priority."""
        priority = self.priority
        best, top = 0, -1.0
        for i, name in enumerate(ready):
            value = priority.get(name)
            if value is None:
                value = priority[name] = self.depth + self.rng.random()
            if value > top:
                best, top = i, value
        return best

    def choose(self, ready: Sequence[str]) -> int:
        self.step += 1
        step = self.step
        if len(ready) == 1:  # the common case, without the search (the same draws)
            name = ready[0]
            priority = self.priority
            if name not in priority:
                priority[name] = self.depth + self.rng.random()
            lowered = self.change_points.get(step)
            if lowered is not None:
                priority[name] = lowered
            return 0
        best = self._highest(ready)
        lowered = self.change_points.get(step)
        if lowered is not None:
            self.priority[ready[best]] = lowered
            best = self._highest(ready)
        return best

    def jitter(self, window: float) -> float:
        return self.rng.uniform(0.0, window)


class PCT(Strategy):
    """Probabilistic concurrency testing: random task priorities plus ``depth - 1`` demotions.

    The highest-priority ready task always runs; at ``depth - 1`` distinct random steps the
    running task drops below all others. For a test with at most ``n`` tasks and ``k`` steps,
    one run finds any bug of depth ``d <= depth`` (one needing ``d`` ordering constraints) with
    probability at least ``1 / (n * k**(d - 1))`` (Burckhardt et al., ASPLOS 2010).
    ``steps`` is ``k``; by default it is measured with one run in asyncio's own order. A test
    with fewer than ``depth - 1`` steps gets a change point at every step, so it is explored
    at depth ``steps + 1`` at most: ``d - 1`` demotions need ``d - 1`` distinct steps.

    Example::

        report = labkit.explore(body, strategy=labkit.PCT(depth=2), runs=100)
        print(report)    # includes the probability bound for this test's n and k
    """

    name = "pct"

    def __init__(self, depth: int = 2, steps: int | None = None) -> None:
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"PCT depth must be an integer >= 1, got {depth!r}")
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise ValueError(f"PCT steps must be a positive integer or None, got {steps!r}")
        self.depth = depth
        self.steps = steps
        self.tasks: int | None = None
        # Measured steps belong to one body: a PCT object reused for another body measures again.
        self._measure_steps = steps is None

    @property
    def needs_calibration(self) -> bool:
        return self._measure_steps

    def calibrate(self, steps: int, tasks: int) -> None:
        if self._measure_steps:
            self.steps = max(steps, 1)
        self.tasks = tasks

    def chooser(self, seed: int) -> Chooser:
        if self.steps is None:
            raise RuntimeError("PCT needs steps=: pass PCT(steps=...) or let explore() measure it")
        return _PCTChooser(seed, self.depth, self.steps)

    def bound(self, tasks: int, steps: int, depth: int | None = None) -> float:
        """PCT's lower bound on the chance that one run finds a bug of this depth."""
        d = self.depth if depth is None else depth
        return 1.0 / float(max(tasks, 1) * max(steps, 1) ** (d - 1))

    def describe(self) -> str:
        steps = "" if self.steps is None else f", steps={self.steps}"
        return f"labkit.PCT(depth={self.depth}{steps})"


class _PathChooser(Chooser):
    """Follows a path of choices; each choice point with m > 1 options is one mixed-radix digit.

    The seed of a schedule is its digits read as a mixed-radix number (first choice least
    significant), so decoding it while the run unfolds replays the schedule exactly.
    """

    def __init__(self, *, prefix: Sequence[int] = (), seed: int | None = None) -> None:
        self.prefix = list(prefix)
        self.remaining = seed
        self.path: list[tuple[int, int]] = []

    def _pick(self, options: int) -> int:
        if options <= 1:
            return 0
        if self.remaining is not None:
            choice = self.remaining % options
            self.remaining //= options
        else:
            depth = len(self.path)
            choice = self.prefix[depth] if depth < len(self.prefix) else 0
            choice = min(choice, options - 1)
        self.path.append((choice, options))
        return choice

    def choose(self, ready: Sequence[str]) -> int:
        return self._pick(len(ready))

    def jitter(self, window: float) -> float:
        return window * self._pick(2)

    @property
    def encoded(self) -> int:
        seed, scale = 0, 1
        for choice, options in self.path:
            seed += choice * scale
            scale *= options
        return seed


class Exhaustive(Strategy):
    """Every schedule of a small test, one per run, depth first, up to ``limit`` schedules.

    Each run's seed encodes its choices, so ``replay(seed)`` needs no search. With timer jitter,
    each timer is one more choice: on time or ``jitter`` seconds late.

    ``delays=d`` bounds the search instead of trying everything (delay-bounded scheduling,
    Emmi, Qadeer and Rakamaric, POPL 2011; the asyncio form of CHESS's preemption bounding):
    asyncio's own order is the schedule with 0 delays; running the k-th ready task (counting
    from 0, in the order they became ready) instead of the first costs k delays, and so does a
    timer made ``k`` late. Every schedule with at most ``d`` delays in total is run, in the same
    depth-first order, and no other. The number of schedules grows like ``choices ** d``
    instead of exponentially in the number of choices, and what the report claims stays
    exact: "every schedule within d delays of asyncio's own order was tried". A bug that needs
    more than ``d`` deviations from asyncio's order is not looked for; most ordering bugs need
    one or two (the snapshot-deposit-restore race needs one, a lock-order deadlock one).

    Why a bound and not partial-order reduction. Sleep sets and dynamic POR skip a schedule
    only when it differs from one already run by swapping *independent* steps, so they are
    sound only with a dependency relation that over-approximates what each step reads and
    writes. A step of an asyncio task is arbitrary Python: between two ``await``s it can read
    and write any object it reaches (a dict in a closure, a class attribute, a module global,
    an attribute set by a C extension), and CPython reports none of those accesses to a
    library (no hook sees ``d[k] += 1``, let alone writes made in C). What the loop does see
    (which task woke which, which future a task waits on, which timers are set) misses exactly
    the shared state that lost updates live in, so a reduction built on it would skip buggy
    schedules. The only sound dependency relation is then "every two steps conflict", which
    reduces nothing. So the default stays complete, and the reduction is a stated bound that
    is exact for what it claims.

    Example::

        report = labkit.explore(body, strategy=labkit.Exhaustive(limit=5000), runs=5000)
        assert report.complete      # every schedule was tried
        labkit.explore(body, strategy=labkit.Exhaustive(delays=2), runs=5000)
        # every schedule within 2 delays of asyncio's own order, far fewer runs
    """

    name = "exhaustive"

    def __init__(self, limit: int = 10_000, *, delays: int | None = None) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"Exhaustive limit must be a positive integer, got {limit!r}")
        if delays is not None and (
            not isinstance(delays, int) or isinstance(delays, bool) or delays < 0
        ):
            raise ValueError(
                f"Exhaustive delays must be an integer >= 0 (0 is asyncio's own order only) "
                f"or None (no bound), got {delays!r}"
            )
        self.limit = limit
        self.delays = delays
        self.complete = False
        self.bounded = False
        """Whether the delay bound left out some schedule (so not every schedule was tried)."""
        self._next: list[int] | None = []

    def chooser(self, seed: int) -> Chooser:
        chooser = _PathChooser(seed=seed)
        chooser.seed = seed
        return chooser

    def choosers(self, seed: int, runs: int) -> Iterator[Chooser]:
        self._next, self.complete, self.bounded = [], False, False
        for _ in range(min(runs, self.limit)):
            if self._next is None:
                return
            chooser = _PathChooser(prefix=self._next)
            yield chooser

    def done(self, chooser: Chooser) -> None:
        assert isinstance(chooser, _PathChooser)
        chooser.seed = chooser.encoded
        path = list(chooser.path)
        budget = self.delays
        spent = sum(choice for choice, _ in path)
        # Backtrack to the deepest choice that can take its next option within the bound.
        while path:
            choice, options = path.pop()
            spent -= choice
            if choice + 1 < options:
                if budget is None or spent + choice + 1 <= budget:
                    self._next = [c for c, _ in path] + [choice + 1]
                    return
                self.bounded = True
        self._next, self.complete = None, True

    def describe(self) -> str:
        delays = "" if self.delays is None else f", delays={self.delays}"
        return f"labkit.Exhaustive(limit={self.limit}{delays})"


def strategy_from(spec: str | Strategy, **options: int) -> Strategy:
    """A Strategy from its name ("pct", "random", "exhaustive", "fifo") or itself.

    Example::

        strategy_from("exhaustive", delays=2)     # labkit.Exhaustive(limit=10000, delays=2)
    """
    if isinstance(spec, Strategy):
        if options:
            raise TypeError(f"options {sorted(options)} go to the strategy's own constructor")
        return spec
    makers: dict[str, type[Strategy]] = {
        "pct": PCT,
        "random": RandomOrder,
        "exhaustive": Exhaustive,
        "fifo": FIFO,
    }
    maker = makers.get(spec) if isinstance(spec, str) else None
    if maker is None:
        raise ValueError(
            f"unknown exploration strategy {spec!r}; use one of {', '.join(makers)} "
            "or a labkit.Strategy object such as labkit.PCT(depth=3)"
        )
    try:
        return maker(**options)
    except TypeError:
        raise TypeError(f"strategy {spec!r} does not take options {sorted(options)}") from None
