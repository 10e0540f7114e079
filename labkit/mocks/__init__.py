"""Stand-ins for what asyncio code talks to: async iterators, transports, streams, a network.

Each mock behaves as asyncio's real object does where a test can observe it (a read returns what
arrived so far, ``drain()`` waits while the peer's buffer is full, ``close()`` reaches the other
end as EOF), and lets the test choose what the real thing leaves to chance: how bytes are split,
when a peer stops reading, when a connection breaks. Everything here is also exported from
:mod:`labkit` itself.

Example::

    (reader, writer), (peer_reader, peer_writer) = labkit.memory_connection()
    writer.write(b"ping\\n")
    await writer.drain()
    assert await peer_reader.readline() == b"ping\\n"
"""

from labkit.mocks.async_iterator import MockAsyncIterator
from labkit.mocks.fragment import fragment
from labkit.mocks.link import MemoryLink, Pipe
from labkit.mocks.network import MemoryNetwork, MemoryServer
from labkit.mocks.protocol_harness import ProtocolHarness, bytes_diff
from labkit.mocks.stream import MemoryConnection, StreamEnd, memory_connection
from labkit.mocks.transport import MockTransport

__all__ = [
    "MemoryConnection",
    "MemoryLink",
    "MemoryNetwork",
    "MemoryServer",
    "MockAsyncIterator",
    "MockTransport",
    "Pipe",
    "ProtocolHarness",
    "StreamEnd",
    "bytes_diff",
    "fragment",
    "memory_connection",
]
