"""Real test suites in virtual time: published asyncio libraries' own tests, run three ways.

Each suite's source distribution (it carries its tests; pinned in bench/suites.txt) is fetched
from the package index into build/bench-deps/real-suites and run under

* **stock**: asyncio's own loop, in an environment with neither labkit nor looptime;
* **virtual**: ``--labkit-loop=virtual``, labkit installed (editable) from this worktree;
* **looptime**: ``--looptime``, looptime installed, in an environment of its own: its pytest
  hooks are always on and must not touch the other two.

So every suite has three virtual environments. The runs go round-robin (suite by suite, the
three modes one after another, then the next round), three rounds by default, and the figure is
the median of pytest's own time for the session (the junit XML's). Outcomes are compared test
by test (junit XML) with the stock loop's, and a probe plugin records which loop class every
test ran on, so the table says whether a suite reached the loop it was run for. Where a suite
needs one setting to reach it (anyio's plugin, its own loop-factory hook), the bench applies it
and the table says which (bench/suite_plugins/labkit_bench_settings.py).

Downloads and environments are cached under build/bench-deps/real-suites, each with a stamp of
what defines it: a second run installs nothing. Progress goes to stderr; the table to stdout.

Run: .venv/bin/python bench/suites.py [--rounds N] [--only NAME ...]   (also part of make bench)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PINS = BENCH / "suites.txt"
PLUGINS = BENCH / "suite_plugins"
HOME = ROOT / "build" / "bench-deps" / "real-suites"
MODES = ("stock", "virtual", "looptime")
RUNNER = ("pytest", "pytest-asyncio", "pytest-timeout")
# A run that takes more than this, or more memory than this, is reported as crashed.
TIMEOUT = 600.0
MEMORY_CAP = 4 * 2**30


@dataclass(frozen=True)
class Suite:
    """One published library's own test suite, and how its project runs it."""

    name: str  # the project on the package index, pinned in suites.txt
    args: tuple[str, ...]  # pytest arguments, run from the unpacked sdist
    needs: tuple[str, ...] = ()  # what its tests need beyond the library and the runner
    # The one setting it needs to reach the loop, per mode (see labkit_bench_settings.py).
    settings: dict[str, str] = field(default_factory=dict)
    note: str = ""
    # For an sdist without pytest configuration: the ini its repository has, written beside it
    # (without one, pytest would take the configuration of a directory above, this worktree's).
    ini: str = ""


# Coverage options are dropped from every suite's addopts (-o addopts=...): coverage would be
# most of the time, and is not what is measured. The ini values set here are the ones the
# project's own CI sets where the sdist lacks them, or the deprecation that its
# `filterwarnings = error` would turn into a failure under pytest-asyncio 1.x.
FUNCTION_SCOPE = ("-o", "asyncio_default_fixture_loop_scope=function")
SUITES = (
    Suite("async-lru", ("tests", "-o", "addopts=", *FUNCTION_SCOPE)),
    Suite(
        "aiocache",
        (
            "tests/ut",
            "tests/acceptance",
            "--ignore=tests/ut/backends/test_redis.py",
            "--ignore=tests/ut/backends/test_memcached.py",
            "-m",
            "not redis and not memcached",
            "-o",
            "addopts=--strict-markers",
            *FUNCTION_SCOPE,
        ),
        needs=("pytest-mock", "marshmallow", "msgpack"),
        note="memory backend only (no redis, memcached)",
    ),
    Suite(
        "aiojobs",
        ("tests", "--ignore=tests/test_aiohttp.py"),
        note="aiohttp integration tests left out",
        ini="[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n",
    ),
    Suite("async-timeout", ("tests", "-o", "addopts=", *FUNCTION_SCOPE)),
    Suite(
        "aiostream",
        ("tests", "-o", "addopts=--strict-markers"),
        note="own loop hook: a virtual-time loop its tests assert on; stays on it",
    ),
    Suite(
        "aiosmtplib",
        ("tests",),
        needs=("aiosmtpd", "trustme", "hypothesis"),
        settings={"virtual": "hook-first:labkit"},
        note="own loop hook (asyncio); 25 tests fail on every loop (upstream)",
    ),
    Suite(
        "aiometer",
        (
            "tests",
            "-o",
            "addopts=-rxXs --strict-config --strict-markers",
            "-o",
            "filterwarnings=error",
            *FUNCTION_SCOPE,
        ),
        settings={"virtual": "anyio:labkit", "looptime": "anyio:looptime"},
        note="anyio plugin, asyncio backend (no trio)",
    ),
)


def progress(message: str) -> None:
    print(f"[suites] {message}", file=sys.stderr, flush=True)


def read_pins(path: Path = PINS) -> dict[str, str]:
    """name -> 'name==version' for every pin in suites.txt (names compared normalized)."""
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version.strip():
            raise SystemExit(f"error: {path}: {line!r} is not pinned as name==version")
        pins[_normal(name)] = f"{name.strip()}=={version.strip()}"
    return pins


def _normal(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _pin(pins: dict[str, str], name: str) -> str:
    try:
        return pins[_normal(name)]
    except KeyError:
        raise SystemExit(f"error: {PINS} has no pin for {name!r}; add name==version") from None


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"error: pip failed: {' '.join(args[:4])} ... (exit {done.returncode})")


def fetch_source(suite: Suite, pins: dict[str, str]) -> Path:
    """The unpacked sdist of the suite's pinned version (downloaded once)."""
    pin = _pin(pins, suite.name)
    tree = HOME / "src" / pin.replace("==", "-")
    stamp = tree / ".labkit-bench-stamp"
    if stamp.exists():
        return tree
    sdists = HOME / "sdists"
    sdists.mkdir(parents=True, exist_ok=True)
    progress(f"downloading the sdist of {pin}")
    _pip("download", "--quiet", "--no-deps", "--no-binary", ":all:", "-d", str(sdists), pin)
    name, version = pin.split("==")
    prefixes = {f"{name}-{version}", f"{name.replace('-', '_')}-{version}"}
    archive = next(
        (p for p in sdists.glob("*.tar.gz") if p.name[: -len(".tar.gz")] in prefixes), None
    )
    if archive is None:
        raise SystemExit(f"error: pip downloaded no sdist for {pin} into {sdists}")
    shutil.rmtree(tree, ignore_errors=True)
    tree.parent.mkdir(parents=True, exist_ok=True)
    scratch = tree.with_name(tree.name + ".unpacking")
    shutil.rmtree(scratch, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(scratch, filter="data")
    (top,) = scratch.iterdir()
    top.rename(tree)
    scratch.rmdir()
    stamp.write_text(pin + "\n", encoding="utf-8")
    return tree


def environment(suite: Suite, mode: str, pins: dict[str, str], source: Path) -> Path:
    """The suite's virtual environment for one mode; built once, stamped with what defines it."""
    wanted = [_pin(pins, name) for name in (*RUNNER, *suite.needs)]
    if mode == "looptime":
        wanted.append(_pin(pins, "looptime"))
    python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    where = HOME / "venvs" / f"{suite.name}-{mode}"
    key = _digest(PINS.read_text(encoding="utf-8"), wanted, mode, str(python), sys.version)
    stamp = where / f".stamp-{key}"
    if stamp.exists():
        return where
    progress(f"building the {mode} environment of {suite.name} ({where.relative_to(ROOT)})")
    shutil.rmtree(where, ignore_errors=True)
    subprocess.run([str(python), "-m", "venv", "--without-pip", str(where)], check=True)
    target = ["--python", str(where / "bin" / "python"), "install", "--quiet"]
    _pip(*target, "--constraint", str(PINS), *wanted, str(source))
    if mode == "virtual":
        _pip(*target, "--no-deps", "--editable", str(ROOT))
    stamp.touch()
    return where


@dataclass
class Run:
    """One pytest session of one suite in one mode."""

    seconds: float | None  # pytest's own time (junit), None if it crashed
    wall: float
    peak_mib: float  # the session's peak resident memory
    cpu: float  # user + system CPU seconds of the session's process
    outcomes: Counter[tuple[str, str]]
    loops: dict[str, list[str]]
    crash: str = ""


def run_suite(suite: Suite, mode: str, venv: Path, source: Path, tag: str) -> Run:
    """Run the suite once; its log, junit XML and loop probe go to build/.../results."""
    results = HOME / "results"
    results.mkdir(parents=True, exist_ok=True)
    stem = results / f"{suite.name}-{mode}-{tag}"
    junit, probe, log = (stem.with_name(stem.name + ext) for ext in (".xml", ".loops.json", ".log"))
    for stale in (junit, probe):
        stale.unlink(missing_ok=True)
    command = [str(venv / "bin" / "python"), "-m", "pytest", *_config(suite, source), *suite.args]
    command += ["-p", "no:cacheprovider", "-p", "labkit_bench_probe", "-q", f"--junitxml={junit}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHONASYNCIO"))}
    env.pop("CI", None)
    env["PYTHONPATH"] = str(PLUGINS)
    env["LABKIT_BENCH_PROBE"] = str(probe)
    setting = suite.settings.get(mode, "")
    if setting:
        command += ["-p", "labkit_bench_settings"]
        env["LABKIT_BENCH_SETTING"] = setting
    if mode == "virtual":
        command.append("--labkit-loop=virtual")
    elif mode == "looptime":
        command.append("--looptime")
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        child = subprocess.Popen(
            command,
            cwd=source,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_cap_memory,
        )
        status, usage, timed_out = _wait(child.pid, started + TIMEOUT)
    wall = time.perf_counter() - started
    peak = usage.ru_maxrss / 1024 if usage is not None else float("nan")
    cpu = usage.ru_utime + usage.ru_stime if usage is not None else float("nan")
    loops = json.loads(probe.read_text()) if probe.exists() else {}
    seconds, outcomes = _junit(junit) if junit.exists() else (None, Counter())
    code = os.waitstatus_to_exitcode(status) if status is not None else None
    text = log.read_text(encoding="utf-8", errors="replace")
    if timed_out:
        crash = f"timed out after {TIMEOUT:.0f} s, peak {peak:.0f} MiB"
    elif code in (0, 1) and junit.exists():
        crash = ""
    elif "MemoryError" in text or (not junit.exists() and peak > 0.8 * MEMORY_CAP / 2**20):
        crash = f"out of memory (the {MEMORY_CAP / 2**30:.0f} GiB cap)"
    else:
        last = text.strip().splitlines()[-1:] or ["no output"]
        crash = f"exit {code}: {last[0][:80]}"
    return Run(seconds, wall, peak, cpu, outcomes, loops, crash)


def _config(suite: Suite, source: Path) -> list[str]:
    """The suite's own directory as rootdir, and its configuration file if the sdist has none."""
    if not suite.ini:
        return [f"--rootdir={source}"]
    ini = source.with_name(source.name + ".ini")
    if not ini.exists() or ini.read_text(encoding="utf-8") != suite.ini:
        ini.write_text(suite.ini, encoding="utf-8")
    return [f"--rootdir={source}", "-c", str(ini)]


def _wait(pid: int, deadline: float) -> tuple[int | None, resource.struct_rusage | None, bool]:
    """(wait status, the child's own resource usage, whether it was killed at the deadline)."""
    timed_out = False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage, timed_out
        if not timed_out and time.perf_counter() > deadline:
            os.kill(pid, 9)
            timed_out = True
        time.sleep(0.02)


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _junit(path: Path) -> tuple[float | None, Counter[tuple[str, str]]]:
    """(pytest's session time, Counter of (test, outcome)) from a junit XML report."""
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    outcomes: Counter[tuple[str, str]] = Counter()
    for case in suite.iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag for child in case}
        if "failure" in kinds:
            outcome = "failed"
        elif "error" in kinds:
            outcome = "error"
        elif "skipped" in kinds:
            outcome = "skipped"
        else:
            outcome = "passed"
        outcomes[(test, outcome)] += 1
    seconds = suite.get("time")
    return (float(seconds) if seconds else None), outcomes


def _counts(outcomes: Counter[tuple[str, str]]) -> str:
    by: Counter[str] = Counter()
    for (_test, outcome), n in outcomes.items():
        by[outcome] += n
    return f"{by['passed']}/{by['failed']}/{by['skipped']}/{by['error']}"


def _by_test(outcomes: Counter[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    tests: dict[str, list[str]] = {}
    for (test, outcome), n in sorted(outcomes.items()):
        tests.setdefault(test, []).extend([outcome] * n)
    return {test: tuple(found) for test, found in tests.items()}


def _stock_outcomes(stock: Sequence[Run]) -> dict[str, set[tuple[str, ...]]]:
    """Every outcome each test had on the stock loop, over all stock runs."""
    seen: dict[str, set[tuple[str, ...]]] = {}
    for run in stock:
        for test, found in _by_test(run.outcomes).items():
            seen.setdefault(test, set()).add(found)
        for test in seen.keys() - _by_test(run.outcomes).keys():
            seen[test].add(("absent",))
    return seen


def _differences(stock: dict[str, set[tuple[str, ...]]], run: Run) -> list[str]:
    """Tests whose outcome in this run is none of those they had on the stock loop."""
    here = _by_test(run.outcomes)
    lines = []
    for test in sorted(stock.keys() | here.keys()):
        now = here.get(test, ("absent",))
        was = stock.get(test, {("absent",)})
        if now not in was:
            before = " or ".join("/".join(o) for o in sorted(was))
            if was == {("absent",)}:
                label = "new"  # a test the stock loop never ran
            elif set(now) == {"passed"}:
                label = "better"
            else:
                label = "worse"
            lines.append(f"{label}: {test}: stock {before}, here {'/'.join(now)}")
    return lines


def _loop_share(run: Run, wanted: str) -> str:
    """How many tests that ran on some loop ran on one whose class name contains ``wanted``."""
    on = [names for names in run.loops.values() if names]
    hit = sum(1 for names in on if any(wanted.lower() in name.lower() for name in names))
    return f"{hit}/{len(on)}"


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b <= 0 else f"{a / b:.2f}×"


def report(suites: Sequence[Suite], runs: dict[tuple[str, str], list[Run]]) -> str:
    """The table: outcomes, same-as-stock, loop reached, medians, ratios, settings."""
    head = (
        "| suite | stock p/f/s/e | virtual: outcomes as stock? | on labkit's loop | "
        "looptime: outcomes as stock? | on looptime's loop | stock s | virtual s | looptime s | "
        "stock/virtual | looptime/virtual | setting applied, notes |"
    )
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    notes: list[str] = []
    totals = dict.fromkeys(MODES, 0.0)
    left_out: dict[str, list[str]] = {mode: [] for mode in MODES}
    for suite in suites:
        per = {mode: runs.get((suite.name, mode), []) for mode in MODES}
        medians: dict[str, float | None] = {}
        for mode in MODES:
            times = [r.seconds for r in per[mode] if r.seconds is not None and not r.crash]
            medians[mode] = _median(times) if times and len(times) == len(per[mode]) else None
            if medians[mode] is None:
                left_out[mode].append(suite.name)
            else:
                totals[mode] += medians[mode] or 0.0
        stock = _stock_outcomes([r for r in per["stock"] if not r.crash])
        flaky = sorted(test for test, seen in stock.items() if len(seen) > 1)
        for test in flaky:
            seen = " / ".join("/".join(o) for o in sorted(stock[test]))
            notes.append(f"{suite.name}, stock: {test} varies between runs ({seen})")
        cells = {}
        for mode in ("virtual", "looptime"):
            verdicts = []
            for index, run in enumerate(per[mode]):
                if run.crash:
                    verdicts.append(f"crashed: {run.crash}")
                    continue
                if not stock:
                    verdicts.append("no stock run to compare")
                    continue
                diff = _differences(stock, run)
                kinds = Counter(d.split(":", 1)[0] for d in diff)
                verdict = "yes" if not diff else f"**no**: {kinds['worse']} worse"
                if kinds["better"]:
                    verdict += f", {kinds['better']} pass that failed on stock"
                if kinds["new"]:
                    verdict += f", {kinds['new']} not run on stock"
                verdicts.append(verdict)
                notes.extend(f"{suite.name}, {mode} (round {index + 1}): {d}" for d in diff[:6])
            counted = Counter(verdicts)
            cells[mode] = (
                "; ".join(
                    v if len(counted) == 1 else f"{v} ({n} of {len(verdicts)})"
                    for v, n in counted.items()
                )
                or "—"
            )
        settings = ", ".join(f"{m}: `{s}`" for m, s in suite.settings.items()) or "none"
        if suite.note:
            settings += f"; {suite.note}"
        stock_counts = _counts(per["stock"][0].outcomes) if per["stock"] else "—"
        if flaky:
            stock_counts += f" ({len(flaky)} vary)"
        virtual_on = _loop_share(per["virtual"][-1], "VirtualTimeLoop") if per["virtual"] else "—"
        looptime_on = _loop_share(per["looptime"][-1], "looptime") if per["looptime"] else "—"
        lines.append(
            f"| {suite.name} | {stock_counts} | {cells['virtual']} | {virtual_on} | "
            f"{cells['looptime']} | {looptime_on} | {_fmt(medians['stock'])} | "
            f"{_fmt(medians['virtual'])} | {_fmt(medians['looptime'])} | "
            f"{_ratio(medians['stock'], medians['virtual'])} | "
            f"{_ratio(medians['looptime'], medians['virtual'])} | {settings} |"
        )
    common = [s.name for s in suites if not any(s.name in left_out[mode] for mode in MODES)]
    lines.append(
        f"| **total** ({len(common)} suites all three ran) | | | | | | "
        + " | ".join(_fmt(_total(runs, common, mode)) for mode in MODES)
        + f" | {_ratio(_total(runs, common, 'stock'), _total(runs, common, 'virtual'))} | "
        f"{_ratio(_total(runs, common, 'looptime'), _total(runs, common, 'virtual'))} | |"
    )
    for mode in MODES:
        if left_out[mode]:
            lines.append(
                f"\n{mode}: {', '.join(left_out[mode])} left out of the total (a run crashed); "
                f"{mode}'s total over the suites it finished: {totals[mode]:.2f} s."
            )
    lines.append(
        "\nCPU seconds of the pytest process (median; user + system, startup included): it grows "
        "far less than wall time when other jobs share the cores, and wall minus CPU is waiting."
    )
    lines.append("| suite | stock | virtual | looptime | stock/virtual | looptime/virtual |")
    lines.append("| --- | --- | --- | --- | --- | --- |")
    cpu_totals = dict.fromkeys(MODES, 0.0)
    for suite in suites:
        cpu = {}
        for mode in MODES:
            done = [r.cpu for r in runs.get((suite.name, mode), []) if not r.crash]
            cpu[mode] = _median(done) if done else None
            if suite.name in common:
                cpu_totals[mode] += cpu[mode] or 0.0
        lines.append(
            f"| {suite.name} | {_fmt(cpu['stock'])} | {_fmt(cpu['virtual'])} | "
            f"{_fmt(cpu['looptime'])} | {_ratio(cpu['stock'], cpu['virtual'])} | "
            f"{_ratio(cpu['looptime'], cpu['virtual'])} |"
        )
    lines.append(
        f"| **total** ({len(common)} suites) | {cpu_totals['stock']:.2f} | "
        f"{cpu_totals['virtual']:.2f} | {cpu_totals['looptime']:.2f} | "
        f"{_ratio(cpu_totals['stock'], cpu_totals['virtual'])} | "
        f"{_ratio(cpu_totals['looptime'], cpu_totals['virtual'])} |"
    )
    lines.append(
        "\nOn a loop: tests that ran on one (probe), by the last round. "
        "An outcome counts as the stock loop's if it is one the test had in some stock run."
    )
    if notes:
        lines.append("Tests whose outcome differs from the stock loop's, or varies on it:")
        lines.extend(f"  {note}" for note in notes)
    return "\n".join(lines)


def _total(runs: dict[tuple[str, str], list[Run]], names: Sequence[str], mode: str) -> float:
    return sum(
        _median([r.seconds for r in runs[(name, mode)] if r.seconds is not None]) or 0.0
        for name in names
    )


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


OVERHEAD_SIZES = (100, 1100)
OVERHEAD_KINDS = {
    "async test (`await asyncio.sleep(0)`)": (
        "import asyncio\nimport pytest\n\n\n@pytest.mark.asyncio\n"
        "@pytest.mark.parametrize('i', range({n}))\nasync def test_it(i):\n"
        "    await asyncio.sleep(0)\n"
    ),
    "sync test": "import pytest\n\n\n@pytest.mark.parametrize('i', range({n}))\ndef test_it(i):\n"
    "    pass\n",
}


def overhead(venvs: dict[str, Path], rounds: int) -> str:
    """CPU per test of each mode's plugins, from one-line tests: (cpu(1100) - cpu(100)) / 1000.

    Startup and configuration cancel out in the difference; what is left is what each test
    costs: collection, fixtures (labkit's autouse guard), the loop's construction and teardown.
    """
    where = HOME / "src" / "overhead"
    where.mkdir(parents=True, exist_ok=True)
    ini = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    files: dict[tuple[str, int], Suite] = {}
    for index, (kind, template) in enumerate(OVERHEAD_KINDS.items()):
        for n in OVERHEAD_SIZES:
            name = f"test_kind{index}_{n}.py"
            path = where / name
            text = template.replace("{n}", str(n))
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
            files[(kind, n)] = Suite("overhead", (name,), ini=ini)
    cpu: dict[tuple[str, str, int], list[float]] = {}
    for round_ in range(1, rounds + 1):
        progress(f"per-test overhead, round {round_}/{rounds}")
        for (kind, n), suite in files.items():
            for mode, venv in venvs.items():
                run = run_suite(suite, mode, venv, where, f"{n}-{round_}")
                if not run.crash:
                    cpu.setdefault((kind, mode, n), []).append(run.cpu)
    head = "| CPU per test, µs (median of " + str(rounds) + ") | " + " | ".join(venvs)
    head += " | " + " | ".join(f"{m} − stock" for m in venvs if m != "stock") + " |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for kind in OVERHEAD_KINDS:
        per: dict[str, float] = {}
        for mode in venvs:
            small = _median(cpu.get((kind, mode, OVERHEAD_SIZES[0]), []))
            large = _median(cpu.get((kind, mode, OVERHEAD_SIZES[1]), []))
            if small is not None and large is not None:
                per[mode] = (large - small) / (OVERHEAD_SIZES[1] - OVERHEAD_SIZES[0]) * 1e6
        cells = [f"{per[m]:.0f}" if m in per else "—" for m in venvs]
        base = per.get("stock")
        cells += [
            f"{per[m] - base:+.0f}" if m in per and base is not None else "—"
            for m in venvs
            if m != "stock"
        ]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per suite and mode")
    parser.add_argument("--only", nargs="*", default=[], help="suite names to run (default: all)")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument(
        "--no-overhead",
        dest="overhead",
        action="store_false",
        help="skip the per-test cost measurement on one-line tests",
    )
    args = parser.parse_args([] if argv is None else argv)
    unknown = sorted(set(args.only) - {s.name for s in SUITES})
    if unknown:
        have = ", ".join(s.name for s in SUITES)
        parser.error(f"no such suite: {', '.join(unknown)} (have {have})")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    suites = [s for s in SUITES if not args.only or s.name in args.only]
    pins = read_pins()
    print(
        f"== Real test suites (bench/suites.py): {len(suites)} suites x {len(args.modes)} modes, "
        f"{args.rounds} interleaved rounds, median of pytest's own time"
    )
    print(
        f"   Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load average {_loadavg()} at start"
    )
    sources = {s.name: fetch_source(s, pins) for s in suites}
    venvs = {
        (s.name, mode): environment(s, mode, pins, sources[s.name])
        for s in suites
        for mode in args.modes
    }
    for suite in suites:  # compile and rewrite the tests once, outside the timed runs
        progress(f"warming up {suite.name} (collection only)")
        subprocess.run(
            [
                str(venvs[(suite.name, args.modes[0])] / "bin" / "python"),
                "-m",
                "pytest",
                *_config(suite, sources[suite.name]),
                *suite.args,
                "-p",
                "no:cacheprovider",
                "--collect-only",
                "-q",
            ],
            cwd=sources[suite.name],
            capture_output=True,
            check=False,
        )
    runs: dict[tuple[str, str], list[Run]] = {}
    started = time.perf_counter()
    for round_ in range(1, args.rounds + 1):
        for suite in suites:
            for mode in args.modes:
                venv = venvs[(suite.name, mode)]
                run = run_suite(suite, mode, venv, sources[suite.name], str(round_))
                runs.setdefault((suite.name, mode), []).append(run)
                figure = run.crash or (
                    f"{_fmt(run.seconds)} s (process: {run.wall:.2f} s wall, {run.cpu:.2f} s CPU), "
                    f"{_counts(run.outcomes)} p/f/s/e"
                )
                progress(f"round {round_}/{args.rounds}: {suite.name:<13} {mode:<8} {figure}")
    print(report(suites, runs))
    print(
        f"   {time.perf_counter() - started:.0f} s of runs; load average {_loadavg()} at "
        "the end. p/f/s/e = passed/failed/skipped/errors. Times are pytest's own (wall clock)."
    )
    if args.overhead:
        base = next(s for s in SUITES if s.name == "async-timeout")
        source = fetch_source(base, pins)
        envs = {mode: environment(base, mode, pins, source) for mode in args.modes}
        print(
            "\n== Per-test cost of each environment's plugins (one-line tests, CPU time; "
            f"load average {_loadavg()} at start)"
        )
        print(overhead(envs, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
