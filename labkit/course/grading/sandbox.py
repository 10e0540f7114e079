"""The sandbox: one isolated process tree per submission, running its jobs, reporting plain data.

A learner's notebook is untrusted code. :class:`Sandbox` starts, per submission, a zygote
(:mod:`~labkit.course.grading.zygote`) inside Debian's **bubblewrap** (``bwrap``) and sends it
jobs one at a time; each job runs in a fresh process forked from the zygote, and what comes back
is framed plain data (:mod:`~labkit.course.grading.wire`) that the grader decodes strictly.

With bwrap, a sandbox has: its own user id (when the grader runs as root: a uid from a range,
one lock file per slot, so two graders running at once never share one), its own PID namespace
(no view of other processes, and every process dies with the sandbox, double-forked escapees
included), no network (a private loopback; host Unix sockets are not mounted, abstract ones are
per network namespace), private ``/tmp``, ``/var/tmp`` and ``/dev/shm``, a size-capped tmpfs as
its only writable space (a disk quota for the whole sandbox), a root filesystem built from
read-only binds of only what Python and labkit need (so instructor files, lesson sources, the
gradebook and other submissions are simply not there), no new privileges and no nested user
namespaces. Without bwrap, or where it cannot start (no unprivileged user namespaces), the
zygote runs as a plain child process with limits only, and :func:`isolation` says which
protections are missing; a killed grader's leftover folders are removed by the next run.

Example::

    with Sandbox(Limits(), plan, preload=["IPython", "pytest"]) as sandbox:
        for job in plan.jobs:
            result = sandbox.run(job)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labkit.course.grading.wire import MAX_BYTES, WireError, decode, encode, frame

__all__ = [
    "Isolation",
    "JobResult",
    "Limits",
    "Sandbox",
    "SandboxError",
    "isolation",
    "stop_all",
]

UID_BASE = 61000
UID_SLOTS = 1000
_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()
_PROBE_LOCK = threading.Lock()
_PROBED: dict[str, Isolation] = {}


@dataclass(frozen=True)
class Limits:
    """What one submission may use: wall and CPU seconds, memory, time per cell, disk.

    Example::

        Limits(wall=120, cpu=90, memory_mb=1024, cell=30, disk_mb=128)
    """

    wall: float = 300.0
    cpu: int = 240
    memory_mb: int = 2048
    cell: float = 60.0
    file_mb: int = 64
    disk_mb: int = 256


class SandboxError(Exception):
    """The sandbox could not start or stopped answering; the message says why, for a person.

    ``environment`` is true when the cause is the grading machine (a module the lesson needs is
    missing, bwrap failed), not the submission: such a run must not be recorded as a grade.
    """

    def __init__(self, message: str, *, environment: bool = False) -> None:
        super().__init__(message)
        self.environment = environment


@dataclass
class JobResult:
    """How one job's process ended and the frames it wrote (still undecoded, untrusted).

    ``status`` is ``exit`` (``code`` set), ``signal`` (``signal`` set), ``cpu`` (the submission's
    CPU time was used up before the job could start) or ``lost`` (the sandbox itself ended).
    ``killed`` is ``wall`` or ``flood`` when the zygote stopped the process.

    Example::

        result = sandbox.run(job)
        print(result.status, len(result.frames))
    """

    frames: list[bytes] = field(default_factory=list)
    status: str = "lost"
    code: int | None = None
    signal: int | None = None
    cpu: float = 0.0
    cpu_limit: float = 0.0
    killed: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Isolation:
    """What this machine's sandboxes get: whether bwrap works, and the lines for the banner.

    Example::

        print("sandbox: " + "; ".join(isolation().applied))
    """

    bwrap: str
    own_uid: bool
    applied: tuple[str, ...]
    missing: tuple[str, ...]
    disable_userns: bool = True


# -- what the sandbox mounts ------------------------------------------------------------------


def _python_roots() -> list[str]:
    """The folders the sandbox's Python must read: the installation, the venv, labkit."""
    import labkit

    roots = {sys.base_prefix, sys.prefix, str(Path(labkit.__file__).resolve().parent)}
    real = os.path.realpath(sys.executable)
    roots.add(str(Path(real).parent.parent))
    resolved = sorted({os.path.realpath(r) for r in roots if os.path.isdir(r)})
    return [r for r in resolved if not any(r != o and r.startswith(o + os.sep) for o in resolved)]


def _system_roots() -> list[str]:
    return [p for p in ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin") if os.path.lexists(p)]


def _traversable(path: str, uid: int, gid: int) -> bool:
    """Whether ``uid`` can reach ``path`` (every folder on the way lets it through)."""
    current = Path(path)
    for part in [current, *current.parents]:
        try:
            info = os.stat(part)
        except OSError:
            return False
        if info.st_uid == uid:
            needed = 0o100
        elif info.st_gid == gid:
            needed = 0o010
        else:
            needed = 0o001
        if not info.st_mode & needed:
            return False
    return True


def _etc_files(uid: int, gid: int) -> dict[str, bytes]:
    return {
        "/etc/passwd": f"learner:x:{uid}:{gid}:learner:/sandbox/work:/bin/false\n".encode(),
        "/etc/group": f"learner:x:{gid}:\n".encode(),
        "/etc/hosts": b"127.0.0.1 localhost\n::1 localhost\n",
        "/etc/nsswitch.conf": b"passwd: files\ngroup: files\nhosts: files\n",
    }


def _matplotlib_cache() -> Path | None:
    """The grader's own matplotlib font cache, copied into sandboxes that use matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    folder = Path(matplotlib.get_cachedir())
    found = sorted(folder.glob("fontlist-v*.json"))
    return found[-1] if found else None


SANDBOX = "/sandbox"
SCRATCH = ["/sandbox/work", "/sandbox/tmp", "/sandbox/vartmp", "/sandbox/mpl", "/sandbox/ipython"]


def _environment(home: str, tmp: str, mpl: str, ipython: str) -> dict[str, str]:
    """The zygote's whole environment: nothing of the grader's is inherited."""
    bindir = str(Path(sys.executable).parent)
    return {
        "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": tmp,
        "USER": "learner",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "MPLCONFIGDIR": mpl,
        "IPYTHONDIR": ipython,
        "MALLOC_ARENA_MAX": "2",
        # nbval's import builds a URI grammar (~5 s per process) and no lesson cell uses it.
        "PYTEST_ADDOPTS": "-p no:nbval",
    }


# -- slots: one user id per running sandbox ---------------------------------------------------


def _lock_dir() -> Path:
    """The grader's own folder: /run/labkit-grade as root, else one in the temporary folder.

    As root it must let the sandbox users through (the launcher's staging folder is inside);
    what is private (slot locks, fallback folders) sits in subfolders only root can enter.
    """
    if os.geteuid() == 0:
        base = Path("/run/labkit-grade")
        base.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(base, 0o755)
    else:
        base = Path(tempfile.gettempdir()) / f"labkit-grade-{os.geteuid()}"
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
    return base


class _Slot:
    """A user id held for one sandbox: a lock file per uid, so concurrent graders never share.

    The lock is released by the kernel if the grader dies, so a killed grader frees its slots;
    before use, any process still running under the uid is killed.
    """

    def __init__(self) -> None:
        folder = _lock_dir() / "slots"
        folder.mkdir(mode=0o700, exist_ok=True)
        start = secrets.randbelow(UID_SLOTS)
        for step in range(UID_SLOTS):
            number = (start + step) % UID_SLOTS
            uid = UID_BASE + number
            with contextlib.suppress(KeyError):
                pwd.getpwuid(uid)
                continue  # a real user of this machine: never borrow it
            handle = os.open(folder / f"uid-{uid}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                continue
            self.uid = uid
            self.handle = handle
            _kill_user(uid)
            return
        raise SandboxError("every sandbox user id is in use", environment=True)

    def release(self) -> None:
        """Give the uid back (after killing anything left under it)."""
        _kill_user(self.uid)
        with contextlib.suppress(OSError):
            os.close(self.handle)


def _kill_user(uid: int) -> None:
    """Kill every process running under ``uid`` (a slot is only ever given to one sandbox)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", encoding="ascii", errors="replace") as status:
                for line in status:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            os.kill(int(name), signal.SIGKILL)
                        break
        except (OSError, ValueError):
            continue


# -- folders for the unsandboxed fallback -----------------------------------------------------

_SWEPT = False
_SWEEP_LOCK = threading.Lock()


def _folders() -> Path:
    folder = _lock_dir() / "folders"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def remove_stale_folders() -> list[Path]:
    """Remove sandbox folders whose grader is gone (its lock is free); return what was removed.

    Each folder holds a lock file its grader keeps locked; a folder whose lock can be taken
    belongs to a grader that died (``kill -9``). Removal never follows symbolic links a
    learner may have planted.

    Example::

        removed = remove_stale_folders()
    """
    removed: list[Path] = []
    base = _folders()
    if not base.is_dir():
        return removed
    for folder in sorted(base.iterdir()):
        lock = folder / ".lock"
        if folder.is_symlink() or not folder.is_dir():
            with contextlib.suppress(OSError):
                folder.unlink()
            continue
        try:
            handle = os.open(lock, os.O_RDWR)
        except OSError:
            handle = -1
        if handle >= 0:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                continue  # a live grader's folder
        _make_writable(folder)
        shutil.rmtree(folder, ignore_errors=True)
        if handle >= 0:
            os.close(handle)
        removed.append(folder)
    return removed


def _make_writable(folder: Path) -> None:
    for root, dirs, _ in os.walk(folder, followlinks=False):
        for name in dirs:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o700)


# -- probing ------------------------------------------------------------------------------------


def isolation(*, refresh: bool = False) -> Isolation:
    """What sandboxes on this machine get (probed once per process: bwrap is started once).

    Example::

        info = isolation()
        if info.missing:
            print("not protected: " + "; ".join(info.missing))
    """
    with _PROBE_LOCK:
        if "info" in _PROBED and not refresh:
            return _PROBED["info"]
        info = _probe()
        _PROBED["info"] = info
        return info


def _probe() -> Isolation:
    bwrap = shutil.which("bwrap") or ""
    root = os.geteuid() == 0
    common = (
        "CPU, memory, file-size and wall-time limits",
        "a scrubbed environment (nothing of the grader's)",
        "hidden checks sent only to the job that runs them, never written to disk",
    )
    fallback_missing = (
        "no separate user id, PID namespace or network namespace",
        "instructor files, the gradebook and other submissions stay readable",
        "/tmp is shared and there is no disk quota",
    )
    hint = (
        "install bubblewrap (sudo apt-get install bubblewrap)"
        if not bwrap
        else "bwrap could not start here (it needs unprivileged user namespaces)"
    )
    if bwrap:
        for disable in (True, False):
            worked, detail = _try_bwrap(bwrap, root, disable)
            if worked:
                applied = [
                    "bubblewrap sandbox per submission",
                    "its own user id per sandbox" if root else "runs as your own user",
                    "its own PID namespace (no view of other processes; nothing outlives it)",
                    "no network (a private loopback only; host sockets unreachable)",
                    "private /tmp, /var/tmp and /dev/shm in a size-capped tmpfs (disk quota)",
                    "only Python and labkit mounted, read-only: instructor files, lessons, "
                    "gradebook and other submissions are not there",
                    *common,
                ]
                missing = [] if root else ["a separate user id per sandbox (grade as root)"]
                if not disable:
                    missing.append("nested user namespaces stay possible (bwrap before 0.8)")
                return Isolation(bwrap, root, tuple(applied), tuple(missing), disable)
            hint = f"bwrap could not start here: {detail}"
    return Isolation(
        "",
        False,
        ("a plain child process", *common),
        (*fallback_missing, f"to get them: {hint}"),
    )


def _try_bwrap(bwrap: str, root: bool, disable_userns: bool) -> tuple[bool, str]:
    """Start a trivial program the way sandboxes start; whether it worked, and why not."""
    slot = _Slot() if root else None
    uid = slot.uid if slot is not None else os.getuid()
    fds: list[int] = []
    try:
        command, fds, user = _bwrap_command(
            bwrap,
            uid,
            uid,
            Limits(),
            [sys.executable, "-I", "-S", "-c", "print(1)"],
            hide=(),
            disable_userns=disable_userns,
        )
        done = subprocess.run(
            command,
            pass_fds=fds,
            capture_output=True,
            timeout=60,
            check=False,
            env={"PATH": "/usr/bin:/bin"},
            **user,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if slot is not None:
            slot.release()
    if done.returncode == 0 and done.stdout.strip() == b"1":
        return True, ""
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    return False, lines[-1] if lines else f"exit status {done.returncode}"


def _bwrap_command(
    bwrap: str,
    uid: int,
    gid: int,
    limits: Limits,
    argv: Sequence[str],
    *,
    hide: Sequence[Path],
    disable_userns: bool,
    font_cache: Path | None = None,
) -> tuple[list[str], list[int], dict[str, Any]]:
    """The command that starts ``argv`` in a sandbox, the descriptors it needs, Popen options."""
    root = os.geteuid() == 0
    fds: list[int] = []
    args = [
        bwrap,
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "sandbox",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        # The zygote is the namespace's init: it reaps every orphan, no signal from inside the
        # sandbox can kill it, and when it ends the kernel ends everything else in it.
        "--as-pid-1",
    ]
    if disable_userns:
        args.append("--disable-userns")
    for key, value in _environment(
        "/sandbox/work", "/tmp", "/sandbox/mpl", "/sandbox/ipython"
    ).items():
        args += ["--setenv", key, value]
    staged: list[str] = []
    stage = str(_lock_dir() / "stage")
    for path in _system_roots():
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        else:
            args += ["--ro-bind", path, path]
    system = _system_roots()
    for path in _python_roots():
        if any(path == s or path.startswith(s + "/") for s in system):
            continue
        if root and not _traversable(path, uid, gid):
            args += ["--ro-bind", f"{stage}/{len(staged)}", path]
            staged.append(path)
        else:
            args += ["--ro-bind", path, path]
    for path in ("/etc/ld.so.cache", "/etc/localtime", "/etc/fonts"):
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    for path, content in _etc_files(uid, gid).items():
        read, write = os.pipe()
        os.write(write, content)
        os.close(write)
        fds.append(read)
        args += ["--ro-bind-data", str(read), path]
    args += ["--proc", "/proc", "--dev", "/dev"]
    shm = max(1, min(64, limits.disk_mb // 4)) * 1024 * 1024
    args += ["--size", str(shm), "--tmpfs", "/dev/shm"]
    args += ["--size", str(limits.disk_mb * 1024 * 1024), "--perms", "0755", "--tmpfs", SANDBOX]
    for folder in SCRATCH:
        args += ["--dir", folder]
    args += ["--symlink", "/sandbox/tmp", "/tmp", "--symlink", "/sandbox/vartmp", "/var/tmp"]
    if font_cache is not None:
        handle = os.open(font_cache, os.O_RDONLY)
        fds.append(handle)
        args += ["--file", str(handle), f"/sandbox/mpl/{font_cache.name}"]
    for hidden in hide:
        text = str(hidden)
        if any(text == r or text.startswith(r.rstrip("/") + "/") for r in _python_roots()):
            args += ["--tmpfs", text] if hidden.is_dir() else ["--ro-bind", "/dev/null", text]
    args += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/sandbox/work"]
    args += list(argv)
    user: dict[str, Any] = {}
    if root and staged:
        launcher = str(Path(__file__).with_name("launcher.py"))
        command = [sys.executable, "-I", "-S", launcher, stage, str(uid), str(gid), *staged, "--"]
        Path(stage).mkdir(mode=0o755, parents=True, exist_ok=True)
        return command + args, fds, user
    if root:
        user = {"user": uid, "group": gid, "extra_groups": []}
    return args, fds, user


# -- the sandbox ------------------------------------------------------------------------------


class Sandbox:
    """One submission's sandbox: a zygote to start, jobs to run one at a time, then the end.

    Example::

        with Sandbox(limits, prerun=plan.prerun, table=plan.table) as sandbox:
            result = sandbox.run(job.id, job.spec, job.cells, wall=60)
    """

    def __init__(
        self,
        limits: Limits,
        *,
        prerun: Sequence[dict[str, Any]] = (),
        table: Sequence[dict[str, Any]] = (),
        preload: Sequence[str] = (),
        hide: Sequence[Path] = (),
        font_cache: bool = False,
    ) -> None:
        self.limits = limits
        self.prerun = list(prerun)
        self.table = list(table)
        self.preload = list(preload)
        self.hide = [Path(p) for p in hide]
        self.font_cache = font_cache
        self.info = isolation()
        self.proc: subprocess.Popen[bytes] | None = None
        self.slot: _Slot | None = None
        self.folder: Path | None = None
        self.folder_lock = -1
        self.buffer = b""
        self.started = time.monotonic()
        self.deadline = self.started + limits.wall
        self.ready: dict[str, Any] = {}
        self.uid: int | None = None
        self.cpu = 0.0

    # -- starting and stopping --

    def __enter__(self) -> Sandbox:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> dict[str, Any]:
        """Start the zygote, send it the submission's cells, wait until it is ready."""
        argv = [sys.executable, "-I", "-m", "labkit.course.grading.zygote"]
        fds: list[int] = []
        processes = 0
        if self.info.bwrap:
            uid = gid = os.getuid()
            if self.info.own_uid:
                self.slot = _Slot()
                uid = gid = self.slot.uid
                processes = 512
            self.uid = uid
            command, fds, user = _bwrap_command(
                self.info.bwrap,
                uid,
                gid,
                self.limits,
                argv,
                hide=self.hide,
                disable_userns=self.info.disable_userns,
                font_cache=_matplotlib_cache() if self.font_cache else None,
            )
            env = {"PATH": "/usr/bin:/bin"}
            cwd = "/"
            scratch = [*SCRATCH, "/dev/shm"]
            pid_namespace = True
        else:
            global _SWEPT
            with _SWEEP_LOCK:
                if not _SWEPT:
                    remove_stale_folders()
                    _SWEPT = True
            self.folder = _folders() / f"sb-{os.getpid()}-{secrets.token_hex(6)}"
            self.folder.mkdir(parents=True, mode=0o700)
            self.folder_lock = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self.folder_lock, fcntl.LOCK_EX)
            work = self.folder / "work"
            for name in ("work", "tmp", "mpl", "ipython"):
                (self.folder / name).mkdir()
            command, user = argv, {}
            env = _environment(
                str(work),
                str(self.folder / "tmp"),
                str(self.folder / "mpl"),
                str(self.folder / "ipython"),
            )
            cwd = str(work)
            scratch = [str(work), str(self.folder / "tmp"), str(self.folder / "ipython")]
            pid_namespace = False
        try:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                pass_fds=fds,
                start_new_session=True,
                close_fds=True,
                **user,
            )
        finally:
            for fd in fds:
                os.close(fd)
        with _LIVE_LOCK:
            _LIVE.add(self.proc)
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        limits = asdict(self.limits)
        limits["processes"] = processes
        self._send(
            {
                "event": "setup",
                "limits": limits,
                "preload": self.preload,
                "prerun": self.prerun,
                "table": self.table,
                "scratch": scratch,
                "pid_namespace": pid_namespace,
            }
        )
        message = self._receive(self.deadline)
        if message is None:
            raise SandboxError(self._why_gone(), environment=True)
        if message.get("event") == "failed":
            module = message.get("module")
            if module:
                raise SandboxError(
                    f"the sandbox's Python cannot import {module} ({message.get('reason')})",
                    environment=True,
                )
            raise SandboxError(f"the sandbox failed: {message.get('reason')}", environment=True)
        if message.get("event") != "ready":
            raise SandboxError("the sandbox sent something unexpected", environment=True)
        self.ready = message
        return message

    def _why_gone(self) -> str:
        proc = self.proc
        if proc is None:
            return "the sandbox did not start"
        if time.monotonic() >= self.deadline:
            return "the sandbox did not get ready within the wall-time limit"
        detail = ""
        if proc.stderr is not None:
            with contextlib.suppress(OSError, ValueError):
                os.set_blocking(proc.stderr.fileno(), False)
                detail = (proc.stderr.read(4000) or b"").decode(errors="replace").strip()
        code = proc.poll()
        tail = detail.splitlines()[-1] if detail else f"exit status {code}"
        return f"the sandbox ended before it was ready ({tail})"

    def close(self) -> None:
        """End the zygote and everything under it; release the slot and the folder."""
        proc = self.proc
        if proc is not None:
            with contextlib.suppress(OSError, SandboxError):
                self._send({"event": "end"})
                bye = self._receive(time.monotonic() + 5)
                if bye is not None and bye.get("event") == "bye":
                    self.cpu = _float(bye.get("cpu"))
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            # Let it end by itself, so its processes are reaped and their CPU time counted.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            _kill_group(proc)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            with _LIVE_LOCK:
                _LIVE.discard(proc)
            self.proc = None
        if self.slot is not None:
            self.slot.release()
            self.slot = None
        if self.folder is not None:
            _make_writable(self.folder)
            shutil.rmtree(self.folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.close(self.folder_lock)
            self.folder = None

    # -- jobs --

    @property
    def remaining(self) -> float:
        """Wall seconds left for this submission."""
        return self.deadline - time.monotonic()

    def run(
        self,
        job_id: str,
        spec: dict[str, Any],
        cells: Sequence[int],
        wall: float,
        key: bytes = b"",
        skip: dict[int, str] | None = None,
    ) -> JobResult:
        """Run one job in a fresh process; never raises for anything the job did.

        ``key`` is the job's one-time key: the job signs its frames with it, so the grader can
        tell them from bytes anything else wrote to the job's pipe. ``skip`` maps cells not to
        run again (they ran past the per-cell limit before) to the error to report for them.
        """
        if self.proc is None or self.proc.poll() is not None:
            return JobResult(reason="the sandbox is gone")
        wall = max(0.1, min(wall, self.remaining))
        request: dict[str, Any] = {
            "event": "job",
            "id": job_id,
            "spec": spec,
            "cells": list(cells),
            "wall": wall,
            "key": key,
            "skip": dict(skip or {}),
        }
        try:
            self._send(request)
        except SandboxError:
            return JobResult(reason="the sandbox is gone")
        message = self._receive(min(self.deadline, time.monotonic() + wall + 10))
        if message is None:
            if time.monotonic() >= self.deadline:
                return JobResult(status="wall", killed="wall", reason="wall")
            return JobResult(reason="the sandbox ended")
        if message.get("event") != "job" or message.get("id") != job_id:
            return JobResult(reason="the sandbox answered out of turn")
        frames = message.get("frames")
        return JobResult(
            frames=[f for f in frames if isinstance(f, bytes)] if isinstance(frames, list) else [],
            status=str(message.get("status", "lost")),
            code=_int(message.get("code")),
            signal=_int(message.get("signal")),
            cpu=_float(message.get("cpu")),
            cpu_limit=_float(message.get("cpu_limit")),
            killed=str(message.get("killed", "")),
        )

    # -- the channel --

    def _send(self, message: dict[str, Any]) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None:
            raise SandboxError("the sandbox is not running")
        data = frame(encode(message))
        try:
            proc.stdin.write(data)
            proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise SandboxError(f"the sandbox stopped listening ({exc})") from exc

    def _receive(self, deadline: float) -> dict[str, Any] | None:
        """The zygote's next message, or None if it ended or the deadline passed."""
        proc = self.proc
        if proc is None or proc.stdout is None:
            return None
        fd = proc.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                if len(self.buffer) >= 4:
                    size = int.from_bytes(self.buffer[:4], "big")
                    if size > 4 * MAX_BYTES:
                        return None
                    if len(self.buffer) >= 4 + size:
                        payload = self.buffer[4 : 4 + size]
                        self.buffer = self.buffer[4 + size :]
                        try:
                            message = decode(payload, max_bytes=4 * MAX_BYTES)
                        except WireError:
                            return None
                        return message if isinstance(message, dict) else None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                if not selector.select(remaining):
                    continue
                try:
                    chunk = os.read(fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    return None
                self.buffer += chunk


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def _float(value: Any) -> float:
    return float(value) if type(value) in (int, float) else 0.0


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def stop_all() -> None:
    """Kill every sandbox still running (on Ctrl-C), so their graders return at once.

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
