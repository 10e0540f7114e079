"""labkit.course.exercise: check_test and check give feedback in the notebook, deterministically."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from labkit.course.exercise import CheckResult, check, check_test
from labkit.course.grading.wire import from_text


def _add(a: int, b: int) -> int:
    return a + b


def _sub(a: int, b: int) -> int:
    return a - b


def _mul(a: int, b: int) -> int:
    return a * b


def sums_two_and_three(add: Any) -> None:
    assert add(2, 3) == 5


def weak_test_add(add: Any) -> None:
    assert add(2, 2) == 4  # 2 * 2 == 4 as well: misses the multiplying bug


def placeholder_test(add: Any) -> None:
    raise NotImplementedError("exercise 9.1: write this test")


async def _sleep_five() -> None:
    await asyncio.sleep(5)


async def _sleep_one() -> None:
    await asyncio.sleep(1)


async def _wait_forever() -> None:
    await asyncio.Event().wait()


async def timing_test(pause: Any) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await pause()
    assert loop.time() - start == 5, f"paused {loop.time() - start} s"


# -- check_test --------------------------------------------------------------------------------


def test_check_test_solved_when_every_mutant_is_caught(capsys: pytest.CaptureFixture[str]) -> None:
    result = check_test(
        "9.1", sums_two_and_three, correct=_add, mutants={"subtracts": _sub, "multiplies": _mul}
    )
    assert result.status == "solved"
    assert (result.points, result.max_points) == (2, 2)  # one point per mutant
    assert capsys.readouterr().out == (
        "exercise 9.1: solved (2/2 points)\n"
        "  [ok  ] passes on the correct implementation\n"
        "  [ok  ] catches the bug: subtracts\n"
        "  [ok  ] catches the bug: multiplies\n"
    )


def test_check_test_names_the_bug_a_weak_test_misses(capsys: pytest.CaptureFixture[str]) -> None:
    result = check_test(
        "9.1", weak_test_add, correct=_add, mutants={"subtracts": _sub, "multiplies": _mul}
    )
    assert result.status == "failed"
    assert [item.ok for item in result.items] == [True, True, False]
    assert result.points == 1  # one of two mutants caught; passing on correct code earns nothing
    out = capsys.readouterr().out
    assert "[FAIL] catches the bug: multiplies" in out
    assert "your test passes on this buggy version" in out


def test_check_test_reports_the_placeholder_as_not_solved_yet(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = check_test("9.1", placeholder_test, correct=_add, mutants={"subtracts": _sub})
    assert result.status == "not solved yet"
    assert result.points == 0
    assert result.max_points == 1
    assert "not solved yet" in capsys.readouterr().out


def test_a_test_that_tests_nothing_earns_nothing() -> None:
    async def test_retry(retry: Any) -> None:
        pass

    async def retry(operation: Any) -> Any:
        return await operation()

    async def retry_never(operation: Any) -> Any:
        return None

    result = check_test("0.2", test_retry, correct=retry, mutants={"never calls": retry_never})
    assert [item.ok for item in result.items] == [True, False]
    assert (result.points, result.max_points) == (0, 1)


def test_check_test_gives_nothing_for_a_test_failing_on_correct_code() -> None:
    def always_fails(add: Any) -> None:
        assert add(1, 1) == 3, "wrong expectation"

    result = check_test("9.1", always_fails, correct=_add, mutants={"subtracts": _sub})
    assert result.status == "failed"
    assert result.points == 0
    assert result.items[0].detail.startswith("AssertionError: wrong expectation")
    assert result.items[1].detail.startswith("not tried")


def test_check_test_runs_async_tests_in_virtual_time() -> None:
    result = check_test(
        "9.2", timing_test, correct=_sleep_five, mutants={"sleeps too short": _sleep_one}
    )
    assert result.solved


def test_check_test_counts_a_deadlocked_mutant_as_caught() -> None:
    result = check_test("9.2", timing_test, correct=_sleep_five, mutants={"hangs": _wait_forever})
    assert result.solved


def test_check_test_reports_a_deadlock_on_correct_code_with_its_message() -> None:
    result = check_test("9.2", timing_test, correct=_wait_forever, mutants={"x": _sleep_one})
    detail = result.items[0].detail
    assert detail.startswith("DeadlockError: deadlock:")
    assert "task 'learner-test' running timing_test()" in detail
    assert " at 0x" not in detail


def test_a_test_hanging_in_real_time_is_stopped_by_the_time_limit() -> None:
    release = threading.Event()

    def blocks(_impl: Any) -> None:
        release.wait(30)

    try:
        result = check_test("9.3", blocks, correct=_add, mutants={"x": _sub}, time_limit=0.2)
    finally:
        release.set()
    assert result.status == "failed"
    assert "still running after 0.2 real seconds" in result.items[0].detail


def test_the_summary_is_deterministic() -> None:
    def run() -> str:
        return check_test(
            "9.2", timing_test, correct=_wait_forever, mutants={"x": _sleep_one}
        ).summary()

    assert run() == run()


def test_checks_run_outside_the_callers_running_loop() -> None:
    async def inside_a_loop() -> CheckResult:
        return check_test("9.2", timing_test, correct=_sleep_five, mutants={"x": _sleep_one})

    assert asyncio.run(inside_a_loop()).solved


def test_check_test_rejects_a_called_test() -> None:
    with pytest.raises(TypeError, match="not `test_name\\(\\)`"):
        check_test("9.1", None, correct=_add, mutants={"x": _sub})  # type: ignore[arg-type]


def test_check_test_needs_a_mutant() -> None:
    with pytest.raises(ValueError, match="at least one mutant"):
        check_test("9.1", sums_two_and_three, correct=_add, mutants={})


@pytest.mark.parametrize("bad", ["1", "x.1", "4.1a", ""])
def test_a_malformed_exercise_id_is_named(bad: str) -> None:
    with pytest.raises(ValueError, match=r"must look like '4\.1'"):
        check_test(bad, sums_two_and_three, correct=_add, mutants={"x": _sub})


# -- check ---------------------------------------------------------------------------------


def test_check_items_carry_what_each_check_returned() -> None:
    async def elapsed() -> float:
        await asyncio.sleep(3)
        return asyncio.get_running_loop().time()

    result = check("9.4", elapsed, lambda: {"items": [1, 2]})
    assert [item.observation for item in result.items] == [3.0, {"items": [1, 2]}]


def test_check_names_items_by_docstring_or_function_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def two_is_two() -> None:
        "two equals two"
        assert 2 == 2

    def three_is_four() -> None:
        assert 3 == 4, "three is not four"

    async def sleeps() -> None:
        await asyncio.sleep(60)

    result = check("9.4", two_is_two, three_is_four, sleeps, points=6)
    assert result.status == "failed"
    assert result.points == 4
    assert result.max_points == 6
    assert capsys.readouterr().out == (
        "exercise 9.4: failed (4/6 points)\n"
        "  [ok  ] two equals two\n"
        "  [FAIL] three is four\n"
        "         AssertionError: three is not four\n"
        "         assert 3 == 4\n"
        "  [ok  ] sleeps\n"
    )


def test_check_points_to_the_failing_line_of_a_bare_assert() -> None:
    def bare() -> None:
        value = 1
        assert value == 2

    result = check("9.4", bare)
    assert result.items[0].detail == "AssertionError: assert 1 == 2\n(at `assert value == 2`)"


def test_check_reports_not_solved_yet_for_the_placeholder() -> None:
    def helper() -> int:
        raise NotImplementedError("exercise 9.4: write this code")

    def uses_helper() -> None:
        assert helper() == 1

    assert check("9.4", uses_helper).status == "not solved yet"


def test_check_removes_addresses_from_hints() -> None:
    def shows_an_object() -> None:
        raise AssertionError(repr(object()))

    detail = check("9.4", shows_an_object).items[0].detail
    assert detail.splitlines()[0] == "AssertionError: <object object>"


def test_check_rejects_a_called_check() -> None:
    with pytest.raises(TypeError, match="pass the function itself"):
        check("9.4", None)  # type: ignore[arg-type]


# -- results protocol -----------------------------------------------------------------------------


def test_each_call_appends_one_json_line_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results.jsonl"
    monkeypatch.setenv("LABKIT_RESULTS", str(results))
    check_test("9.1", weak_test_add, correct=_add, mutants={"multiplies": _mul}, points=3)
    check("9.4", lambda: 7, lambda: None, lambda: {1}, hidden=True)
    first, second = (json.loads(line) for line in results.read_text().splitlines())
    assert first == {
        "exercise": "9.1",
        "hidden": False,
        "status": "failed",
        "points": 0.0,
        "max_points": 3.0,
        "kind": "test",
        "items": [
            {"name": "passes on the correct implementation", "ok": True, "detail": ""},
            {
                "name": "catches the bug: multiplies",
                "ok": False,
                "detail": "your test passes on this buggy version: add an assertion that fails "
                "when the code has this bug",
            },
        ],
    }
    assert second["hidden"] is True
    assert second["kind"] == "check"
    assert second["status"] == "solved"
    seven, nothing, a_set = second["items"]
    assert from_text(seven["observation"]) == 7
    assert seven["problem"] == ""
    assert nothing["observation"] is None
    assert nothing["problem"] == "returns only None or booleans"
    assert a_set["problem"] == "the value is a set, which is not plain data"


def test_nothing_is_written_without_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LABKIT_RESULTS", raising=False)
    monkeypatch.chdir(tmp_path)
    check("9.4", lambda: None)
    assert list(tmp_path.iterdir()) == []


async def _signal_later(done: asyncio.Event, delay: float) -> None:
    await asyncio.sleep(delay)
    done.set()


def _starts_worker(delay: float) -> Any:
    def start() -> asyncio.Event:
        done = asyncio.Event()
        asyncio.get_running_loop().create_task(_signal_later(done, delay), name="worker")
        return done

    return start


async def sleep_guessing_test(start: Any) -> None:
    done = start()
    await asyncio.sleep(1)  # guesses how long the worker takes
    assert done.is_set()


async def event_waiting_test(start: Any) -> None:
    done = start()
    await done.wait()


def _starts_nothing() -> asyncio.Event:
    return asyncio.Event()


def test_several_correct_versions_catch_a_test_that_guesses_timings() -> None:
    correct = {"fast": _starts_worker(0.5), "slow": _starts_worker(3)}
    guessing = check_test(
        "9.5", sleep_guessing_test, correct=correct, mutants={"x": _starts_nothing}
    )
    assert [item.name for item in guessing.items] == [
        "passes on a correct implementation: fast",
        "passes on a correct implementation: slow",
        "catches the bug: x",
    ]
    assert [item.ok for item in guessing.items] == [True, False, False]
    assert "guess a timing" in guessing.items[1].detail
    assert guessing.points == 0
    waiting = check_test("9.5", event_waiting_test, correct=correct, mutants={"x": _starts_nothing})
    assert waiting.solved


def test_a_demonstration_is_not_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results.jsonl"
    monkeypatch.setenv("LABKIT_RESULTS", str(results))
    demo = check_test("9.1", weak_test_add, correct=_add, mutants={"x": _mul}, record=False)
    assert demo.status == "failed"
    assert not results.exists()
