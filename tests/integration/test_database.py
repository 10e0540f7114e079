"""Lesson 12's database tier against a real PostgreSQL server, outside the notebook.

One server for the session (``PostgresServer``, as root run as the ``postgres`` user), an asyncpg
pool on the session's loop, and a rolled-back transaction per test: the fixtures the lesson
teaches, checked as a suite runs them. Also what the lesson claims about the server and about
labkit's virtual clock while a real database connection is open. Where PostgreSQL cannot start
(no binaries, or root without a ``postgres`` user) every test skips with one line saying why.
"""

from __future__ import annotations

import asyncio
import os
import pwd
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

import labkit
from labkit.course import PostgresError, PostgresServer, postgres_missing

MISSING = postgres_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
on_the_session_loop = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="session")
def server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pool(server: PostgresServer) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(server.dsn, min_size=1, max_size=4) as pool:
        await pool.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text UNIQUE)")
        yield pool


@pytest_asyncio.fixture(loop_scope="session")
async def db(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            yield conn
        finally:
            await transaction.rollback()


@on_the_session_loop
async def test_the_server_is_private_and_not_run_by_root(db: asyncpg.Connection) -> None:
    assert await db.fetchval("SHOW listen_addresses") == ""  # a Unix socket only
    assert await db.fetchval("SHOW fsync") == "off"
    pid = await db.fetchval("SELECT pg_backend_pid()")
    status = Path(f"/proc/{pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    expected = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert uid == expected


@on_the_session_loop
async def test_a_test_writes(db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO notes (body) VALUES ('written by one test')")
    assert await db.fetchval("SELECT count(*) FROM notes") == 1


@on_the_session_loop
async def test_the_next_test_finds_it_rolled_back(db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO notes (body) VALUES ('written by one test')")  # no duplicate
    assert await db.fetchval("SELECT count(*) FROM notes") == 1


@on_the_session_loop
async def test_a_savepoint_keeps_the_test_transaction_usable(db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO notes (body) VALUES ('once')")
    with pytest.raises(asyncpg.UniqueViolationError):
        async with db.transaction():
            await db.execute("INSERT INTO notes (body) VALUES ('once')")
    assert await db.fetchval("SELECT count(*) FROM notes") == 1
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute("INSERT INTO notes (body) VALUES ('once')")
    with pytest.raises(asyncpg.InFailedSQLTransactionError):
        await db.fetchval("SELECT count(*) FROM notes")


@on_the_session_loop
async def test_a_pool_used_from_another_loop_fails_loudly(server: PostgresServer) -> None:
    loop = asyncio.new_event_loop()

    async def make_pool() -> asyncpg.Pool:
        return await asyncpg.create_pool(server.dsn, min_size=1, max_size=1)

    async def close(pool: asyncpg.Pool) -> None:
        async with asyncio.timeout(10):
            await pool.close()

    other = await asyncio.to_thread(loop.run_until_complete, make_pool())
    try:
        with pytest.raises(
            asyncpg.InterfaceError, match="another operation is in progress"
        ) as info:
            async with asyncio.timeout(10):
                await other.fetchval("SELECT 1")
        assert isinstance(info.value.__context__, RuntimeError)
        assert "attached to a different loop" in str(info.value.__context__)
    finally:
        await asyncio.to_thread(loop.run_until_complete, close(other))
        loop.close()


def test_the_virtual_clock_follows_real_time_while_a_connection_is_open(
    server: PostgresServer,
) -> None:
    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        seen: list[object] = []
        start = loop.time()
        await asyncio.sleep(3600)
        seen.append(loop.time() - start)  # nothing real in flight: the clock jumped
        conn = await asyncpg.connect(server.dsn)
        start = loop.time()
        try:
            async with asyncio.timeout(0.2):
                await conn.execute("SELECT pg_sleep(10)")
        except TimeoutError:
            seen.append("timeout")
        seen.append(round(loop.time() - start, 9))  # the timer fired when 0.2 real s passed
        seen.append(await conn.fetchval("SELECT 1"))  # the query was cancelled, not left over
        await conn.close()
        start = loop.time()
        await asyncio.sleep(3600)
        seen.append(loop.time() - start)  # closed: the clock jumps again
        return seen

    assert labkit.run(main()) == [3600.0, "timeout", 0.2, 1, 3600.0]


def test_stop_deletes_the_server_and_its_folder() -> None:
    server = PostgresServer().start()
    folder = Path(server.socket_dir).parent
    assert (folder / "data" / "postmaster.pid").exists()
    server.stop()
    assert not folder.exists()
    assert not server.running
    with pytest.raises(PostgresError, match="not running"):
        server.dsn  # noqa: B018
    server.stop()  # a second stop is harmless
