"""PostgresServer without a server: finding the binaries, the one-line reasons, failed starts.

A fake ``bin`` folder of shell scripts stands in for PostgreSQL's programs, so these run on any
machine; tests/integration/test_postgres.py starts the real server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from labkit.course import PostgresError, PostgresServer, postgres, postgres_missing


def fake_bin(folder: Path, *, initdb: str = "exit 0", pg_ctl: str = "exit 0") -> Path:
    """A folder with initdb and pg_ctl scripts running the given shell code."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in (("initdb", initdb), ("pg_ctl", pg_ctl)):
        script = folder / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


@pytest.fixture
def nothing_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No pg_ctl on PATH, and an empty folder where Debian keeps its versions."""
    debian = tmp_path / "usr-lib-postgresql"
    debian.mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(postgres, "_DEBIAN_ROOT", debian)
    return debian


@pytest.fixture
def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 4242)


def test_finds_debians_newest_version_off_path(nothing_on_path: Path) -> None:
    fake_bin(nothing_on_path / "13" / "bin")
    fake_bin(nothing_on_path / "15" / "bin")
    (nothing_on_path / "16").mkdir()  # no bin/pg_ctl: not a usable version
    assert postgres.find_postgres() == nothing_on_path / "15" / "bin"


def test_finds_the_programs_on_path_first(
    monkeypatch: pytest.MonkeyPatch, nothing_on_path: Path, tmp_path: Path
) -> None:
    fake_bin(nothing_on_path / "15" / "bin")
    on_path = fake_bin(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(on_path))
    assert postgres.find_postgres() == on_path.resolve()


def test_not_installed_says_how_to_install(nothing_on_path: Path) -> None:
    reason = postgres_missing()
    assert reason is not None
    assert "\n" not in reason
    assert "not installed" in reason
    assert "sudo apt-get install postgresql" in reason


def test_installed_as_a_normal_user_is_enough(nothing_on_path: Path, not_root: None) -> None:
    fake_bin(nothing_on_path / "15" / "bin")
    assert postgres_missing() is None


def test_root_needs_a_postgres_user(monkeypatch: pytest.MonkeyPatch, nothing_on_path: Path) -> None:
    fake_bin(nothing_on_path / "15" / "bin")
    monkeypatch.setattr(os, "geteuid", lambda: 0)

    def no_such_user(name: str) -> pwd.struct_passwd:
        raise KeyError(name)

    monkeypatch.setattr(pwd, "getpwnam", no_such_user)
    reason = postgres_missing()
    assert reason is not None
    assert "\n" not in reason
    assert "refuses to run as root" in reason
    assert "'postgres' user" in reason


def test_root_needs_runuser(monkeypatch: pytest.MonkeyPatch, nothing_on_path: Path) -> None:
    fake_bin(nothing_on_path / "15" / "bin")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(pwd, "getpwnam", lambda name: pwd.getpwuid(os.getuid()))
    reason = postgres_missing()
    assert reason is not None
    assert "runuser" in reason


def test_start_without_postgres_raises_the_reason(nothing_on_path: Path) -> None:
    with pytest.raises(PostgresError, match="sudo apt-get install postgresql"):
        PostgresServer().start()


def test_a_failed_initdb_is_one_line_and_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch, nothing_on_path: Path, not_root: None, tmp_path: Path
) -> None:
    fake_bin(
        nothing_on_path / "15" / "bin",
        initdb="echo 'initdb: warming up' >&2; echo 'initdb: error: disk full' >&2; exit 1",
    )
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(PostgresError) as info:
        PostgresServer().start()
    assert str(info.value) == "initdb failed: initdb: error: disk full"
    assert not list(tmp_path.glob("labkit-postgres-*"))


def test_a_failed_start_shows_the_servers_last_log_line(
    monkeypatch: pytest.MonkeyPatch, nothing_on_path: Path, not_root: None, tmp_path: Path
) -> None:
    log_and_fail = (
        'while [ $# -gt 0 ]; do [ "$1" = -l ] && log=$2; shift; done; '
        'echo "FATAL:  could not create shared memory segment" > "$log"; '
        "echo 'pg_ctl: could not start server' >&2; exit 1"
    )
    fake_bin(nothing_on_path / "15" / "bin", pg_ctl=log_and_fail)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(PostgresError) as info:
        PostgresServer().start()
    assert str(info.value) == (
        "pg_ctl failed: pg_ctl: could not start server; "
        "server log: FATAL: could not create shared memory segment"
    )
    assert not list(tmp_path.glob("labkit-postgres-*"))


def test_an_address_needs_a_running_server() -> None:
    server = PostgresServer()
    assert not server.running
    assert server.log() == ""
    with pytest.raises(PostgresError, match=r"call start\(\) first"):
        server.dsn  # noqa: B018
    server.stop()  # stopping a server that never started is harmless


def test_as_root_the_programs_run_as_the_postgres_user(
    monkeypatch: pytest.MonkeyPatch, nothing_on_path: Path
) -> None:
    fake_bin(nothing_on_path / "15" / "bin", initdb="exit 1")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(pwd, "getpwnam", lambda name: pwd.getpwuid(os.getuid()))
    monkeypatch.setattr(
        shutil, "which", lambda name: "/usr/sbin/runuser" if name == "runuser" else None
    )
    calls: list[list[str]] = []
    real_run = postgres.subprocess.run

    def recording_run(command: list[str], **options: object) -> object:
        calls.append(command)
        return real_run(command[4:], **options)  # skip "runuser -u postgres --"

    monkeypatch.setattr(postgres.subprocess, "run", recording_run)
    monkeypatch.setattr(os, "chown", lambda *args: None)
    with pytest.raises(PostgresError, match="initdb failed"):
        PostgresServer().start()
    assert calls[0][:4] == ["runuser", "-u", "postgres", "--"]
    assert calls[0][4].endswith("/initdb")
