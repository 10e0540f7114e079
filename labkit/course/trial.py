"""A trial: one call of learner code on a fresh event loop, in a worker thread, with a time limit.

The in-notebook checks (:mod:`labkit.course.exercise`) and the grader's job processes
(:mod:`labkit.course.grading.job`) run learner code the same way, so a verdict in JupyterLab
and in the grader come from the same run: the callable is called in a daemon thread; if it
returns an awaitable, that runs to completion on a new loop from ``loop_factory`` (by default a
:class:`labkit.VirtualTimeLoop`); after ``time_limit`` real seconds the trial is over, the loop
is asked to cancel the work, and the thread is abandoned. A hung or deadlocked test becomes a
failure with a hint instead of a frozen kernel.

Example::

    async def sleeps():
        await asyncio.sleep(3600)
        return asyncio.get_running_loop().time()

    trial = run_trial(sleeps)
    assert trial.passed and trial.value == 3600
"""

from __future__ import annotations

import asyncio
import inspect
import linecache
import re
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labkit.course.labels import clean_text
from labkit.deadlock import DeadlockError
from labkit.loop import new_virtual_loop

__all__ = [
    "DEFAULT_TIME_LIMIT",
    "LoopFactory",
    "Trial",
    "failure_hint",
    "is_placeholder",
    "number",
    "run_trial",
]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

DEFAULT_TIME_LIMIT = 30.0
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MAX_DETAIL = 600


@dataclass
class Trial:
    """How one call ended: the value it returned, the exception it raised, or that it hung.

    Example::

        trial = run_trial(lambda: 1 / 0)
        assert isinstance(trial.error, ZeroDivisionError) and not trial.passed
    """

    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False

    @property
    def passed(self) -> bool:
        """Whether the call finished without raising, in time."""
        return self.error is None and not self.timed_out


def run_trial(
    func: Callable[..., Any],
    args: tuple[Any, ...] = (),
    *,
    loop_factory: LoopFactory = new_virtual_loop,
    time_limit: float = DEFAULT_TIME_LIMIT,
) -> Trial:
    """Call ``func(*args)`` in a worker thread; a coroutine it returns runs there on a fresh loop.

    Example::

        trial = run_trial(test_retry, (retry,), time_limit=5)
    """
    trial = Trial()
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
                    result = loop.run_until_complete(main)
            trial.value = result
        except BaseException as exc:
            trial.error = exc

    worker = threading.Thread(target=work, name="labkit-check", daemon=True)
    worker.start()
    worker.join(time_limit)
    if worker.is_alive():
        trial.timed_out = True
        if loop_box and main_box:
            # Ask the stuck loop to cancel the test; a busy CPU loop may ignore it, which is why
            # the worker is a daemon thread.
            try:
                loop_box[0].call_soon_threadsafe(main_box[0].cancel)
            except RuntimeError:
                pass
            worker.join(1.0)
    return trial


def _ignore_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """An exception handler that drops what the loop reports about abandoned tasks."""


def is_placeholder(error: BaseException | None) -> bool:
    """Whether an error comes from an exercise's ``raise NotImplementedError`` placeholder.

    Example::

        assert is_placeholder(NotImplementedError("exercise 4.1: write this test"))
    """
    seen = 0
    while error is not None and seen < 20:
        if isinstance(error, NotImplementedError):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


def failure_hint(trial: Trial, func: Callable[..., Any], time_limit: float) -> str:
    """The hint a report shows for a failed trial: the error, and the learner's line if found.

    Example::

        failure_hint(run_trial(check_fn), check_fn, 30)   # "AssertionError: took 6 s ..."
    """
    if trial.timed_out:
        return (
            f"still running after {number(time_limit)} real seconds: something waits on real "
            "time or spins without awaiting; on the virtual loop, sleeps and timeouts cost no "
            "real time"
        )
    error = trial.error
    if error is None:
        return ""
    if isinstance(error, DeadlockError):
        return clean(f"DeadlockError: {error}")
    message = clean(_text(error)).strip()
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


def _text(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:
        return "<unprintable>"


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


def clean(text: str) -> str:
    """Text with memory addresses removed and cells labelled ``<cell>:12``, as test reports say.

    Example::

        clean("<Task at 0x7f3a>")   # "<Task>"
    """
    return clean_text(_ADDRESS.sub("", text))


def number(value: float) -> str:
    """A number as reports print it: ``3`` rather than ``3.0``, else the shortest form.

    Example::

        assert number(3.0) == "3" and number(2.5) == "2.5"
    """
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
