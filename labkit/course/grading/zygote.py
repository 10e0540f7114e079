"""The zygote: the trusted process inside a sandbox that forks one fresh process per job.

``python -I -m labkit.course.grading.zygote`` is what a sandbox runs. It talks to the grader
over its standard input and output (framed wire messages), imports what the lesson needs
(IPython, pytest, labkit, matplotlib...), runs the lesson's own cells that come before the first
learner cell, and then **never runs learner code**: for each job the grader sends, it forks a
child that runs the submission's cells and the job (:mod:`~labkit.course.grading.job`) and
replies over a pipe of its own. The zygote relays the child's frames, its exit status and the
CPU it used, kills whatever the child left behind, empties the sandbox's writable folders, and
waits for the next job: every job starts from the same state, and no job sees another's.

The zygote is not dumpable (``PR_SET_DUMPABLE`` 0), so a child running as the same user cannot
open ``/proc/<zygote>/fd`` (the grader's channel), read its memory or trace it. Children close
the grader's channel before any learner code runs. The zygote is the children's subreaper, so a
double-forked, ``setsid()`` escapee is reparented to it and killed after its job.

Example::

    $ python -I -m labkit.course.grading.zygote   # started by labkit.course.grading.sandbox
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import importlib
import os
import resource
import select
import shutil
import signal
import sys
import time
from collections.abc import Collection
from typing import Any

from labkit.course.grading import job
from labkit.course.grading.shell import CellRunner
from labkit.course.grading.wire import WireError, decode, encode, read_frame, write_frame

__all__ = ["main"]

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_MAX_REPLY = 4 * 1024 * 1024
_MAX_FRAMES = 20_000


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return bool(libc.prctl(option, value, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _limits(limits: dict[str, Any]) -> None:
    memory = int(limits["memory_mb"]) * 1024 * 1024
    files = int(limits["file_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (files, files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    processes = int(limits.get("processes", 0))
    if processes:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))


def _cpu_used() -> float:
    mine = resource.getrusage(resource.RUSAGE_SELF)
    theirs = resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + theirs.ru_utime + theirs.ru_stime


class Zygote:
    """The fork server's state: the channel, the runner with the lesson loaded, the limits.

    Example::

        Zygote(control_in, control_out).serve()
    """

    def __init__(self, control_in: int, control_out: int) -> None:
        self.control_in = control_in
        self.control_out = control_out
        self.table: list[dict[str, Any]] = []
        self.scratch: list[str] = []
        self.pid_namespace = False
        self.cpu_limit = 0.0
        self.runner: CellRunner | None = None
        # What the lesson's own leading cells started or wrote (a database server and its
        # folder, say): it serves every job, so cleaning up after a job leaves it in place.
        self.lesson_pids: set[int] = set()
        self.lesson_files: dict[str, set[str]] = {}

    def send(self, **message: Any) -> None:
        """Write one message to the grader."""
        write_frame(self.control_out, encode(message))

    def receive(self) -> dict[str, Any] | None:
        """The grader's next message, or None when it closed the channel."""
        payload = read_frame(self.control_in)
        if payload is None:
            return None
        message = decode(payload)
        if not isinstance(message, dict):
            raise WireError("a control message that is not a mapping")
        return message

    def setup(self, message: dict[str, Any]) -> None:
        """Apply limits, import the lesson's modules and run the lesson's leading cells."""
        limits = message["limits"]
        self.cpu_limit = float(limits["cpu"])
        self.table = list(message["table"])
        self.scratch = list(message.get("scratch", []))
        self.pid_namespace = bool(message.get("pid_namespace"))
        _limits(limits)
        for name in message.get("preload", []):
            try:
                importlib.import_module(name)
            except Exception as exc:
                self.send(event="failed", module=name, reason=f"{type(exc).__name__}: {exc}")
                raise SystemExit(5) from None
        runner = CellRunner(float(limits["cell"]))
        runner.start_loop()
        errors = []
        for index, entry in enumerate(message.get("prerun", [])):
            error = runner.run_cell(entry["source"])
            if error:
                errors.append([index, entry["id"], error])
            runner.remember(entry["protects"])
        runner.close_loop()
        self.runner = runner
        self.lesson_pids = set(self._leftovers(os.getpid()))
        self.lesson_files = {folder: _entries(folder) for folder in self.scratch}
        gc.collect()
        gc.freeze()  # children share these pages instead of copying them on every collection
        self.send(
            event="ready",
            prerun=errors,
            uid=os.getuid(),
            pid=os.getpid(),
            threads=len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1,
        )

    def serve(self) -> None:
        """Answer the grader's messages until it says end or closes the channel."""
        message = self.receive()
        if message is None or message.get("event") != "setup":
            return
        self.setup(message)
        while True:
            message = self.receive()
            if message is None:
                return
            if message.get("event") == "end":
                # CPU time does not travel out of a PID namespace with the exit status, so the
                # zygote says what it and every job process used.
                self.send(event="bye", cpu=_cpu_used())
                return
            if message.get("event") == "job":
                self.send(event="job", **self.run_job(message))

    def run_job(self, message: dict[str, Any]) -> dict[str, Any]:
        """Fork a fresh child for one job, relay its frames, clean up after it."""
        used = _cpu_used()
        remaining = self.cpu_limit - used
        if remaining < 1:
            return {"id": message["id"], "frames": [], "status": "cpu", "cpu": used}
        read_end, write_end = os.pipe()
        key = message.pop("key", b"")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            message["key"] = key
            self._child(message, read_end, write_end, remaining)
        del key  # the zygote keeps no job's key
        os.close(write_end)
        frames, killed = self._collect(read_end, pid, float(message["wall"]))
        os.close(read_end)
        _, status, _ = os.wait4(pid, 0)
        self._clean_up()
        result: dict[str, Any] = {
            "id": message["id"],
            "frames": frames,
            "cpu": _cpu_used() - used,
            "killed": killed,
        }
        if os.WIFSIGNALED(status):
            result["status"] = "signal"
            result["signal"] = os.WTERMSIG(status)
        else:
            result["status"] = "exit"
            result["code"] = os.WEXITSTATUS(status)
        result["cpu_limit"] = remaining
        return result

    def _child(self, message: dict[str, Any], read_end: int, write_end: int, cpu: float) -> None:
        try:
            os.close(read_end)
            os.close(self.control_in)
            os.close(self.control_out)
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            soft = max(1, int(cpu))
            resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            runner = self.runner
            assert runner is not None
            runner.start_loop()
            key = message.pop("key")
            skip = {int(i): str(e) for i, e in (message.get("skip") or {}).items()}
            job.run(runner, self.table, message["spec"], message["cells"], write_end, key, skip)
        except BaseException:
            pass
        finally:
            os._exit(0)

    def _collect(self, fd: int, pid: int, wall: float) -> tuple[list[bytes], str]:
        """The child's frames until it ends (or closes its pipe), or until the time limit."""
        deadline = time.monotonic() + wall
        buffer = b""
        frames: list[bytes] = []
        total = 0
        ended = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill(pid)
                return frames, "wall"
            ready, _, _ = select.select([fd], [], [], 0.05 if ended else min(remaining, 0.5))
            if not ready:
                if ended:
                    return frames, ""  # exited; a leftover process may still hold the pipe
                ended = _exited(pid)
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return frames, ""
            total += len(chunk)
            if total > _MAX_REPLY:
                self._kill(pid)
                return frames, "flood"
            buffer += chunk
            while len(buffer) >= 4:
                size = int.from_bytes(buffer[:4], "big")
                if size > _MAX_REPLY:
                    self._kill(pid)
                    return frames, "flood"
                if len(buffer) < 4 + size:
                    break
                frames.append(buffer[4 : 4 + size])
                buffer = buffer[4 + size :]
                if len(frames) > _MAX_FRAMES:
                    self._kill(pid)
                    return frames[-2:], "flood"

    def _kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)

    def _clean_up(self) -> None:
        """Kill what the job left running, reap it, and empty the writable folders."""
        me = os.getpid()
        deadline = time.monotonic() + 5
        while True:
            victims = [pid for pid in self._leftovers(me) if pid not in self.lesson_pids]
            if not victims:
                break
            for pid in victims:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if not self._reap():
                if time.monotonic() > deadline:
                    break
                # SIGKILL takes effect when the kernel next schedules the victim; zombies
                # whose parent died come back to this subreaper to be reaped.
                select.select([], [], [], 0.002)
        for folder in self.scratch:
            _empty(folder, keep=self.lesson_files.get(folder, set()))

    def _leftovers(self, me: int) -> list[int]:
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) in (me, 1):
                continue
            pid = int(name)
            if self.pid_namespace:
                found.append(pid)
                continue
            try:
                with open(f"/proc/{pid}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:  # our child, or an orphan reparented to us (subreaper)
                found.append(pid)
        return found

    def _reap(self) -> int:
        count = 0
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return count
            if pid == 0:
                return count
            count += 1


def _exited(pid: int) -> bool:
    """Whether the child has ended, without reaping it."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _entries(folder: str) -> set[str]:
    """The names in ``folder`` (none if it cannot be read)."""
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def _empty(folder: str, keep: Collection[str] = ()) -> None:
    """Remove everything inside ``folder`` but the names in ``keep``, following no links."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name in keep:
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False) and not os.path.ismount(entry.path):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)


def main() -> None:  # pragma: no cover - runs inside the sandbox
    """Serve one submission's jobs over stdin/stdout, then exit."""
    control_in = os.dup(0)
    control_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    _prctl(_PR_SET_DUMPABLE, 0)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    sys.stdout = sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    zygote = Zygote(control_in, control_out)
    try:
        zygote.serve()
    except (OSError, WireError, KeyError, TypeError, ValueError) as exc:
        with contextlib.suppress(OSError, WireError):
            zygote.send(event="failed", reason=f"{type(exc).__name__}: {exc}")
    os._exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
