"""MemoryNetwork: asyncio.open_connection and asyncio.start_server, in memory, no sockets.

Code under test that opens connections or serves them can talk to an in-memory peer in two
ways. Preferred: pass ``network.open_connection`` / ``network.start_server`` where the code
takes a connect or serve function (explicit, nothing global changes). For code that calls
``asyncio.open_connection`` itself, ``with network.patch():`` swaps the two asyncio functions
for the block and restores them after. Every connection is a :class:`labkit.MemoryConnection`
in ``network.connections``, with faults on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from labkit.mocks.link import DEFAULT_CAPACITY, MemoryLink
from labkit.mocks.stream import STREAM_LIMIT, MemoryConnection, StreamEnd
from labkit.mocks.transport import DEFAULT_READ_SIZE, MockTransport

__all__ = ["MemoryNetwork", "MemoryServer"]

ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]
_ANY_HOST = {None, "", "0.0.0.0", "::"}
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
_FIRST_PORT = 40000


class _MemorySocketName:
    """What ``server.sockets`` holds: enough of a socket to ask for its address."""

    family = socket.AF_INET
    type = socket.SOCK_STREAM

    def __init__(self, address: tuple[str, int]) -> None:
        self._address = address

    def getsockname(self) -> tuple[str, int]:
        return self._address

    def fileno(self) -> int:
        return -1

    def __repr__(self) -> str:
        return f"<memory socket {self._address[0]}:{self._address[1]}>"


class MemoryServer(asyncio.AbstractServer):
    """What ``MemoryNetwork.start_server`` returns: an ``asyncio.Server`` look-alike.

    Example::

        server = await network.start_server(handle, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()
        async with server:
            ...
    """

    def __init__(
        self,
        network: MemoryNetwork,
        callback: ClientConnected,
        address: tuple[str, int],
        limit: int,
    ) -> None:
        self._network = network
        self._callback = callback
        self.address = address
        """``(host, port)`` this server listens on."""
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._serving = False
        self._closed = False
        self._serving_waiter: asyncio.Future[None] | None = None
        self._forever: asyncio.Future[None] | None = None
        self._closed_waiters: list[asyncio.Future[None]] = []
        self._active: set[MockTransport] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "serving" if self._serving else "bound"
        return f"<MemoryServer {self.address[0]}:{self.address[1]} {state}>"

    @property
    def sockets(self) -> tuple[_MemorySocketName, ...]:
        """One socket-like object per address, for ``server.sockets[0].getsockname()``."""
        return () if self._closed else (_MemorySocketName(self.address),)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving and not self._closed

    async def start_serving(self) -> None:
        """Begin accepting connections (``start_server(..., start_serving=False)``)."""
        if self._closed:
            raise RuntimeError(f"server {self.address} is closed")
        self._serving = True
        if self._serving_waiter is not None and not self._serving_waiter.done():
            self._serving_waiter.set_result(None)

    async def serve_forever(self) -> None:
        """Serve until cancelled or closed; cancelling it closes the server, as in asyncio."""
        if self._forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        await self.start_serving()
        self._forever = self._loop.create_future()
        try:
            await self._forever
        except asyncio.CancelledError:
            self.close()
            await self.wait_closed()
            raise
        finally:
            self._forever = None

    def close(self) -> None:
        """Stop accepting; connections already made stay open, as with a real server."""
        if self._closed:
            return
        self._closed = True
        self._serving = False
        self._network._servers.pop(self.address, None)
        if self._serving_waiter is not None and not self._serving_waiter.done():
            self._serving_waiter.set_result(None)
        if self._forever is not None and not self._forever.done():
            self._forever.cancel()
        for waiter in self._closed_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._closed_waiters.clear()

    def close_clients(self) -> None:
        """Close every connection this server accepted (flushing first), as 3.13's Server does.

        Example::

            server.close()
            server.close_clients()            # each handler's reader sees EOF
            await server.wait_closed()
        """
        for transport in list(self._active):
            transport.close()

    def abort_clients(self) -> None:
        """Abort every connection this server accepted (dropping unsent data), as 3.13's does.

        Example::

            server.close()
            server.abort_clients()            # no waiting for slow clients to read
            await server.wait_closed()
        """
        for transport in list(self._active):
            transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the server is closed and every connection it accepted is lost."""
        if not self._closed:
            waiter = self._loop.create_future()
            self._closed_waiters.append(waiter)
            await waiter
        await self._idle.wait()

    async def _wait_serving(self) -> None:
        if self._serving or self._closed:
            return
        if self._serving_waiter is None:
            self._serving_waiter = self._loop.create_future()
        await asyncio.shield(self._serving_waiter)

    def _track(self, transport: MockTransport) -> None:
        self._active.add(transport)
        self._idle.clear()

    def _untrack(self, transport: MockTransport) -> None:
        self._active.discard(transport)
        if not self._active:
            self._idle.set()


class _ServerProtocol(asyncio.StreamReaderProtocol):
    """asyncio's own StreamReaderProtocol, telling the server when its connection ends."""

    def __init__(self, server: MemoryServer, reader: asyncio.StreamReader) -> None:
        super().__init__(reader, self._connected, loop=server._loop)
        self._memory_server = server
        self.writer: asyncio.StreamWriter | None = None

    def _connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Awaitable[None] | None:
        self.writer = writer
        return self._memory_server._callback(reader, writer)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            transport = self._memory_transport
            if transport is not None:
                self._memory_server._untrack(transport)

    _memory_transport: MockTransport | None = None


class MemoryNetwork:
    """An in-memory network: servers listen on ``(host, port)``, clients connect, no sockets.

    ``open_connection`` and ``start_server`` take the same arguments as asyncio's and
    return the same things. ``patch()`` makes ``asyncio.open_connection`` and
    ``asyncio.start_server`` use this network inside a ``with`` block. Every connection is
    appended to ``connections``; ``on_connect`` callbacks see each one before any byte flows
    (the place to inject faults).

    Example::

        network = labkit.MemoryNetwork()
        server = await network.start_server(echo, "127.0.0.1", 8888)
        reader, writer = await network.open_connection("127.0.0.1", 8888)

        with network.patch():                       # for code that calls asyncio directly
            reply = await fetch_status("127.0.0.1", 8888)
    """

    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        read_size: int = DEFAULT_READ_SIZE,
        high_water: int | None = None,
    ) -> None:
        self.capacity = capacity
        self.read_size = read_size
        self.high_water = high_water
        self.connections: list[MemoryConnection] = []
        """Every connection made, in order."""
        self.on_connect: list[Callable[[MemoryConnection], None]] = []
        """Called with each new connection before any data flows (inject faults here)."""
        self._servers: dict[tuple[str, int], MemoryServer] = {}
        self._next_port = _FIRST_PORT
        self._next_client_port = 50000

    def __repr__(self) -> str:
        return (
            f"<MemoryNetwork servers={sorted(self._servers)} connections={len(self.connections)}>"
        )

    async def start_server(
        self,
        client_connected_cb: ClientConnected,
        host: str | None = None,
        port: int | None = None,
        *,
        limit: int = STREAM_LIMIT,
        start_serving: bool = True,
        **kwds: Any,
    ) -> MemoryServer:
        """Listen on ``(host, port)`` (port 0 or None picks a free one); like asyncio's."""
        _refuse_tls(kwds)
        if isinstance(host, (list, tuple)):
            raise ValueError("MemoryNetwork.start_server listens on one host; pass a string")
        name = "127.0.0.1" if host in _ANY_HOST else str(host)
        if not port:
            while any(key[1] == self._next_port for key in self._servers):
                self._next_port += 1
            port = self._next_port
            self._next_port += 1
        address = (name, int(port))
        if self._find(name, address[1]) is not None:
            raise OSError(
                errno.EADDRINUSE,
                f"error while attempting to bind on address {address!r}: address already in use",
            )
        server = MemoryServer(self, client_connected_cb, address, limit)
        self._servers[address] = server
        if start_serving:
            await server.start_serving()
        await asyncio.sleep(0)
        return server

    async def open_connection(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        limit: int = STREAM_LIMIT,
        **kwds: Any,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to a server on this network; ConnectionRefusedError if none listens."""
        _refuse_tls(kwds)
        server = self._find(host, port)
        if server is None:
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, f"Connect call failed ({host!r}, {port!r})"
            )
        await server._wait_serving()
        if server._closed:
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, f"Connect call failed ({host!r}, {port!r})"
            )
        connection = self._connect(server, limit)
        await asyncio.sleep(0)
        return connection.client.reader, connection.client.writer

    @contextlib.contextmanager
    def patch(self) -> Iterator[MemoryNetwork]:
        """Make ``asyncio.open_connection``/``start_server`` use this network in the block.

        Only code that looks the functions up on ``asyncio`` at call time is affected
        (``asyncio.open_connection(...)``); a module that did ``from asyncio import
        open_connection`` keeps the real one: pass ``network.open_connection`` to it instead.

        Example::

            with network.patch():
                await client_under_test.fetch("127.0.0.1", 8888)
        """
        import asyncio.streams as streams

        saved = (
            asyncio.open_connection,
            asyncio.start_server,
            streams.open_connection,
            streams.start_server,
        )
        asyncio.open_connection = self.open_connection  # type: ignore[assignment]
        asyncio.start_server = self.start_server  # type: ignore[assignment]
        streams.open_connection = self.open_connection  # type: ignore[assignment]
        streams.start_server = self.start_server  # type: ignore[assignment]
        try:
            yield self
        finally:
            (
                asyncio.open_connection,
                asyncio.start_server,
                streams.open_connection,
                streams.start_server,
            ) = saved

    def _find(self, host: str | None, port: int | None) -> MemoryServer | None:
        if port is None:
            return None
        for (server_host, server_port), server in self._servers.items():
            if server_port != port:
                continue
            if server_host == host or (
                server_host in _LOOPBACK and (host in _LOOPBACK or host in _ANY_HOST)
            ):
                return server
        return None

    def _connect(self, server: MemoryServer, limit: int) -> MemoryConnection:
        loop = asyncio.get_running_loop()
        client_address = ("127.0.0.1", self._next_client_port)
        self._next_client_port += 1
        options: dict[str, Any] = {"read_size": self.read_size, "high_water": self.high_water}

        client_reader = asyncio.StreamReader(limit=limit, loop=loop)
        client_protocol = asyncio.StreamReaderProtocol(client_reader, loop=loop)
        client_transport = MockTransport(
            client_protocol,
            extra={"peername": server.address, "sockname": client_address},
            loop=loop,
            **options,
        )
        client_writer = asyncio.StreamWriter(client_transport, client_protocol, client_reader, loop)

        server_reader = asyncio.StreamReader(limit=server._limit, loop=loop)
        server_protocol = _ServerProtocol(server, server_reader)
        server_transport = MockTransport(
            None,
            extra={"peername": client_address, "sockname": server.address},
            loop=loop,
            **options,
        )
        server_protocol._memory_transport = server_transport
        server_transport.set_protocol(server_protocol)
        server._track(server_transport)
        link = MemoryLink(client_transport, server_transport, capacity=self.capacity)
        server_protocol.connection_made(server_transport)
        writer = server_protocol.writer
        assert isinstance(writer, asyncio.StreamWriter)
        connection = MemoryConnection(
            StreamEnd(client_reader, client_writer), StreamEnd(server_reader, writer), link
        )
        self.connections.append(connection)
        for callback in self.on_connect:
            callback(connection)
        return connection


def _refuse_tls(kwds: dict[str, Any]) -> None:
    if kwds.get("ssl"):
        raise ValueError(
            "MemoryNetwork carries plain bytes and does not do TLS: drop ssl=... in the test "
            "(test TLS against a real loopback server)"
        )
    if kwds.get("sock") is not None:
        raise ValueError("MemoryNetwork has no real sockets: pass host and port, not sock=")
