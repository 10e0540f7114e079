"""Run one CPython ``test.test_asyncio`` module, stock or virtual, and log each test's outcome.

Invoked by run.py as ``python child.py MODULE stock|virtual LOGFILE [SKIPFILE]``. Each line of
LOGFILE is JSON: ``{"start": id}`` when a test begins, ``{"id": id, "outcome": ...}`` when it
ends, and ``{"seconds": s}`` after the last, so a module killed for hanging still shows what
finished and which test hung. SKIPFILE lists test ids to leave out (a restart after a hang).
"""

from __future__ import annotations

import asyncio
import asyncio.unix_events
import json
import signal
import sys
import time
import types
import unittest
from pathlib import Path
from typing import Any, TextIO

Outcome = str


def install_virtual_loop() -> None:
    """Make every new event loop a VirtualTimeLoop: policy, new_event_loop, SelectorEventLoop."""
    # Load labkit.loop without the package's __init__: the loop needs only the standard
    # library, so this works on any interpreter (3.12, 3.13 without the kit's dependencies),
    # and the heap stays the stock run's size (tests that call gc.collect() cost the same).
    package = types.ModuleType("labkit")
    package.__path__ = [str(Path(__file__).resolve().parents[2] / "labkit")]
    sys.modules["labkit"] = package
    from labkit.loop import VirtualTimeLoop

    asyncio.SelectorEventLoop = VirtualTimeLoop  # type: ignore[misc]
    asyncio.unix_events.SelectorEventLoop = VirtualTimeLoop  # type: ignore[misc]
    if hasattr(asyncio, "EventLoop"):  # 3.13+: the default loop class, by its public name
        asyncio.EventLoop = VirtualTimeLoop
        asyncio.unix_events.EventLoop = VirtualTimeLoop
    # set_event_loop_policy(None) in the tests' tearDown builds a fresh DefaultEventLoopPolicy:
    # its class attribute is what every later policy uses.
    asyncio.DefaultEventLoopPolicy._loop_factory = VirtualTimeLoop  # type: ignore[attr-defined]
    asyncio.set_event_loop_policy(None)
    probe = asyncio.new_event_loop()
    try:
        assert isinstance(probe, VirtualTimeLoop), type(probe)
    finally:
        probe.close()


class LoggingResult(unittest.TestResult):
    """A TestResult that writes one JSON line per test start and outcome, flushed at once."""

    def __init__(self, log: TextIO) -> None:
        super().__init__()
        self.log = log
        self.outcomes: dict[str, Outcome] = {}

    def _write(self, record: dict[str, Any]) -> None:
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()

    def _record(self, test: unittest.TestCase, outcome: Outcome, detail: str = "") -> None:
        test_id = test.id()
        previous = self.outcomes.get(test_id)
        # A test with failing subtests reports each; the worst outcome wins.
        if previous in ("fail", "error") and outcome in ("pass",):
            return
        self.outcomes[test_id] = outcome
        self._write({"id": test_id, "outcome": outcome, "detail": detail[-3000:]})

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        self._write({"start": test.id()})

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self._record(test, "pass")

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._record(test, "fail", self.failures[-1][1])

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        super().addError(test, err)
        self._record(test, "error", self.errors[-1][1])

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self._record(test, "skip", reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._record(test, "pass")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._record(test, "fail", "unexpected success")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self._record(test, kind, self._exc_info_to_string(err, test))


def guard_stray_alarms() -> None:
    """Make a SIGALRM that arrives after its test ended harmless instead of fatal.

    A test whose itimer alarm does not arrive in time (it differs under virtual time) leaves it
    armed; once the loop has removed its handler, SIG_DFL would kill the whole module run. The
    guard maps SIG_DFL for SIGALRM to a handler that only notes the stray signal on stderr.
    """
    real_signal = signal.signal

    def stray(signum: int, frame: object) -> None:
        sys.stderr.write("conformance: stray SIGALRM after its test, ignored\n")

    def guarded(signum: int, handler: Any) -> Any:
        if signum == signal.SIGALRM and handler == signal.SIG_DFL:
            handler = stray
        return real_signal(signum, handler)

    signal.signal = guarded  # type: ignore[assignment]
    real_signal(signal.SIGALRM, stray)


def without(suite: unittest.TestSuite, skip: set[str]) -> unittest.TestSuite:
    """A copy of suite without the tests whose ids are in skip."""
    kept = unittest.TestSuite()
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            kept.addTest(without(item, skip))
        elif item.id() not in skip:
            kept.addTest(item)
    return kept


def main(argv: list[str]) -> int:
    module, mode, log_path, *skip_file = argv
    if mode == "virtual":
        install_virtual_loop()
    elif mode != "stock":
        raise SystemExit(f"mode must be 'stock' or 'virtual', got {mode!r}")
    guard_stray_alarms()
    suite = unittest.defaultTestLoader.loadTestsFromName(f"test.test_asyncio.{module}")
    if skip_file:
        # A restart after a hung test: leave out the tests that already have an outcome.
        done = set(Path(skip_file[0]).read_text(encoding="utf-8").split())
        suite = without(suite, done)
    with open(log_path, "w", encoding="utf-8") as log:
        result = LoggingResult(log)
        started = time.perf_counter()
        suite.run(result)
        # The suite's own time, without interpreter start-up and imports: what the ratio compares.
        result._write({"seconds": time.perf_counter() - started})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
