"""MemoryLink: two MockTransports wired together like the two ends of a TCP connection.

Bytes one end writes reach the other end's protocol on later loop iterations, at most
``read_size`` bytes per ``data_received``. Between them sits a socket buffer of ``capacity``
bytes: once the receiver stops reading (``pause_reading``) and that buffer is full, the
sender's write buffer grows until it passes its high-water mark and the sender's protocol is
paused, which is how ``StreamWriter.drain()`` blocks against a slow reader in production.
Each direction is a :class:`Pipe`, where faults are injected: stall, close or reset after a
number of bytes.
"""

from __future__ import annotations

import errno

from labkit.mocks.transport import MockTransport

__all__ = ["DEFAULT_CAPACITY", "MemoryLink", "Pipe"]

DEFAULT_CAPACITY = 64 * 1024


def _reset_error() -> ConnectionResetError:
    return ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")


class Pipe:
    """One direction of a MemoryLink: moves bytes from ``source`` to ``target``; faults here.

    ``transferred`` counts the bytes that went through. ``stall()`` holds everything back
    until ``unstall()``; ``close_after(n)`` lets ``n`` more bytes through and then ends the
    connection cleanly, as if the sender had closed there (the receiver sees EOF, the sender
    ``connection_lost(None)`` and its unsent data is dropped); ``reset_after(n)`` does the
    same but both ends get ``ConnectionResetError``.

    Example::

        link.forward.close_after(10)     # the server sees 10 bytes of the request, then EOF
    """

    def __init__(self, link: MemoryLink, source: MockTransport, target: MockTransport) -> None:
        self._link = link
        self.source = source
        """The transport whose writes this pipe carries."""
        self.target = target
        """The transport whose protocol receives them."""
        self.transferred = 0
        """Bytes that went through this pipe so far."""
        self.stalled = False
        """Whether the pipe holds everything back (see ``stall()``)."""
        self._eof_sent = False
        self._cut_after: int | None = None
        self._cut_reset = False
        self._cut_done = False

    def __repr__(self) -> str:
        state = "stalled" if self.stalled else "flowing"
        return f"<Pipe {state} transferred={self.transferred}>"

    def stall(self) -> None:
        """Hold every byte back until ``unstall()``: the receiver waits, the sender buffers."""
        self.stalled = True

    def unstall(self) -> None:
        """Let bytes flow again after ``stall()``."""
        self.stalled = False
        self._link._schedule_pump()

    def close_after(self, nbytes: int) -> None:
        """After ``nbytes`` more bytes, end the connection cleanly (the receiver sees EOF)."""
        self._arm(nbytes, reset=False)

    def reset_after(self, nbytes: int) -> None:
        """After ``nbytes`` more bytes, reset the connection (ConnectionResetError at both ends)."""
        self._arm(nbytes, reset=True)

    def _arm(self, nbytes: int, *, reset: bool) -> None:
        if not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"nbytes must be an int >= 0, got {nbytes!r}")
        self._cut_after = self.transferred + nbytes
        self._cut_reset = reset
        self._cut_done = False
        self._link._schedule_pump()

    def _pump(self, capacity: int) -> None:
        source, target = self.source, self.target
        if self._cut_done:
            return
        if target._closing:
            # Nobody reads on the other side: data sent there is answered with a reset.
            if source._buffer and not source._lost:
                source._force_close(_reset_error())
            return
        if self.stalled:
            return
        room = capacity - len(target._incoming)
        count = min(room, len(source._buffer))
        if self._cut_after is not None:
            count = min(count, self._cut_after - self.transferred)
        if count > 0:
            target._enqueue(source.peer_read(count))
            self.transferred += count
        if self._cut_after is not None and self.transferred >= self._cut_after:
            self._cut()
            return
        if source._buffer or self._eof_sent:
            return
        if source._eof_written or (source._closing and source._pending_exc is None):
            self._eof_sent = True
            target._enqueue_eof()
        elif source._closing:
            self._eof_sent = True
            target._enqueue_error(_reset_error())

    def _cut(self) -> None:
        self._cut_done = True
        self._eof_sent = True
        source, target = self.source, self.target
        if self._cut_reset:
            target._enqueue_error(_reset_error())
            source._force_close(_reset_error())
        else:
            target._enqueue_eof()
            source._force_close(None)


class MemoryLink:
    """Connects two MockTransports in memory, in both directions, with a socket buffer between.

    ``forward`` carries ``a``'s writes to ``b``, ``backward`` carries ``b``'s writes to ``a``;
    ``reset()`` breaks the connection at both ends at once.

    Example::

        a = MockTransport(client_protocol)
        b = MockTransport(server_protocol)
        link = MemoryLink(a, b)
        a.write(b"PING\\r\\n")               # server_protocol.data_received(b"PING\\r\\n") soon
        link.backward.stall()               # the server's replies hang
    """

    def __init__(
        self, a: MockTransport, b: MockTransport, *, capacity: int = DEFAULT_CAPACITY
    ) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(
                f"capacity must be an int >= 1 (bytes of socket buffer), got {capacity!r}"
            )
        if a._on_change is not None or b._on_change is not None:
            raise RuntimeError("a MockTransport can be part of one MemoryLink only")
        self.capacity = capacity
        """Bytes that can wait for a receiver that does not read (the socket buffers)."""
        self.forward = Pipe(self, a, b)
        """``a`` to ``b``."""
        self.backward = Pipe(self, b, a)
        """``b`` to ``a``."""
        self._loop = a._loop
        self._pumping = False
        self._dirty = False
        a._on_change = self._schedule_pump
        b._on_change = self._schedule_pump
        self._schedule_pump()

    def __repr__(self) -> str:
        return f"<MemoryLink forward={self.forward!r} backward={self.backward!r}>"

    def reset(self) -> None:
        """Break the connection now: both ends get ``connection_lost(ConnectionResetError)``."""
        for pipe in (self.forward, self.backward):
            pipe._cut_done = True
            pipe._eof_sent = True
            pipe.source._force_close(_reset_error())

    def _schedule_pump(self) -> None:
        # Move bytes synchronously (as a socket send would), never calling the receiver's
        # protocol from here: it is only called from its own transport's loop callback.
        self._dirty = True
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._dirty:
                self._dirty = False
                self.forward._pump(self.capacity)
                self.backward._pump(self.capacity)
        finally:
            self._pumping = False
