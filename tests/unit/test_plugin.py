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
def test_uvloop_missing_for_one_test_skips_that_variant_with_the_reason(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(
        """
import pytest

@pytest.mark.asyncio(loop_factories=["asyncio", "uvloop", "virtual"])
async def test_each():
    pass
"""
    )
    result = suite.runpytest("-v", "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*test_each?uvloop? SKIPPED*",
            "SKIPPED [[]1[]] *uvloop is not installed here: `pip install uvloop` to run this *",
        ]
    )
    result.stdout.no_fnmatch_line("*make test*")


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


# -- installed in someone else's project: nothing changes until asked ---------------------------

PROJECT_CONFTEST = """
import pytest

# Names a project may well use for its own fixtures (watchdog is a file-events library).
@pytest.fixture
def watchdog():
    return "file-events observer"

@pytest.fixture
def task_tracker():
    return ["my", "tracker"]

@pytest.fixture
def virtual_clock():
    return 42

@pytest.fixture
def resource_tracker():
    return {"opened": 0}
"""

PROJECT_TESTS = """
import asyncio
import time
import pytest

def expected_loop(config):
    return "VirtualTimeLoop" if config.getoption("labkit_loop") else "_UnixSelectorEventLoop"

@pytest.mark.asyncio
async def test_async(request, watchdog, task_tracker, virtual_clock, resource_tracker):
    assert watchdog == "file-events observer"
    assert task_tracker == ["my", "tracker"]
    assert virtual_clock == 42
    assert resource_tracker == {"opened": 0}
    assert type(asyncio.get_running_loop()).__name__ == expected_loop(request.config)
    asyncio.create_task(asyncio.sleep(10))  # labkit's hygiene would fail this
    time.sleep(0.3)  # labkit's watchdog would fail this

def test_sync(watchdog, task_tracker, virtual_clock, resource_tracker):
    assert (watchdog, virtual_clock) == ("file-events observer", 42)
"""


@pytest.mark.parametrize("args", [[], ["--labkit-loop=virtual"]], ids=["default", "virtual"])
def test_a_project_fixture_named_like_labkits_keeps_its_meaning(
    suite: pytest.Pytester, args: list[str]
) -> None:
    """Adopters: these names turned passing tests into errors, or moved them to virtual time."""
    suite.makeconftest(PROJECT_CONFTEST)
    suite.makepyfile(PROJECT_TESTS)
    result = suite.runpytest(*args)
    result.assert_outcomes(passed=2)


PROJECT_HOOK = """
import asyncio

def pytest_asyncio_loop_factories(config, item):
    return {"asyncio": asyncio.new_event_loop}
"""

HOOKED_TESTS = (
    REPORT_LOOP
    + """
@pytest.mark.asyncio
async def test_plain():
    print("PLAIN", loop_name())

@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_named_virtual():
    assert loop_name() == "VirtualTimeLoop"

@pytest.mark.asyncio
async def test_labkit_clock(virtual_clock):
    await asyncio.sleep(60)
    assert virtual_clock.now == 60.0
"""
)


def test_a_project_loop_hook_keeps_its_loops_and_labkits_stay_reachable(
    suite: pytest.Pytester,
) -> None:
    """Adopters: a project hook answered first, so loop_factories=["virtual"] was skipped."""
    suite.makeconftest(PROJECT_HOOK)
    suite.makepyfile(HOOKED_TESTS)
    result = suite.runpytest("-s", "-rs")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "labkit *: asyncio tests run on the loops of pytest_asyncio_loop_factories in "
            "conftest.py (virtual time: --labkit-loop=virtual)",
            "*PLAIN _UnixSelectorEventLoop",
        ]
    )


def test_the_loop_asked_for_wins_over_a_project_loop_hook(suite: pytest.Pytester) -> None:
    """Adopters: --labkit-loop=virtual was silently ignored beside aiostream's own hook."""
    suite.makeconftest(PROJECT_HOOK)
    suite.makepyfile(HOOKED_TESTS)
    result = suite.runpytest("-s", "--labkit-loop=virtual")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "labkit *: asyncio tests run on the virtual loop (--labkit-loop=virtual), not on the "
            "loops of pytest_asyncio_loop_factories in conftest.py",
            "*PLAIN VirtualTimeLoop",
        ]
    )


def test_the_header_says_which_loop_the_suite_runs_on(suite: pytest.Pytester) -> None:
    suite.makepyfile("def test_nothing(): pass")
    suite.runpytest().stdout.fnmatch_lines(
        ["labkit *: asyncio tests run on asyncio's own loop (virtual time: --labkit-loop=virtual)"]
    )
    suite.makeini(INI + "labkit_loop = virtual\n")
    suite.runpytest().stdout.fnmatch_lines(
        ["labkit *: asyncio tests run on the virtual loop (labkit_loop = virtual in tox.ini)"]
    )


def test_an_anyio_suite_reaches_the_virtual_loop_through_its_backend(
    suite: pytest.Pytester,
) -> None:
    pytest.importorskip("anyio")
    suite.makepyfile(
        """
import asyncio
import anyio
import pytest
import labkit

@pytest.fixture
def anyio_backend():
    return "asyncio", {"loop_factory": labkit.new_virtual_loop}

@pytest.mark.anyio
async def test_an_hour():
    await anyio.sleep(3600)
    assert type(asyncio.get_running_loop()).__name__ == "VirtualTimeLoop"
    assert asyncio.get_running_loop().time() == 3600.0

@pytest.mark.anyio
async def test_labkit_fixture_under_anyio(virtual_clock):
    await virtual_clock.advance(5)
    assert virtual_clock.now == 5.0
"""
    )
    suite.runpytest("-p", "anyio").assert_outcomes(passed=2)


def test_hypothesis_and_anyio_coexist_with_labkits_checks(suite: pytest.Pytester) -> None:
    pytest.importorskip("hypothesis")
    suite.makepyfile(
        """
import asyncio
import pytest
from hypothesis import given, settings, strategies as st

@settings(max_examples=20, deadline=None)
@given(st.floats(min_value=0, max_value=3600))
@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.labkit_hygiene
async def test_any_delay(delay):
    await asyncio.wait_for(asyncio.sleep(delay), timeout=delay + 1)
"""
    )
    suite.runpytest("-p", "anyio").assert_outcomes(passed=1)


# -- the checks' verdicts are the test's own outcome --------------------------------------------

CAUGHT = """
import asyncio
import time
import pytest

class Conn:
    def __repr__(self):
        return "Conn()"

async def leak_a_task():
    asyncio.create_task(asyncio.sleep(10), name="stray")
    await asyncio.sleep(0)

def block():
    time.sleep(0.6)

XFAIL = pytest.mark.xfail(strict=True, reason="labkit catches the bug")

@XFAIL
@pytest.mark.asyncio
@pytest.mark.labkit_hygiene
async def test_hygiene_marker():
    await leak_a_task()

@XFAIL
@pytest.mark.asyncio
@pytest.mark.labkit_watchdog(threshold=0.1)
async def test_watchdog_marker():
    block()

@XFAIL
@pytest.mark.asyncio
async def test_task_tracker_fixture(task_tracker):
    await leak_a_task()

@XFAIL
@pytest.mark.asyncio
async def test_watchdog_fixture(watchdog):
    block()

@XFAIL
@pytest.mark.asyncio
async def test_resource_tracker_fixture(resource_tracker):
    resource_tracker.acquired(Conn())

@XFAIL
def test_resource_tracker_fixture_in_a_sync_test(resource_tracker):
    resource_tracker.acquired(Conn())
"""


def test_strict_xfail_works_with_every_check(suite: pytest.Pytester) -> None:
    """The checks failed at teardown, so a test that caught its bug reported XPASS(strict)."""
    suite.makepyfile(CAUGHT)
    result = suite.runpytest("--labkit-loop=virtual")
    result.assert_outcomes(xfailed=6)
    fixed = (
        CAUGHT.replace("    await leak_a_task()", "    await asyncio.sleep(0)")
        .replace("    block()", "    pass")
        .replace("    resource_tracker.acquired(Conn())", "    resource_tracker.released(")
        .replace("resource_tracker.released(", "pass  #")
    )
    suite.makepyfile(fixed)
    result = suite.runpytest("--labkit-loop=virtual", "-rN")
    result.assert_outcomes(failed=6)  # XPASS(strict): each check passed, the bug is gone
    assert result.stdout.str().count("[XPASS(strict)]") == 6


def test_a_check_fails_the_call_so_x_and_junit_see_a_failure(suite: pytest.Pytester) -> None:
    suite.makepyfile(CAUGHT.replace("@XFAIL\n", ""))
    result = suite.runpytest("--labkit-loop=virtual", "-x", "--junitxml=report.xml")
    result.assert_outcomes(failed=1)  # -x stops after the first
    junit = (suite.path / "report.xml").read_text()
    assert "<failure" in junit
    assert "<error" not in junit
    assert "task hygiene: 1 problem" in junit


def test_a_fixture_and_an_assertion_in_the_body_report_once(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        CAUGHT.replace("@XFAIL\n", "")
        + """
@pytest.mark.asyncio
async def test_both(task_tracker):
    await leak_a_task()
    assert 1 + 1 == 3
"""
    )
    result = suite.runpytest("--labkit-loop=virtual", "-k", "test_both")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            ">       assert 1 + 1 == 3",
            "E       assert (1 + 1) == 3",
            "E       (and labkit's checks found more) task hygiene: 1 problem",
            "E         task 'stray' is still pending: nobody awaited it or cancelled it",
        ]
    )
    result.stdout.no_fnmatch_line("*ERROR at teardown*")


def test_what_a_fixture_leaves_behind_fails_at_teardown(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
import asyncio
import pytest
import pytest_asyncio

@pytest_asyncio.fixture
async def server():
    task = asyncio.create_task(asyncio.Event().wait(), name="serve")
    yield task  # never stopped: the fixture's bug, not the test's

@pytest_asyncio.fixture
async def tidy_server():
    task = asyncio.create_task(asyncio.Event().wait(), name="serve")
    yield task
    task.cancel()

@pytest.mark.asyncio
@pytest.mark.labkit_hygiene
async def test_uses_the_server(server):
    assert not server.done()

@pytest.mark.asyncio
@pytest.mark.labkit_hygiene
async def test_uses_the_tidy_server(tidy_server):
    assert not tidy_server.done()
"""
    )
    result = suite.runpytest("--labkit-loop=virtual")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_uses_the_server*", "*task 'serve' is still pending*"]
    )


# -- a task that swallows every cancellation ----------------------------------------------------

SWALLOWER = """
import asyncio
import pytest
import labkit

async def worker(queue):
    while True:
        try:
            await queue.get()
        except asyncio.CancelledError:
            continue  # swallows every cancellation

@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_stops_the_worker():
    task = asyncio.create_task(worker(asyncio.Queue()), name="worker")
    await asyncio.sleep(0)
    task.cancel()
    await task

@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_ends_it_with_force_cancel():
    task = asyncio.create_task(worker(asyncio.Queue()), name="worker")
    await asyncio.sleep(0)
    task.cancel()
    await labkit.run_until_idle()
    await labkit.force_cancel(task)
    assert task.done()

@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_leaves_it_running():
    asyncio.create_task(worker(asyncio.Queue()), name="worker")
    await asyncio.sleep(0)
"""


def test_a_swallowed_cancellation_is_diagnosed_once_with_the_tests_line_first(
    suite: pytest.Pytester,
) -> None:
    """Zoo: the report started on labkit's and asyncio's frames, said nothing of the swallowed
    cancel, teardown raised DeadlockError again and pytest-asyncio blamed a closed loop."""
    suite.makepyfile(SWALLOWER)
    result = suite.runpytest("-W", "error::RuntimeWarning")
    result.assert_outcomes(passed=2, failed=1, errors=1)
    text = result.stdout.str()
    assert "closed the underlying event loop" not in text
    assert "loop.py" not in text
    assert "base_events.py" not in text
    failure = text[text.index("_ test_stops_the_worker _") :]
    assert failure.splitlines()[1:4] == [
        "",
        '    @pytest.mark.asyncio(loop_factories=["virtual"])',
        "    async def test_stops_the_worker():",
    ], failure
    result.stdout.fnmatch_lines(
        [
            ">       await task",
            "E       labkit.deadlock.DeadlockError: deadlock: *1 of the tasks was cancelled and "
            "kept waiting: a swallowed cancellation.",
            "E           it holds a swallowed cancellation: cancelled once, *",
            "*test_a_swallowed_cancellation_is_diagnosed_once_with_the_tests_line_first.py:17:"
            " DeadlockError",
        ]
    )
    # The test that left it running: one teardown error naming it, and no exception group.
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaves_it_running*",
            "task 'worker' did not end when cancelled at loop teardown: it caught CancelledError "
            "and kept waiting (waiting at *.py:* in worker: await queue.get()); "
            "labkit.force_cancel ended it",
        ]
    )
    assert text.count("ERROR at teardown") == 1


def test_a_labkit_verdict_is_reported_from_the_users_line(suite: pytest.Pytester) -> None:
    """Zoo: reports of labkit's errors ended on labkit's and asyncio's own frames."""
    suite.makepyfile(
        """
import asyncio
import pytest
import labkit

async def leaky(slots):
    await slots.acquire()
    await asyncio.sleep(1)
    slots.release()

@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_sweep():
    slots = asyncio.Semaphore(1)
    await labkit.cancel_at_every_await(lambda: leaky(slots), check=lambda: not slots.locked())
"""
    )
    result = suite.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            ">       await labkit.cancel_at_every_await(*",
            "E       labkit.cancellation.CancelSweepError: cancel sweep of leaky(): *",
            "*test_a_labkit_verdict_is_reported_from_the_users_line.py:13: CancelSweepError",
        ]
    )
    text = result.stdout.str()
    assert "cancellation.py" not in text
    assert "base_events.py" not in text
    full = suite.runpytest("--fulltrace").stdout.str()
    assert "cancellation.py" in full  # --fulltrace still shows everything
