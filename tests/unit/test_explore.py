"""Interleaving exploration: each strategy finds a seeded race, and a seed replays its schedule."""

from __future__ import annotations

import asyncio
import contextvars
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import labkit
from labkit import PCT, Exhaustive, ExplorationFailure, RandomOrder, StepLimitError
from labkit.strategy import _PathChooser, _PCTChooser

pytest_plugins = ["pytester"]


def snapshot_race(*, fixed: bool) -> Callable[[], Awaitable[None]]:
    """Three tasks resume at once; a deposit is lost only if they run snapshot, deposit, restore."""

    async def body() -> None:
        account = {"balance": 100, "version": 0}
        saved: dict[str, int] = {}
        start = asyncio.Event()

        async def deposit() -> None:
            await start.wait()
            account["balance"] += 50
            account["version"] += 1

        async def snapshot() -> None:
            await start.wait()
            saved.update(account)

        async def restore() -> None:
            await start.wait()
            if saved and (not fixed or saved["version"] == account["version"]):
                account.update(saved)

        tasks = [
            asyncio.create_task(deposit(), name="deposit"),
            asyncio.create_task(snapshot(), name="snapshot"),
            asyncio.create_task(restore(), name="restore"),
        ]
        await asyncio.sleep(0)
        start.set()
        await asyncio.gather(*tasks)
        assert account["balance"] == 150, f"the deposit was lost: balance {account['balance']}"

    return body


def deadlock_body() -> Callable[[], Awaitable[None]]:
    """Two tasks take two locks in opposite orders: they deadlock if each takes its first."""

    async def body() -> None:
        first, second = asyncio.Lock(), asyncio.Lock()

        async def forwards() -> None:
            async with first:
                await asyncio.sleep(0)
                async with second:
                    pass

        async def backwards() -> None:
            async with second:
                await asyncio.sleep(0)
                async with first:
                    pass

        await asyncio.gather(
            asyncio.create_task(forwards(), name="forwards"),
            asyncio.create_task(backwards(), name="backwards"),
        )

    return body


STRATEGIES = [RandomOrder(), PCT(depth=2), Exhaustive()]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.name)
def test_each_strategy_finds_the_lost_update(strategy: labkit.Strategy) -> None:
    with pytest.raises(ExplorationFailure) as caught:
        labkit.explore(snapshot_race(fixed=False), runs=200, strategy=strategy)
    failure = caught.value
    message = str(failure)
    assert "the deposit was lost: balance 100" in message
    assert f"seed {failure.seed}" in message
    assert f"labkit.replay(body, seed={failure.seed}, strategy=labkit." in message
    assert isinstance(failure.__cause__, AssertionError)
    resumed = [s for s in failure.run.schedule if s in {"deposit", "snapshot", "restore"}]
    assert resumed[-3:] == ["snapshot", "deposit", "restore"]
    assert "0x" not in message
    assert "Task-" not in message


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.name)
def test_the_fixed_code_survives_every_strategy(strategy: labkit.Strategy) -> None:
    report = labkit.explore(snapshot_race(fixed=True), runs=200, strategy=strategy)
    assert report.schedules >= 6
    assert "no failure" in str(report)


def test_exhaustive_tries_every_order_and_says_so() -> None:
    report = labkit.explore(snapshot_race(fixed=True), runs=1000, strategy="exhaustive")
    assert report.complete
    assert report.runs == report.schedules
    assert "every schedule was tried" in str(report)
    cut = labkit.explore(snapshot_race(fixed=True), runs=3, strategy="exhaustive")
    assert not cut.complete
    assert "NOT exhausted" in str(cut)


def test_pct_report_states_its_probability_bound() -> None:
    report = labkit.explore(snapshot_race(fixed=True), runs=50, strategy=PCT(depth=2))
    n, k = report.max_tasks, report.max_steps
    assert f"1/({n}*{k}^1)" in str(report)
    assert PCT(depth=3).bound(tasks=4, steps=10) == 1 / 400


def test_replay_reproduces_the_schedule_every_time() -> None:
    body = snapshot_race(fixed=False)
    with pytest.raises(ExplorationFailure) as caught:
        labkit.explore(body, runs=100, strategy="random", seed=1000)
    seed = caught.value.seed
    assert seed is not None
    assert seed >= 1000
    expected = caught.value.run.trace.text()
    for _ in range(3):
        run = labkit.replay(body, seed, strategy="random", check=False)
        assert run.failed
        assert run.trace.text() == expected
    with pytest.raises(ExplorationFailure, match=f"seed {seed}"):
        labkit.replay(body, seed, strategy="random")
    assert not labkit.replay(snapshot_race(fixed=True), seed, strategy="random").failed


@pytest.mark.parametrize("strategy", ["pct", "exhaustive"])
def test_replay_decodes_pct_and_exhaustive_seeds(strategy: str) -> None:
    body = snapshot_race(fixed=False)
    with pytest.raises(ExplorationFailure) as caught:
        labkit.explore(body, runs=200, strategy=strategy)
    failure = caught.value
    assert failure.seed is not None
    run = labkit.replay(body, failure.seed, strategy=strategy, check=False)
    assert run.schedule == failure.run.schedule


SUBJECT = textwrap.dedent(
    """
    import asyncio, sys
    import labkit

    async def body():
        account = {"balance": 100}
        saved = {}
        start = asyncio.Event()

        async def deposit():
            await start.wait()
            account["balance"] += 50

        async def snapshot():
            await start.wait()
            saved.update(account)

        async def restore():
            await start.wait()
            if saved:
                account.update(saved)

        tasks = [asyncio.create_task(deposit()), asyncio.create_task(snapshot()),
                 asyncio.create_task(restore())]
        await asyncio.sleep(0)
        start.set()
        await asyncio.gather(*tasks)
        assert account["balance"] == 150, "lost"

    if sys.argv[1] == "explore":
        try:
            labkit.explore(body, runs=500, strategy=sys.argv[2], seed=7)
        except labkit.ExplorationFailure as failure:
            print(failure.seed)
            print(failure.run.trace.text())
    else:
        run = labkit.replay(body, int(sys.argv[3]), strategy=sys.argv[2], check=False)
        print(run.seed)
        print(run.trace.text())
    """
)


@pytest.mark.parametrize("strategy", ["random", "pct", "exhaustive"])
def test_a_seed_replays_the_identical_schedule_in_another_process(
    tmp_path: Path, strategy: str
) -> None:
    script = tmp_path / "subject.py"
    script.write_text(SUBJECT)

    def python(*args: str, hashseed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        done = subprocess.run(
            [sys.executable, str(script), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            check=True,
        )
        return done.stdout

    found = python("explore", strategy, hashseed="1")
    seed = found.splitlines()[0]
    assert seed.isdigit(), found
    replayed = python("replay", strategy, seed, hashseed="2")
    assert replayed == found
    assert "deposit" in found
    assert "Task-" not in found


def test_timer_jitter_lets_nearly_simultaneous_timers_swap() -> None:
    async def body() -> None:
        order: list[str] = []

        async def at(delay: float, name: str) -> None:
            await asyncio.sleep(delay)
            order.append(name)

        await asyncio.gather(at(1.0, "early"), at(1.0005, "late"))
        assert order == ["early", "late"], f"timers fired as {order}"

    labkit.explore(body, runs=50, strategy="random")  # without jitter: always in order
    with pytest.raises(ExplorationFailure, match=r"timers fired as \['late', 'early'\]"):
        labkit.explore(body, runs=50, strategy="random", jitter=0.001)
    with pytest.raises(ExplorationFailure) as caught:
        labkit.explore(body, strategy="exhaustive", jitter=0.001)
    seed = caught.value.seed
    assert seed is not None
    run = labkit.replay(body, seed, strategy="exhaustive", jitter=0.001, check=False)
    assert run.failed
    assert run.schedule == caught.value.run.schedule


def test_a_task_that_never_blocks_hits_the_step_limit() -> None:
    async def body() -> None:
        async def spin() -> None:
            while True:
                await asyncio.sleep(0)

        await asyncio.gather(spin(), spin())

    with pytest.raises(ExplorationFailure) as caught:
        labkit.explore(body, runs=2, strategy="random", max_steps=200)
    assert isinstance(caught.value.error, StepLimitError)
    assert "never blocks" in str(caught.value)


def test_a_failure_in_asyncio_own_order_is_reported_without_a_seed() -> None:
    async def body() -> None:
        raise ValueError("always broken")

    with pytest.raises(ExplorationFailure, match="asyncio's own order") as caught:
        labkit.explore(body, strategy="pct")
    assert caught.value.seed is None


def test_seed_none_starts_from_a_random_seed_that_replays() -> None:
    body = snapshot_race(fixed=False)
    with pytest.raises(ExplorationFailure) as caught:
        labkit.explore(body, runs=500, strategy="random", seed=None)
    seed = caught.value.seed
    assert seed is not None
    assert labkit.replay(body, seed, strategy="random", check=False).failed


def test_explore_works_from_inside_a_running_loop() -> None:
    """As in a Jupyter cell: the runs move to a worker thread."""

    async def cell() -> labkit.Exploration:
        return labkit.explore(snapshot_race(fixed=True), runs=10, strategy="random")

    report = asyncio.run(cell())
    assert report.runs == 10


def test_record_runs_asyncio_own_order() -> None:
    run = labkit.record(snapshot_race(fixed=False))
    assert not run.failed
    assert run.seed is None
    resumed = [s for s in run.schedule if s in {"deposit", "snapshot", "restore"}]
    assert resumed[-3:] == ["deposit", "snapshot", "restore"]


def test_bad_input_names_the_fix() -> None:
    body = snapshot_race(fixed=True)
    coro = body()
    with pytest.raises(TypeError, match=r"not a coroutine \(explore\(test_body\(\)\)\)"):
        labkit.explore(coro, runs=1)  # type: ignore[arg-type]
    coro.close()
    with pytest.raises(ValueError, match="positive number of runs"):
        labkit.explore(body, runs=0)
    with pytest.raises(ValueError, match="unknown exploration strategy 'dfs'"):
        labkit.explore(body, strategy="dfs")
    with pytest.raises(ValueError, match="jitter"):
        labkit.explore(body, jitter=-1)
    with pytest.raises(ValueError, match="depth"):
        PCT(depth=0)
    with pytest.raises(TypeError, match="integer seed"):
        labkit.replay(body, "7")  # type: ignore[arg-type]

    def not_async() -> int:
        return 1

    with pytest.raises(TypeError, match="make it an `async def`"):
        labkit.explore(not_async, runs=1)  # type: ignore[arg-type]


def test_path_seeds_are_a_bijection_with_schedules() -> None:
    """Mixed-radix seeds: every path of a 3-then-2-then-1 choice tree has its own seed."""

    def walk(chooser: _PathChooser) -> tuple[int, ...]:
        return tuple(chooser.choose(["x"] * n) for n in (3, 2, 1))

    strategy = Exhaustive()
    paths, seeds = [], []
    for chooser in strategy.choosers(0, 100):
        assert isinstance(chooser, _PathChooser)
        paths.append(walk(chooser))
        strategy.done(chooser)
        seeds.append(chooser.seed)
    assert len(set(paths)) == 6
    assert strategy.complete
    assert sorted(s for s in seeds if s is not None) == list(range(6))
    for path, seed in zip(paths, seeds, strict=True):
        assert seed is not None
        assert walk(_PathChooser(seed=seed)) == path


# -- the pytest marker -------------------------------------------------------------------------

MARKED = textwrap.dedent(
    """
    import asyncio
    import pytest

    FIXED = {fixed}

    @pytest.mark.labkit_explore(runs=200, strategy="{strategy}")
    async def test_snapshot():
        account = {{"balance": 100, "version": 0}}
        saved = {{}}
        start = asyncio.Event()

        async def deposit():
            await start.wait()
            account["balance"] += 50
            account["version"] += 1

        async def snapshot():
            await start.wait()
            saved.update(account)

        async def restore():
            await start.wait()
            if saved and (not FIXED or saved["version"] == account["version"]):
                account.update(saved)

        tasks = [asyncio.create_task(deposit(), name="deposit"),
                 asyncio.create_task(snapshot(), name="snapshot"),
                 asyncio.create_task(restore(), name="restore")]
        await asyncio.sleep(0)
        start.set()
        await asyncio.gather(*tasks)
        assert account["balance"] == 150

    @pytest.mark.asyncio
    @pytest.mark.labkit_explore(runs=5)
    async def test_both_markers():
        pass
    """
)


def schedule_of(output: str) -> str:
    """The failing schedule from pytest's report, without its "E   " prefixes."""
    lines = [line.lstrip("E").strip() for line in output.splitlines() if line.startswith("E ")]
    start = next(i for i, line in enumerate(lines) if line.startswith("the failing schedule"))
    return "\n".join(lines[start:])


def run_pytest(pytester: pytest.Pytester, *args: str) -> tuple[int, str]:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-q", *args)
    return int(result.ret), result.stdout.str()


def test_the_marker_explores_and_the_seed_option_replays(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_marked=MARKED.format(fixed=False, strategy="pct"))
    code, first = run_pytest(pytester, "-k", "snapshot")
    assert code == 1, first
    assert "ExplorationFailure" in first
    hint = next(line for line in first.splitlines() if "--labkit-seed=" in line)
    seed = hint.split("--labkit-seed=")[1].split()[0]
    assert seed.isdigit()
    code, again = run_pytest(pytester, "-k", "snapshot", f"--labkit-seed={seed}")
    assert code == 1
    assert schedule_of(again) == schedule_of(first)
    assert "step  time  task" in schedule_of(first)

    pytester.makepyfile(test_marked=MARKED.format(fixed=True, strategy="pct"))
    code, fixed = run_pytest(pytester, "-k", "snapshot")
    assert code == 0, fixed


def test_the_marker_accepts_an_asyncio_marker_on_the_virtual_loop(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_marked=MARKED.format(fixed=True, strategy="random"))
    code, output = run_pytest(pytester, "-k", "both_markers")
    assert code == 0, output
    pytester.makepyfile(
        test_marked="""
import pytest

@pytest.mark.asyncio(loop_factories=["asyncio"])
@pytest.mark.labkit_explore(runs=5)
async def test_on_the_stock_loop():
    pass
"""
    )
    code, output = run_pytest(pytester)
    assert code == 1
    assert "its loop_factories can only be ['virtual'], not ['asyncio']" in output


MODULE_ON_THE_VIRTUAL_LOOP = """
import asyncio
import pytest

pytestmark = pytest.mark.asyncio(loop_factories=["virtual"])

async def test_plain(virtual_clock):
    await asyncio.sleep(60)
    assert virtual_clock.now == 60.0

@pytest.mark.labkit_explore(runs=10, strategy="exhaustive")
async def test_explored():
    order = []

    async def put(name):
        await asyncio.sleep(0)
        order.append(name)

    await asyncio.gather(put("a"), put("b"))
    assert sorted(order) == ["a", "b"]

@pytest.mark.labkit_hygiene
async def test_hygienic():
    await asyncio.sleep(1)
"""


def test_one_module_mark_puts_every_labkit_feature_on_the_virtual_loop(
    pytester: pytest.Pytester,
) -> None:
    """Zoo: a module-level asyncio pytestmark made every labkit_explore test in it fail."""
    pytester.makepyfile(test_module=MODULE_ON_THE_VIRTUAL_LOOP)
    code, output = run_pytest(pytester)
    assert code == 0, output
    assert "3 passed" in output


def test_explore_tests_run_in_asyncio_auto_mode(pytester: pytest.Pytester) -> None:
    """In auto mode pytest-asyncio marks every async test; explore used to refuse them all."""
    pytester.makepyfile(
        test_module=MODULE_ON_THE_VIRTUAL_LOOP.replace(
            'pytestmark = pytest.mark.asyncio(loop_factories=["virtual"])', ""
        )
    )
    code, output = run_pytest(pytester, "--asyncio-mode=auto", "--labkit-loop=virtual")
    assert code == 0, output


def test_the_exploration_summary_shows_with_verbose(pytester: pytest.Pytester) -> None:
    """Zoo: "every schedule was tried" reached only junit XML, never the terminal."""
    pytester.makepyfile(test_module=MODULE_ON_THE_VIRTUAL_LOOP)
    code, output = run_pytest(pytester, "-vv", "-k", "explored")  # -q -vv: -v
    assert code == 0, output
    lines = output.splitlines()
    at = next(i for i, line in enumerate(lines) if "test_explored PASSED" in line)
    assert lines[at + 1].startswith("    labkit_explore: explored ")
    assert lines[at + 1].endswith("every schedule was tried")
    code, quiet = run_pytest(pytester, "-k", "explored")
    assert "labkit_explore: explored" not in quiet


def test_explore_needs_the_virtual_loop() -> None:
    with pytest.raises(TypeError, match="run on labkit's VirtualTimeLoop"):
        labkit.explore(snapshot_race(fixed=True), runs=1, loop_factory=asyncio.new_event_loop)


def test_one_controller_per_loop_even_inside_an_exploration() -> None:
    async def body() -> None:
        async with labkit.Scheduler():
            pass

    with pytest.raises(ExplorationFailure, match="already under a labkit scheduler"):
        labkit.explore(body, runs=1, strategy="random")


def test_a_deadlock_in_some_order_is_reported_with_its_schedule() -> None:
    body = deadlock_body()

    with pytest.raises(ExplorationFailure, match="DeadlockError") as caught:
        labkit.explore(body, runs=50, strategy="random")
    assert isinstance(caught.value.error, labkit.DeadlockError)
    assert "Lock.acquire" in caught.value.run.trace.text()


def test_the_marker_passes_fixtures_and_the_clock_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_clocked=textwrap.dedent(
            """
            import asyncio
            import pytest

            @pytest.fixture
            def greeting():
                return "hello"

            @pytest.mark.labkit_clock(start=100.0)
            @pytest.mark.labkit_explore(runs=5, strategy="exhaustive")
            async def test_uses_both(greeting):
                assert greeting == "hello"
                assert asyncio.get_running_loop().time() == 100.0
                await asyncio.sleep(5)
                assert asyncio.get_running_loop().time() == 105.0

            @pytest.mark.labkit_explore(5)
            async def test_positional():
                pass
            """
        )
    )
    code, output = run_pytest(pytester)
    assert code == 1, output
    assert "1 failed, 1 passed" in output
    assert "labkit_explore takes keyword arguments only" in output


def test_replay_with_check_false_returns_a_run_of_a_body_failing_in_asyncio_own_order() -> None:
    """replay() runs the seed it was given; its calibration run failing must not raise."""

    async def body() -> None:
        await asyncio.sleep(0)
        raise ValueError("always broken")

    run = labkit.replay(body, seed=3, strategy="pct", check=False)
    assert run.failed
    assert run.seed == 3
    assert isinstance(run.error, ValueError)
    with pytest.raises(ExplorationFailure, match="seed 3"):
        labkit.replay(body, seed=3, strategy="pct")


def test_replay_of_a_seedless_failure_names_record() -> None:
    async def body() -> None:
        raise ValueError("always broken")

    with pytest.raises(ExplorationFailure) as caught:
        labkit.explore(body)
    with pytest.raises(TypeError, match=r"asyncio's own order.*labkit\.record\(body\)"):
        labkit.replay(body, seed=caught.value.seed)  # type: ignore[arg-type]


def test_a_reused_pct_strategy_measures_each_body_again() -> None:
    async def short() -> None:
        await asyncio.gather(asyncio.sleep(0), asyncio.sleep(0))

    async def long() -> None:
        async def worker() -> None:
            for _ in range(20):
                await asyncio.sleep(0)

        await asyncio.gather(worker(), worker())

    shared = PCT(depth=2)
    labkit.explore(short, runs=1, strategy=shared)
    assert labkit.explore(long, runs=1, strategy=shared).strategy.describe() == (
        labkit.explore(long, runs=1, strategy=PCT(depth=2)).strategy.describe()
    )
    fixed = PCT(depth=2, steps=5)
    labkit.explore(long, runs=1, strategy=fixed)
    assert fixed.steps == 5


@pytest.mark.parametrize("bad", [float("nan"), True])
def test_jitter_must_be_finite(bad: float) -> None:
    """nan was accepted silently (and inf, not tried here, hung the run: timers at t=inf)."""
    body = snapshot_race(fixed=True)
    with pytest.raises(ValueError, match="jitter must be a finite number of seconds"):
        labkit.explore(body, runs=1, jitter=bad)
    with pytest.raises(ValueError, match="jitter must be a finite number of seconds"):
        labkit.replay(body, 0, jitter=bad)


def test_pct_change_points_are_distinct_steps() -> None:
    """Colliding change points used to merge into one demotion: a lower depth than asked."""
    for seed in range(50):
        chooser = PCT(depth=3, steps=2).chooser(seed)
        assert isinstance(chooser, _PCTChooser)
        assert sorted(chooser.change_points) == [1, 2], seed
        assert sorted(chooser.change_points.values()) == [1, 2], seed
    few = PCT(depth=5, steps=2).chooser(0)
    assert isinstance(few, _PCTChooser)
    assert sorted(few.change_points) == [1, 2]  # fewer steps than depth - 1: every step


def test_pct_seeds_without_a_collision_keep_their_change_points() -> None:
    """Drawing again only on a collision leaves every other seed's schedule as it was."""
    for seed in range(50):
        rng = random.Random(seed)
        drawn = [rng.randint(1, 1000) for _ in range(2)]
        if len(set(drawn)) == 2:
            chooser = PCT(depth=3, steps=1000).chooser(seed)
            assert isinstance(chooser, _PCTChooser)
            assert list(chooser.change_points) == drawn


@pytest.mark.parametrize("caller", ["explore", "replay", "record"])
def test_each_entry_point_names_itself_and_closes_its_loop(caller: str) -> None:
    body = snapshot_race(fixed=True)
    coro = body()
    call: Any = getattr(labkit, caller)
    extra = {"seed": 1} if caller == "replay" else {}
    with pytest.raises(TypeError, match=rf"^{caller}\(\) needs the async function itself"):
        call(coro, **extra)
    coro.close()
    loops: list[asyncio.AbstractEventLoop] = []

    def factory() -> asyncio.AbstractEventLoop:
        loops.append(labkit.new_virtual_loop())
        return loops[-1]

    def not_async() -> int:
        return 1

    with pytest.raises(TypeError, match="make it an `async def`"):
        call(not_async, **extra, loop_factory=factory)
    assert loops, "the body was never called"
    assert all(loop.is_closed() for loop in loops)


# -- one loop for all runs -----------------------------------------------------------------------

CARRIED: contextvars.ContextVar[str] = contextvars.ContextVar("carried", default="unset")


def test_every_run_starts_on_a_loop_as_good_as_new() -> None:
    """The loop is reused between runs: nothing a run leaves behind may reach the next one."""
    seen: list[tuple[object, ...]] = []
    loops: list[asyncio.AbstractEventLoop] = []
    cleaned: list[int] = []
    fired: list[int] = []

    def factory() -> asyncio.AbstractEventLoop:
        loops.append(labkit.new_virtual_loop(start=100.0))
        return loops[-1]

    async def body() -> None:
        loop = asyncio.get_running_loop()
        others = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        seen.append(
            (
                loop.time(),
                loop.get_task_factory(),
                loop.get_exception_handler(),
                loop.get_debug(),
                CARRIED.get(),
                len(others),
            )
        )
        number = len(seen)
        CARRIED.set("set by an earlier run")
        loop.set_task_factory(lambda loop, coro, **kw: asyncio.Task(coro, loop=loop, **kw))
        loop.set_exception_handler(lambda loop, context: None)
        loop.set_debug(True)

        async def forever() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                cleaned.append(number)

        leftover = asyncio.create_task(forever())
        assert not leftover.done()
        loop.call_later(5, fired.append, number)  # never due: the run ends first
        loop.call_soon(fired.append, -number)  # queued as the run ends: runs as it is closed
        await asyncio.sleep(1)
        loop.set_debug(False)  # debug mode is slow; the reset must not rely on this line

    report = labkit.explore(body, runs=5, strategy="random", loop_factory=factory)
    assert report.runs == 5
    assert seen == [(100.0, None, None, False, "unset", 0)] * 5
    assert cleaned == [1, 2, 3, 4, 5]  # each run's leftover task was cancelled as it ended
    assert fired == [-1, -2, -3, -4, -5]
    assert len(loops) == 1
    assert loops[0].is_closed()


def test_a_run_that_leaves_real_resources_behind_gets_its_loop_closed() -> None:
    loops: list[asyncio.AbstractEventLoop] = []
    sockets: list[socket.socket] = []

    def factory() -> asyncio.AbstractEventLoop:
        loops.append(labkit.new_virtual_loop())
        return loops[-1]

    async def body() -> None:
        left, right = socket.socketpair()
        sockets.extend((left, right))
        left.setblocking(False)
        asyncio.get_running_loop().add_reader(left, lambda: None)  # never removed
        await asyncio.sleep(0)

    try:
        labkit.explore(body, runs=3, strategy="random", loop_factory=factory)
    finally:
        for sock in sockets:
            sock.close()
    assert len(loops) == 3, "a loop with a registered socket must not be reused"
    assert all(loop.is_closed() for loop in loops)


def test_a_run_whose_shutdown_starts_a_task_gets_its_loop_closed() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    def factory() -> asyncio.AbstractEventLoop:
        loops.append(labkit.new_virtual_loop())
        return loops[-1]

    async def body() -> None:
        async def stubborn() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                asyncio.get_running_loop().create_task(asyncio.Event().wait())

        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        assert not task.done()

    labkit.explore(body, runs=2, strategy="random", loop_factory=factory)
    assert len(loops) == 2
    assert all(loop.is_closed() for loop in loops)


def test_a_body_that_does_not_fail_again_under_its_schedule_is_reported_as_such() -> None:
    """Runs record only their schedule; the failing one is run again to show its detail."""
    calls: list[int] = []

    async def flaky() -> None:
        calls.append(1)
        await asyncio.sleep(0)
        if len(calls) == 2:  # state left by an earlier run, not the schedule
            raise AssertionError("only the second call fails")

    with pytest.raises(ExplorationFailure) as caught:
        labkit.explore(flaky, runs=10, strategy="random")
    message = str(caught.value)
    assert "only the second call fails" in message
    assert "did not fail the same way" in message
    assert "replaying the seed may not reproduce it" in message
    assert len(calls) == 3  # the calibration-free random runs 1 and 2, then the run again


def test_a_failure_report_shows_the_detail_of_the_failing_run() -> None:
    with pytest.raises(ExplorationFailure) as caught:
        labkit.explore(snapshot_race(fixed=False), runs=200, strategy="random")
    failure = caught.value
    assert "did not fail the same way" not in str(failure)
    steps = failure.run.trace.steps
    assert all(step.woken_by for step in steps)
    suspended = [step for step in steps if step.outcome == "suspended"]
    assert suspended
    assert all(step.where is not None and step.awaiting for step in suspended)
    assert "sleep(0) at test_explore.py" in str(failure)
    assert "created by body" in str(failure)


def test_ctrl_c_cancels_the_body_and_then_interrupts_like_asyncio_run() -> None:
    """The SIGINT handler of asyncio.Runner, set once per exploration and then put back."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    cancelled: list[bool] = []

    async def body() -> None:
        signal.raise_signal(signal.SIGINT)
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        labkit.explore(body, runs=3, strategy="random")
    assert cancelled == [True]
    assert signal.getsignal(signal.SIGINT) is before


# -- the delay bound -----------------------------------------------------------------------------


def open_race(*, fixed: bool, awaits: int = 2) -> Callable[[], Awaitable[None]]:
    """Three tasks, ``awaits`` awaits each; the pool is used before it is opened only if the
    opener is delayed until one user has taken two steps: three delays from asyncio's order.
    (bench/explore.py runs it with three awaits each.)"""

    async def body() -> None:
        pool = {"open": False, "used": 0}
        opened = asyncio.Event()

        async def opener() -> None:
            pool["open"] = True
            opened.set()
            for _ in range(awaits):
                await asyncio.sleep(0)

        async def user() -> None:
            if fixed:
                await opened.wait()
            else:
                await asyncio.sleep(0)
            assert pool["open"], "the pool was used before it was opened"
            for _ in range(awaits - 1):
                await asyncio.sleep(0)
            pool["used"] += 1

        await asyncio.gather(
            asyncio.create_task(opener(), name="opener"),
            asyncio.create_task(user(), name="user1"),
            asyncio.create_task(user(), name="user2"),
        )
        assert pool["used"] == 2

    return body


class _RecordingExhaustive(Exhaustive):
    """Exhaustive that keeps the path (choice, options) of every run."""

    def __init__(self, **options: Any) -> None:
        super().__init__(limit=100_000, **options)
        self.paths: list[tuple[tuple[int, int], ...]] = []

    def done(self, chooser: labkit.strategy.Chooser) -> None:
        assert isinstance(chooser, _PathChooser)
        self.paths.append(tuple(chooser.path))
        super().done(chooser)


@pytest.mark.parametrize("delays", [0, 1, 2, 3])
def test_the_delay_bound_runs_exactly_the_schedules_within_it(delays: int) -> None:
    """Against the full search of a real body: the same schedules, in the same order."""
    body = snapshot_race(fixed=True)
    full = _RecordingExhaustive()
    labkit.explore(body, runs=100_000, strategy=full)
    bounded = _RecordingExhaustive(delays=delays)
    report = labkit.explore(body, runs=100_000, strategy=bounded)
    within = [p for p in full.paths if sum(choice for choice, _ in p) <= delays]
    assert bounded.paths == within
    assert report.runs == len(within) < len(full.paths)
    assert report.complete
    assert report.bounded
    assert f"every schedule within {delays} delay(s) of asyncio's own order was tried" in str(
        report
    )


def test_a_bound_that_cuts_nothing_is_the_full_search() -> None:
    body = snapshot_race(fixed=True)
    full = labkit.explore(body, runs=100_000, strategy=Exhaustive())
    wide = labkit.explore(body, runs=100_000, strategy=Exhaustive(delays=1000))
    assert wide.runs == full.runs
    assert not wide.bounded
    assert "every schedule was tried" in str(wide)


@pytest.mark.parametrize(
    ("make", "delays"),
    [
        (lambda: snapshot_race(fixed=False), 1),
        (deadlock_body, 1),
        (lambda: open_race(fixed=False), 3),
    ],
    ids=["lost-update", "deadlock", "use-before-open"],
)
def test_the_bounded_search_finds_the_same_bugs_sooner(
    make: Callable[[], Callable[[], Awaitable[None]]], delays: int
) -> None:
    body = make()
    with pytest.raises(ExplorationFailure) as full:
        labkit.explore(body, runs=100_000, strategy=Exhaustive(limit=100_000))
    with pytest.raises(ExplorationFailure) as bounded:
        labkit.explore(body, runs=100_000, strategy=Exhaustive(limit=100_000, delays=delays))
    assert type(bounded.value.error) is type(full.value.error)
    assert bounded.value.runs <= full.value.runs
    assert f"delays={delays}" in str(bounded.value)
    seed = bounded.value.seed
    assert seed is not None
    again = labkit.replay(body, seed, strategy="exhaustive", check=False)  # no bound needed
    assert again.failed
    assert again.schedule == bounded.value.run.schedule


def test_the_bound_says_what_it_did_not_try() -> None:
    """The use-before-open bug needs three delays: a bound of two passes, and says so."""
    body = open_race(fixed=False)
    report = labkit.explore(body, runs=100_000, strategy=Exhaustive(delays=2))
    assert report.complete
    assert report.bounded
    assert "within 2 delay(s)" in str(report)
    assert "every schedule was tried" not in str(report)
    with pytest.raises(ExplorationFailure, match="used before it was opened"):
        labkit.explore(body, runs=100_000, strategy=Exhaustive(delays=3))


def test_the_fixed_body_passes_the_bounded_and_the_full_search() -> None:
    body = open_race(fixed=True)
    full = labkit.explore(body, runs=100_000, strategy=Exhaustive(limit=100_000))
    bounded = labkit.explore(body, runs=100_000, strategy=Exhaustive(delays=3))
    assert full.complete
    assert not full.bounded
    assert bounded.complete
    assert bounded.bounded
    assert bounded.runs < full.runs / 5


def test_delays_are_checked_and_reach_the_marker(pytester: pytest.Pytester) -> None:
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="delays must be an integer >= 0"):
            Exhaustive(delays=bad)  # type: ignore[arg-type]
    assert Exhaustive(delays=2).describe() == "labkit.Exhaustive(limit=10000, delays=2)"
    assert labkit.strategy.strategy_from("exhaustive", delays=2).describe().endswith("delays=2)")
    pytester.makepyfile(
        test_bounded=textwrap.dedent(
            """
            import asyncio
            import pytest

            @pytest.mark.labkit_explore(runs=1000, strategy="exhaustive", delays=1)
            async def test_lost_update():
                account = {"balance": 100}

                async def deposit(amount):
                    balance = account["balance"]
                    await asyncio.sleep(0)
                    account["balance"] = balance + amount

                await asyncio.gather(deposit(50), deposit(70))
                assert account["balance"] == 220
            """
        )
    )
    code, output = run_pytest(pytester)
    assert code == 1, output
    assert "Exhaustive(limit=10000, delays=1)" in output
    assert "--labkit-seed=" in output  # replaying it: test_the_marker_explores_and_the_seed_...


def test_pct_runs_the_first_ready_task_of_the_highest_priority() -> None:
    """The loop that replaced max(key=...) must choose exactly as it did, draw for draw."""

    def reference(seed: int, ready_lists: list[list[str]]) -> list[int]:
        rng = random.Random(seed)
        priority: dict[str, float] = {}

        def value(name: str) -> float:
            if name not in priority:
                priority[name] = 2 + rng.random()
            return priority[name]

        return [max(range(len(r)), key=lambda i: value(r[i])) for r in ready_lists]

    ready_lists = [["a", "b"], ["b", "c", "a"], ["c"], ["d", "a", "b", "c"], ["a", "d"]]
    for seed in range(20):
        chooser = _PCTChooser(seed, depth=2, steps=1)
        chooser.change_points.clear()
        chooser.rng = random.Random(seed)
        assert [chooser.choose(r) for r in ready_lists] == reference(seed, ready_lists)


# -- an eager task factory (Python 3.12+) ----------------------------------------------------

eager_only = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="asyncio.eager_task_factory is new in Python 3.12"
)


def eagerly(body: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """The body, with its loop on asyncio's eager task factory from its first line."""

    async def eager_body() -> None:
        factory = asyncio.eager_task_factory  # type: ignore[attr-defined]
        asyncio.get_running_loop().set_task_factory(factory)
        await body()

    return eager_body


@eager_only
@pytest.mark.parametrize("strategy", ["random", "pct", "exhaustive"])
def test_exploration_under_an_eager_factory_finds_and_replays_the_race(strategy: str) -> None:
    body = eagerly(snapshot_race(fixed=False))
    with pytest.raises(ExplorationFailure, match="the deposit was lost") as caught:
        labkit.explore(body, runs=200, strategy=strategy)
    failure = caught.value
    steps = failure.run.trace.steps
    # The tasks' first steps ran inside create_task, in order, each to its Event.wait.
    first = [s for s in steps if s.woken_by == "created by eager_body"]
    assert [s.task for s in first] == ["deposit", "snapshot", "restore"]
    assert all(s.awaiting == "Event.wait" for s in first)
    assert failure.seed is not None
    again = labkit.replay(body, failure.seed, strategy=strategy, check=False)
    assert again.failed
    assert again.trace.text() == failure.run.trace.text()
    report = labkit.explore(eagerly(snapshot_race(fixed=True)), runs=200, strategy=strategy)
    assert report.schedules >= 6


@eager_only
def test_a_loop_factory_with_an_eager_factory_keeps_it_for_every_run() -> None:
    factory = asyncio.eager_task_factory  # type: ignore[attr-defined]
    seen: list[object] = []

    def loop_factory() -> asyncio.AbstractEventLoop:
        loop = labkit.new_virtual_loop()
        loop.set_task_factory(factory)
        return loop

    async def body() -> None:
        seen.append(asyncio.get_running_loop().get_task_factory())
        done = asyncio.create_task(asyncio.sleep(0, "at once"))
        quick = asyncio.create_task(_returns_at_once())  # finishes inside create_task
        assert quick.done()
        await done

    report = labkit.explore(body, runs=5, strategy="random", loop_factory=loop_factory)
    assert report.runs == 5
    assert seen == [factory] * 5
    run = labkit.replay(body, 0, strategy="random", loop_factory=loop_factory, check=False)
    assert "_returns_at_once" in [step.task for step in run.trace]


async def _returns_at_once() -> int:
    return 1


# -- seeds keep their schedules ------------------------------------------------------------------

async def mixed() -> None:
    """Timers, plain callbacks, a queue and a lock: every path through the control."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    lock = asyncio.Lock()
    done = loop.create_future()
    loop.call_later(0.25, done.set_result, None)
    seen: list[int] = []

    async def producer(base: int) -> None:
        for i in range(2):
            async with lock:
                await queue.put(base + i)
            await asyncio.sleep(0.1 * base)

    async def consumer() -> None:
        for _ in range(4):
            seen.append(await queue.get())
            loop.call_soon(seen.append, -1)

    await asyncio.gather(producer(1), producer(2), consumer(), done)
    assert len(seen) == 8



# Recorded with the implementation before one loop was reused, records were made lazily and
# chosen steps ran inline: a seed in a CI log, a notebook or a bug report must keep replaying
# the schedule it named. One letter per step: m mixed, p producer, P producer#2, c consumer.
SCHEDULE_LETTERS = {"mixed": "m", "producer": "p", "producer#2": "P", "consumer": "c"}
SCHEDULES_BEFORE = [
    ('random', 0, 0.0, "mPcpcpcPcpPm"),
    ('random', 5, 0.0, "mcPcpcpcPcpPm"),
    ('random', 11, 0.0, "mPcpcpcpPcPm"),
    ('pct', 0, 0.0, "mcpcPcpcPcpPm"),
    ('pct', 3, 0.0, "mPcpcpcPcpPm"),
    ('pct', 8, 0.0, "mpPcPcpcpPcPm"),
    ('random', 2, 0.05, "mpcPcpcpPcPm"),
    ('random', 7, 0.05, "mpPcPcpcPcpPm"),
    ('exhaustive', 0, 0.0, "mpPcPcpcPpcPm"),
    ('exhaustive', 9, 0.0, "mpcPcpcpPcPm"),
    ('exhaustive', 40, 0.0, "mPcpcpcPcpPm"),
]


@pytest.mark.parametrize(("strategy", "seed", "jitter", "schedule"), SCHEDULES_BEFORE)
def test_seeds_replay_the_schedules_they_always_had(
    strategy: str, seed: int, jitter: float, schedule: str
) -> None:
    run = labkit.replay(mixed, seed, strategy=strategy, jitter=jitter, check=False)
    assert not run.failed
    assert "".join(SCHEDULE_LETTERS[task] for task in run.schedule) == schedule
    assert labkit.replay(mixed, seed, strategy=strategy, jitter=jitter).trace == run.trace
