"""The labkit pytest plugin, driven through pytest's own ``pytester``."""

from __future__ import annotations

import sys

import pytest

pytest_plugins = ["pytester"]

INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
"""

REPORT_LOOP = """
import asyncio
import pytest

def loop_name():
    return type(asyncio.get_running_loop()).__name__
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    return pytester


def test_one_test_runs_under_all_three_loops(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        REPORT_LOOP
        + """
seen = []

@pytest.mark.asyncio(loop_factories=["asyncio", "uvloop", "virtual"])
async def test_each(request):
    seen.append((request.node.callspec.id, loop_name()))

def test_afterwards():
    assert seen == [
        ("asyncio", "_UnixSelectorEventLoop"),
        ("uvloop", "Loop"),
        ("virtual", "VirtualTimeLoop"),
    ]
"""
    )
    result = suite.runpytest("-v")
    result.stdout.fnmatch_lines(
        [
            "*test_each?asyncio? PASSED*",
            "*test_each?uvloop? PASSED*",
            "*test_each?virtual? PASSED*",
            "*test_afterwards PASSED*",
        ]
    )
    result.assert_outcomes(passed=4)


def test_a_subset_of_loops_in_the_marker_order(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        REPORT_LOOP
        + """
@pytest.mark.asyncio(loop_factories=["virtual", "asyncio"])
async def test_two():
    pass
"""
    )
    result = suite.runpytest("-v")
    result.stdout.fnmatch_lines(["*test_two?virtual? PASSED*", "*test_two?asyncio? PASSED*"])
    result.assert_outcomes(passed=2)


def test_an_unknown_loop_name_is_skipped_with_the_available_names(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(
        """
import pytest

@pytest.mark.asyncio(loop_factories=["trio"])
async def test_unknown():
    pass
"""
    )
    result = suite.runpytest("-rs")
    result.stdout.fnmatch_lines(["*'trio' is not available*asyncio, uvloop, virtual*"])
    result.assert_outcomes(skipped=1)


SUITE_ON_DEFAULT_LOOP = (
    REPORT_LOOP
    + """
@pytest.mark.asyncio
async def test_plain():
    print("LOOP", loop_name(), asyncio.get_running_loop().time() < 1)
    await asyncio.sleep(3600)
    print("AFTER", asyncio.get_running_loop().time())

@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_chooses_its_own():
    assert loop_name() == "_UnixSelectorEventLoop"
"""
)


def test_the_suite_runs_on_the_stock_loop_by_default(suite: pytest.Pytester) -> None:
    suite.makepyfile(SUITE_ON_DEFAULT_LOOP.replace("3600", "0"))
    result = suite.runpytest("-s")
    result.stdout.fnmatch_lines(["*LOOP _UnixSelectorEventLoop *"])
    result.assert_outcomes(passed=2)


def test_labkit_loop_option_runs_the_suite_in_virtual_time(suite: pytest.Pytester) -> None:
    suite.makepyfile(SUITE_ON_DEFAULT_LOOP)
    result = suite.runpytest("-s", "--labkit-loop=virtual")
    result.stdout.fnmatch_lines(["*LOOP VirtualTimeLoop True", "AFTER 3600.0"])
    result.assert_outcomes(passed=2)


def test_labkit_loop_ini_option(suite: pytest.Pytester) -> None:
    suite.makeini(INI + "labkit_loop = virtual\n")
    suite.makepyfile(SUITE_ON_DEFAULT_LOOP)
    result = suite.runpytest("-s")
    result.stdout.fnmatch_lines(["*LOOP VirtualTimeLoop True"])
    result.assert_outcomes(passed=2)


def test_labkit_loop_option_uvloop(suite: pytest.Pytester) -> None:
    suite.makepyfile(SUITE_ON_DEFAULT_LOOP.replace("3600", "0"))
    result = suite.runpytest("-s", "--labkit-loop=uvloop")
    result.stdout.fnmatch_lines(["*LOOP Loop *"])
    result.assert_outcomes(passed=2)


def test_a_bad_loop_name_on_the_command_line_is_a_usage_error(suite: pytest.Pytester) -> None:
    suite.makepyfile("def test_nothing(): pass")
    result = suite.runpytest("--labkit-loop=tokio")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid choice: 'tokio'*"])


def test_a_bad_loop_name_in_the_ini_is_a_usage_error(suite: pytest.Pytester) -> None:
    suite.makeini(INI + "labkit_loop = tokio\n")
    suite.makepyfile("def test_nothing(): pass")
    result = suite.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*labkit_loop = 'tokio'*use one of asyncio, uvloop, virtual*"])


def test_labkit_clock_marker_gives_a_manual_clock(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        REPORT_LOOP
        + """
import labkit

@pytest.mark.asyncio
@pytest.mark.labkit_clock(autojump=False, start=100.0)
async def test_manual():
    loop = asyncio.get_running_loop()
    assert loop_name() == "VirtualTimeLoop"
    assert loop.time() == 100.0
    task = asyncio.create_task(asyncio.sleep(10), name="sleeper")
    await labkit.advance(9)
    assert not task.done()
    await labkit.advance(1)
    assert task.done()
    assert loop.time() == 110.0

@pytest.mark.asyncio
@pytest.mark.labkit_clock(autojump=False)
async def test_forgets_to_advance():
    await asyncio.sleep(1)
"""
    )
    result = suite.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*DeadlockError: deadlock: *the clock is manual*"])


def test_labkit_clock_marker_applies_to_the_virtual_variant_only(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(
        REPORT_LOOP
        + """
@pytest.mark.asyncio(loop_factories=["asyncio", "virtual"])
@pytest.mark.labkit_clock(start=50.0)
async def test_both(request):
    if request.node.callspec.id == "virtual":
        assert asyncio.get_running_loop().time() == 50.0
    else:
        assert loop_name() == "_UnixSelectorEventLoop"
"""
    )
    suite.runpytest().assert_outcomes(passed=2)


def test_labkit_clock_marker_with_a_bad_option_fails_clearly(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
import pytest

@pytest.mark.asyncio
@pytest.mark.labkit_clock(autojump_threshold=-5)
async def test_bad():
    pass
"""
    )
    result = suite.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*labkit_clock marker: autojump_threshold must be a number of real seconds >= 0*"]
    )
    result.stdout.no_fnmatch_line("*loop.py*")


def test_labkit_clock_marker_with_positional_arguments_is_a_usage_error(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(
        """
import pytest

@pytest.mark.asyncio
@pytest.mark.labkit_clock(False)
async def test_bad():
    pass
"""
    )
    result = suite.runpytest()
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*labkit_clock takes keyword arguments only*"])


def test_virtual_clock_fixture_reads_and_advances(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
import asyncio
import pytest

@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_clock(virtual_clock):
    assert virtual_clock.now == 0.0
    task = asyncio.create_task(asyncio.sleep(30), name="thirty")
    await virtual_clock.advance(30)
    assert task.done()
    assert virtual_clock.now == 30.0

@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_clock_on_the_stock_loop(virtual_clock):
    await virtual_clock.advance(1)
"""
    )
    result = suite.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*TypeError: the virtual clock needs*loop_factories=?'virtual'?*"])


def test_virtual_clock_fixture_alone_picks_the_virtual_loop(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
import asyncio
import pytest

@pytest.mark.asyncio
async def test_clock(virtual_clock):
    await asyncio.sleep(3600)
    assert virtual_clock.now == 3600.0
"""
    )
    suite.runpytest().assert_outcomes(passed=1)


def test_a_fresh_loop_and_clock_per_test(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
import asyncio
import pytest

loops = []

@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("n", [1, 2])
async def test_sleeps(n):
    loop = asyncio.get_running_loop()
    assert loop.time() == 0.0
    loops.append(loop)
    await asyncio.sleep(100)

def test_different_loops():
    assert loops[0] is not loops[1]
"""
    )
    suite.runpytest().assert_outcomes(passed=3)


def test_module_scoped_loop_keeps_one_clock(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
import asyncio
import pytest

pytestmark = pytest.mark.asyncio(loop_scope="module", loop_factories=["virtual"])

async def test_first():
    await asyncio.sleep(100)

async def test_second():
    assert asyncio.get_running_loop().time() == 100.0
"""
    )
    suite.runpytest().assert_outcomes(passed=2)


def test_async_fixture_shares_the_tests_virtual_loop(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
import asyncio
import pytest
import pytest_asyncio

@pytest_asyncio.fixture
async def warmed_up():
    await asyncio.sleep(60)
    return asyncio.get_running_loop()

@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_uses_fixture(warmed_up):
    assert warmed_up is asyncio.get_running_loop()
    assert warmed_up.time() == 60.0
"""
    )
    suite.runpytest().assert_outcomes(passed=1)


# -- uvloop missing -------------------------------------------------------------------------


@pytest.fixture
def without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import uvloop`` fail, as on a machine where it is not installed."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


@pytest.mark.usefixtures("without_uvloop")
def test_uvloop_missing_for_the_suite_is_a_usage_error(suite: pytest.Pytester) -> None:
    suite.makepyfile("def test_nothing(): pass")
    result = suite.runpytest("--labkit-loop=uvloop")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'uvloop' loop was asked for, but uvloop is not installed*"])


@pytest.mark.usefixtures("without_uvloop")
def test_uvloop_missing_for_one_test_errors_that_variant_only(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
import pytest

@pytest.mark.asyncio(loop_factories=["asyncio", "uvloop", "virtual"])
async def test_each():
    pass
"""
    )
    result = suite.runpytest("-v")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_each?uvloop? ERROR*",
            "*'uvloop' loop was asked for, but uvloop is not installed*pip install uvloop*",
        ]
    )
    result.stdout.no_fnmatch_line("*plugin.py*")  # one clear line, no traceback


def test_no_event_loop_fixture_is_needed_or_offered(suite: pytest.Pytester) -> None:
    # The pytest-asyncio 0.x pattern: overriding `event_loop`. In 1.x the fixture is gone, so
    # the override is an ordinary, unused fixture and the test runs on the plugin's loop.
    suite.makepyfile(
        REPORT_LOOP
        + """
@pytest.fixture
def event_loop():
    raise AssertionError("never called: pytest-asyncio 1.x has no event_loop fixture")

@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_plain():
    assert loop_name() == "VirtualTimeLoop"
"""
    )
    suite.runpytest().assert_outcomes(passed=1)
