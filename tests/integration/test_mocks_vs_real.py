"""The mocks against the real thing: the same exchange over loopback TCP and in memory.

asyncio's own stream machinery (StreamReader, StreamReaderProtocol, StreamWriter) runs over a
real socket and over labkit's MockTransport / MemoryNetwork; every byte and every outcome a
caller can observe must be the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from labkit import MemoryNetwork, ProtocolHarness

both_loops = pytest.mark.asyncio(loop_factories=["asyncio", "virtual"])

OpenConnection = Callable[..., Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
StartServer = Callable[..., Awaitable[Any]]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

REQUEST = b"hello\nfield;1234rest of the request, " + bytes(range(256)) * 40
BIG = bytes(range(251)) * 12_000  # ~3 MB, not a multiple of any buffer size


class Network:
    """One way to connect: real loopback sockets, or labkit's MemoryNetwork."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.memory = MemoryNetwork()

    @contextlib.asynccontextmanager
    async def serve(
        self, handler: Handler, *, limit: int = 2**16, small_buffers: bool = False
    ) -> AsyncIterator[OpenConnection]:
        if self.kind == "memory":
            server = await self.memory.start_server(handler, "127.0.0.1", 0, limit=limit)
        else:
            listener = socket.socket()
            if small_buffers:  # inherited by accepted sockets; turns off autotuning
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            listener.bind(("127.0.0.1", 0))
            server = await asyncio.start_server(handler, sock=listener, limit=limit)
        address = server.sockets[0].getsockname()[:2]

        async def connect(
            *, limit: int = 2**16
        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            if self.kind == "memory":
                return await self.memory.open_connection(*address, limit=limit)
            sock = socket.socket()
            if small_buffers:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, address)
            return await asyncio.open_connection(sock=sock, limit=limit)

        try:
            yield connect
        finally:
            server.close()
            await server.wait_closed()


@pytest.fixture(params=["real", "memory"])
def network(request: pytest.FixtureRequest) -> Network:
    return Network(request.param)


def outcome(result: Any) -> Any:
    """A comparable record of a value or an exception."""
    if isinstance(result, asyncio.IncompleteReadError):
        return ("IncompleteReadError", result.partial, result.expected)
    if isinstance(result, BaseException):
        return (type(result).__name__, str(result))
    return result


async def attempt(step: Awaitable[Any]) -> Any:
    try:
        return outcome(await step)
    except (Exception, asyncio.IncompleteReadError) as exc:
        return outcome(exc)


async def request_response(network: Network) -> dict[str, list[Any]]:
    log: dict[str, list[Any]] = {"server": [], "client": []}
    done = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = log["server"]
        seen.append(await reader.readline())
        seen.append(await reader.readuntil(b";"))
        seen.append(await reader.readexactly(4))
        rest = await reader.read()
        seen.append(rest)
        seen.append(reader.at_eof())
        seen.append(await reader.read())  # at EOF: b""
        writer.write(b"echo:" + rest[:10])
        writer.writelines([b"\nline one\n", b"line two\n", b"no newline"])
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        done.set()

    async with network.serve(handler) as connect:
        reader, writer = await connect()
        writer.write(REQUEST)
        await writer.drain()
        assert writer.can_write_eof()
        writer.write_eof()
        seen = log["client"]
        seen.append(await reader.readuntil(b"\n"))
        seen.append(await reader.readline())
        seen.append(await attempt(reader.readexactly(100)))
        seen.append(await reader.read())
        seen.append(reader.at_eof())
        await done.wait()
        writer.close()
        await writer.wait_closed()
    return log


@both_loops
async def test_a_request_response_exchange_is_the_same_over_memory_and_loopback() -> None:
    real = await request_response(Network("real"))
    memory = await request_response(Network("memory"))
    assert memory == real
    assert real["server"][3] == REQUEST[len(b"hello\nfield;1234") :]
    assert real["client"][2][0] == "IncompleteReadError"


async def big_echo(network: Network) -> tuple[bytes, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async with network.serve(echo) as connect:
        reader, writer = await connect()

        async def send() -> None:
            for start in range(0, len(BIG), 100_000):
                writer.write(BIG[start : start + 100_000])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send(), name="sender")
        received = await reader.read(-1)
        await sender
        writer.close()
        await writer.wait_closed()
    return received, len(received)


@both_loops
async def test_megabytes_echoed_with_drain_arrive_byte_for_byte(network: Network) -> None:
    received, size = await big_echo(network)
    assert size == len(BIG)
    assert received == BIG


async def limits_and_truncation(network: Network) -> list[Any]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"x" * 100 + b"\nshort\n" + b"partial")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async with network.serve(handler) as connect:
        reader, writer = await connect(limit=16)
        seen = [await attempt(reader.readline())]
        seen.append(await attempt(reader.readuntil(b"\n")))
        seen.append(await attempt(reader.readexactly(50)))
        seen.append(await attempt(reader.read()))
        writer.close()
        await writer.wait_closed()
    return seen


@both_loops
async def test_limit_overruns_and_a_truncated_stream_fail_the_same_way() -> None:
    real = await limits_and_truncation(Network("real"))
    memory = await limits_and_truncation(Network("memory"))
    assert memory == real
    assert real[0][0] == "ValueError"


async def backpressure(network: Network) -> list[Any]:
    """A writer facing a peer that does not read: drain() blocks until the peer reads."""
    peer_may_read = asyncio.Event()
    got: list[int] = []

    async def slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await peer_may_read.wait()
        got.append(len(await reader.read()))
        writer.close()
        await writer.wait_closed()

    payload = b"p" * 2_000_000
    async with network.serve(slow_reader, small_buffers=True) as connect:
        _, writer = await connect()
        writer.write(payload)
        drain = asyncio.create_task(writer.drain(), name="drain")
        for _ in range(10):
            await asyncio.sleep(0)
        seen: list[Any] = [("drain blocked", not drain.done())]
        low, high = writer.transport.get_write_buffer_limits()
        seen.append(("buffer above high-water", writer.transport.get_write_buffer_size() > high))
        peer_may_read.set()
        await drain
        seen.append(
            ("buffer at or below low-water", writer.transport.get_write_buffer_size() <= low)
        )
        writer.close()
        await writer.wait_closed()
        while not got:
            await asyncio.sleep(0)
        seen.append(("peer received", got[0]))
    return seen


@both_loops
async def test_drain_honours_backpressure_like_a_socket() -> None:
    real = await backpressure(Network("real"))
    memory = await backpressure(Network("memory"))
    assert memory == real
    assert real[0] == ("drain blocked", True)
    assert real[-1] == ("peer received", 2_000_000)


# -- StreamReaderProtocol on a MockTransport, fed in fragments, against a real socket -----

READS = [
    ("readline", None),
    ("readuntil", b";"),
    ("readexactly", 4),
    ("read", 7),
    ("readuntil", b"\x00\x01"),
    ("read", -1),
]


async def run_reads(reader: asyncio.StreamReader) -> list[Any]:
    results: list[Any] = []
    for name, argument in READS:
        method = getattr(reader, name)
        step = method() if argument is None else method(argument)
        results.append(await attempt(step))
    results.append(reader.at_eof())
    return results


async def reads_over_loopback() -> list[Any]:
    results: list[Any] = []
    finished = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        results.extend(await run_reads(reader))
        writer.close()
        await writer.wait_closed()
        finished.set()

    network = Network("real")
    async with network.serve(handler) as connect:
        _, writer = await connect()
        for start in range(0, len(REQUEST), 997):
            writer.write(REQUEST[start : start + 997])
            await writer.drain()
        writer.write_eof()
        await finished.wait()
        writer.close()
        await writer.wait_closed()
    return results


async def reads_over_mock_transport(split: dict[str, Any]) -> list[Any]:
    reader = asyncio.StreamReader()
    harness = ProtocolHarness(asyncio.StreamReaderProtocol(reader))
    consumer = asyncio.create_task(run_reads(reader), name="consumer")
    chunks = harness.feed(REQUEST, **split) if split else harness.feed(REQUEST)
    assert b"".join(chunks) == REQUEST
    harness.feed_eof()
    results = await consumer
    assert not harness.transport.is_closing()  # StreamReaderProtocol keeps a half-open link
    return results


@both_loops
@pytest.mark.parametrize(
    "split",
    [{}, {"size": 1}, {"size": 1000}, {"at": [3, 6, 7, 17, 21]}, {"seed": 1}, {"seed": 2}],
    ids=["whole", "bytewise", "1000", "offsets", "seed1", "seed2"],
)
async def test_stream_reader_protocol_over_mock_transport_matches_loopback(
    split: dict[str, Any],
) -> None:
    expected = await reads_over_loopback()
    assert await reads_over_mock_transport(split) == expected
