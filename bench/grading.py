"""Benchmark: wall and CPU seconds `labkit grade` takes for 100 submissions of one lesson, --jobs 2.

It grades a real lesson when `labkit build` has made one (instructor/ and notebooks/), else the
grading fixture lesson. A quarter of the submissions are empty, a quarter half-solved and half
solved. CPU time is everything the grading command used: the grader and every sandbox process
(bwrap waits for the zygote, which is its namespace's init and reaps every job, so their time
comes back with the exit status); the sandboxes' own count, printed by `labkit grade`, is shown
as a cross-check. The machine's load average before and after is printed, because other work on
the same cores slows grading down. Prints figures; asserts nothing.

Example::

    $ .venv/bin/python bench/grading.py --count 100 --jobs 2
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "grading"


def _lesson(number: int | None) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The instructor directory, the learner notebook and the instructor notebook to grade."""
    instructor = ROOT / "instructor"
    candidates = sorted(instructor.glob("[0-9][0-9]-*.ipynb")) if instructor.is_dir() else []
    if number is not None:
        candidates = [c for c in candidates if c.name.startswith(f"{number:02d}-")]
    for path in candidates:
        learner = ROOT / "notebooks" / path.name
        if learner.is_file() and (instructor / "manifest.json").is_file():
            return instructor, _read(learner), _read(path)
    sys.path.insert(0, str(FIXTURE))
    import lesson98

    return FIXTURE / "instructor", lesson98.learner(), lesson98.instructor()


def _read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _submissions(folder: Path, count: int, learner: dict[str, Any], full: dict[str, Any]) -> None:
    solutions = {
        c["id"]: c["source"]
        for c in full["cells"]
        if c.get("metadata", {}).get("labkit", {}).get("role") == "solution"
    }
    first = next(iter(solutions), None)
    for number in range(count):
        notebook = copy.deepcopy(learner)
        kind = ("empty", "half", "solved", "solved")[number % 4]
        for cell in notebook["cells"]:
            if cell["id"] in solutions and (
                kind == "solved" or (cell["id"] == first and kind == "half")
            ):
                cell["source"] = solutions[cell["id"]]
        path = folder / f"learner{number:03d}.ipynb"
        path.write_text(json.dumps(notebook), encoding="utf-8")


def _grade(
    folder: Path, instructor: Path, jobs: int, work: Path
) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds (the grader and its sandboxes), the sandboxes' own count, and
    the summary line."""
    sandbox_cpu = 0.0
    command = [
        sys.executable,
        "-m",
        "labkit",
        "grade",
        str(folder),
        "--jobs",
        str(jobs),
        "--instructor",
        str(instructor),
        "--gradebook",
        str(work / "book.sqlite"),
        "--feedback",
        str(work / "feedback"),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=work)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
    summary = ""
    for line in done.stdout.splitlines():
        if line.startswith("sandboxes used "):
            sandbox_cpu = float(line.split()[2])
        elif " graded, " in line:
            summary = line.split(";")[0]
    return elapsed, cpu, sandbox_cpu, summary


def main(argv: list[str] | None = None) -> int:
    """Build the submissions, grade them twice (fresh, then unchanged) and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--lesson", type=int, default=None)
    args = parser.parse_args(argv)
    instructor, learner, full = _lesson(args.lesson)
    title = full.get("metadata", {}).get("labkit", {}).get("title", "?")
    with tempfile.TemporaryDirectory(prefix="labkit-bench-") as temporary:
        work = Path(temporary)
        folder = work / "collected"
        folder.mkdir()
        _submissions(folder, args.count, learner, full)
        before = Path("/proc/loadavg").read_text().split()[:3]
        fresh, cpu, inside, summary = _grade(folder, instructor, args.jobs, work)
        after = Path("/proc/loadavg").read_text().split()[:3]
        again, _, _, second = _grade(folder, instructor, args.jobs, work)
    cores = len(os.sched_getaffinity(0))
    print(
        f"lesson: {title!r} ({instructor}); {args.count} submissions; --jobs {args.jobs}; "
        f"{cores} cores; running as {'root' if os.geteuid() == 0 else 'a user'}; "
        f"/proc/loadavg before {' '.join(before)}, after {' '.join(after)}"
    )
    print(
        f"first run : {fresh:7.1f} s  ({fresh / args.count:.2f} s per submission, "
        f"{60 * args.count / fresh:.0f} per minute)  {summary}"
    )
    print(
        f"CPU       : {cpu:7.1f} s  ({cpu / args.count:.2f} CPU s per submission, grader and "
        f"sandboxes; {inside:.1f} s of it inside the sandboxes; on {cores} idle cores about "
        f"{cpu / cores:.0f} s wall)"
    )
    print(f"re-run    : {again:7.1f} s  (nothing changed)  {second}")
    print(f"estimate for 300 learners at this rate: {300 * fresh / args.count / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
