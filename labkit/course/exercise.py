"""Exercise checks: grade a learner's test against correct and buggy code, or a helper by checks.

Both calls work from a notebook cell that runs inside Jupyter's own event loop: each piece of
learner code runs in a worker thread on a fresh :class:`labkit.VirtualTimeLoop`, with a
real-time limit, so a hung or deadlocked test becomes a failure with a hint instead of a frozen
kernel. The printed summary is deterministic (no timings, no addresses), and when the
``LABKIT_RESULTS`` environment variable names a file each call appends one JSON line to it for
the grader (see ``docs/exercises.md``).

Example::

    def test_add(add):
        assert add(2, 2) == 4

    check_test("0.1", test_add, correct=lambda a, b: a + b,
               mutants={"subtracts": lambda a, b: a - b})
"""

from __future__ import annotations

import asyncio
import inspect
import json
import linecache
import os
import re
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from labkit.course.labels import clean_text
from labkit.deadlock import DeadlockError
from labkit.loop import new_virtual_loop

__all__ = ["CheckResult", "Item", "check", "check_test"]

Status = Literal["not solved yet", "failed", "solved"]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]

RESULTS_ENV = "LABKIT_RESULTS"
DEFAULT_TIME_LIMIT = 30.0
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MAX_DETAIL = 600


@dataclass
class Item:
    """One line of a check's report: what was checked, whether it held, and a hint if not."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class CheckResult:
    """The outcome of one check call: what the summary printed and the grader reads.

    Example::

        result = check("0.2", lambda: None)
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
        head = f"{kind} {self.exercise}: {self.status} ({_number(self.points)}/"
        head += f"{_number(self.max_points)} points)"
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

    def to_json(self) -> str:
        """One line of the results protocol."""
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=False)

    def _ipython_display_(self) -> None:
        """The summary is already printed by the call; showing the result again adds nothing."""


class _NotSolved(Exception):
    """Raised internally when learner code hits the placeholder's NotImplementedError."""


@dataclass
class _Outcome:
    error: BaseException | None = None
    timed_out: bool = False

    @property
    def passed(self) -> bool:
        return self.error is None and not self.timed_out


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
    slower one): a test that guesses timings instead of waiting for events fails on some. Points
    are shared equally among the items, and none are given unless the test passes on every
    correct version. ``record=False`` marks a demonstration: nothing goes to the grader.

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
    items: list[Item] = []
    for label, implementation in variants.items():
        outcome = _run(learner_test, (implementation,), loop_factory, time_limit)
        if _is_placeholder(outcome.error):
            count = len(variants) + len(mutants)
            return _finish(exercise, hidden, "not solved yet", points, [], count, record=record)
        name = "passes on the correct implementation"
        if label:
            name = f"passes on a correct implementation: {label}"
        hint = "" if outcome.passed else _failure_hint(outcome, learner_test, time_limit)
        if label and not outcome.passed:
            hint += (
                "\n(this version is correct too, only slower or ordered differently: does the "
                "test guess a timing instead of waiting for an event?)"
            )
        items.append(Item(name, outcome.passed, hint))
    baseline_passed = all(item.ok for item in items)
    for description, mutant in mutants.items():
        name = f"catches the bug: {description}"
        if not baseline_passed:
            items.append(
                Item(name, False, "not tried: the test must pass on the correct code first")
            )
            continue
        outcome = _run(learner_test, (mutant,), loop_factory, time_limit)
        if outcome.timed_out:
            items.append(
                Item(
                    name,
                    True,
                    f"caught only by hanging for {_number(time_limit)} real seconds; "
                    "a test that fails fast (an assertion, a timeout in virtual time) is better",
                )
            )
        elif outcome.error is None:
            items.append(
                Item(
                    name,
                    False,
                    "your test passes on this buggy version: add an assertion that fails "
                    "when the code has this bug",
                )
            )
        else:
            items.append(Item(name, True))
    status: Status = "solved" if all(item.ok for item in items) else "failed"
    return _finish(
        exercise, hidden, status, points, items, len(items), gated=len(variants), record=record
    )


def check(
    exercise: str,
    *checks: Callable[[], Any],
    hidden: bool = False,
    points: float | None = None,
    loop_factory: LoopFactory = new_virtual_loop,
    time_limit: float = DEFAULT_TIME_LIMIT,
    record: bool = True,
) -> CheckResult:
    """Grade an "implement" or "fix" exercise: each check raises AssertionError with a hint.

    A check is a callable taking no argument, plain or ``async``; its name in the report is the
    first line of its docstring, else its function name. Points are shared equally among the
    checks.

    Example::

        def doubles_two():
            "double(2) is 4"
            assert double(2) == 4, "double(2) should be 4"

        check("0.2", doubles_two)
    """
    _validate(exercise, points, time_limit)
    if not checks:
        raise ValueError(f"check({exercise!r}) needs at least one check function")
    items: list[Item] = []
    for number, func in enumerate(checks, 1):
        if not callable(func):
            raise TypeError(
                f"check({exercise!r}, ...): check {number} is a {type(func).__name__}, not a "
                "function: pass the function itself, not the result of calling it"
            )
        outcome = _run(func, (), loop_factory, time_limit)
        if _is_placeholder(outcome.error):
            return _finish(
                exercise, hidden, "not solved yet", points, [], len(checks), record=record
            )
        name = _check_name(func, number)
        if outcome.passed:
            items.append(Item(name, True))
        else:
            items.append(Item(name, False, _failure_hint(outcome, func, time_limit)))
    status: Status = "solved" if all(item.ok for item in items) else "failed"
    return _finish(exercise, hidden, status, points, items, len(items), record=record)


# -- running learner code --------------------------------------------------------------------


def _run(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    loop_factory: LoopFactory,
    time_limit: float,
) -> _Outcome:
    """Call ``func(*args)`` in a worker thread; a coroutine runs there on a fresh loop."""
    outcome = _Outcome()
    loop_box: list[asyncio.AbstractEventLoop] = []
    main_box: list[asyncio.Future[Any]] = []

    def work() -> None:
        try:
            result = func(*args)
            if inspect.isawaitable(result):
                with asyncio.Runner(loop_factory=loop_factory) as runner:
                    loop = runner.get_loop()
                    # Tearing down a failed run cancels the code's leftover tasks, and asyncio
                    # may log about them; that noise is not the learner's business here.
                    loop.set_exception_handler(_ignore_loop_error)
                    if inspect.iscoroutine(result):
                        main: asyncio.Future[Any] = loop.create_task(result, name="learner-test")
                    else:
                        main = asyncio.ensure_future(result, loop=loop)
                    loop_box.append(loop)
                    main_box.append(main)
                    loop.run_until_complete(main)
        except BaseException as exc:
            outcome.error = exc

    worker = threading.Thread(target=work, name="labkit-check", daemon=True)
    worker.start()
    worker.join(time_limit)
    if worker.is_alive():
        outcome.timed_out = True
        if loop_box and main_box:
            # Ask the stuck loop to cancel the test; a busy CPU loop may ignore it, which is why
            # the worker is a daemon thread.
            loop = loop_box[0]
            try:
                loop.call_soon_threadsafe(main_box[0].cancel)
            except RuntimeError:
                pass
            worker.join(1.0)
    return outcome


def _ignore_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """An exception handler that drops what the loop reports about abandoned tasks."""


def _is_placeholder(error: BaseException | None) -> bool:
    seen = 0
    while error is not None and seen < 20:
        if isinstance(error, NotImplementedError):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


def _failure_hint(outcome: _Outcome, func: Callable[..., Any], time_limit: float) -> str:
    if outcome.timed_out:
        return (
            f"still running after {_number(time_limit)} real seconds: something waits on real "
            "time or spins without awaiting; on the virtual loop, sleeps and timeouts cost no "
            "real time"
        )
    error = outcome.error
    assert error is not None
    if isinstance(error, DeadlockError):
        return _clean(f"DeadlockError: {error}")
    message = _clean(str(error)).strip()
    name = type(error).__name__
    where = _learner_line(error, func)
    if not message:
        return f"{name} at `{where}`" if where else name
    if len(message) > _MAX_DETAIL:
        message = message[:_MAX_DETAIL] + " ..."
    text = f"{name}: {message}"
    if where and isinstance(error, AssertionError) and "\n" not in message:
        text += f"\n(at `{where}`)"
    return text


def _learner_line(error: BaseException, func: Callable[..., Any]) -> str:
    """The source line of the deepest frame in the learner's own function."""
    code = getattr(inspect.unwrap(func), "__code__", None)
    found = ""
    for frame, lineno in traceback.walk_tb(error.__traceback__):
        if code is None or frame.f_code.co_filename == code.co_filename:
            line = linecache.getline(frame.f_code.co_filename, lineno).strip()
            if line:
                found = line
    return found


def _clean(text: str) -> str:
    # One label for notebook cells everywhere: the test cell's report says <cell>:12 too.
    return clean_text(_ADDRESS.sub("", text))


def _check_name(func: Callable[..., Any], number: int) -> str:
    doc = inspect.getdoc(func)
    if doc:
        return doc.strip().splitlines()[0]
    name = getattr(func, "__name__", "")
    if name and name != "<lambda>":
        return name.replace("_", " ")
    return f"check {number}"


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
    points: float | None,
    items: list[Item],
    count: int,
    *,
    gated: int = 0,
    record: bool = True,
) -> CheckResult:
    max_points = float(count if points is None else points)
    if status == "not solved yet" or not items or not all(item.ok for item in items[:gated]):
        earned = 0.0
    else:
        earned = round(max_points * sum(item.ok for item in items) / len(items), 2)
    result = CheckResult(exercise, hidden, status, earned, max_points, items)
    print(result.summary())
    if record:
        _record(result)
    return result


def _record(result: CheckResult) -> None:
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(result.to_json() + "\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
