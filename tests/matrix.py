"""`make test-matrix`: every check on every Python from 3.11 up that this machine has.

For each interpreter (on PATH as ``python3.X`` or installed by pyenv) it builds its own
environment, ``.venv-3.X``, from requirements.lock, then runs the library tests, the notebook
checks (nbval) and ``make conformance`` in it, one after the other, logging each to
``build/matrix/``, and prints one table at the end. ``make test`` stays the single-interpreter
run; ``--default`` prints the interpreter it uses.

Which interpreter is the default, in order: 3.12 (every check, the notebooks included, passes
on it today), 3.13, newer ones, then 3.11 from 3.11.8 on. 3.11.0 to 3.11.7 can crash pytest
(CPython's "SystemError: AST constructor recursion depth mismatch", fixed in 3.11.8): one is
used only when the machine has nothing else, with a warning.

Example::

    make test-matrix
    python3 tests/matrix.py --python 3.13 --only library,conformance
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "build" / "matrix"
MINORS = range(11, 20)
PREFERRED = (12, 13)  # then newer, then 3.11
STEPS = {
    "library": ["-m", "pytest", "-q", "-m", "not stress and not browser and not notebooks"],
    "notebooks": ["-m", "pytest", "-q", "tests/notebooks"],
    "conformance": ["-m", "tests.conformance.run"],
}


def version_of(python: str) -> tuple[int, int, int] | None:
    """The interpreter's (major, minor, micro), or None if it does not run."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    major, minor, micro = (int(part) for part in out.stdout.split())
    return major, minor, micro


def dotted(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def broken(version: tuple[int, int, int]) -> bool:
    """3.11.0-3.11.7: pytest can die of CPython's AST recursion-depth bug (fixed in 3.11.8)."""
    return version[:2] == (3, 11) and version[2] < 8


def interpreters() -> dict[int, tuple[str, tuple[int, int, int]]]:
    """The best interpreter of each minor version 3.11+ found: {minor: (path, version)}."""
    found: dict[int, tuple[str, tuple[int, int, int]]] = {}
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for minor in MINORS:
        candidates = [shutil.which(f"python3.{minor}") or ""]
        candidates += sorted(glob.glob(f"{pyenv}/versions/3.{minor}.*/bin/python3.{minor}"))
        for path in filter(None, candidates):
            version = version_of(path)
            if version is None or version[:2] != (3, minor):
                continue
            best = found.get(minor)
            if best is None or (broken(best[1]), -best[1][2]) > (broken(version), -version[2]):
                found[minor] = (os.path.realpath(path), version)
    return found


def default(found: dict[int, tuple[str, tuple[int, int, int]]]) -> tuple[str, tuple[int, int, int]]:
    order = [*PREFERRED, *(m for m in MINORS if m > PREFERRED[-1]), 11]
    good = [found[m] for m in order if m in found and not broken(found[m][1])]
    if good:
        return good[0]
    if found:
        return next(iter(found.values()))
    raise SystemExit("error: no Python 3.11 or newer found on PATH or under pyenv")


def environment(python: str, version: tuple[int, int, int]) -> Path:
    """``.venv-3.X`` for this interpreter, (re)built when the lock, pyproject or it changed."""
    venv = ROOT / f".venv-{version[0]}.{version[1]}"
    digest = hashlib.sha256()
    for name in ("requirements.lock", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    digest.update(repr(version).encode())
    stamp = venv / f".stamp-{digest.hexdigest()[:16]}"
    if stamp.exists():
        return venv
    print(f"==> building {venv.name} with Python {dotted(version)}", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    bin_python = str(venv / "bin" / "python")
    for command in (
        [python, "-m", "venv", str(venv)],
        [bin_python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [bin_python, "-m", "pip", "install", "--quiet", "-r", "requirements.lock"],
        [
            bin_python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-e",
            ".",
        ],
    ):
        subprocess.run(command, cwd=ROOT, check=True)
    stamp.touch()
    return venv


def run_step(venv: Path, minor: int, step: str) -> tuple[bool, str, float]:
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"3.{minor}-{step}.log"
    started = time.monotonic()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.run(
            [str(venv / "bin" / "python"), *STEPS[step]],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
    lines = [line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    return proc.returncode == 0, lines[-1] if lines else "", time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--default", action="store_true", help="print make test's interpreter")
    parser.add_argument("--python", action="append", help="only these versions, e.g. 3.12")
    parser.add_argument("--only", default=",".join(STEPS), help=f"steps: {','.join(STEPS)}")
    args = parser.parse_args(argv)
    found = interpreters()
    if args.default:
        path, version = default(found)
        if broken(version):
            print(
                f"warning: Python {dotted(version)} can crash pytest (CPython's "
                "AST recursion-depth bug, fixed in 3.11.8); install 3.11.8+ or 3.12",
                file=sys.stderr,
            )
        print(path)
        return 0
    steps = [step for step in args.only.split(",") if step]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown step(s) {unknown}; choose from {', '.join(STEPS)}")
    chosen = {m: found[m] for m in found if not args.python or f"3.{m}" in args.python}
    if not chosen:
        raise SystemExit(f"error: none of {args.python} found (found: {sorted(found)})")
    print("test-matrix: " + ", ".join(f"{dotted(v)} ({p})" for p, v in chosen.values()))
    results: list[tuple[str, str, bool, str, float]] = []
    for minor, (python, version) in sorted(chosen.items()):
        if broken(version):
            print(f"warning: {python} is {version}: it may crash pytest (fixed in 3.11.8)")
        venv = environment(python, version)
        for step in steps:
            print(f"==> 3.{minor} {step}", flush=True)
            ok, last, seconds = run_step(venv, minor, step)
            results.append((dotted(version), step, ok, last, seconds))
            print(f"    {'ok' if ok else 'FAILED'} in {seconds:.0f} s: {last}", flush=True)
    print(
        f"\n{'python':<8} {'step':<12} {'result':<7} {'time':>6}  last line (logs: build/matrix/)"
    )
    for version_text, step, ok, last, seconds in results:
        result = "ok" if ok else "FAILED"
        print(f"{version_text:<8} {step:<12} {result:<7} {seconds:>5.0f}s  {last[:90]}")
    return 0 if all(result[2] for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
