"""The conformance checks against the real thing: loopback TCP and socketpairs, on every loop.

Every check is derived from what asyncio's own transports do; here each one passes on real
sockets under asyncio's loop, uvloop and labkit's virtual loop (where a connected socket makes
the clock follow real time), and with Python 3.12's eager task factory. The same checks pass
on labkit's fakes (tests/unit/test_conformance.py), so the fakes tell the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import pytest

import labkit

ALL_LOOPS = pytest.mark.asyncio(loop_factories=["asyncio", "uvloop", "virtual"])

End = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def tcp_server() -> AsyncIterator[tuple[tuple[str, int], Callable[[], Awaitable[End]]]]:
    """A real server on 127.0.0.1: yields its address and ``accept()``, the next server end."""
    accepted: asyncio.Queue[End] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    async with server:
        yield (host, port), accepted.get


@ALL_LOOPS
async def test_loopback_tcp_streams_pass_every_stream_check() -> None:
    async with tcp_server() as (where, accept):

        async def loopback_pair() -> tuple[End, End]:
            client = await asyncio.open_connection(*where)
            return client, await accept()

        report = await labkit.check_stream_pair(loopback_pair)
    assert len(report.passed) == 19
    assert report.skipped == ()


@ALL_LOOPS
async def test_socketpair_streams_pass_every_stream_check() -> None:
    async def socketpair_streams() -> tuple[End, End]:
        mine, theirs = socket.socketpair()
        return await asyncio.open_connection(sock=mine), await asyncio.open_connection(sock=theirs)

    report = await labkit.check_stream_pair(socketpair_streams)
    assert len(report.passed) == 19


@ALL_LOOPS
async def test_a_socketpair_transport_passes_every_transport_check() -> None:
    async def socketpair_transport(protocol: asyncio.Protocol) -> tuple[asyncio.Transport, End]:
        mine, theirs = socket.socketpair()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(lambda: protocol, sock=mine)
        return transport, await asyncio.open_connection(sock=theirs)

    report = await labkit.check_transport(socketpair_transport)
    assert set(report.passed) == set(labkit.TRANSPORT_CHECKS)


@ALL_LOOPS
async def test_a_tcp_client_transport_passes_every_transport_check() -> None:
    async with tcp_server() as (where, accept):

        async def tcp_transport(protocol: asyncio.Protocol) -> tuple[asyncio.Transport, End]:
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_connection(lambda: protocol, *where)
            return transport, await accept()

        report = await labkit.check_transport(tcp_transport)
    assert set(report.passed) == set(labkit.TRANSPORT_CHECKS)


def eager_factory(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **options: Any
) -> asyncio.Task[Any]:
    options.pop("eager_start", None)  # uvloop 0.23 passes it; 3.13.0's eager factory refuses it
    return asyncio.Task(coro, loop=loop, eager_start=True, **options)  # type: ignore[call-arg,unused-ignore]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in Python 3.12")
@ALL_LOOPS
async def test_the_checks_hold_with_eager_tasks() -> None:
    loop = asyncio.get_running_loop()
    loop.set_task_factory(eager_factory)

    async def network_pair() -> tuple[End, End]:
        network = labkit.MemoryNetwork()
        server_ends: asyncio.Queue[End] = asyncio.Queue()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server_ends.put((reader, writer))

        memory_server = await network.start_server(handle, "127.0.0.1", 0)
        client = await network.open_connection(*memory_server.address)
        memory_server.close()
        return client, await server_ends.get()

    try:
        async with tcp_server() as (where, accept):

            async def loopback_pair() -> tuple[End, End]:
                client = await asyncio.open_connection(*where)
                return client, await accept()

            for make_pair in (loopback_pair, network_pair):
                report = await labkit.check_stream_pair(make_pair)
                assert len(report.passed) == 19, make_pair
    finally:
        loop.set_task_factory(None)
