"""A fast slice of `make conformance` for `make test`: CPython's own asyncio tests, virtual loop.

Each module runs in a subprocess with every new event loop a labkit.VirtualTimeLoop; every
test must pass (or be skipped), except those listed in expected_differences.txt. The
runner's comparison logic is tested on made-up outcomes, so it can be seen to fail.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _load_runner() -> ModuleType:
    path = Path(__file__).with_name("run.py")
    spec = importlib.util.spec_from_file_location("labkit_conformance_run", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


runner = _load_runner()

FAST_MODULES = ["test_locks", "test_queues", "test_timeouts", "test_waitfor", "test_streams"]


@pytest.mark.parametrize("module", FAST_MODULES)
def test_cpython_module_passes_under_virtual_time(module: str) -> None:
    run = runner.run_module(module, "virtual", timeout=100.0, python=sys.executable)
    unexpected, _listed = runner.compare(None, run, runner.load_expected())
    details = "\n".join(f"{t}: {run.outcomes[t]}\n{run.details.get(t, '')}" for t in unexpected)
    assert not unexpected, f"{len(unexpected)} test(s) differ under the virtual loop:\n{details}"
    assert run.counts()["pass"] > 0, f"{module} ran no tests: {run.stderr_tail}"


def _run(module: str, mode: str, **outcomes: str) -> object:
    return runner.ModuleRun(module, mode, outcomes=dict(outcomes), suite_seconds=1.0)


def test_compare_flags_a_stock_pass_that_fails_virtually() -> None:
    stock = _run("m", "stock", a="pass", b="pass", c="fail", d="skip")
    virtual = _run("m", "virtual", a="pass", b="error", c="fail", d="fail")
    unexpected, listed = runner.compare(stock, virtual, [])
    assert unexpected == ["b"]  # c and d did not pass on the stock loop
    assert listed == []


def test_compare_accepts_a_listed_difference_and_stale_entries_are_reported() -> None:
    expected = [runner.Expected("m.b*", "reason", 1), runner.Expected("m.a", "stale", 2)]
    stock = _run("m", "stock", **{"m.a": "pass", "m.b1": "pass"})
    virtual = _run("m", "virtual", **{"m.a": "pass", "m.b1": "fail"})
    unexpected, listed = runner.compare(stock, virtual, expected)
    assert (unexpected, listed) == ([], ["m.b1"])
    stale = runner.stale({("m", "stock"): stock, ("m", "virtual"): virtual}, expected)
    assert [entry.pattern for entry in stale] == ["m.a"]


def test_a_racy_listed_difference_is_never_stale(tmp_path: Path) -> None:
    listing = tmp_path / "differences.txt"
    listing.write_text("# comment\n~ m.a  # a real thread may lose a race\n", encoding="utf-8")
    expected = runner.load_expected(listing)
    assert expected[0].racy
    assert expected[0].pattern == "m.a"
    runs = {("m", "stock"): _run("m", "stock", **{"m.a": "pass"})}
    runs[("m", "virtual")] = _run("m", "virtual", **{"m.a": "pass"})
    assert runner.stale(runs, expected) == []


def test_a_listed_difference_without_a_reason_is_refused(tmp_path: Path) -> None:
    listing = tmp_path / "differences.txt"
    listing.write_text("m.a\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="needs '# reason'"):
        runner.load_expected(listing)


def test_expected_differences_file_parses_with_a_reason_per_entry() -> None:
    for entry in runner.load_expected():
        assert entry.pattern.startswith("test.test_asyncio.")
        assert entry.reason
