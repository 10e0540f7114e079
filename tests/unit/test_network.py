"""labkit.MemoryNetwork: open_connection/start_server without sockets, explicit or patched."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sys
from typing import Any

import pytest

from labkit import MemoryConnection, MemoryNetwork, MemoryServer

both_loops = pytest.mark.asyncio(loop_factories=["asyncio", "virtual"])


async def shout(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(line.upper())
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def fetch(host: str, port: int, line: bytes) -> bytes:
    """Code under test that calls asyncio.open_connection itself."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(line)
    writer.write_eof()
    reply = await reader.read()
    writer.close()
    await writer.wait_closed()
    return reply


@both_loops
async def test_explicit_open_connection_and_start_server() -> None:
    network = MemoryNetwork()
    server = await network.start_server(shout, "127.0.0.1", 8888)
    assert isinstance(server, MemoryServer)
    assert server.is_serving()
    reader, writer = await network.open_connection("127.0.0.1", 8888)
    writer.write(b"hello\n")
    assert await reader.readline() == b"HELLO\n"
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()


@both_loops
async def test_patch_swaps_asyncios_functions_for_the_block_only() -> None:
    real_open, real_start = asyncio.open_connection, asyncio.start_server
    network = MemoryNetwork()
    with network.patch():
        assert asyncio.open_connection == network.open_connection
        server = await asyncio.start_server(shout, "localhost", 0)
        port = server.sockets[0].getsockname()[1]
        assert await fetch("localhost", port, b"abc\n") == b"ABC\n"
    assert asyncio.open_connection is real_open
    assert asyncio.start_server is real_start
    assert len(network.connections) == 1
    server.close()
    await server.wait_closed()


@both_loops
async def test_patch_restores_after_an_exception() -> None:
    real_open = asyncio.open_connection
    network = MemoryNetwork()
    with pytest.raises(ConnectionRefusedError), network.patch():
        await asyncio.open_connection("127.0.0.1", 1)
    assert asyncio.open_connection is real_open


@both_loops
async def test_nobody_listening_is_connection_refused() -> None:
    network = MemoryNetwork()
    with pytest.raises(ConnectionRefusedError) as info:
        await network.open_connection("127.0.0.1", 9)
    assert info.value.errno == errno.ECONNREFUSED


@both_loops
async def test_port_zero_picks_distinct_ports_and_a_taken_port_is_refused() -> None:
    network = MemoryNetwork()
    first = await network.start_server(shout, "127.0.0.1", 0)
    second = await network.start_server(shout, "127.0.0.1", 0)
    assert first.sockets[0].getsockname() != second.sockets[0].getsockname()
    with pytest.raises(OSError, match="already in use") as info:
        await network.start_server(shout, "127.0.0.1", first.address[1])
    assert info.value.errno == errno.EADDRINUSE
    for server in (first, second):
        server.close()
        await server.wait_closed()


@both_loops
async def test_a_server_on_all_interfaces_accepts_loopback_names() -> None:
    network = MemoryNetwork()
    server = await network.start_server(shout, None, 7000)
    for host in ("127.0.0.1", "localhost"):
        reader, writer = await network.open_connection(host, 7000)
        writer.write(b"x\n")
        assert await reader.readline() == b"X\n"
        writer.close()
        await writer.wait_closed()
    server.close()
    await server.wait_closed()


@both_loops
async def test_a_closed_server_refuses_new_connections_but_keeps_old_ones() -> None:
    network = MemoryNetwork()
    server = await network.start_server(shout, "127.0.0.1", 7001)
    reader, writer = await network.open_connection("127.0.0.1", 7001)
    server.close()
    assert not server.is_serving()
    assert server.sockets == ()
    with pytest.raises(ConnectionRefusedError):
        await network.open_connection("127.0.0.1", 7001)
    writer.write(b"still here\n")
    assert await reader.readline() == b"STILL HERE\n"
    waiting = asyncio.create_task(server.wait_closed(), name="wait-closed")
    await asyncio.sleep(0)
    assert not waiting.done()  # the accepted connection is still open
    writer.close()
    await writer.wait_closed()
    await waiting


@both_loops
async def test_start_serving_false_holds_clients_until_serving() -> None:
    network = MemoryNetwork()
    server = await network.start_server(shout, "127.0.0.1", 7002, start_serving=False)
    assert not server.is_serving()
    connecting = asyncio.create_task(network.open_connection("127.0.0.1", 7002), name="connecting")
    await asyncio.sleep(0)
    assert not connecting.done()
    await server.start_serving()
    _, writer = await connecting
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()


@both_loops
async def test_serve_forever_ends_when_cancelled_and_closes_the_server() -> None:
    network = MemoryNetwork()
    server = await network.start_server(shout, "127.0.0.1", 7003)
    serving = asyncio.create_task(server.serve_forever(), name="serve-forever")
    await asyncio.sleep(0)
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert not server.is_serving()


@both_loops
async def test_async_with_closes_the_server() -> None:
    network = MemoryNetwork()
    async with await network.start_server(shout, "127.0.0.1", 7004) as server:
        assert server.get_loop() is asyncio.get_running_loop()
    assert not server.is_serving()


@both_loops
async def test_on_connect_injects_a_fault_before_any_byte_flows() -> None:
    network = MemoryNetwork()
    seen: list[MemoryConnection] = []

    def truncate(connection: MemoryConnection) -> None:
        seen.append(connection)
        connection.to_server.close_after(3)

    network.on_connect.append(truncate)
    received: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read())
        writer.close()

    server = await network.start_server(record, "127.0.0.1", 7005)
    _, writer = await network.open_connection("127.0.0.1", 7005)
    writer.write(b"truncated request")
    await seen[0].server.transport.wait_lost()
    assert received == [b"tru"]
    server.close()
    await server.wait_closed()


@both_loops
async def test_tls_and_sock_are_refused_with_the_reason() -> None:
    network = MemoryNetwork()
    with pytest.raises(ValueError, match="does not do TLS"):
        await network.open_connection("127.0.0.1", 1, ssl=True)
    with pytest.raises(ValueError, match="no real sockets"):
        await network.start_server(shout, sock=object())


@both_loops
async def test_reprs_are_deterministic() -> None:
    network = MemoryNetwork()
    server = await network.start_server(shout, "127.0.0.1", 7006)
    assert repr(server) == "<MemoryServer 127.0.0.1:7006 serving>"
    assert repr(server.sockets[0]) == "<memory socket 127.0.0.1:7006>"
    assert repr(network) == "<MemoryNetwork servers=[('127.0.0.1', 7006)] connections=0>"
    server.close()


# -- close_clients() / abort_clients(), as asyncio.Server has them from 3.13 --------------

real_server_has_them = pytest.mark.skipif(
    sys.version_info < (3, 13), reason="asyncio.Server.close_clients() is new in Python 3.13"
)


async def ending_of_a_busy_connection(kind: str, how: str) -> tuple[bool, str, bool]:
    """The server has megabytes queued for a client that reads slowly; then ``server.<how>()``.

    Returns (the client got every byte, how its stream ended, the handler's reader saw EOF).
    Over loopback the kernel's socket buffers hold several megabytes, so the real server is
    given more than they can take.
    """
    payload = b"p" * (2_000_000 if kind == "memory" else 32_000_000)
    handler_saw: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)  # no drain(): the bytes wait in the server transport's buffer
        handler_saw.append(await reader.read())

    if kind == "memory":
        network = MemoryNetwork()
        server: Any = await network.start_server(handle, "127.0.0.1", 0)
        connect = network.open_connection
    else:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        connect = asyncio.open_connection
    host, port = server.sockets[0].getsockname()[:2]
    reader, writer = await connect(host, port)
    received = len(await reader.readexactly(1000))
    server.close()
    getattr(server, how)()
    ended = "eof"
    try:
        while chunk := await reader.read(65536):
            received += len(chunk)
    except ConnectionResetError:
        ended = "reset"
    await server.wait_closed()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    while not handler_saw:
        await asyncio.sleep(0)
    return received == len(payload), ended, handler_saw == [b""]


@both_loops
@pytest.mark.parametrize("kind", ["memory", pytest.param("real", marks=real_server_has_them)])
async def test_close_clients_flushes_then_closes_every_accepted_connection(kind: str) -> None:
    assert await ending_of_a_busy_connection(kind, "close_clients") == (True, "eof", True)


@both_loops
@pytest.mark.parametrize("kind", ["memory", pytest.param("real", marks=real_server_has_them)])
async def test_abort_clients_drops_what_was_queued_and_closes_at_once(kind: str) -> None:
    assert await ending_of_a_busy_connection(kind, "abort_clients") == (False, "eof", True)


@both_loops
async def test_close_clients_leaves_connections_already_gone_and_new_servers_alone() -> None:
    network = MemoryNetwork()
    server = await network.start_server(shout, "127.0.0.1", 0)
    server.close_clients()  # nothing accepted yet: nothing to do
    reader, writer = await network.open_connection(*server.address)
    writer.write(b"hi\n")
    assert await reader.readline() == b"HI\n"
    writer.close()
    await writer.wait_closed()
    server.close()
    server.abort_clients()
    await server.wait_closed()
    assert network.connections[0].server.transport.lost
