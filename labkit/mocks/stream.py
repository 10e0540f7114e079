"""memory_connection(): a connected pair of asyncio streams in memory, with faults on demand.

Both ends are asyncio's own ``StreamReader``/``StreamWriter`` over ``StreamReaderProtocol``,
running on two :class:`labkit.MockTransport` joined by a :class:`labkit.MemoryLink`. So
``readline``, ``readexactly``, limits, EOF and ``drain()`` behave as over a socket, including
backpressure: a writer whose peer does not read is paused and ``drain()`` waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from labkit.mocks.link import DEFAULT_CAPACITY, MemoryLink, Pipe
from labkit.mocks.transport import DEFAULT_READ_SIZE, MockTransport

__all__ = ["MemoryConnection", "StreamEnd", "memory_connection"]

STREAM_LIMIT = 2**16  # asyncio.streams._DEFAULT_LIMIT


class StreamEnd(NamedTuple):
    """One end of a connection: the ``(reader, writer)`` pair asyncio.open_connection returns.

    Example::

        reader, writer = connection.client
        assert connection.client.transport.get_write_buffer_size() == 0
    """

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @property
    def transport(self) -> MockTransport:
        """The MockTransport under this end's writer."""
        transport = self.writer.transport
        assert isinstance(transport, MockTransport)
        return transport


class MemoryConnection:
    """A client and a server end joined in memory; unpacks as ``client, server``.

    ``to_server`` and ``to_client`` are the two :class:`labkit.Pipe` directions, where
    faults go; ``reset()`` breaks both ends at once. ``async with`` closes both ends at the
    end of the block (a StreamWriter left open is closed by asyncio when it is garbage
    collected, with a ResourceWarning, as for a socket).

    Example::

        async with labkit.memory_connection() as connection:
            (reader, writer), (peer_reader, peer_writer) = connection
            ...
    """

    def __init__(self, client: StreamEnd, server: StreamEnd, link: MemoryLink) -> None:
        self.client = client
        """The connecting end."""
        self.server = server
        """The accepting end."""
        self.link = link
        """The MemoryLink between the two transports."""

    def __iter__(self) -> Iterator[StreamEnd]:
        return iter((self.client, self.server))

    def __repr__(self) -> str:
        return f"<MemoryConnection {self.link!r}>"

    @property
    def to_server(self) -> Pipe:
        """The client-to-server direction."""
        return self.link.forward

    @property
    def to_client(self) -> Pipe:
        """The server-to-client direction."""
        return self.link.backward

    def reset(self) -> None:
        """Reset the connection: both ends see ``ConnectionResetError``."""
        self.link.reset()

    async def aclose(self) -> None:
        """Close both writers and wait until both transports are lost (connection errors ignored).

        Example::

            connection = labkit.memory_connection()
            ...
            await connection.aclose()
        """
        for end in (self.client, self.server):
            end.writer.close()
        for end in (self.client, self.server):
            with contextlib.suppress(OSError):  # the error was the connection's, not ours
                await end.writer.wait_closed()

    async def __aenter__(self) -> MemoryConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _end(
    loop: asyncio.AbstractEventLoop,
    *,
    limit: int,
    extra: Mapping[str, Any],
    read_size: int,
    high_water: int | None,
) -> StreamEnd:
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport = MockTransport(
        protocol, extra=extra, read_size=read_size, high_water=high_water, loop=loop
    )
    return StreamEnd(reader, asyncio.StreamWriter(transport, protocol, reader, loop))


def memory_connection(
    *,
    limit: int = STREAM_LIMIT,
    capacity: int = DEFAULT_CAPACITY,
    read_size: int = DEFAULT_READ_SIZE,
    high_water: int | None = None,
    client_address: tuple[str, int] = ("127.0.0.1", 50000),
    server_address: tuple[str, int] = ("127.0.0.1", 8000),
) -> MemoryConnection:
    """Make a connected client/server pair of asyncio streams in memory; call it on a loop.

    ``limit`` is the StreamReader limit (as in ``asyncio.open_connection``), ``capacity``
    the socket buffer between the ends, ``read_size`` the most bytes per ``data_received``
    (1 delivers byte by byte), ``high_water`` the writers' high-water mark.

    Example::

        (reader, writer), (peer_reader, peer_writer) = labkit.memory_connection()
        writer.write(b"PING\\r\\n")
        await writer.drain()
        assert await peer_reader.readline() == b"PING\\r\\n"
    """
    for name, value in (("limit", limit), ("capacity", capacity), ("read_size", read_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1 (bytes), got {value!r}")
    loop = asyncio.get_running_loop()
    client_extra = {"peername": server_address, "sockname": client_address}
    server_extra = {"peername": client_address, "sockname": server_address}
    client = _end(loop, limit=limit, extra=client_extra, read_size=read_size, high_water=high_water)
    server = _end(loop, limit=limit, extra=server_extra, read_size=read_size, high_water=high_water)
    link = MemoryLink(client.transport, server.transport, capacity=capacity)
    return MemoryConnection(client, server, link)
