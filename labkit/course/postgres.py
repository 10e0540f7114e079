"""A throwaway PostgreSQL server for the lessons and the kit's tests, from the installed binaries.

:class:`PostgresServer` runs ``initdb`` and ``pg_ctl`` in a temporary folder: a real server of
its own, with trust authentication, listening on a Unix socket in that folder only (no TCP port
to pick or to collide with), tuned for tests (no fsync), and deleted with its data when it stops.
PostgreSQL refuses to run as root; as root the server runs as the ``postgres`` user that
Debian's ``postgresql`` package creates (through ``runuser``). :func:`postgres_missing` says in
one line why no server can start here, and how to fix that, or returns None when one can.

The server outlives nothing that started it: a small reaper process (this file run as a script,
in a session of its own) holds a pipe from its owner and, when the pipe closes, because
``stop()`` closed it or because the owner died, even by SIGKILL as a killed Jupyter kernel does,
stops the server and deletes its folder.

Example::

    with PostgresServer() as server:
        conn = await asyncpg.connect(server.dsn)
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

__all__ = ["INSTALL_HINT", "PostgresError", "PostgresServer", "find_postgres", "postgres_missing"]

INSTALL_HINT = "install it with: sudo apt-get install postgresql (or `make postgres-deps` as root)"
_SERVICE_USER = "postgres"
_PORT = 5432  # only names the socket file (.s.PGSQL.5432): nothing listens on TCP
_DEBIAN_ROOT = Path("/usr/lib/postgresql")
_TIMEOUT = 120
_SETTINGS = {
    "listen_addresses": "''",
    "fsync": "off",  # a test server's data is thrown away: durability only costs time
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "40",
}


class PostgresError(RuntimeError):
    """A PostgreSQL server could not be started or stopped; the message says why."""


def find_postgres() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, else Debian's newest version.

    Example::

        bin_dir = find_postgres()   # e.g. /usr/lib/postgresql/15/bin, or None
    """
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    versions = []
    if _DEBIAN_ROOT.is_dir():
        for folder in _DEBIAN_ROOT.iterdir():
            if folder.name.isdigit() and (folder / "bin" / "pg_ctl").is_file():
                versions.append((int(folder.name), folder / "bin"))
    return max(versions)[1] if versions else None


def postgres_missing() -> str | None:
    """One line saying why no PostgreSQL server can start here and how to fix it, or None.

    Example::

        reason = postgres_missing()
        if reason:
            pytest.skip(reason)
    """
    bin_dir = find_postgres()
    if bin_dir is None or not (bin_dir / "initdb").is_file():
        return f"PostgreSQL is not installed here (no initdb or pg_ctl found); {INSTALL_HINT}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(_SERVICE_USER)
        except KeyError:
            return (
                "PostgreSQL refuses to run as root and there is no 'postgres' user to run it "
                f"as; {INSTALL_HINT}, or run as a normal user"
            )
        if shutil.which("runuser") is None:
            return "PostgreSQL refuses to run as root and `runuser` (util-linux) is missing"
    return None


class PostgresServer:
    """A real PostgreSQL server in a temporary folder, for one test session; stop() deletes it.

    ``dsn`` is the address asyncpg (or psycopg) connects to, as the superuser ``postgres``,
    database ``postgres``. Start and stop it yourself, or use it as a context manager.

    Example::

        with PostgresServer() as server:
            async with asyncpg.create_pool(server.dsn) as pool:
                assert await pool.fetchval("SELECT 1") == 1
    """

    def __init__(self) -> None:
        self._folder: Path | None = None
        self._bin: Path | None = None
        self._as_root = False
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], PostgresServer] | None = None

    @property
    def running(self) -> bool:
        """Whether start() has run and stop() has not."""
        return self._folder is not None

    @property
    def socket_dir(self) -> str:
        """The folder holding the server's Unix socket: the ``host`` a client connects to."""
        if self._folder is None:
            raise PostgresError("the server is not running: call start() first")
        return str(self._folder / "socket")

    @property
    def dsn(self) -> str:
        """``postgresql://postgres@/postgres?host=<socket folder>&port=5432``."""
        return f"postgresql://postgres@/postgres?host={quote(self.socket_dir)}&port={_PORT}"

    def start(self) -> PostgresServer:
        """initdb a fresh cluster in a temporary folder and start it; returns once it accepts."""
        if self._folder is not None:
            return self
        reason = postgres_missing()
        if reason:
            raise PostgresError(reason)
        self._bin = find_postgres()
        self._as_root = os.geteuid() == 0
        folder = Path(tempfile.mkdtemp(prefix="labkit-postgres-"))
        (folder / "socket").mkdir()
        if self._as_root:
            account = pwd.getpwnam(_SERVICE_USER)
            for path in (folder, folder / "socket"):
                os.chown(path, account.pw_uid, account.pw_gid)
        self._folder = folder
        reaper = subprocess.Popen(
            [sys.executable, "-I", __file__, str(folder), *self._command("pg_ctl")],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a signal to the owner's process group spares it
        )
        self._finalizer = weakref.finalize(self, _release, reaper)
        try:
            self._run(
                "initdb", "-D", str(folder / "data"), "-U", "postgres", "-A", "trust",
                "-E", "UTF8", "--locale=C", "--no-sync",
            )  # fmt: skip
            options = " ".join(f"-c {name}={value}" for name, value in _SETTINGS.items())
            options += f" -c unix_socket_directories='{folder / 'socket'}' -p {_PORT}"
            self._run(
                "pg_ctl", "start", "-D", str(folder / "data"), "-w", "-s",
                "-l", str(folder / "server.log"), "-o", options,
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended) and delete its folder."""
        finalizer, self._finalizer, self._folder = self._finalizer, None, None
        if finalizer is not None:
            finalizer()

    def log(self) -> str:
        """What the server wrote to its log so far (startup problems show up here)."""
        if self._folder is None:
            return ""
        path = self._folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _command(self, program: str, *args: str) -> list[str]:
        assert self._bin is not None
        command = [str(self._bin / program), *args]
        return ["runuser", "-u", _SERVICE_USER, "--", *command] if self._as_root else command

    def _run(self, program: str, *args: str) -> None:
        assert self._folder is not None
        done = subprocess.run(
            self._command(program, *args),
            cwd=self._folder,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()
            last = said[-1] if said else f"exit status {done.returncode}"
            log = self.log().strip().splitlines()
            detail = f"; server log: {_short(log[-1])}" if log else ""
            raise PostgresError(f"{program} failed: {_short(last)}{detail}")


def _release(reaper: subprocess.Popen[bytes]) -> None:
    """Close the reaper's pipe, so that it stops the server, and wait until it has."""
    assert reaper.stdin is not None
    reaper.stdin.close()
    try:
        reaper.wait(timeout=_TIMEOUT)
    except subprocess.TimeoutExpired:
        reaper.kill()
        reaper.wait()


def _reap(folder: Path, pg_ctl: list[str]) -> None:
    """The reaper's work: wait for the owner's pipe to close, then stop and delete the server."""
    sys.stdin.buffer.read()
    if (folder / "data" / "postmaster.pid").exists():
        subprocess.run(
            [*pg_ctl, "stop", "-D", str(folder / "data"), "-m", "fast", "-w", "-s"],
            cwd=folder,
            capture_output=True,
            timeout=_TIMEOUT,
            check=False,
        )
    shutil.rmtree(folder, ignore_errors=True)


def _short(text: str) -> str:
    return re.sub(r"\s+", " ", text)[:300]


if __name__ == "__main__":  # the reaper: python -I postgres.py FOLDER PG_CTL...
    _reap(Path(sys.argv[1]), sys.argv[2:])
