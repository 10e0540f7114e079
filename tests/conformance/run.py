"""Run CPython's own asyncio test suite on the stock loop and under labkit.VirtualTimeLoop.

Each module runs in its own subprocess, twice (stock, then virtual), two at a time, with a
real-time limit so a hang is reported instead of stalling the run. Every test that passes on
the stock loop must pass under the virtual loop, except those listed in
expected_differences.txt; a listed test that no longer differs is an error too, so the list
stays honest. Prints the counts side by side per module, the totals and the wall-time ratio.

Example::

    make conformance
    .venv/bin/python tests/conformance/run.py test_locks test_queues --jobs 1
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CHILD = HERE / "child.py"
DIFFERENCES = HERE / "expected_differences.txt"

MODULES = [
    "test_base_events",
    "test_buffered_proto",
    "test_context",
    "test_events",
    "test_futures",
    "test_futures2",
    "test_locks",
    "test_pep492",
    "test_protocols",
    "test_queues",
    "test_runners",
    "test_selector_events",
    "test_sendfile",
    "test_server",
    "test_sock_lowlevel",
    "test_ssl",
    "test_sslproto",
    "test_streams",
    "test_subprocess",
    "test_taskgroups",
    "test_tasks",
    "test_threads",
    "test_timeouts",
    "test_transports",
    "test_unix_events",
    "test_waitfor",
]
MODES = ("stock", "virtual")
OUTCOMES = ("pass", "fail", "error", "skip")
TEST_TIMEOUT = 120.0  # real seconds without progress before a test counts as hung
MAX_ATTEMPTS = 5  # restarts of a module after hung tests


@dataclass
class ModuleRun:
    """The outcome of one module in one mode: per-test outcomes, wall time, how it ended."""

    module: str
    mode: str
    outcomes: dict[str, str] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    suite_seconds: float | None = None
    returncode: int | None = None
    hung: list[str] = field(default_factory=list)
    stderr_tail: str = ""

    @property
    def test_seconds(self) -> float:
        """The suite's own run time (no interpreter start-up), or the wall time if it died."""
        return self.suite_seconds if self.suite_seconds is not None else self.seconds

    def counts(self) -> Counter[str]:
        return Counter(self.outcomes.values())


def run_module(
    module: str, mode: str, timeout: float, python: str, test_timeout: float = TEST_TIMEOUT
) -> ModuleRun:
    """Run one module in a subprocess and collect its per-test outcomes from the log.

    A test that makes no progress for ``test_timeout`` real seconds is killed, recorded as an
    error, and the module is restarted after it, so one hang costs one test, not the module.
    """
    result = ModuleRun(module, mode)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
        PYTHONFAULTHANDLER="1",
    )
    started = time.monotonic()
    deadline = started + timeout
    with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
        skip_path = Path(tmp) / "skip.txt"
        for attempt in range(MAX_ATTEMPTS):
            log_path = Path(tmp) / f"log-{attempt}.jsonl"
            stderr_path = Path(tmp) / f"stderr-{attempt}.txt"
            skip_path.write_text("\n".join(result.outcomes), encoding="utf-8")
            attempt_started = time.monotonic()
            with open(stderr_path, "w", encoding="utf-8") as stderr:
                proc = subprocess.Popen(
                    [python, str(CHILD), module, mode, str(log_path), str(skip_path)],
                    cwd=tmp,  # the tests create files (unix sockets) in the working directory
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
                hung = _watch(proc, log_path, test_timeout, deadline)
            result.returncode = proc.returncode
            result.stderr_tail = stderr_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            running, suite_seconds = _read_log(log_path, result)
            result.suite_seconds = (result.suite_seconds or 0.0) + (
                suite_seconds if suite_seconds is not None else time.monotonic() - attempt_started
            )
            if suite_seconds is not None:
                break
            why = (
                f"hung: no progress for {test_timeout:.0f} real seconds"
                if hung
                else f"the test process exited with {proc.returncode}"
            )
            if running is None or running in result.outcomes or time.monotonic() > deadline:
                # Died between tests, or out of time: the rest of the module never ran.
                name = f"test.test_asyncio.{module} (unfinished)"
                result.outcomes[name] = "error"
                result.details[name] = f"{why}\n{result.stderr_tail}"
                break
            result.outcomes[running] = "error"
            result.details[running] = f"{why} during this test\n{result.stderr_tail}"
            result.hung.append(running)
    result.seconds = time.monotonic() - started
    return result


def _watch(proc: subprocess.Popen[bytes], log: Path, test_timeout: float, deadline: float) -> bool:
    """Wait for the child; kill it (and return True) if its log stalls or time runs out."""
    last_size, last_progress = -1, time.monotonic()
    while True:
        try:
            proc.wait(timeout=0.5)
            return False
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        size = log.stat().st_size if log.exists() else 0
        if size != last_size:
            last_size, last_progress = size, now
        if now - last_progress > test_timeout or now > deadline:
            proc.kill()
            proc.wait()
            return True


def _read_log(log: Path, result: ModuleRun) -> tuple[str | None, float | None]:
    """Merge one attempt's log into result: the test still running and the suite's own time."""
    running: str | None = None
    seconds: float | None = None
    if not log.exists():
        return None, None
    for line in log.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "start" in record:
            running = record["start"]
        elif "seconds" in record:
            seconds = record["seconds"]
        else:
            result.outcomes[record["id"]] = record["outcome"]
            result.details[record["id"]] = record.get("detail", "")
            if running == record["id"]:
                running = None
    return running, seconds


@dataclass
class Expected:
    """One listed difference: a test id (fnmatch pattern) and why virtual time differs."""

    pattern: str
    reason: str
    line: int
    used: bool = False
    racy: bool = False  # "~ id": differs only when a real thread loses a race; never stale


def load_expected(path: Path = DIFFERENCES) -> list[Expected]:
    """Parse ``[~] test-id  # reason`` lines; blank lines and lines starting with # are ignored.

    A leading ``~`` marks a difference that depends on a real thread's timing: it may pass in
    one run and differ in the next, so it is exempt from the stale check.
    """
    entries = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        pattern, sep, reason = text.partition("#")
        if not sep or not reason.strip():
            raise SystemExit(f"{path}:{number}: every listed difference needs '# reason' after it")
        racy = pattern.startswith("~")
        entries.append(Expected(pattern.lstrip("~").strip(), reason.strip(), number, racy=racy))
    return entries


def match(test_id: str, expected: list[Expected]) -> Expected | None:
    for entry in expected:
        if fnmatch.fnmatchcase(test_id, entry.pattern):
            return entry
    return None


def compare(
    stock: ModuleRun | None, virtual: ModuleRun, expected: list[Expected]
) -> tuple[list[str], list[str]]:
    """Unexpected differences, and listed ones that did differ, for one module."""
    unexpected, listed = [], []
    for test_id, outcome in sorted(virtual.outcomes.items()):
        if outcome == "pass":
            continue
        # Without a stock run (the fast subset), every test is expected to pass or skip.
        stock_outcome = "pass" if stock is None else stock.outcomes.get(test_id)
        if stock_outcome != "pass" or (stock is None and outcome == "skip"):
            continue
        entry = match(test_id, expected)
        if entry is not None:
            entry.used = True
            listed.append(test_id)
        else:
            unexpected.append(test_id)
    return unexpected, listed


def stale(runs: dict[tuple[str, str], ModuleRun], expected: list[Expected]) -> list[Expected]:
    """Listed differences whose test passed on both loops in this run: the list must shrink."""
    out = []
    for entry in expected:
        if entry.used or entry.racy:
            continue
        for (module, mode), run in runs.items():
            if mode != "virtual":
                continue
            stock = runs.get((module, "stock"))
            hits = [t for t in run.outcomes if fnmatch.fnmatchcase(t, entry.pattern)]
            if hits and all(
                run.outcomes[t] == "pass" and (stock is None or stock.outcomes.get(t) == "pass")
                for t in hits
            ):
                out.append(entry)
                break
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"default: all {len(MODULES)}")
    parser.add_argument("--jobs", type=int, default=2, help="parallel subprocesses (2)")
    parser.add_argument("--timeout", type=float, default=900.0, help="real seconds per module")
    parser.add_argument(
        "--test-timeout", type=float, default=TEST_TIMEOUT, help="real seconds per test"
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter to test with")
    parser.add_argument("--virtual-only", action="store_true", help="skip the stock run")
    parser.add_argument("-v", "--verbose", action="store_true", help="print failure details")
    args = parser.parse_args(argv)
    modules = args.modules or MODULES
    modes = ("virtual",) if args.virtual_only else MODES
    expected = load_expected()
    version = subprocess.run(
        [args.python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(
        f"conformance: {len(modules)} modules x {'/'.join(modes)} on Python {version}, "
        f"{args.jobs} workers, {args.timeout:.0f} s limit per module",
        flush=True,
    )

    runs: dict[tuple[str, str], ModuleRun] = {}
    jobs = [(m, mode) for m in modules for mode in modes]
    total_started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            pool.submit(run_module, m, mode, args.timeout, args.python, args.test_timeout): (
                m,
                mode,
            )
            for m, mode in jobs
        }
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            run = future.result()
            runs[(run.module, run.mode)] = run
            c = run.counts()
            note = f"  HUNG: {', '.join(run.hung)}" if run.hung else ""
            print(
                f"[{done:2}/{len(jobs)}] {run.module:<20} {run.mode:<7} {run.seconds:7.1f} s  "
                + " ".join(f"{k} {c[k]}" for k in OUTCOMES)
                + note,
                flush=True,
            )
    wall = time.monotonic() - total_started

    groups = f"{'':<20}" + "".join(f"{'-- ' + m + ' --':^24}" for m in modes)
    groups += "".join(f"{m + ' s':>10}" for m in modes) + ("   ratio" if len(modes) == 2 else "")
    header = f"{'module':<20}" + "".join(f"{k:>6}" for _ in modes for k in OUTCOMES)
    print("\n" + groups + "\n" + header)
    totals: dict[str, Counter[str]] = {m: Counter() for m in modes}
    seconds: dict[str, float] = dict.fromkeys(modes, 0.0)
    problems: list[str] = []  # headline, detail, headline, detail...
    all_listed: list[str] = []
    for module in modules:
        row = f"{module:<20}"
        for mode in modes:
            c = runs[(module, mode)].counts()
            totals[mode].update(c)
            row += "".join(f"{c[k]:>6}" for k in OUTCOMES)
        for mode in modes:
            seconds[mode] += runs[(module, mode)].test_seconds
            row += f"{runs[(module, mode)].test_seconds:>10.1f}"
        if len(modes) == 2:
            ratio = runs[(module, "virtual")].test_seconds / runs[(module, "stock")].test_seconds
            row += f"{ratio:>8.2f}"
        print(row)
        unexpected, listed = compare(
            runs.get((module, "stock")), runs[(module, "virtual")], expected
        )
        all_listed += listed
        for test_id in unexpected:
            virtual = runs[(module, "virtual")]
            detail = virtual.details.get(test_id, "").strip()
            if not args.verbose:  # the last line names the assertion or exception
                detail = detail.splitlines()[-1] if detail else ""
            problems.append(f"{test_id}: {virtual.outcomes[test_id]} under the virtual loop")
            problems.append("    " + detail.replace("\n", "\n    "))
    row = f"{'TOTAL':<20}" + "".join(f"{totals[m][k]:>6}" for m in modes for k in OUTCOMES)
    row += "".join(f"{seconds[m]:>10.1f}" for m in modes)
    if len(modes) == 2:
        row += f"{seconds['virtual'] / seconds['stock']:>8.2f}"
    print(row)
    if len(modes) == 2:
        print(
            f"\ntest time (without start-up): stock {seconds['stock']:.1f} s, "
            f"virtual {seconds['virtual']:.1f} s, "
            f"ratio virtual/stock {seconds['virtual'] / seconds['stock']:.2f} "
            f"(whole run {wall:.1f} s on {args.jobs} workers)"
        )
    print(f"listed differences that differed ({len(all_listed)}), see {DIFFERENCES.name}:")
    for test_id in all_listed:
        entry = match(test_id, expected)
        assert entry is not None
        print(f"  {test_id}  # {entry.reason}")
    for entry in stale(runs, expected):
        problems.append(
            f"{DIFFERENCES.name}:{entry.line}: {entry.pattern} no longer differs "
            "(it passes under both loops); remove it from the list"
        )
        problems.append("")
    if problems:
        print(f"\nFAILED: {len(problems) // 2} unexpected difference(s) (details: -v):")
        for line in problems:
            if line.strip():
                print("  " + line)
        return 1
    print(
        "\nOK: every test that passes on the stock loop passes under the virtual loop, "
        "but the listed differences."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
