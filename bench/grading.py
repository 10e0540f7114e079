"""Benchmark: wall and CPU seconds `labkit grade` takes for 100 submissions of one lesson, --jobs 2.

It grades a real lesson when `labkit build` has made one (instructor/ and notebooks/), else the
grading fixture lesson. A quarter of the submissions are empty, a quarter half-solved and half
solved. CPU time is everything the grading command used: the grader and every sandbox process
(bwrap waits for the zygote, which is its namespace's init and reaps every job, so their time
comes back with the exit status); the sandboxes' own count, printed by `labkit grade`, is shown
as a cross-check. The machine's load average before and after is printed, because other work on
the same cores slows grading down. With ``--baseline REV`` (by default the commit before the
sandbox redesign, when this checkout has it) the same submissions are also graded by that
revision's grader, in the same run, and the ratios are printed. Prints figures; asserts nothing.

Example::

    $ .venv/bin/python bench/grading.py --count 100 --jobs 2
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
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


BASELINE = "c946aec"  # the grader before the sandbox redesign (issue 11)


def _baseline_python(revision: str, work: Path) -> Path | None:
    """A Python that imports labkit as it was at ``revision`` (and this kit's other packages)."""
    tree = work / "baseline"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "labkit"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        return None
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    venv = work / "baseline-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    ours = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    # Only plain paths: this kit's own .pth files (its editable labkit) are not read from there.
    (site / "baseline.pth").write_text(f"{tree}\n{ours}\n")
    return venv / "bin" / "python"


def _grade(
    folder: Path,
    instructor: Path,
    jobs: int,
    work: Path,
    python: Path | None = None,
) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds (the grader and its sandboxes), the sandboxes' own count, and
    the summary line."""
    sandbox_cpu = 0.0
    command = [
        str(python or sys.executable),
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
    parser.add_argument(
        "--baseline",
        default=BASELINE,
        metavar="REV",
        help=f"also grade with this revision's grader, for ratios (default {BASELINE}; '': none)",
    )
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
        old: tuple[float, float, float, str] | None = None
        python = _baseline_python(args.baseline, work) if args.baseline else None
        if python is not None:
            (work / "old").mkdir()
            old = _grade(folder, instructor, args.jobs, work / "old", python)
        finished = Path("/proc/loadavg").read_text().split()[:3]
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
    if old is not None:
        wall, old_cpu, _, old_summary = old
        print(
            f"baseline  : {args.baseline}'s grader, same submissions, same run: {wall:.1f} s "
            f"({wall / args.count:.2f} s each), {old_cpu:.1f} CPU s ({old_cpu / args.count:.2f} "
            f"each)  {old_summary}; /proc/loadavg after {' '.join(finished)}"
        )
        print(
            f"ratio     : wall {fresh / wall:.2f}x, CPU {cpu / old_cpu:.2f}x of the baseline "
            "(below 1: faster)"
        )
    elif args.baseline:
        print(f"baseline  : {args.baseline} is not in this checkout; no ratio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
