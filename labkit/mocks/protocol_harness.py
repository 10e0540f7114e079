"""ProtocolHarness: drive an asyncio.Protocol as the network would, and check what it wrote.

It connects the protocol to a :class:`labkit.MockTransport` and plays the remote peer: it
feeds bytes split however the test likes (one byte at a time, at chosen offsets, at random
from a seed), ends the stream, breaks the connection, reads the protocol's output, slowly if
asked, and compares it to what was expected with a readable diff.
"""

from __future__ import annotations

import asyncio
import difflib
import errno
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

from labkit.mocks.fragment import fragment
from labkit.mocks.transport import MockTransport

__all__ = ["ProtocolHarness", "bytes_diff"]

_P = TypeVar("_P", bound=asyncio.BaseProtocol)
_MAX_DIFF_ROWS = 12


class ProtocolHarness(Generic[_P]):
    """A protocol instance on a MockTransport, with the test as the remote peer.

    Example::

        harness = ProtocolHarness(LineEchoProtocol())
        harness.feed(b"HELLO\\nWORLD\\n", size=1)        # one byte per data_received
        harness.assert_written(b"hello\\nworld\\n")
        assert harness.read() == b"hello\\nworld\\n"    # close() waits until the peer read it
        harness.feed_eof()
        assert await harness.wait_closed() is None
    """

    def __init__(
        self,
        protocol: _P,
        *,
        high_water: int | None = None,
        low_water: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.protocol: _P = protocol
        """The protocol under test."""
        self.transport = MockTransport(
            protocol, high_water=high_water, low_water=low_water, extra=extra
        )
        """Its MockTransport (``connection_made`` has been called)."""

    def __repr__(self) -> str:
        return f"<ProtocolHarness {type(self.protocol).__name__} {self.transport!r}>"

    # -- the peer sends --------------------------------------------------------------

    def feed(
        self,
        data: bytes,
        *,
        size: int | None = None,
        at: Sequence[int] | None = None,
        seed: int | None = None,
        max_size: int = 16,
    ) -> list[bytes]:
        """Deliver ``data``: whole, or split by ``size``/``at``/``seed`` (see ``fragment``).

        Returns the chunks as delivered, one ``data_received`` each, so a failing test can
        print the split that broke the protocol.

        Example::

            harness.feed(b"PING\\r\\n", at=[2])      # b"PI", then b"NG\\r\\n"
        """
        if size is None and at is None and seed is None:
            chunks = [bytes(data)] if data else []
        else:
            chunks = fragment(data, size=size, at=at, seed=seed, max_size=max_size)
        for chunk in chunks:
            self.transport.receive(chunk)
        return chunks

    def feed_eof(self) -> None:
        """The peer half-closes: ``eof_received()``; the transport closes unless it returns True."""
        self.transport.receive_eof()

    def drop(self, exc: BaseException | None = None) -> None:
        """The connection breaks: ``connection_lost(exc)`` on the next loop iteration.

        ``exc`` defaults to ``ConnectionResetError(ECONNRESET)``, what a reset peer causes.
        """
        if exc is None:
            exc = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        self.transport.lose_connection(exc)

    # -- the peer receives -----------------------------------------------------------

    @property
    def written(self) -> bytes:
        """Everything the protocol wrote so far, read by the peer or not."""
        return self.transport.written

    def read(self, max_bytes: int | None = None) -> bytes:
        """The peer reads up to ``max_bytes`` (default: all) of what is buffered."""
        return self.transport.peer_read(max_bytes)

    async def read_slowly(self, nbytes: int, *, chunk: int, interval: float) -> bytes:
        """Read ``nbytes`` as a slow peer: ``chunk`` bytes every ``interval`` seconds.

        Returns early with what it got if the transport closes first, or once the protocol
        has half-closed (``write_eof()``) and everything was read. On labkit's virtual loop
        the waiting costs no real time.

        Example::

            reader = asyncio.create_task(harness.read_slowly(1_000_000, chunk=4096,
                                                              interval=0.01))
        """
        if chunk < 1 or interval < 0:
            raise ValueError(
                f"chunk must be >= 1 byte and interval >= 0 s, got {chunk!r}, {interval!r}"
            )
        received = bytearray()
        while len(received) < nbytes:
            if not self.transport.get_write_buffer_size():
                if self.transport.is_closing() or self.transport.lost:
                    break
                if self.transport.eof_written:  # the peer reads EOF: nothing more will come
                    break
                await self.transport.wait_written()
                if not self.transport.get_write_buffer_size():
                    continue
            received += self.transport.peer_read(min(chunk, nbytes - len(received)))
            await asyncio.sleep(interval)
        return bytes(received)

    async def wait_closed(self) -> BaseException | None:
        """Wait for ``connection_lost``; return its exception (None for a clean close)."""
        return await self.transport.wait_lost()

    def assert_written(self, expected: bytes) -> None:
        """Fail with a readable diff unless the protocol wrote exactly ``expected`` so far.

        Example::

            harness.assert_written(b"WORLD\\n")
        """
        actual = self.transport.written
        if actual != expected:
            raise AssertionError(bytes_diff(expected, actual))


def bytes_diff(expected: bytes, actual: bytes) -> str:
    """Explain how ``actual`` differs from ``expected``: the first differing byte, then lines.

    Example::

        print(bytes_diff(b"WORLD\\n", b"WORLD\\nWORLD\\n"))
    """
    if expected == actual:
        return "the bytes are equal"
    index = next(
        (i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b),
        min(len(expected), len(actual)),
    )
    line = actual[:index].count(b"\n") + 1
    column = index - (actual.rfind(b"\n", 0, index) + 1) + 1
    head = (
        f"written bytes differ from the expected ones at byte {index} "
        f"(line {line}, column {column}); expected {len(expected)} bytes, "
        f"got {len(actual)}"
    )
    lines = [head, f"  expected: {_clip(expected, index)}", f"  written:  {_clip(actual, index)}"]
    want = [repr(part) for part in expected.splitlines(keepends=True)]
    got = [repr(part) for part in actual.splitlines(keepends=True)]
    if len(want) > 1 or len(got) > 1:
        lines.append("line by line (- expected, + written):")
        rows = [f"  {row}" for row in difflib.ndiff(want, got) if not row.startswith("?")]
        if len(rows) > _MAX_DIFF_ROWS:
            hidden = len(rows) - _MAX_DIFF_ROWS
            rows = [*rows[:_MAX_DIFF_ROWS], f"  ... and {hidden} more line(s)"]
        lines += rows
    return "\n".join(lines)


def _clip(data: bytes, index: int, context: int = 24) -> str:
    start = max(0, index - context)
    end = index + context
    text = repr(data[start:end])
    return ("..." if start else "") + text + ("..." if end < len(data) else "")
