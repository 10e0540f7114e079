"""The sandbox: run a learner's notebook cells in a child process with limits, then hidden cells.

A learner's notebook is untrusted code. :func:`run_cells` starts a fresh Python process (``python
-I -m labkit.course.grading.sandbox``) in an empty temporary directory with a scrubbed environment,
limits its CPU time (``RLIMIT_CPU``), address space (``RLIMIT_AS``), file sizes and wall time, and
sends it the learner's cells over a pipe. Only when every learner cell has run does it send the
hidden cells, so they are never in the child's files, arguments or environment while learner code
runs. When the grader runs as root the child also gets its own mount and network namespaces (the
instructor files, the lesson sources and the gradebook are covered by empty mounts; there is no
network but a private loopback) and then drops to the user ``nobody``.

Each cell runs in an IPython shell (so magics and top-level ``await`` work as in JupyterLab)
under a per-cell time limit. Results lines of the checks (``docs/exercises.md``) are read back
per cell: only lines written while a locked check or hidden cell ran count.

Example::

    cells = [Cell("c1", "x = 1", "learner"), Cell("c2", "assert x == 1", "locked")]
    result = run_cells(cells, [], Limits(wall=30))
    assert result.outcome == "completed" and all(run.ok for run in result.cells)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import io
import json
import os
import re
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

__all__ = ["Cell", "CellRun", "Limits", "SandboxResult", "run_cells", "stop_all"]

CellKind = Literal["learner", "locked", "check", "hidden"]
Outcome = Literal["completed", "timeout", "cpu", "crashed", "exited", "broken"]

_MAX_CHANNEL = 16 * 1024 * 1024
_MAX_OUTPUT = 4000
_MAX_ERROR = 600
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_NOBODY = "nobody"
_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Limits:
    """The resources one submission may use: wall and CPU seconds, memory, and time per cell.

    Example::

        Limits(wall=120, cpu=90, memory_mb=1024, cell=30)
    """

    wall: float = 300.0
    cpu: int = 240
    memory_mb: int = 2048
    cell: float = 60.0
    file_mb: int = 64


@dataclass(frozen=True)
class Cell:
    """One code cell to run: its stable id, its source, its kind and its exercise (if any).

    ``kind`` is ``learner`` (the learner's own code), ``locked`` (given code, run as the
    instructor wrote it), ``check`` (a visible check) or ``hidden`` (a hidden check).

    Example::

        Cell("ex-4-1-check", 'check("4.1", ...)', "check", exercise="4.1")
    """

    id: str
    source: str
    kind: CellKind
    exercise: str | None = None


@dataclass
class CellRun:
    """What happened when one cell ran: success, the error, its output and its results lines.

    Example::

        run = result.cells[0]
        print(run.id, "ok" if run.ok else run.error)
    """

    id: str
    ok: bool
    error: str = ""
    output: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class SandboxResult:
    """How a submission's run ended, each cell that ran, and what the grader noticed.

    ``outcome`` is ``completed`` or why the run stopped early (``timeout``, ``cpu``,
    ``crashed``, ``exited``, ``broken``), with ``reason`` saying it in one sentence.
    ``stopped_at`` is the id of the cell that was running when it stopped. ``tampering`` lists
    attempts the runner caught and undid (patched grading functions, results written outside
    check cells). ``isolation`` lists the protections that were in force.

    Example::

        if result.outcome != "completed":
            print(f"stopped in cell {result.stopped_at}: {result.reason}")
    """

    outcome: Outcome
    reason: str = ""
    cells: list[CellRun] = field(default_factory=list)
    stopped_at: str | None = None
    tampering: list[str] = field(default_factory=list)
    isolation: list[str] = field(default_factory=list)


# -- the parent side ------------------------------------------------------------------------


def run_cells(
    cells: Sequence[Cell],
    hidden: Sequence[Cell],
    limits: Limits,
    *,
    hide: Sequence[Path] = (),
) -> SandboxResult:
    """Run ``cells`` and then ``hidden`` in a fresh sandboxed process; never raises for bad code.

    ``hide`` names files and directories the child must not see (instructor notebooks, lesson
    sources, the gradebook); they are covered when the grader runs as root.

    Example::

        result = run_cells([Cell("a", "while True: pass", "learner")], [], Limits(cell=1))
        assert not result.cells[0].ok   # "the cell ran longer than 1 s"
    """
    workdir = Path(tempfile.mkdtemp(prefix="labkit-grade-"))
    try:
        return _Parent(cells, hidden, limits, hide, workdir).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _child_env(workdir: Path) -> dict[str, str]:
    """The child's whole environment: nothing of the grader's is inherited."""
    bindir = str(Path(sys.executable).parent)
    return {
        "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": str(workdir / ".matplotlib"),
        "IPYTHONDIR": str(workdir / ".ipython"),
        "MALLOC_ARENA_MAX": "2",
        # nbval's import builds a URI grammar (~5 s per process) and no lesson cell uses it.
        "PYTEST_ADDOPTS": "-p no:nbval",
    }


class _Parent:
    def __init__(
        self,
        cells: Sequence[Cell],
        hidden: Sequence[Cell],
        limits: Limits,
        hide: Sequence[Path],
        workdir: Path,
    ) -> None:
        self.cells = list(cells)
        self.hidden = list(hidden)
        self.limits = limits
        self.hide = [str(Path(p).resolve()) for p in hide]
        self.workdir = workdir
        self.result = SandboxResult("completed")
        self.buffer = b""
        self.received = 0
        self.running: str | None = None
        self.started = time.monotonic()

    def run(self) -> SandboxResult:
        if os.geteuid() == 0:
            with contextlib.suppress(KeyError, OSError):
                import pwd

                entry = pwd.getpwnam(_NOBODY)
                os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "labkit.course.grading.sandbox"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
            env=_child_env(self.workdir),
            start_new_session=True,
            close_fds=True,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        with _LIVE_LOCK:
            _LIVE.add(proc)
        deadline = time.monotonic() + self.limits.wall
        try:
            setup = {
                "cells": [asdict(c) for c in self.cells],
                "limits": asdict(self.limits),
                "hide": self.hide,
            }
            if self._send(proc.stdin, setup, deadline) and self._read_until(
                proc, "learner-done", deadline
            ):
                hidden = {"cells": [asdict(c) for c in self.hidden]}
                if self._send(proc.stdin, hidden, deadline):
                    self._read_until(proc, "done", deadline)
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            _kill_group(proc)
            proc.stdout.close()
            with _LIVE_LOCK:
                _LIVE.discard(proc)
        return self.result

    def _send(self, stream: IO[bytes], message: dict[str, Any], deadline: float) -> bool:
        """Write one message without blocking past the deadline; False if the run stopped."""
        data = memoryview(json.dumps(message).encode() + b"\n")
        fd = stream.fileno()
        os.set_blocking(fd, False)
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_WRITE)
            while data:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._stop("timeout", self._wall_reason())
                    return False
                if not selector.select(remaining):
                    continue
                try:
                    data = data[os.write(fd, data) :]
                except BlockingIOError:
                    continue
                except OSError:
                    return True  # the child is gone: reading its end reports how
        return True

    def _wall_reason(self) -> str:
        return (
            f"the notebook ran longer than the {_seconds(self.limits.wall)} wall-time limit "
            "for a whole submission"
        )

    def _read_until(self, proc: subprocess.Popen[bytes], event: str, deadline: float) -> bool:
        """Read messages until ``event``; False (with the outcome set) if the run stopped."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                while b"\n" in self.buffer:
                    line, self.buffer = self.buffer.split(b"\n", 1)
                    if self._handle(line) == event:
                        return True
                    if self.result.outcome != "completed":
                        return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._stop("timeout", self._wall_reason())
                    return False
                if not selector.select(remaining):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    self._ended(proc)
                    return False
                self.received += len(chunk)
                if self.received > _MAX_CHANNEL:
                    self._stop("broken", "the notebook flooded the grader's channel with output")
                    return False
                self.buffer += chunk

    def _handle(self, line: bytes) -> str:
        try:
            return self._message(json.loads(line))
        except (ValueError, KeyError, TypeError, AttributeError):
            self._stop("broken", "the notebook wrote into the grader's private channel")
            return ""

    def _message(self, message: dict[str, Any]) -> str:
        kind = message["event"]
        if kind == "start":
            self.running = str(message.get("id"))
            self.started = time.monotonic()
        elif kind == "cell":
            self.result.cells.append(
                CellRun(
                    id=str(message["id"]),
                    ok=bool(message["ok"]),
                    error=str(message.get("error", "")),
                    output=str(message.get("output", "")),
                    results=[r for r in message.get("results", []) if isinstance(r, dict)],
                    seconds=round(time.monotonic() - self.started, 3),
                )
            )
            self.running = None
        elif kind == "tampering":
            self.result.tampering.append(str(message.get("what", "")))
        elif kind == "isolation":
            self.result.isolation = [str(item) for item in message.get("applied", [])]
        elif kind == "failed":
            self._stop("broken", str(message.get("reason", "the grading process failed")))
        return str(kind)

    def _stop(self, outcome: Outcome, reason: str) -> None:
        if self.result.outcome == "completed":
            self.result.outcome = outcome
            self.result.reason = reason
            self.result.stopped_at = self.running

    def _ended(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
        if code == -signal.SIGXCPU:
            self._stop("cpu", f"the notebook used more than the {self.limits.cpu} s CPU-time limit")
        elif code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            why = (
                "by the CPU-time hard limit, the system's out-of-memory killer or a person"
                if code == -signal.SIGKILL
                else "a C extension fault, ctypes misuse or memory exhausted in native code"
            )
            self._stop(
                "crashed", f"the Python process running the notebook was killed ({name}): {why}"
            )
        elif not self.result.isolation:
            self._stop(
                "broken",
                f"the grading process failed to start (exit status {code}); check that "
                f"`{sys.executable} -I -m labkit.course.grading.sandbox` can import labkit",
            )
        else:
            self._stop(
                "exited",
                f"the notebook ended the grading process itself (exit status {code}): "
                "os._exit(), os.kill() or similar stop the whole kernel; remove that call",
            )


def stop_all() -> None:
    """Kill every sandboxed process still running (on Ctrl-C), so their graders return at once.

    Example::

        try:
            grade_everything()
        except KeyboardInterrupt:
            stop_all()
    """
    with _LIVE_LOCK:
        running = list(_LIVE)
    for proc in running:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def _seconds(value: float) -> str:
    return f"{value:g} s"


# -- the child side -------------------------------------------------------------------------


class CellTimeout(BaseException):
    """Raised in the main thread of the child when one cell runs past its time limit."""


_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 2, 4, 4096, 16384, 1 << 18
_PR_SET_PDEATHSIG = 1


def _libc() -> Any:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _isolate(hide: Sequence[str]) -> list[str]:
    """As root: own namespaces, hidden paths, no network; then become nobody. Best effort."""
    applied: list[str] = []
    if os.geteuid() != 0:
        return applied
    libc = _libc()
    if (
        libc.unshare(_CLONE_NEWNS) == 0
        and libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) == 0
    ):
        covered = 0
        keep = [os.getcwd(), *_needed_roots()]
        hide = [p for p in hide if not any(Path(k).is_relative_to(p) for k in keep)]
        for path in hide:
            raw = path.encode()
            if os.path.isdir(path):
                flags = _MS_RDONLY | _MS_NOSUID | _MS_NODEV
                ok = libc.mount(b"tmpfs", raw, b"tmpfs", flags, b"size=4k,mode=0555") == 0
            elif os.path.exists(path):
                ok = libc.mount(b"/dev/null", raw, None, _MS_BIND, None) == 0
            else:
                continue
            covered += ok
        if hide:
            applied.append(f"instructor files hidden ({covered} of {len(hide)} paths covered)")
        if _expose(libc, _needed_roots()):
            applied.append("the Python installation re-mounted readable for nobody")
    if libc.unshare(_CLONE_NEWNET) == 0:
        _loopback_up()
        applied.append("no network (a private loopback only)")
    blocked = [root for root in _needed_roots() if not _traversable(root)]
    if blocked:
        applied.append(f"still root: {blocked[0]} is not readable by nobody")
        return applied
    try:
        import pwd

        entry = pwd.getpwnam(_NOBODY)
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
        applied.append("runs as user nobody")
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NPROC, (256, 256))
    except (KeyError, OSError) as exc:
        applied.append(f"still root: cannot become nobody ({exc})")
    return applied


def _needed_roots() -> list[str]:
    """The directories the child must read after dropping root: Python, the venv, labkit."""
    import labkit

    roots = {sys.base_prefix, sys.prefix, str(Path(labkit.__file__).resolve().parent.parent)}
    roots.update(p for p in sys.path if p and os.path.isdir(p))
    return sorted(str(Path(r).resolve()) for r in roots)


def _traversable(path: str) -> bool:
    """Whether every directory on the way to ``path`` lets others in (the o+x bit)."""
    current = Path(path)
    for part in [current, *current.parents]:
        with contextlib.suppress(OSError):
            if not os.stat(part).st_mode & 0o001:
                return False
    return True


def _expose(libc: Any, roots: Sequence[str]) -> bool:
    """Make ``roots`` reachable for nobody when an ancestor (like /root) is closed to others.

    The closed ancestor is covered by an empty tmpfs (hiding everything else in it) and each
    root is bind-mounted back at its own path. Runs inside the child's private mount namespace.
    """
    done = False
    for root in roots:
        closed = [p for p in [Path(root), *Path(root).parents] if not os.stat(p).st_mode & 0o001]
        if not closed:
            continue
        top = closed[-1]
        inside = [r for r in roots if Path(r).is_relative_to(top)]
        staging = Path(tempfile.mkdtemp(prefix="stage-"))
        staged = []
        for number, path in enumerate(inside):
            target = staging / str(number)
            target.mkdir()
            if libc.mount(path.encode(), str(target).encode(), None, _MS_BIND | _MS_REC, None):
                return done
            staged.append((target, path))
        if libc.mount(b"tmpfs", str(top).encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=0755"):
            return done
        for target, path in staged:
            os.makedirs(path, mode=0o755, exist_ok=True)
            libc.mount(str(target).encode(), path.encode(), None, _MS_BIND | _MS_REC, None)
        done = True
        roots = [r for r in roots if r not in inside]
    return done


def _loopback_up() -> None:
    import fcntl
    import socket
    import struct

    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(sock, 0x8913, request))[1]
        fcntl.ioctl(sock, 0x8914, struct.pack("16sH14s", b"lo", flags | 1, b""))


def _set_limits(limits: dict[str, Any]) -> None:
    cpu = int(limits["cpu"])
    memory = int(limits["memory_mb"]) * 1024 * 1024
    files = int(limits["file_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 2))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (files, files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:
        os._exit(3)


class _Capture(io.TextIOBase):
    """A bounded text sink standing in for sys.stdout and sys.stderr while a cell runs."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def write(self, text: str) -> int:
        if self.size < _MAX_OUTPUT:
            self.parts.append(text[: _MAX_OUTPUT - self.size])
            self.size += len(text)
        return len(text)

    def writable(self) -> bool:
        return True

    def text(self) -> str:
        out = "".join(self.parts)
        return out + ("\n[output truncated]" if self.size > _MAX_OUTPUT else "")


class _Guard:
    """Remembers the grading functions as they were; restores them if learner code patched them."""

    def __init__(self) -> None:
        import labkit.course.exercise as exercise

        self.module = exercise
        self.originals: dict[str, Any] = {}
        self.codes: dict[str, Any] = {}
        self.bindings: dict[str, Any] = {}
        self.remember({})

    def remember(self, namespace: dict[str, Any]) -> None:
        """After an instructor's cell: snapshot the grading functions and names bound to them."""
        self.originals = {k: v for k, v in vars(self.module).items() if not k.startswith("__")}
        self.codes = {
            name: value.__code__
            for name, value in self.originals.items()
            if hasattr(value, "__code__")
        }
        known = {id(value) for value in self.originals.values()}
        for name, value in list(namespace.items()):
            if id(value) in known or value is self.module:
                self.bindings[name] = value

    def restore(self, namespace: dict[str, Any]) -> list[str]:
        """Before a check cell: undo changes to the grading functions; return what was changed."""
        changed: list[str] = []
        current = vars(self.module)
        for name, value in self.originals.items():
            if current.get(name) is not value:
                changed.append(f"labkit.course.exercise.{name} was replaced")
                setattr(self.module, name, value)
        for name, code in self.codes.items():
            func = self.originals[name]
            if func.__code__ is not code:
                changed.append(f"the code of labkit.course.exercise.{name} was replaced")
                func.__code__ = code
        for name, value in self.bindings.items():
            if namespace.get(name) is not value:
                changed.append(f"the notebook name {name!r} was rebound")
                namespace[name] = value
        return changed


def _child_main() -> None:  # pragma: no cover - runs in the child process
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    inp = os.fdopen(os.dup(0), "r", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    lock = threading.Lock()

    def send(**message: Any) -> None:
        with lock, contextlib.suppress(OSError):
            os.set_blocking(out.fileno(), True)  # learner code may have changed it
            out.write(json.dumps(message, default=str) + "\n")

    try:
        setup = json.loads(inp.readline())
    except ValueError:
        os._exit(4)
    applied = _isolate(setup.get("hide", []))
    _die_with_parent()
    _set_limits(setup["limits"])
    applied.append("CPU, memory, file-size and wall-time limits")
    send(event="isolation", applied=applied)
    try:
        runner = _Runner(setup["limits"], send)
    except Exception as exc:
        send(event="failed", reason=f"the notebook environment could not start: {exc}")
        os._exit(5)
    runner.run([_cell(c) for c in setup["cells"]])
    send(event="learner-done")
    with contextlib.suppress(OSError):
        os.set_blocking(inp.fileno(), True)
    line = inp.readline()
    if line:
        runner.run([_cell(c) for c in json.loads(line)["cells"]])
    send(event="done")
    out.flush()
    os._exit(0)


def _cell(data: dict[str, Any]) -> Cell:
    return Cell(data["id"], data["source"], data["kind"], data.get("exercise"))


class _Runner:
    def __init__(self, limits: dict[str, Any], send: Any) -> None:
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config

        config = Config()
        config.HistoryManager.enabled = False
        config.InteractiveShell.colors = "nocolor"
        self.shell = InteractiveShell.instance(config=config)
        self.send = send
        self.cell_limit = float(limits["cell"])
        self.results_dir = Path(tempfile.mkdtemp(prefix="results-"))
        self.guard = _Guard()
        self.shell.user_ns["__name__"] = "__main__"
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

    def run(self, cells: list[Cell]) -> None:
        for cell in cells:
            self.one(cell)

    async def _execute(self, source: str) -> Any:
        """Run one cell the way ipykernel does: inside a running asyncio loop in the main thread.

        So ``asyncio.get_running_loop()`` works in a cell, ``asyncio.run()`` refuses as it does
        in JupyterLab, and top-level ``await`` runs on that loop.
        """
        shell = self.shell
        transformed: str | None = None
        preprocessing: Any = None
        try:
            transformed = shell.transform_cell(source)  # type: ignore[no-untyped-call]
        except Exception:
            preprocessing = sys.exc_info()
        if shell.should_run_async(
            source, transformed_cell=transformed, preprocessing_exc_tuple=preprocessing
        ):
            return await shell.run_cell_async(
                source,
                store_history=True,
                silent=False,
                transformed_cell=transformed,
                preprocessing_exc_tuple=preprocessing,
            )
        return shell.run_cell(source, store_history=True, silent=False)  # type: ignore[no-untyped-call]

    def one(self, cell: Cell) -> None:
        namespace = self.shell.user_ns
        grading = cell.kind in ("check", "hidden")
        if cell.kind != "learner":
            for what in self.guard.restore(namespace):
                self.send(event="tampering", what=what)
        results_path = self.results_dir / f"{secrets.token_hex(16)}.jsonl"
        if grading:
            os.environ["LABKIT_RESULTS"] = str(results_path)
        else:
            os.environ.pop("LABKIT_RESULTS", None)
        self.send(event="start", id=cell.id)
        capture = _Capture()
        error = ""
        exc: BaseException | None
        with _redirected(capture), _alarm(self.cell_limit):
            try:
                outcome = self.loop.run_until_complete(self._execute(cell.source))
                exc = outcome.error_before_exec or outcome.error_in_exec
            except CellTimeout as raised:
                exc = raised
        os.environ.pop("LABKIT_RESULTS", None)
        if exc is not None:
            error = _describe(exc, self.cell_limit)
        if cell.kind != "learner":
            self.guard.remember(namespace)
        results = _read_results(results_path) if grading else []
        self.send(
            event="cell",
            id=cell.id,
            ok=exc is None,
            error=error,
            output=capture.text(),
            results=results,
        )


@contextlib.contextmanager
def _redirected(capture: _Capture) -> Iterator[None]:
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = capture
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def fire(signum: int, frame: Any) -> None:
        raise CellTimeout

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _describe(exc: BaseException, cell_limit: float) -> str:
    if isinstance(exc, CellTimeout):
        return (
            f"the cell ran longer than the {_seconds(cell_limit)} limit per cell "
            "(an endless loop, or waiting on real time?)"
        )
    if isinstance(exc, SystemExit):
        return "SystemExit: the cell called sys.exit() or exit(), which a graded notebook must not"
    if isinstance(exc, MemoryError):
        return "MemoryError: the cell tried to use more memory than the limit allows"
    message = _ADDRESS.sub("", str(exc)).strip()
    if len(message) > _MAX_ERROR:
        message = message[:_MAX_ERROR] + " ..."
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


def _read_results(path: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return results
    for line in text.splitlines()[:1000]:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                results.append(record)
    return results


if __name__ == "__main__":  # pragma: no cover
    _child_main()
