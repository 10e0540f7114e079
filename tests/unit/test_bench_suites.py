"""bench/suites.py's verdicts: pins read strictly, junit outcomes, "same as stock" decided right.

The benchmark itself (downloads, 21 environments, minutes of runs) is `make bench`'s; these check
the parts that turn its runs into the table's claims, on reports written here.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "suites.py"


@pytest.fixture(scope="module")
def suites() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_suites", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_suites"] = module
    spec.loader.exec_module(module)
    return module


def _run(suites: ModuleType, **outcomes: str) -> object:
    counted = Counter({(f"t::{name}", outcome): 1 for name, outcome in outcomes.items()})
    return suites.Run(1.0, 1.0, 10.0, 1.0, counted, {})


def test_every_suite_and_dependency_is_pinned(suites: ModuleType) -> None:
    pins = suites.read_pins()
    for suite in suites.SUITES:
        for name in (suite.name, *suite.needs):
            assert "==" in suites._pin(pins, name)
    assert suites._pin(pins, "looptime") == "looptime==0.9"


def test_an_unpinned_line_is_refused(suites: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "pins.txt"
    path.write_text("pytest==9.2.0\naiocache>=0.12\n")
    with pytest.raises(SystemExit, match=r"'aiocache>=0\.12' is not pinned"):
        suites.read_pins(path)


def test_junit_outcomes_and_time(suites: ModuleType, tmp_path: Path) -> None:
    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest" time="2.5">'
        '<testcase classname="a" name="ok"/>'
        '<testcase classname="a" name="bad"><failure message="x"/></testcase>'
        '<testcase classname="a" name="skip"><skipped message="s"/></testcase>'
        '<testcase classname="a" name="teardown"><error message="e"/></testcase>'
        "</testsuite></testsuites>"
    )
    seconds, outcomes = suites._junit(report)
    assert seconds == 2.5
    assert outcomes == Counter(
        {
            ("a::ok", "passed"): 1,
            ("a::bad", "failed"): 1,
            ("a::skip", "skipped"): 1,
            ("a::teardown", "error"): 1,
        }
    )
    assert suites._counts(outcomes) == "1/1/1/1"


def test_a_changed_outcome_is_reported_worse_or_better(suites: ModuleType) -> None:
    stock = suites._stock_outcomes([_run(suites, a="passed", b="failed", c="passed")])
    here = _run(suites, a="failed", b="passed", c="passed")
    assert suites._differences(stock, here) == [
        "worse: t::a: stock passed, here failed",
        "better: t::b: stock failed, here passed",
    ]


def test_an_outcome_the_stock_loop_also_had_counts_as_the_same(suites: ModuleType) -> None:
    stock = suites._stock_outcomes(
        [_run(suites, rate="passed"), _run(suites, rate="failed"), _run(suites, rate="passed")]
    )
    assert suites._differences(stock, _run(suites, rate="failed")) == []
    assert suites._differences(stock, _run(suites, rate="passed")) == []


def test_a_missing_or_extra_test_is_a_difference(suites: ModuleType) -> None:
    stock = suites._stock_outcomes([_run(suites, a="passed", b="passed")])
    assert suites._differences(stock, _run(suites, a="passed", c="passed")) == [
        "worse: t::b: stock passed, here absent",
        "new: t::c: stock absent, here passed",
    ]
