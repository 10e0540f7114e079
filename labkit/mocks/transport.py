"""MockTransport: a complete in-memory asyncio.Transport with real flow control.

It keeps the contract a protocol sees from a socket transport: ``pause_writing()`` when the
write buffer passes the high-water mark and ``resume_writing()`` once the peer has drained it
to the low-water mark, received data held back while reading is paused, ``eof_received`` that
closes the transport unless the protocol asks to keep it open, a ``close()`` that flushes
first and an ``abort()`` that does not, and ``connection_lost`` called exactly once, on the
loop, after everything else.

The test plays the other end: it reads what the protocol wrote (``peer_read``), sends it data
(``receive``), ends the stream (``receive_eof``) or breaks the connection
(``lose_connection``). Two transports can also be wired to each other (see
:class:`labkit.MemoryLink`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["MockTransport"]

DEFAULT_HIGH_WATER = 64 * 1024
DEFAULT_READ_SIZE = 256 * 1024  # what a selector transport reads per data_received at most

_NO_PROTOCOL = (
    "MockTransport has no protocol to {what}: pass it when you create the transport, "
    "MockTransport(protocol), or call transport.set_protocol(protocol)"
)


class MockTransport(asyncio.Transport):
    """An asyncio transport in memory that drives the protocol exactly as a socket one does.

    ``MockTransport(protocol)`` calls ``protocol.connection_made(transport)`` at once, as
    ``loop.create_connection`` has done by the time it returns. What the protocol writes
    waits in the write buffer until the peer (your test) takes it with ``peer_read()``;
    ``written`` keeps everything ever written. ``events`` records what the transport told
    the protocol and what the protocol asked of it, in order.

    Example::

        transport = MockTransport(protocol)
        transport.set_write_buffer_limits(high=4, low=2)
        transport.write(b"hello")           # 5 bytes > high: protocol.pause_writing()
        assert transport.peer_read() == b"hello"   # drained: protocol.resume_writing()
        transport.close()
        await transport.wait_lost()         # protocol.connection_lost(None), once
        assert transport.events == ["pause_writing", "resume_writing", "close",
                                    "connection_lost(None)"]
    """

    def __init__(
        self,
        protocol: asyncio.BaseProtocol | None = None,
        *,
        extra: Mapping[str, Any] | None = None,
        high_water: int | None = None,
        low_water: int | None = None,
        read_size: int = DEFAULT_READ_SIZE,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        info: dict[str, Any] = {
            "peername": ("127.0.0.1", 50000),
            "sockname": ("127.0.0.1", 8000),
            "socket": None,
        }
        info.update(extra or {})
        super().__init__(info)
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    "MockTransport needs an event loop (it calls connection_lost on the loop, "
                    "as a real transport does): create it inside a coroutine or an async "
                    "test, or pass loop=..."
                ) from None
        if not isinstance(read_size, int) or read_size < 1:
            raise ValueError(f"read_size must be an int >= 1 (bytes), got {read_size!r}")
        self._loop = loop
        self._protocol: asyncio.BaseProtocol | None = protocol
        self._buffer = bytearray()
        self._peak_buffer = 0
        self._written = bytearray()
        self._incoming = bytearray()
        self._incoming_eof = False
        self._incoming_error: BaseException | None = None
        self._pending_exc: BaseException | None = None
        self._delivery_scheduled = False
        self._read_size = read_size
        self._reading = True
        self._writing_paused = False
        self._eof_written = False
        self._closing = False
        self._lost = False  # connection_lost is scheduled or done
        self._lost_called = False
        self._lost_exc: BaseException | None = None
        self._lost_error: BaseException | None = None
        self._lost_waiter: asyncio.Future[None] | None = None
        self._write_waiters: list[asyncio.Future[None]] = []
        self._on_change: Callable[[], None] | None = None
        self._high_water = DEFAULT_HIGH_WATER
        self._low_water = DEFAULT_HIGH_WATER // 4
        self._set_limits(high_water, low_water)
        self.events: list[str] = []
        """What happened, in order: flow control, close, EOF, connection_lost(...)."""
        self.writes_after_close = 0
        """Writes the protocol made after the connection was closing or lost (dropped)."""
        if protocol is not None:
            protocol.connection_made(self)

    def __repr__(self) -> str:
        state = "lost" if self._lost else "closing" if self._closing else "open"
        return f"<MockTransport {state} buffered={len(self._buffer)} written={len(self._written)}>"

    # -- asyncio.BaseTransport -------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Connection details (``peername``, ``sockname``, ...) from ``extra=``."""
        return super().get_extra_info(name, default)

    def is_closing(self) -> bool:
        """True once ``close()``/``abort()`` ran or the connection was lost."""
        return self._closing

    def close(self) -> None:
        """Close after the peer has read the buffered data, then call connection_lost(None)."""
        if self._closing:
            return
        self.events.append("close")
        self._closing = True
        self._reading = False
        if not self._buffer:
            self._schedule_lost(None)
        self._changed()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Switch the protocol that receives this transport's callbacks."""
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        """The protocol this transport calls."""
        if self._protocol is None:
            raise RuntimeError(_NO_PROTOCOL.format(what="return"))
        return self._protocol

    # -- asyncio.ReadTransport -------------------------------------------------------

    def is_reading(self) -> bool:
        """Whether received data is handed to the protocol (not paused, not closing)."""
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        """Hold received data back from the protocol until ``resume_reading()``."""
        if self._closing or not self._reading:
            return
        self._reading = False
        self.events.append("pause_reading")

    def resume_reading(self) -> None:
        """Deliver held-back data again, from the next loop iteration, as a socket does."""
        if self._closing or self._reading:
            return
        self._reading = True
        self.events.append("resume_reading")
        self._schedule_delivery()

    # -- asyncio.WriteTransport ------------------------------------------------------

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the high- and low-water marks that pause and resume the protocol's writing."""
        self._set_limits(high, low)
        self._maybe_pause()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """``(low, high)``, as asyncio returns them."""
        return (self._low_water, self._high_water)

    def get_write_buffer_size(self) -> int:
        """Bytes written but not yet taken by the peer."""
        return len(self._buffer)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer ``data`` for the peer; pause the protocol past the high-water mark."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        if self._lost or self._closing:
            self.writes_after_close += 1
            return
        chunk = bytes(data)
        self._buffer += chunk
        self._written += chunk
        self._changed()
        self._peak_buffer = max(self._peak_buffer, len(self._buffer))
        self._maybe_pause()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write each chunk in turn, as one write."""
        self.write(b"".join(bytes(chunk) for chunk in list_of_data))

    def write_eof(self) -> None:
        """Half-close: the peer gets EOF after the buffered data; reading continues."""
        if self._closing or self._eof_written:
            return
        self._eof_written = True
        self.events.append("write_eof")
        self._changed()

    def can_write_eof(self) -> bool:
        """Always True: a TCP-like transport can half-close."""
        return True

    def abort(self) -> None:
        """Close at once: drop the buffered data, connection_lost(None) on the next iteration."""
        if self._lost:
            return
        self.events.append("abort")
        self._force_close(None)

    # -- the peer's side: what a test (or a MemoryLink) does -------------------------

    @property
    def written(self) -> bytes:
        """Every byte the protocol ever wrote, whether or not the peer has read it."""
        return bytes(self._written)

    @property
    def peak_write_buffer_size(self) -> int:
        """The largest ``get_write_buffer_size()`` ever reached, whenever the test looks.

        Measured when each ``write()`` returns (after a :class:`labkit.MemoryLink` took what
        the peer's socket buffer could), so a flow-control assertion need not catch the moment.

        Example::

            transport.set_write_buffer_limits(high=1024)
            await produce(transport)            # writes, pauses, resumes as the peer reads
            assert transport.peak_write_buffer_size <= 1024 + MAX_MESSAGE
        """
        return self._peak_buffer

    @property
    def eof_written(self) -> bool:
        """Whether the protocol called ``write_eof()``."""
        return self._eof_written

    @property
    def writing_paused(self) -> bool:
        """Whether the protocol is currently told to pause writing."""
        return self._writing_paused

    @property
    def lost(self) -> bool:
        """Whether ``connection_lost`` has been called."""
        return self._lost_called

    @property
    def lost_exception(self) -> BaseException | None:
        """The exception ``connection_lost`` was called with (None for a clean close)."""
        return self._lost_exc

    def peer_read(self, max_bytes: int | None = None) -> bytes:
        """The peer takes up to ``max_bytes`` (default: all) from the write buffer.

        Draining to the low-water mark resumes a paused protocol; draining a closing
        transport empty completes the close.

        Example::

            protocol.send_greeting()
            assert transport.peer_read() == b"HELLO\\r\\n"
        """
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 0):
            raise ValueError(f"max_bytes must be an int >= 0 or None, got {max_bytes!r}")
        count = len(self._buffer) if max_bytes is None else min(max_bytes, len(self._buffer))
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        if count:
            self._maybe_resume()
            if self._closing and not self._buffer and not self._lost:
                self._schedule_lost(None)
        return data

    def receive(self, data: bytes | bytearray | memoryview) -> None:
        """Data arrives from the peer: ``protocol.data_received(data)``, now.

        While reading is paused the data is held and delivered after ``resume_reading()``;
        after ``close()`` it is dropped, as a closed socket's would be. An exception from
        ``data_received`` closes the transport (``connection_lost(exc)``) and propagates to
        the caller, so a test sees it.

        Example::

            transport.receive(b"PING\\r\\n")
        """
        data = bytes(data)
        if not data:
            return
        if self._closing or self._lost or self._incoming_eof:
            return
        if not self._reading or self._incoming:
            self._incoming += data
            return
        self._deliver(data, report=False)

    def receive_eof(self) -> None:
        """The peer half-closed: ``protocol.eof_received()``; close unless it returns True."""
        if self._closing or self._lost or self._incoming_eof:
            return
        self._incoming_eof = True
        if not self._reading or self._incoming:
            return
        self._deliver_eof(report=False)

    def lose_connection(self, exc: BaseException | None = None) -> None:
        """The connection breaks: drop the buffer, ``connection_lost(exc)`` on the loop.

        Example::

            transport.lose_connection(ConnectionResetError("peer reset"))
            await transport.wait_lost()
        """
        if self._lost:
            return
        self.events.append("lose_connection")
        self._force_close(exc)

    async def wait_lost(self) -> BaseException | None:
        """Wait until ``connection_lost`` has been called; return its exception (or None).

        If the protocol's ``connection_lost`` raised, that exception is raised here, so a bug
        in clean-up code fails the test instead of only being logged by the loop.
        """
        if not self._lost_called:
            if self._lost_waiter is None:
                self._lost_waiter = self._loop.create_future()
            await asyncio.shield(self._lost_waiter)
        if self._lost_error is not None:
            raise self._lost_error
        return self._lost_exc

    async def wait_written(self) -> None:
        """Wait until the protocol writes something, closes, or the connection is lost."""
        if self._buffer or self._closing or self._lost or self._eof_written:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._write_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._write_waiters:
                self._write_waiters.remove(waiter)

    # -- internals -------------------------------------------------------------------

    def _set_limits(self, high: int | None, low: int | None) -> None:
        if high is None:
            high = DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low

    def _require_protocol(self, what: str) -> asyncio.BaseProtocol:
        if self._protocol is None:
            raise RuntimeError(_NO_PROTOCOL.format(what=what))
        return self._protocol

    def _call_protocol(self, what: str, call: Callable[[], object]) -> None:
        try:
            call()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": f"protocol.{what}() failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )

    def _maybe_pause(self) -> None:
        if len(self._buffer) <= self._high_water or self._writing_paused:
            return
        protocol = self._require_protocol("pause (pause_writing)")
        self._writing_paused = True
        self.events.append("pause_writing")
        self._call_protocol("pause_writing", protocol.pause_writing)

    def _maybe_resume(self) -> None:
        if not self._writing_paused or len(self._buffer) > self._low_water:
            return
        protocol = self._require_protocol("resume (resume_writing)")
        self._writing_paused = False
        self.events.append("resume_writing")
        self._call_protocol("resume_writing", protocol.resume_writing)

    def _changed(self) -> None:
        waiters, self._write_waiters = self._write_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self._on_change is not None:
            self._on_change()

    def _force_close(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._buffer.clear()
        self._incoming.clear()
        self._closing = True
        self._reading = False
        self._schedule_lost(exc)
        self._changed()

    def _schedule_lost(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._pending_exc = exc
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        self._lost_called = True
        self._lost_exc = exc
        self._closing = True
        self.events.append(f"connection_lost({_describe(exc)})")
        waiter = self._lost_waiter
        try:
            if self._protocol is not None:
                self._protocol.connection_lost(exc)  # type: ignore[arg-type]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as error:
            # A test waiting in wait_lost() gets the bug; otherwise the loop reports it, as
            # it does for a real transport.
            self._lost_error = error
            if waiter is None:
                raise
        finally:
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            self._changed()

    def _schedule_delivery(self) -> None:
        if self._delivery_scheduled or not (
            self._incoming or self._incoming_eof or self._incoming_error
        ):
            return
        self._delivery_scheduled = True
        self._loop.call_soon(self._deliver_pending)

    def _deliver_pending(self) -> None:
        """One read's worth per loop iteration, as a selector transport reads."""
        self._delivery_scheduled = False
        if self._lost:
            return
        error = self._incoming_error
        if error is not None and (not self.is_reading() or not self._incoming):
            self._force_close(error)  # a reset discards what was not read yet
            return
        if not self.is_reading():
            return
        if self._incoming:
            chunk = bytes(self._incoming[: self._read_size])
            del self._incoming[: self._read_size]
            self._deliver(chunk, report=True)
            if self._on_change is not None:
                self._on_change()
            self._schedule_delivery()
        elif self._incoming_eof:
            self._deliver_eof(report=True)

    def _enqueue(self, data: bytes) -> None:
        """A MemoryLink hands over bytes from the peer; delivered on the loop."""
        if self._closing or self._lost or self._incoming_eof:
            return
        self._incoming += data
        self._schedule_delivery()

    def _enqueue_eof(self) -> None:
        if self._closing or self._lost or self._incoming_eof:
            return
        self._incoming_eof = True
        self._schedule_delivery()

    def _enqueue_error(self, exc: BaseException) -> None:
        """A MemoryLink reports a reset: delivered after the data already queued."""
        if self._lost:
            return
        self._incoming_error = exc
        self._schedule_delivery()

    def _deliver(self, data: bytes, *, report: bool) -> None:
        protocol = self._require_protocol("deliver data to (data_received)")
        if isinstance(protocol, asyncio.BufferedProtocol):
            self._deliver_buffered(protocol, data, report=report)
            return
        if not isinstance(protocol, asyncio.Protocol):
            raise TypeError(
                f"{type(protocol).__name__} is not an asyncio.Protocol: a stream transport "
                "delivers data with data_received()"
            )
        try:
            protocol.data_received(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "data_received", report=report)

    def _deliver_buffered(
        self, protocol: asyncio.BufferedProtocol, data: bytes, *, report: bool
    ) -> None:
        view = memoryview(data)
        try:
            while view:
                buf = memoryview(protocol.get_buffer(len(view))).cast("B")
                if not len(buf):
                    raise RuntimeError("get_buffer() returned an empty buffer")
                count = min(len(buf), len(view))
                buf[:count] = view[:count]
                protocol.buffer_updated(count)
                view = view[count:]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "buffer_updated", report=report)

    def _deliver_eof(self, *, report: bool) -> None:
        protocol = self._require_protocol("deliver EOF to (eof_received)")
        self.events.append("eof_received")
        try:
            keep_open = protocol.eof_received()  # type: ignore[attr-defined]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "eof_received", report=report)
            return
        if not keep_open:
            self.close()

    def _fatal(self, exc: BaseException, what: str, *, report: bool) -> None:
        if report and not isinstance(exc, OSError):
            self._loop.call_exception_handler(
                {
                    "message": f"Fatal error: protocol.{what}() call failed.",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._force_close(exc)
        if not report:
            raise exc


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "None"
    return type(exc).__name__
