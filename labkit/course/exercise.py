"""Exercise checks in the notebook: a learner's test against correct and buggy code, or checks.

These calls give learners feedback in JupyterLab: each piece of learner code runs as a
:mod:`~labkit.course.trial` (a worker thread, a fresh :class:`labkit.VirtualTimeLoop`, a
real-time limit), and the summary printed is deterministic (no timings, no addresses). The
points shown come from :mod:`labkit.course.grading.score`, the functions the grader uses.

What is printed here is feedback only. The grade is decided outside the learner's process:
``labkit grade`` runs the same checks in fresh sandboxed processes and compares what each check
function *returns* (its observation, plain data) with the instructor's reference, recorded when
``labkit build`` ran the instructor solution; a learner's test is run against the correct
implementation and each mutant in processes that cannot tell which one they got. When the
``LABKIT_RESULTS`` environment variable names a file (``labkit build`` sets it), each call
appends one JSON line to it, with the observations (``docs/exercises.md``).

Example::

    def test_add(add):
        assert add(2, 2) == 4

    check_test("0.1", test_add, correct=lambda a, b: a + b,
               mutants={"subtracts": lambda a, b: a - b})
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from labkit.course.grading.score import catch_points, check_points, default_points
from labkit.course.grading.wire import informative, plain_problem, to_text
from labkit.course.trial import (
    DEFAULT_TIME_LIMIT,
    LoopFactory,
    failure_hint,
    is_placeholder,
    number,
    run_trial,
)
from labkit.loop import new_virtual_loop

__all__ = ["CheckResult", "Item", "check", "check_test"]

Status = Literal["not solved yet", "failed", "solved"]

RESULTS_ENV = "LABKIT_RESULTS"
CAUGHT = "catches the bug: "


@dataclass
class Item:
    """One line of a check's report: what was checked, whether it held, and a hint if not.

    ``observation`` is what a check function returned (``None`` for a test's items).

    Example::

        Item("sleep_all([1, 2, 3]) takes 3 seconds", True, observation=3)
    """

    name: str
    ok: bool
    detail: str = ""
    observation: Any = None


@dataclass
class CheckResult:
    """The outcome of one check call: what the summary printed.

    Example::

        result = check("0.2", lambda: 4)
        assert result.status == "solved" and result.points == result.max_points
    """

    exercise: str
    hidden: bool
    status: Status
    points: float
    max_points: float
    items: list[Item] = field(default_factory=list)

    @property
    def solved(self) -> bool:
        """Whether every item held."""
        return self.status == "solved"

    def summary(self) -> str:
        """The text printed in the notebook: a headline, one line per item, and hints."""
        kind = "hidden checks" if self.hidden else "exercise"
        head = f"{kind} {self.exercise}: {self.status} ({number(self.points)}/"
        head += f"{number(self.max_points)} points)"
        lines = [head]
        if self.status == "not solved yet":
            lines.append(
                "  Replace the `raise NotImplementedError(...)` placeholder, then run this again."
            )
            return "\n".join(lines)
        for item in self.items:
            mark = "ok  " if item.ok else "FAIL"
            lines.append(f"  [{mark}] {item.name}")
            if item.detail:
                lines.extend("         " + line for line in item.detail.splitlines())
        return "\n".join(lines)

    def to_json(self, kind: str = "check") -> str:
        """One line of the results protocol, observations in the wire format (base64)."""
        data = asdict(self)
        data["kind"] = kind
        for item, raw in zip(data["items"], self.items, strict=True):
            item.pop("observation")
            if kind == "check" and self.status != "not solved yet":
                problem = plain_problem(raw.observation)
                if not problem and not informative(raw.observation):
                    problem = "returns only None or booleans"
                item["observation"] = None if problem else to_text(raw.observation)
                item["problem"] = problem
        return json.dumps(data, ensure_ascii=False, sort_keys=False)

    def _ipython_display_(self) -> None:
        """The summary is already printed by the call; showing the result again adds nothing."""


def check_test(
    exercise: str,
    learner_test: Callable[[Any], Any],
    *,
    correct: Any,
    mutants: Mapping[str, Any],
    hidden: bool = False,
    points: float | None = None,
    loop_factory: LoopFactory = new_virtual_loop,
    time_limit: float = DEFAULT_TIME_LIMIT,
    record: bool = True,
) -> CheckResult:
    """Grade a learner's test: it must pass on ``correct`` and fail on each buggy mutant.

    ``learner_test`` takes one argument, the implementation under test, and may be a plain or an
    ``async`` function (run on a fresh loop from ``loop_factory``, by default a
    ``VirtualTimeLoop``). ``mutants`` maps a short description of each bug to its buggy
    implementation. ``correct`` may also map names to several equally correct versions (say, a
    slower one): a test that guesses timings instead of waiting for events fails on some. The
    points (default: one per mutant) are shared among the mutants caught, and none are given
    unless the test passes on every correct version: passing on the correct code alone earns
    nothing. ``record=False`` marks a demonstration: nothing goes to the results file.

    Example::

        async def test_sleeps(pause):
            loop = asyncio.get_running_loop()
            await pause()
            assert loop.time() == 5

        async def good(): await asyncio.sleep(5)
        async def bad(): await asyncio.sleep(1)

        check_test("0.3", test_sleeps, correct=good, mutants={"sleeps too short": bad})
    """
    _validate(exercise, points, time_limit)
    if not callable(learner_test):
        raise TypeError(
            f"check_test({exercise!r}, ...) needs the test function itself as its second "
            f"argument, got {type(learner_test).__name__}: pass `test_name`, not `test_name()`"
        )
    if not mutants:
        raise ValueError(f"check_test({exercise!r}, ...) needs at least one mutant")
    variants = dict(correct) if isinstance(correct, Mapping) else {"": correct}
    if not variants:
        raise ValueError(f"check_test({exercise!r}, ...) needs a correct implementation")
    maximum = default_points("test", 0, len(mutants)) if points is None else float(points)
    items: list[Item] = []
    for label, implementation in variants.items():
        trial = run_trial(
            learner_test, (implementation,), loop_factory=loop_factory, time_limit=time_limit
        )
        if is_placeholder(trial.error):
            return _finish(exercise, hidden, "not solved yet", 0.0, maximum, [], "test", record)
        name = "passes on the correct implementation"
        if label:
            name = f"passes on a correct implementation: {label}"
        hint = "" if trial.passed else failure_hint(trial, learner_test, time_limit)
        if label and not trial.passed:
            hint += (
                "\n(this version is correct too, only slower or ordered differently: does the "
                "test guess a timing instead of waiting for an event?)"
            )
        items.append(Item(name, trial.passed, hint))
    baseline_passed = all(item.ok for item in items)
    caught: list[bool] = []
    for description, mutant in mutants.items():
        name = CAUGHT + description
        if not baseline_passed:
            items.append(
                Item(name, False, "not tried: the test must pass on the correct code first")
            )
            caught.append(False)
            continue
        trial = run_trial(learner_test, (mutant,), loop_factory=loop_factory, time_limit=time_limit)
        caught.append(not trial.passed)
        items.append(Item(name, not trial.passed, _catch_hint(trial, time_limit)))
    status: Status = "solved" if all(item.ok for item in items) else "failed"
    earned = catch_points(maximum, [item.ok for item in items[: len(variants)]], caught)
    return _finish(exercise, hidden, status, earned, maximum, items, "test", record)


def _catch_hint(trial: Any, time_limit: float) -> str:
    if trial.timed_out:
        return (
            f"caught only by hanging for {number(time_limit)} real seconds; "
            "a test that fails fast (an assertion, a timeout in virtual time) is better"
        )
    if trial.error is None:
        return (
            "your test passes on this buggy version: add an assertion that fails "
            "when the code has this bug"
        )
    return ""


def check(
    exercise: str,
    *checks: Callable[[], Any],
    hidden: bool = False,
    points: float | None = None,
    loop_factory: LoopFactory = new_virtual_loop,
    time_limit: float = DEFAULT_TIME_LIMIT,
    record: bool = True,
) -> CheckResult:
    """Grade an "implement" or "fix" exercise: each check asserts, and returns what it observed.

    A check is a callable taking no argument, plain or ``async``; its name in the report is the
    first line of its docstring, else its function name. It raises ``AssertionError`` (its
    message is the hint) when the learner's code is wrong, and **returns the plain-data value it
    asserted on** (a number, text, a list or dict of them): the grader compares that value with
    the one the instructor's solution gave. Points (default: one per check) are shared equally.

    Example::

        def doubles_two():
            "double(2) is 4"
            result = double(2)
            assert result == 4, f"double(2) gave {result}"
            return result

        check("0.2", doubles_two)
    """
    _validate(exercise, points, time_limit)
    if not checks:
        raise ValueError(f"check({exercise!r}) needs at least one check function")
    maximum = default_points("check", len(checks), 0) if points is None else float(points)
    items: list[Item] = []
    for index, func in enumerate(checks, 1):
        if not callable(func):
            raise TypeError(
                f"check({exercise!r}, ...): check {index} is a {type(func).__name__}, not a "
                "function: pass the function itself, not the result of calling it"
            )
        trial = run_trial(func, loop_factory=loop_factory, time_limit=time_limit)
        if is_placeholder(trial.error):
            return _finish(exercise, hidden, "not solved yet", 0.0, maximum, [], "check", record)
        name = check_name(func, index)
        if trial.passed:
            items.append(Item(name, True, observation=trial.value))
        else:
            items.append(Item(name, False, failure_hint(trial, func, time_limit)))
    status: Status = "solved" if all(item.ok for item in items) else "failed"
    earned = check_points(maximum, [item.ok for item in items])
    return _finish(exercise, hidden, status, earned, maximum, items, "check", record)


def check_name(func: Callable[..., Any], index: int) -> str:
    """A check's name in reports: its docstring's first line, else its function name.

    Example::

        def no_delays():
            "sleep_all([]) takes no time"

        assert check_name(no_delays, 1) == "sleep_all([]) takes no time"
    """
    doc = inspect.getdoc(func)
    if doc:
        return doc.strip().splitlines()[0]
    name = getattr(func, "__name__", "")
    if name and name != "<lambda>":
        return str(name).replace("_", " ")
    return f"check {index}"


def _validate(exercise: str, points: float | None, time_limit: float) -> None:
    if not isinstance(exercise, str) or not re.fullmatch(r"\d+\.\d+", exercise):
        raise ValueError(f"exercise id must look like '4.1' (lesson.number), got {exercise!r}")
    if points is not None and (not isinstance(points, (int, float)) or points < 0):
        raise ValueError(f"points must be a number >= 0, got {points!r}")
    if not isinstance(time_limit, (int, float)) or time_limit <= 0:
        raise ValueError(f"time_limit must be a number of seconds > 0, got {time_limit!r}")


def _finish(
    exercise: str,
    hidden: bool,
    status: Status,
    earned: float,
    maximum: float,
    items: list[Item],
    kind: str,
    record: bool,
) -> CheckResult:
    result = CheckResult(exercise, hidden, status, earned, maximum, items)
    print(result.summary())
    if record:
        path = os.environ.get(RESULTS_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as stream:
                stream.write(result.to_json(kind) + "\n")
    return result
