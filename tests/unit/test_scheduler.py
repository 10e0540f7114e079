"""run_until_idle, Scheduler and step_through: exact idleness and explicit task order."""

from __future__ import annotations

import asyncio
import inspect
import sys

import pytest

import labkit
from labkit import DeadlockError, Scheduler, run_until_idle, step_through

virtual = pytest.mark.asyncio(loop_factories=["virtual"])


async def relay(inbox: asyncio.Queue[int], outbox: asyncio.Queue[int]) -> None:
    """Passes one item on, after a few hops through the loop."""
    item = await inbox.get()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    await outbox.put(item + 1)


def chain(length: int) -> tuple[list[asyncio.Queue[int]], list[asyncio.Task[None]]]:
    queues: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(length + 1)]
    tasks = [
        asyncio.create_task(relay(queues[i], queues[i + 1]), name=f"relay{i}")
        for i in range(length)
    ]
    return queues, tasks


async def deposit(account: dict[str, int], amount: int) -> None:
    """The racy read-modify-write: reads, yields, writes back."""
    balance = account["balance"]
    await asyncio.sleep(0)
    account["balance"] = balance + amount


# -- run_until_idle ----------------------------------------------------------------------------


@virtual
async def test_run_until_idle_waits_for_a_whole_chain_of_wakeups() -> None:
    queues, tasks = chain(5)
    queues[0].put_nowait(1)
    await run_until_idle()
    assert queues[-1].get_nowait() == 6
    assert all(t.done() for t in tasks)


@virtual
async def test_one_sleep0_is_not_enough_for_the_same_chain() -> None:
    """The stale form: a single yield lets only the first hop happen."""
    queues, _tasks = chain(5)
    queues[0].put_nowait(1)
    await asyncio.sleep(0)
    assert queues[-1].empty()
    await run_until_idle()
    assert queues[-1].get_nowait() == 6


@virtual
async def test_run_until_idle_waits_for_plain_callback_chains_too() -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()

    def bounce(left: int) -> None:
        if left:
            loop.call_soon(bounce, left - 1)
        else:
            done.set_result(50)

    async def wait_for_the_chain() -> int:
        return await done

    loop.call_soon(bounce, 50)
    waiter = asyncio.create_task(wait_for_the_chain())  # a task woken at the end of the chain
    await run_until_idle()
    assert waiter.done()
    assert waiter.result() == 50


@virtual
async def test_run_until_idle_returns_before_a_timer_due_a_nanosecond_later() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    loop.call_later(1e-9, lambda: fired.append(loop.time()))
    await run_until_idle()
    assert fired == []
    assert loop.time() == 0.0
    await labkit.advance(1e-9)
    assert fired == [1e-9]


@virtual
async def test_run_until_idle_does_not_move_the_clock() -> None:
    loop = asyncio.get_running_loop()
    sleeper = asyncio.create_task(asyncio.sleep(10))
    await run_until_idle()
    assert loop.time() == 0.0
    assert not sleeper.done()
    await labkit.advance(10)
    assert sleeper.done()


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_run_until_idle_on_asyncio_own_loop() -> None:
    queues, _tasks = chain(4)
    queues[0].put_nowait(1)
    await run_until_idle()
    assert queues[-1].get_nowait() == 5


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_run_until_idle_on_uvloop_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="virtual loop"):
        await run_until_idle()


# -- Scheduler ---------------------------------------------------------------------------------


@virtual
async def test_scheduler_order_decides_the_lost_update() -> None:
    account = {"balance": 100}
    async with Scheduler() as s:
        tasks = [
            asyncio.create_task(deposit(account, 50), name="a"),
            asyncio.create_task(deposit(account, 70), name="b"),
        ]
        assert [state.task for state in s.ready()] == ["a", "b"]
        await s.step("a")
        await s.step("b")
        await s.run_until_idle()
    assert all(t.done() for t in tasks)
    assert account["balance"] == 170  # an update was lost: the race, made visible on demand
    assert [step.task for step in s.trace] == ["a", "b", "a", "b"]


@virtual
async def test_scheduler_serial_order_keeps_both_updates() -> None:
    account = {"balance": 100}
    async with Scheduler() as s:
        tasks = [
            asyncio.create_task(deposit(account, 50), name="a"),
            asyncio.create_task(deposit(account, 70), name="b"),
        ]
        await s.step("a")
        await s.step("a")
        await s.step("b")
        await s.step("b")
    assert all(t.done() for t in tasks)
    assert account["balance"] == 220


@virtual
async def test_scheduler_step_reports_where_the_task_stopped() -> None:
    account = {"balance": 0}
    async with Scheduler() as s:
        task = asyncio.create_task(deposit(account, 5), name="a")
        step = await s.step()
        assert step.task == "a"
        assert step.awaiting == "sleep(0)"
        assert step.where is not None
        assert step.where.function == "deposit"
        assert step.outcome == "suspended"
        ready = s.ready()
        assert [str(r) for r in ready] == [
            f"a: ready (itself) at {step.where}",
        ]
        final = await s.step("a")
        assert final.outcome == "returned"
        assert final.where is None
        assert task.done()


@virtual
async def test_scheduler_lists_waiting_tasks_with_deadlines() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def napper() -> None:
        await asyncio.sleep(5)

    async with Scheduler() as s:
        getter = asyncio.create_task(queue.get(), name="getter")
        napper_task = asyncio.create_task(napper(), name="napper")
        await s.run_until_idle()
        assert s.ready() == []
        states = {state.task: state for state in s.waiting()}
        assert states["getter"].awaiting == "Queue.get"
        assert states["napper"].awaiting == "sleep(5)"
        assert states["napper"].until == 5.0
        assert "until t=5" in str(states["napper"])
        await s.advance(5)
        assert s.now == 5.0
        assert napper_task.done()
        assert [state.task for state in s.waiting()] == ["getter"]
        queue.put_nowait(1)
        await s.run_until_idle()
        assert s.waiting() == []
        assert getter.result() == 1


@virtual
async def test_scheduler_step_errors_name_the_fix() -> None:
    async with Scheduler() as s:
        with pytest.raises(RuntimeError, match="no task is ready"):
            await s.step()
        sleeper = asyncio.create_task(asyncio.sleep(1), name="sleeper")
        with pytest.raises(RuntimeError, match="'other' is not ready to run; ready: sleeper"):
            await s.step("other")
        await s.step("sleeper")
        with pytest.raises(RuntimeError, match=r"sleeper: waiting on sleep\(1\) until t=1"):
            await s.step()
        await s.advance(1)
        assert sleeper.done()


@virtual
async def test_held_tasks_run_when_the_test_waits_on_something_else() -> None:
    """Holding never deadlocks: awaiting anything but the scheduler lets held tasks run."""
    done = asyncio.Event()

    async def setter() -> None:
        done.set()

    async with Scheduler():
        task = asyncio.create_task(setter(), name="setter")
        await asyncio.wait_for(done.wait(), timeout=1)
    await task


@virtual
async def test_only_one_scheduler_per_loop() -> None:
    async with Scheduler():
        with pytest.raises(RuntimeError, match="already under a labkit scheduler"):
            async with Scheduler():
                pass


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_scheduler_needs_the_virtual_loop() -> None:
    with pytest.raises(TypeError, match="loop_factories=\\['virtual'\\]"):
        async with Scheduler():
            pass


@virtual
async def test_plain_callbacks_keep_fifo_order_under_control() -> None:
    loop = asyncio.get_running_loop()
    seen: list[int] = []
    async with Scheduler() as s:
        for i in range(20):
            loop.call_soon(seen.append, i)
        await s.run_until_idle()
    assert seen == list(range(20))


# -- step_through ------------------------------------------------------------------------------


async def producer(queue: asyncio.Queue[int]) -> None:
    for i in range(3):
        await queue.put(i)


async def consumer(queue: asyncio.Queue[int]) -> None:
    for _ in range(3):
        await queue.get()
        await asyncio.sleep(1)


PRODUCER_CONSUMER_ROUNDS = [
    "round 1 at t=0: producer -> Queue.put, consumer -> sleep(1)",
    "round 2 at t=0: producer -> Queue.put",
    "round 3 at t=1: consumer -> sleep(1)",
    "round 4 at t=1: producer -> returned",
    "round 5 at t=2: consumer -> sleep(1)",
    "round 6 at t=3: consumer -> returned",
]


@virtual
async def test_step_through_runs_each_ready_task_one_step_per_round() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    stepper = step_through(producer(queue), consumer(queue))
    rounds = []
    async for rnd in stepper:
        rounds.append(str(rnd))
        assert queue.qsize() <= 1
    assert rounds == PRODUCER_CONSUMER_ROUNDS
    assert [t.get_name() for t in stepper.tasks] == ["producer", "consumer"]
    assert all(t.done() for t in stepper.tasks)


@virtual
async def test_await_step_through_returns_the_tasks() -> None:
    async def worker(n: int) -> int:
        await asyncio.sleep(n)
        return n * 10

    tasks = await step_through(worker(1), worker(2), names=["w1", "w2"])
    assert [t.result() for t in tasks] == [10, 20]
    assert [t.get_name() for t in tasks] == ["w1", "w2"]


@virtual
async def test_step_through_stops_after_steps_rounds() -> None:
    async def forever() -> None:
        while True:
            await asyncio.sleep(0)

    stepper = step_through(forever(), steps=3)
    tasks = await stepper
    assert stepper.rounds == 3
    assert not tasks[0].done()
    tasks[0].cancel()


def test_step_through_reports_a_deadlock() -> None:
    async def stuck() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        await step_through(stuck())

    with pytest.raises(DeadlockError, match="stuck"):
        labkit.run(main())


@virtual
async def test_step_through_rejects_bad_input() -> None:
    async def worker() -> None:
        pass

    with pytest.raises(TypeError, match="call the async function"):
        step_through(worker)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="at least one coroutine"):
        step_through()
    coro = worker()
    with pytest.raises(ValueError, match="positive number of rounds"):
        step_through(coro, steps=0)
    other = worker()
    with pytest.raises(ValueError, match="1 names for 2 coroutines"):
        step_through(coro, other, names=["one"])
    other.close()
    await step_through(coro, names=["w"])


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_breaking_out_of_step_through_hands_the_loop_back() -> None:
    async def worker() -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    async for _ in labkit.step_through(worker(), worker()):
        break
    async with labkit.Scheduler() as scheduler:  # used to fail: "already under a scheduler"
        await scheduler.run_until_idle()

    stepper = labkit.step_through(worker(), names=["kept"])
    async for _ in stepper:
        break
    await stepper.aclose()
    await labkit.step_through(worker())
    [kept] = stepper.tasks
    await kept
    assert [r async for r in stepper] == []


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_closing_a_stepper_that_never_ran_closes_its_coroutines() -> None:
    async def worker() -> None:
        await asyncio.sleep(0)

    coro = worker()
    stepper = labkit.step_through(coro)
    await stepper.aclose()
    assert inspect.getcoroutinestate(coro) == "CORO_CLOSED"
    assert [r async for r in stepper] == []


# -- an eager task factory (Python 3.12+) ----------------------------------------------------

eager_only = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="asyncio.eager_task_factory is new in Python 3.12"
)


def eager(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Put the running loop (or ``loop``) on asyncio's eager task factory."""
    (loop or asyncio.get_running_loop()).set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]


@eager_only
@virtual
async def test_step_through_under_an_eager_factory_counts_creation_as_round_one() -> None:
    eager()
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    stepper = step_through(producer(queue), consumer(queue))
    rounds = [str(rnd) async for rnd in stepper]
    # The first steps ran inside create_task, in the order given: the same first round.
    assert rounds == PRODUCER_CONSUMER_ROUNDS
    assert [t.get_name() for t in stepper.tasks] == ["producer", "consumer"]
    first = stepper.trace.steps[0]
    assert first.woken_by.startswith("created by test_step_through_under_an_eager")


@eager_only
@virtual
async def test_scheduler_under_an_eager_factory_holds_tasks_after_their_first_step() -> None:
    eager()
    account = {"balance": 100}
    async with Scheduler() as s:
        a = asyncio.create_task(deposit(account, 50), name="a")
        b = asyncio.create_task(deposit(account, 70), name="b")
        # Both read the balance as they were created: the lost update is already set up.
        assert [step.task for step in s.trace] == ["a", "b"]
        assert [state.task for state in s.ready()] == ["a", "b"]
        assert all(state.woken_by == "itself" for state in s.ready())
        await s.step("b")
        await s.step("a")
    assert a.done()
    assert b.done()
    assert account["balance"] == 150
    assert [step.task for step in s.trace] == ["a", "b", "b", "a"]
    assert s.trace.steps[0].woken_by.startswith("created by ")
    assert s.trace.steps[0].awaiting == "sleep(0)"


@eager_only
@virtual
async def test_scheduler_labels_unnamed_eager_tasks_by_their_coroutine() -> None:
    """Python 3.13.0 names a factory-made task "None" (gh-130033): not in labkit's labels."""
    eager()
    account = {"balance": 0}
    async with Scheduler() as s:
        tasks = [asyncio.create_task(deposit(account, n)) for n in (1, 2)]
        await s.run_until_idle()
    assert all(task.done() for task in tasks)
    assert [step.task for step in s.trace] == ["deposit", "deposit#2", "deposit", "deposit#2"]


@eager_only
@virtual
async def test_run_until_idle_under_an_eager_factory() -> None:
    eager()
    queues, tasks = chain(5)  # each relay ran to its first await as it was created
    queues[0].put_nowait(1)
    await run_until_idle()
    assert queues[-1].get_nowait() == 6
    assert all(t.done() for t in tasks)


@eager_only
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_run_until_idle_under_an_eager_factory_on_asyncio_own_loop() -> None:
    eager()
    queues, _tasks = chain(4)
    queues[0].put_nowait(1)
    await run_until_idle()
    assert queues[-1].get_nowait() == 5


@eager_only
def test_the_virtual_loop_under_an_eager_factory() -> None:
    async def nap(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return asyncio.get_running_loop().time()

    async def main() -> list[float]:
        eager()
        tasks = [asyncio.create_task(nap(s), name=f"nap{s}") for s in (3600, 60)]
        return list(await asyncio.gather(*tasks))

    assert labkit.run(main()) == [3600.0, 60.0]

    async def stuck() -> None:
        eager()
        await asyncio.create_task(asyncio.Event().wait(), name="forever")

    with pytest.raises(DeadlockError, match="task 'forever'"):
        labkit.run(stuck())
