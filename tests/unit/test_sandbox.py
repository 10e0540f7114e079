"""The sandbox runs untrusted cells in a limited child process and reports every way it ends."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from labkit.course.grading.sandbox import Cell, Limits, SandboxResult, run_cells

FAST = Limits(wall=60, cpu=30, memory_mb=1024, cell=2)
CHECK = 'from labkit.course.exercise import check\ncheck("1.1", lambda: None)'


def by_id(result: SandboxResult) -> dict[str, object]:
    return {run.id: run for run in result.cells}


def test_cells_share_one_namespace_and_output_is_captured() -> None:
    result = run_cells(
        [Cell("a", "x = 20", "learner"), Cell("b", "print(x * 2 + 2)", "locked")], [], FAST
    )
    assert result.outcome == "completed"
    assert [(run.id, run.ok, run.output) for run in result.cells] == [
        ("a", True, ""),
        ("b", True, "42\n"),
    ]


def test_top_level_await_and_magics_work_as_in_jupyterlab() -> None:
    source = "import asyncio\nawait asyncio.sleep(0)\n%time y = 1"
    result = run_cells([Cell("a", source, "learner")], [], FAST)
    assert result.cells[0].ok, result.cells[0].error


def test_results_lines_count_only_in_check_and_hidden_cells() -> None:
    cells = [
        Cell("mine", CHECK, "learner", "1.1"),
        Cell("visible", CHECK, "check", "1.1"),
    ]
    result = run_cells(cells, [Cell("secret", CHECK, "hidden", "1.1")], FAST)
    runs = by_id(result)
    assert runs["mine"].results == []  # type: ignore[attr-defined]
    assert [r["status"] for r in runs["visible"].results] == ["solved"]  # type: ignore[attr-defined]
    assert [r["status"] for r in runs["secret"].results] == ["solved"]  # type: ignore[attr-defined]


def test_endless_loop_costs_one_cell_and_the_rest_still_runs() -> None:
    cells = [Cell("spin", "while True:\n    pass", "learner"), Cell("after", "z = 1", "learner")]
    result = run_cells(cells, [], FAST)
    runs = by_id(result)
    assert result.outcome == "completed"
    assert "limit per cell" in runs["spin"].error  # type: ignore[attr-defined]
    assert runs["after"].ok  # type: ignore[attr-defined]


def test_memory_bomb_and_sys_exit_fail_their_cell_only() -> None:
    cells = [
        Cell("bomb", "hog = bytearray(4 * 1024**3)", "learner"),
        Cell("exit", "import sys\nsys.exit(1)", "learner"),
        Cell("after", "print('still here')", "learner"),
    ]
    result = run_cells(cells, [], FAST)
    runs = by_id(result)
    assert runs["bomb"].error.startswith("MemoryError")  # type: ignore[attr-defined]
    assert runs["exit"].error.startswith("SystemExit")  # type: ignore[attr-defined]
    assert runs["after"].output == "still here\n"  # type: ignore[attr-defined]


def test_os_exit_is_reported_with_the_cell_that_did_it() -> None:
    cells = [Cell("ok", "a = 1", "learner"), Cell("quit", "import os\nos._exit(0)", "learner")]
    result = run_cells(cells, [Cell("h", CHECK, "hidden", "1.1")], FAST)
    assert result.outcome == "exited"
    assert result.stopped_at == "quit"
    assert "os._exit" in result.reason
    assert [run.id for run in result.cells] == ["ok"]


def test_a_crashing_interpreter_is_reported_as_a_crash() -> None:
    source = "import ctypes\nctypes.string_at(0)"
    result = run_cells([Cell("segv", source, "learner")], [], FAST)
    assert result.outcome == "crashed"
    assert "SIGSEGV" in result.reason
    assert result.stopped_at == "segv"


def test_wall_time_limit_stops_a_cell_that_ignores_the_per_cell_alarm() -> None:
    source = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass"
    limits = Limits(wall=4, cpu=30, memory_mb=1024, cell=1)
    result = run_cells([Cell("stubborn", source, "learner")], [], limits)
    assert result.outcome in ("timeout", "cpu")
    assert result.stopped_at == "stubborn"


def test_cpu_time_limit_kills_a_busy_child() -> None:
    source = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass"
    limits = Limits(wall=60, cpu=1, memory_mb=1024, cell=1)
    result = run_cells([Cell("burn", source, "learner")], [], limits)
    assert result.outcome == "cpu"
    assert "CPU-time limit" in result.reason


def test_environment_is_scrubbed_and_results_path_is_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LABKIT_TEST_SECRET", "do-not-leak")
    source = "import os\nprint(sorted(k for k in os.environ if 'SECRET' in k or 'RESULTS' in k))"
    result = run_cells([Cell("env", source, "learner")], [], FAST)
    assert result.cells[0].output == "[]\n"


def test_hidden_cells_are_not_readable_while_learner_code_runs() -> None:
    # The learner cell drains every descriptor it can find, lists its directory and searches
    # every object in the interpreter for cell sources (the grader's cells, dicts in lists).
    snoop = (
        "import gc, os\n"
        "seen = []\n"
        "for o in gc.get_objects():\n"
        "    if 'source' in getattr(type(o), '__dataclass_fields__', ()):\n"
        "        seen.append(o.source)\n"
        "    elif isinstance(o, list):\n"
        "        seen += [str(x.get('source')) for x in o if isinstance(x, dict)]\n"
        "for fd in range(0, 64):\n"
        "    try:\n"
        "        os.set_blocking(fd, False)\n"
        "        seen.append(os.read(fd, 1 << 20).decode(errors='replace'))\n"
        "    except OSError:\n"
        "        pass\n"
        "seen += os.listdir('.')\n"
        "print('MARK' + 'ER' in ''.join(seen))"
    )
    hidden = Cell("h", "MARKER = 1\n" + CHECK, "hidden", "1.1")
    result = run_cells([Cell("snoop", snoop, "learner")], [hidden], FAST)
    runs = by_id(result)
    assert runs["snoop"].output.strip() == "False"  # type: ignore[attr-defined]
    assert runs["h"].ok  # type: ignore[attr-defined]
    # The seeded bug: the same cell sent with the learner's cells would be found.
    leaked = run_cells(
        [Cell("snoop", snoop, "learner"), Cell("h", hidden.source, "locked")], [], FAST
    )
    assert leaked.cells[0].output.strip() == "True"


def test_patching_the_grading_functions_is_undone_and_reported() -> None:
    cells = [
        Cell("setup", "from labkit.course.exercise import check", "locked"),
        Cell(
            "cheat",
            "import labkit.course.exercise as ex\n"
            "ex.check = lambda *a, **k: None\n"
            "check = lambda *a, **k: None\n"
            "ex.check_test.__code__ = (lambda *a, **k: None).__code__",
            "learner",
        ),
        Cell("visible", 'check("1.1", lambda: None)', "check", "1.1"),
    ]
    result = run_cells(cells, [], FAST)
    assert [r["status"] for r in by_id(result)["visible"].results] == ["solved"]  # type: ignore[attr-defined]
    joined = " ".join(result.tampering)
    assert "labkit.course.exercise.check was replaced" in joined
    assert "'check' was rebound" in joined
    assert "code of labkit.course.exercise.check_test" in joined


def test_a_cell_that_stays_honest_raises_no_tampering() -> None:
    cells = [
        Cell("setup", "from labkit.course.exercise import check", "locked"),
        Cell(
            "tune",
            "import labkit.course.exercise\nlabkit.course.exercise.DEFAULT_TIME_LIMIT = 5",
            "locked",
        ),
        Cell("mine", "def helper():\n    return 1", "learner"),
        Cell("visible", 'check("1.1", lambda: None)', "check", "1.1"),
    ]
    assert run_cells(cells, [], FAST).tampering == []


@pytest.mark.skipif(os.geteuid() != 0, reason="isolation beyond limits needs root")
def test_as_root_the_child_runs_as_nobody_without_network_or_hidden_paths() -> None:
    # Readable by everyone (unlike pytest's tmp_path), so only the sandbox's mount can hide it.
    secret = Path(tempfile.mkdtemp(prefix="labkit-instructor-"))
    secret.chmod(0o755)
    (secret / "answers.txt").write_text("42")
    (secret / "answers.txt").chmod(0o644)
    source = (
        "import os, socket\n"
        f"print(os.getuid(), os.listdir({str(secret)!r}))\n"
        "try:\n"
        "    socket.create_connection(('192.0.2.1', 80), timeout=2)\n"
        "except OSError as exc:\n"
        "    print('no network:', type(exc).__name__)\n"
    )
    try:
        result = run_cells([Cell("peek", source, "learner")], [], FAST, hide=[secret])
        unhidden = run_cells([Cell("peek", source, "learner")], [], FAST)
    finally:
        shutil.rmtree(secret)
    assert unhidden.cells[0].output.startswith("65534 ['answers.txt']")
    lines = result.cells[0].output.splitlines()
    assert lines[0] == "65534 []"
    assert lines[1].startswith("no network")
    assert any("nobody" in item for item in result.isolation)
