"""The sandbox isolates each submission: its own user, processes, network, files and disk."""

from __future__ import annotations

import hmac
import os
import secrets
import socket
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from labkit.course.grading import sandbox as sandbox_module
from labkit.course.grading.sandbox import Limits, Sandbox, isolation, remove_stale_folders
from labkit.course.grading.wire import decode

ROOT = Path(__file__).resolve().parents[2]
FAST = Limits(wall=60, cpu=30, memory_mb=1024, cell=5, disk_mb=64)
PRELOAD = ("IPython", "labkit.course")
BWRAP = isolation().bwrap
needs_bwrap = pytest.mark.skipif(
    not BWRAP, reason="no working bubblewrap here (install it: sudo apt-get install bubblewrap)"
)


def learner(source: str, ident: str = "cell") -> dict[str, Any]:
    return {"id": ident, "source": source, "kind": "learner", "protects": []}


def probe_spec(body: str) -> dict[str, Any]:
    """A check job whose one check runs ``body`` and returns what it observed."""
    source = "def probe():\n" + textwrap.indent(textwrap.dedent(body), "    ")
    return {"kind": "check", "define": [source], "checks": ["probe"], "loop_factory": ""}


def run(sandbox: Sandbox, spec: dict[str, Any], cells: tuple[int, ...] = ()) -> Any:
    """Run a job; return its observation (or the reply itself if it has none)."""
    key = secrets.token_bytes(32)
    result = sandbox.run(secrets.token_hex(4), spec, cells, 60, key)
    assert result.status == "exit", result
    replies = []
    for signed in result.frames:
        tag, payload = signed[:32], signed[32:]
        assert hmac.compare_digest(tag, hmac.digest(key, payload, "sha256"))
        replies.append(decode(payload))
    reply = replies[-1]
    items = reply.get("items") or []
    if items and items[0]["status"] == "ok" and not items[0]["problem"]:
        return items[0]["observation"]
    return reply


def test_a_job_runs_the_cells_then_its_checks_and_replies_signed_plain_data() -> None:
    table = [
        learner(
            "import asyncio\nasync def triple(x):\n    await asyncio.sleep(1)\n    return 3 * x"
        )
    ]
    spec = probe_spec("import asyncio\nreturn asyncio.run(triple(4))")
    with Sandbox(FAST, table=table, preload=PRELOAD) as sandbox:
        assert run(sandbox, spec, (0,)) == 12
        again = run(sandbox, probe_spec("return 'triple' in globals()"), ())
        assert again["items"][0]["problem"] == "returned only None or booleans"


@needs_bwrap
def test_a_sandbox_has_its_own_user_processes_network_and_files(tmp_path: Path) -> None:
    secret = tmp_path / "instructor"
    secret.mkdir()
    (secret / "answers.txt").write_text("42")
    spec = probe_spec(
        """
        import os, socket
        try:
            socket.create_connection(("192.0.2.1", 80), timeout=2)
            network = "reachable"
        except OSError as error:
            network = type(error).__name__
        writable = []
        places = ("/etc/x", "/usr/x", "/x", "/sandbox/work/x", "/tmp/x", "/var/tmp/x", "/dev/shm/x")
        for path in places:
            try:
                with open(path, "w") as stream:
                    stream.write("x")
                writable.append(path)
            except OSError:
                pass
        return {
            "uid": os.getuid(),
            "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
            "root": sorted(os.listdir("/")),
            "secret": os.path.exists(SECRET),
            "kit": os.path.exists(INSTRUCTOR) or os.path.exists(LESSONS),
            "network": network,
            "writable": writable,
            "env": sorted(os.environ),
        }
        """.replace("SECRET", repr(str(secret)))
        .replace("INSTRUCTOR", repr(str(ROOT / "instructor")))
        .replace("LESSONS", repr(str(ROOT / "lessons")))
    )
    with Sandbox(FAST, preload=PRELOAD) as first, Sandbox(FAST, preload=PRELOAD) as second:
        seen = [run(first, spec), run(second, spec)]
    for observed in seen:
        assert observed["uid"] != os.getuid() or not isolation().own_uid
        assert observed["pids"][0] == 1  # the zygote is the namespace's init
        assert len(observed["pids"]) == 2  # and the job is the only other process
        assert observed["secret"] is False
        assert observed["kit"] is False  # instructor/ and lessons/ are simply not there
        assert observed["network"] in ("OSError", "ConnectionRefusedError", "TimeoutError")
        assert observed["writable"] == ["/sandbox/work/x", "/tmp/x", "/var/tmp/x", "/dev/shm/x"]
        assert "LABKIT_RESULTS" not in observed["env"]
        assert not any("SECRET" in name or "TOKEN" in name for name in observed["env"])
    if isolation().own_uid:
        assert seen[0]["uid"] != seen[1]["uid"]  # two sandboxes at once never share a uid


@needs_bwrap
def test_the_whole_sandbox_has_one_disk_quota() -> None:
    spec = probe_spec(
        """
        written = 0
        try:
            for number in range(10):
                with open(f"/tmp/part{number}", "wb") as stream:
                    for _ in range(60):
                        stream.write(b"x" * 1024 * 1024)
                        written += 1
        except OSError as error:
            return {"written_mb": written, "error": type(error).__name__, "errno": error.errno}
        return {"written_mb": written}
        """
    )
    with Sandbox(FAST, preload=PRELOAD) as sandbox:
        observed = run(sandbox, spec)
        after = run(sandbox, probe_spec("import os\nreturn {'files': os.listdir('/tmp'), 'n': 0}"))
    assert observed["errno"] == 28  # ENOSPC: 600 MB over ten files stops at the 64 MB quota
    assert observed["written_mb"] <= FAST.disk_mb
    assert after == {"files": [], "n": 0}  # and the next job starts with an empty /tmp


@needs_bwrap
def test_a_host_unix_socket_is_out_of_reach() -> None:
    path = Path(tempfile.gettempdir()) / f"labkit-test-{secrets.token_hex(4)}.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    spec = probe_spec(
        f"""
        import socket
        client = socket.socket(socket.AF_UNIX)
        try:
            client.connect({str(path)!r})
            return "connected"
        except OSError as error:
            return type(error).__name__
        """
    )
    try:
        with Sandbox(FAST, preload=PRELOAD) as sandbox:
            assert run(sandbox, spec) == "FileNotFoundError"
    finally:
        server.close()
        path.unlink()


@needs_bwrap
def test_a_job_cannot_open_the_zygotes_descriptors() -> None:
    spec = probe_spec(
        """
        import os
        zygote = os.getppid()
        assert zygote == 1
        found = []
        for path in (f"/proc/{zygote}/fd", f"/proc/{zygote}/fd/1", f"/proc/{zygote}/mem"):
            try:
                if path.endswith("/fd"):
                    os.listdir(path)
                else:
                    open(path, "rb").close()
                found.append(path + ": open")
            except OSError as error:
                found.append(type(error).__name__)
        return found
        """
    )
    with Sandbox(FAST, preload=PRELOAD) as sandbox:
        assert run(sandbox, spec) == ["PermissionError"] * 3


@needs_bwrap
def test_an_escapee_does_not_outlive_its_job_nor_its_sandbox() -> None:
    escape = learner(
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        while True:\n"
        "            with open('/tmp/escapee', 'a') as stream:\n"
        "                stream.write(str(os.getpid()))\n"
        "            time.sleep(0.01)\n"
        "    os._exit(0)\n"
    )
    spec = probe_spec(
        """
        import os
        return {"pids": len([p for p in os.listdir("/proc") if p.isdigit()]),
                "files": sorted(os.listdir("/tmp"))}
        """
    )
    with Sandbox(FAST, table=[escape], preload=PRELOAD) as sandbox:
        run(sandbox, probe_spec("return 1"), (0,))
        observed = run(sandbox, spec)
        uid = sandbox.uid
    assert observed == {"pids": 2, "files": []}  # the zygote and this job: nobody else
    if isolation().own_uid and uid is not None:
        assert _processes_of(uid) == []


def _processes_of(uid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                status = Path(f"/proc/{name}/status").read_text()
            except OSError:
                continue
            line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            if int(line.split()[1]) == uid:
                found.append(int(name))
    return found


@needs_bwrap
def test_one_learner_cannot_kill_or_poison_another() -> None:
    """A job that kills every process it may and fills its disk leaves the other sandbox whole."""
    attack = probe_spec(
        """
        import os, signal
        try:
            with open("/tmp/fill", "wb") as stream:
                while True:
                    stream.write(b"x" * 1024 * 1024)
        except OSError:
            pass
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != os.getpid():
                try:
                    os.kill(int(name), signal.SIGKILL)
                except OSError:
                    pass
        for pid in (-1, 0):
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        return "done"
        """
    )
    honest = probe_spec("return sum(range(10))")
    with Sandbox(FAST, preload=PRELOAD) as victim, Sandbox(FAST, preload=PRELOAD) as mallory:
        assert run(victim, honest) == 45
        result = mallory.run("attack", attack, (), 60, b"k" * 32)
        assert result.status in ("exit", "signal")  # kill(0, ...) ends the job itself
        assert result.signal in (None, 15)
        assert run(mallory, honest) == 45
        assert run(victim, honest) == 45  # and the other learner's sandbox never noticed


def test_stale_folders_of_a_dead_grader_are_removed_and_live_ones_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_module, "_lock_dir", lambda: tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    folders = tmp_path / "folders"
    dead = folders / "sb-1-dead"
    (dead / "work" / "locked").mkdir(parents=True)
    (dead / ".lock").write_text("")
    (dead / "work" / "link").symlink_to(outside)
    (dead / "work" / "locked").chmod(0)
    live = folders / "sb-2-live"
    live.mkdir()
    handle = os.open(live / ".lock", os.O_RDWR | os.O_CREAT)
    import fcntl

    fcntl.flock(handle, fcntl.LOCK_EX)
    locker = threading.Thread(target=lambda: None)
    locker.start()
    locker.join()
    try:
        removed = remove_stale_folders()
    finally:
        os.close(handle)
    assert removed == [dead]
    assert not dead.exists()
    assert live.is_dir()
    assert outside.read_text() == "keep me"


def test_without_bubblewrap_the_banner_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name: None)
    try:
        info = isolation(refresh=True)
        assert info.bwrap == ""
        assert any("install bubblewrap" in line for line in info.missing)
        assert any("instructor files" in line for line in info.missing)
    finally:
        monkeypatch.undo()
        isolation(refresh=True)
