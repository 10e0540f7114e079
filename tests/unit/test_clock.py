"""labkit.VirtualClock: a test's handle on the running loop's virtual time."""

from __future__ import annotations

import asyncio

import pytest

import labkit
from labkit import VirtualClock, VirtualTimeLoop


def test_can_be_made_before_any_loop_exists() -> None:
    clock = VirtualClock()

    async def main() -> tuple[float, float]:
        before = clock.now
        await asyncio.sleep(90)
        return before, clock.now

    assert labkit.run(main()) == (0.0, 90.0)


def test_advance_moves_time_and_runs_what_falls_due() -> None:
    clock = VirtualClock()
    loop = VirtualTimeLoop(autojump=False)

    async def main() -> list[float]:
        woke: list[float] = []

        async def sleeper(delay: float) -> None:
            await asyncio.sleep(delay)
            woke.append(clock.now)

        tasks = [asyncio.create_task(sleeper(d), name=f"sleep-{d}") for d in (30, 10, 20)]
        await clock.advance(25)
        assert clock.now == 25.0
        assert [t.done() for t in tasks] == [False, True, True]
        await clock.advance(5)
        return woke

    try:
        assert loop.run_until_complete(main()) == [10.0, 20.0, 30.0]
    finally:
        loop.close()


def test_loop_property_is_the_running_loop() -> None:
    clock = VirtualClock()

    async def main() -> bool:
        return clock.loop is asyncio.get_running_loop()

    assert labkit.run(main()) is True


def test_on_the_stock_loop_the_error_says_how_to_switch() -> None:
    clock = VirtualClock()

    async def main() -> None:
        await clock.advance(1)

    with pytest.raises(TypeError, match=r"loop_factories=\['virtual'\].*--labkit-loop=virtual"):
        asyncio.run(main())

    async def read() -> float:
        return clock.now

    with pytest.raises(TypeError, match="virtual loop"):
        asyncio.run(read())


def test_outside_any_loop_it_says_no_loop_runs() -> None:
    with pytest.raises(RuntimeError, match="no running event loop"):
        _ = VirtualClock().now
