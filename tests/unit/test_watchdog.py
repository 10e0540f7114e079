"""labkit.Watchdog: a callback or task step that blocks the loop in real time fails the test.

The blocking calls below (``time.sleep``, a CPU loop) are the seeded bugs under test, not a way
to wait for something: every assertion is about what the watchdog reports, never about time.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time

import pytest

import labkit
from labkit import BlockingCall, BlockingCallError, Watchdog
from labkit.trace import Location

pytest_plugins = ["pytester"]

ALL_LOOPS = pytest.mark.asyncio(loop_factories=["asyncio", "uvloop", "virtual"])
THRESHOLD = 0.1
BLOCK = 0.6  # six thresholds: seen even when this machine is busy


class Flaky:
    """A server that fails twice, then answers."""

    def __init__(self) -> None:
        self.calls = 0

    async def get(self) -> str:
        self.calls += 1
        if self.calls < 3:
            raise ConnectionError("try again")
        return "data"


async def fetch_with_blocking_retry(server: Flaky) -> str:
    for attempt in range(5):
        try:
            return await server.get()
        except ConnectionError:
            time.sleep(BLOCK / 2 * (attempt + 1))  # the seeded bug: freezes the whole loop
    raise ConnectionError("gave up")


async def fetch_with_retry(server: Flaky) -> str:
    for attempt in range(5):
        try:
            return await server.get()
        except ConnectionError:
            await asyncio.sleep(BLOCK / 2 * (attempt + 1))
    raise ConnectionError("gave up")


def burn_cpu(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@ALL_LOOPS
async def test_time_sleep_in_a_retry_loop_is_caught_with_its_stack() -> None:
    async def body() -> None:
        async with Watchdog(threshold=THRESHOLD):
            task = asyncio.create_task(fetch_with_blocking_retry(Flaky()), name="fetch")
            assert await task == "data"

    with pytest.raises(BlockingCallError) as caught:
        await body()
    [block] = caught.value.blocks
    assert block.culprit == "task 'fetch'"
    assert str(block).startswith(
        "task 'fetch' blocked the event loop for more than 0.1 s of real time\n"
    )
    lines, first = inspect.getsourcelines(fetch_with_blocking_retry)
    line = first + next(i for i, text in enumerate(lines) if "time.sleep(" in text)
    assert (
        f"test_watchdog.py:{line} in fetch_with_blocking_retry: "
        "time.sleep(BLOCK / 2 * (attempt + 1))" in str(block)
    )
    assert block.threshold == THRESHOLD  # the report carries the rule; its seconds vary by run


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_awaited_backoff_passes_on_the_virtual_loop() -> None:
    async with Watchdog(threshold=THRESHOLD) as dog:
        assert await fetch_with_retry(Flaky()) == "data"
    assert dog.blocks == []


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_many_short_steps_are_not_a_block() -> None:
    async def chatty() -> None:
        for _ in range(60):
            burn_cpu(0.01)  # each step is short; the loop stays responsive
            await asyncio.sleep(0)

    async with Watchdog(threshold=THRESHOLD) as dog:
        await asyncio.gather(chatty(), chatty())
    assert dog.blocks == []


@pytest.mark.asyncio(loop_factories=["asyncio", "virtual"])
async def test_a_cpu_bound_plain_callback_is_named() -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def on_timer() -> None:
        burn_cpu(BLOCK)
        done.set_result(None)

    async def body() -> None:
        async with Watchdog(threshold=THRESHOLD):
            loop.call_soon(on_timer)
            await done

    with pytest.raises(BlockingCallError) as caught:
        await body()
    [block] = caught.value.blocks
    assert block.culprit.startswith("callback ")
    assert "on_timer()" in block.culprit
    assert "in burn_cpu: while time.perf_counter() < end:" in str(block)


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_each_blocking_step_is_reported_once() -> None:
    async def two_blocks() -> None:
        time.sleep(BLOCK)
        await asyncio.sleep(1)
        time.sleep(BLOCK)

    with pytest.raises(BlockingCallError) as caught:
        async with Watchdog(threshold=THRESHOLD):
            await asyncio.create_task(two_blocks(), name="twice")
    assert [b.culprit for b in caught.value.blocks] == ["task 'twice'", "task 'twice'"]


def test_several_blocks_are_counted_and_numbered() -> None:
    """Two blocks used to read as one report printed twice, with no count."""
    where = (Location("retry.py", 20, "fetch", "time.sleep(backoff)"),)
    blocks = [BlockingCall("task 'fetch'", where, 0.1, 0.25) for _ in range(2)]
    lines = str(BlockingCallError(blocks)).splitlines()
    assert lines == [
        "2 blocking calls:",
        "1. task 'fetch' blocked the event loop for more than 0.1 s of real time",
        "    retry.py:20 in fetch: time.sleep(backoff)",
        "2. task 'fetch' blocked the event loop for more than 0.1 s of real time",
        "    retry.py:20 in fetch: time.sleep(backoff)",
    ]
    assert str(BlockingCallError(blocks[:1])) == str(blocks[0])


def test_asyncio_debug_mode_misses_it_on_the_virtual_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Why the watchdog exists: slow_callback_duration is measured with loop.time()."""

    async def main() -> None:
        asyncio.get_running_loop().slow_callback_duration = THRESHOLD
        await asyncio.create_task(fetch_with_blocking_retry(Flaky()), name="fetch")

    caplog.set_level(logging.WARNING, logger="asyncio")
    labkit.run(main(), debug=True)
    assert not [r for r in caplog.records if "took" in r.getMessage()]
    caplog.clear()
    labkit.run(main(), virtual=False, debug=True)
    assert [r for r in caplog.records if "took" in r.getMessage()]


def test_time_outside_the_running_loop_is_not_counted() -> None:
    loop = labkit.new_virtual_loop()
    try:
        with Watchdog(threshold=THRESHOLD, loop=loop) as dog:
            loop.run_until_complete(asyncio.sleep(1))
            time.sleep(BLOCK)  # the loop is not running: nothing is blocked
            loop.run_until_complete(asyncio.sleep(1))
        assert dog.blocks == []
    finally:
        loop.close()


def test_started_from_another_thread_it_watches_the_loops_thread() -> None:
    loop = asyncio.new_event_loop()
    dog = Watchdog(threshold=THRESHOLD, loop=loop)

    async def main() -> None:
        while dog._served == 0:  # the first heartbeat names the loop's thread
            await asyncio.sleep(0.001)
        time.sleep(BLOCK)

    dog.start()  # from this thread; the loop runs in another one
    worker = threading.Thread(target=loop.run_until_complete, args=(main(),))
    worker.start()
    worker.join()
    loop.close()
    [block] = dog.stop()
    assert block.culprit.endswith("main()")
    assert "time.sleep(BLOCK)" in str(block)


def test_sync_form_reports_on_exit() -> None:
    loop = labkit.new_virtual_loop()

    async def blocks() -> None:
        time.sleep(BLOCK)

    try:
        culprit = r"task running test_sync_form_reports_on_exit.<locals>.blocks\(\) blocked"
        with (
            pytest.raises(BlockingCallError, match=culprit),
            Watchdog(threshold=THRESHOLD, loop=loop),
        ):
            loop.run_until_complete(loop.create_task(blocks()))
    finally:
        loop.close()


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_a_body_error_is_not_masked() -> None:
    async def body() -> None:
        async with Watchdog(threshold=THRESHOLD):
            time.sleep(BLOCK)
            raise KeyError("body")

    with pytest.raises(KeyError) as caught:
        await body()
    assert any("Watchdog saw blocking" in note for note in caught.value.__notes__)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "0.1", True])
def test_threshold_is_validated(bad: object) -> None:
    with pytest.raises(ValueError, match="threshold must be a number of real seconds > 0"):
        Watchdog(threshold=bad)  # type: ignore[arg-type]


def test_start_needs_a_loop_and_only_once() -> None:
    with pytest.raises(RuntimeError, match="needs a loop"):
        Watchdog().start()
    loop = labkit.new_virtual_loop()
    try:
        dog = Watchdog(loop=loop).start()
        with pytest.raises(RuntimeError, match="already running"):
            dog.start()
        assert dog.stop() == []
        assert dog.stop() == []
    finally:
        loop.close()


# -- pytest: marker, ini option, fixture ---------------------------------------------------------

INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
"""

SUITE = """
import asyncio
import time
import pytest

async def retry():
    time.sleep(0.6)

@pytest.mark.asyncio
{marker}
async def test_blocks():
    await retry()

@pytest.mark.asyncio
async def test_fine():
    await asyncio.sleep(60)
"""


def test_marker_fails_the_test_with_the_stack(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(SUITE.format(marker="@pytest.mark.labkit_watchdog(threshold=0.1)"))
    result = pytester.runpytest("-q", "--labkit-loop=virtual")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_blocks _*",
            "task running test_blocks() blocked the event loop for more than 0.1 s of real time",
            "    test_marker_fails_the_test_with_the_stack.py:11 in test_blocks: await retry()",
            "    test_marker_fails_the_test_with_the_stack.py:6 in retry: time.sleep(0.6)",
        ]
    )


def test_ini_option_and_opt_out(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI + "labkit_watchdog = 0.1\n")
    pytester.makepyfile(SUITE.format(marker=""))
    pytester.runpytest("-q", "--labkit-loop=virtual").assert_outcomes(passed=1, failed=1)
    pytester.makepyfile(SUITE.format(marker="@pytest.mark.labkit_watchdog(None)"))
    pytester.runpytest("-q", "--labkit-loop=virtual").assert_outcomes(passed=2)


def test_bad_threshold_names_the_fix(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(SUITE.format(marker="@pytest.mark.labkit_watchdog(threshold='soon')"))
    result = pytester.runpytest("-q", "--labkit-loop=virtual")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*watchdog threshold must be a number of real seconds > 0*"])


def test_fixture_exposes_the_blocks(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
import time
import pytest

@pytest.mark.asyncio
async def test_sees_it(watchdog):
    time.sleep(0.6)
    assert [b.culprit for b in watchdog.blocks] == ["task running test_sees_it()"]
"""
    )
    result = pytester.runpytest("-q", "--labkit-loop=virtual")
    result.assert_outcomes(failed=1)
