"""labkit.check_stream_pair / check_transport: labkit's fakes pass, broken fakes fail clearly.

Besides labkit's own fakes, two independent fakes written from scratch here (a stream pair and
a transport with its own peer, as a user would write them) pass every check: the checks test
behaviour, not asyncio's internals. Each broken fake below changes one thing of those.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import pytest

import labkit
from labkit import ConformanceError, MemoryLink, MockTransport

pytest_plugins = ["pytester"]

BOTH_LOOPS = pytest.mark.asyncio(loop_factories=["asyncio", "virtual"])
VIRTUAL = pytest.mark.asyncio(loop_factories=["virtual"])  # a hang costs no real time there

ONE_WAY = [
    "read_available",
    "readexactly",
    "readuntil",
    "incomplete_read",
    "write_eof",
    "close",
    "drain_backpressure",
    "peer_closed",
]
STREAM_LABELS = {
    "round_trip",
    "limit",
    "duplex",
    *(f"{name} ({way})" for name in ONE_WAY for way in ("a->b", "b->a")),
}


class Signal:
    """Wakes every waiter when something changed."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    async def wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def fire(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


# -- an honest stream fake written from scratch ------------------------------------------


class Channel:
    """One direction: bytes in flight, EOF, and whether the reading end has gone."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False
        self.reader_gone = False
        self.changed = Signal()


class FakeReader:
    def __init__(self, channel: Channel, limit: int = 2**16) -> None:
        self.channel = channel
        self.limit = limit

    async def _more(self) -> None:
        await self.channel.changed.wait()

    def _take(self, n: int) -> bytes:
        chunk = bytes(self.channel.data[:n])
        del self.channel.data[:n]
        self.channel.changed.fire()
        return chunk

    async def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        if n < 0:
            while not self.channel.eof:
                await self._more()
            return self._take(len(self.channel.data))
        while not self.channel.data and not self.channel.eof:
            await self._more()
        return self._take(n)

    async def readexactly(self, n: int) -> bytes:
        while len(self.channel.data) < n:
            if self.channel.eof:
                raise asyncio.IncompleteReadError(self._take(len(self.channel.data)), n)
            await self._more()
        return self._take(n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        while True:
            index = self.channel.data.find(separator)
            if index >= 0:
                return self._take(index + len(separator))
            if len(self.channel.data) > self.limit:
                raise asyncio.LimitOverrunError("no separator within the limit", self.limit)
            if self.channel.eof:
                raise asyncio.IncompleteReadError(self._take(len(self.channel.data)), None)
            await self._more()

    async def readline(self) -> bytes:
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as error:
            return error.partial
        except asyncio.LimitOverrunError as error:
            self.channel.data.clear()
            raise ValueError(str(error)) from None

    def at_eof(self) -> bool:
        return self.channel.eof and not self.channel.data


class FakeWriter:
    CAPACITY = 64 * 1024

    def __init__(self, out: Channel, incoming: Channel) -> None:
        self.out = out
        self.incoming = incoming
        self.closing = False
        self.eof_sent = False
        self.broken: BaseException | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        if self.eof_sent:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data or self.closing:
            return
        if self.out.reader_gone:
            self.broken = ConnectionResetError("Connection reset by peer")
            self.closing = True
            return
        self.out.data += data
        self.out.changed.fire()

    def writelines(self, chunks: Iterable[bytes]) -> None:
        self.write(b"".join(chunks))

    def write_eof(self) -> None:
        if self.closing or self.eof_sent:
            return
        self.eof_sent = True
        self.out.eof = True
        self.out.changed.fire()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.out.eof = True
        self.incoming.eof = True
        self.incoming.reader_gone = True
        self.out.changed.fire()
        self.incoming.changed.fire()

    def is_closing(self) -> bool:
        return self.closing

    async def wait_closed(self) -> None:
        await asyncio.sleep(0)

    async def drain(self) -> None:
        if self.broken is not None:
            raise self.broken
        if self.closing:
            await asyncio.sleep(0)
            raise ConnectionResetError("Connection lost")
        while len(self.out.data) > self.CAPACITY and not self.out.reader_gone:
            await self.out.changed.wait()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def fake_pair_maker(
    reader: type[FakeReader] = FakeReader, writer: type[FakeWriter] = FakeWriter
) -> Callable[[], Any]:
    def make_pair() -> Any:
        forward, backward = Channel(), Channel()
        return (reader(backward), writer(forward, backward)), (
            reader(forward),
            writer(backward, forward),
        )

    return make_pair


# one bug each


class ReadWaitsForN(FakeReader):
    async def read(self, n: int = -1) -> bytes:
        try:
            return await self.readexactly(n) if n > 0 else await super().read(n)
        except asyncio.IncompleteReadError as error:
            return error.partial


class ReadNeverWaits(FakeReader):
    async def read(self, n: int = -1) -> bytes:
        if not self.channel.data and n > 0:
            return b""
        return await super().read(n)


class ReadexactlyReturnsWhatIsThere(FakeReader):
    async def readexactly(self, n: int) -> bytes:
        return await self.read(n)


class ReaduntilDropsTheSeparator(FakeReader):
    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        return (await super().readuntil(separator))[: -len(separator)]


class PartialInsteadOfIncomplete(FakeReader):
    async def readexactly(self, n: int) -> bytes:
        try:
            return await super().readexactly(n)
        except asyncio.IncompleteReadError as error:
            return error.partial


class NoLimit(FakeReader):
    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        self.limit = 2**62
        return await super().readuntil(separator)


class DrainNeverWaits(FakeWriter):
    async def drain(self) -> None:
        if self.broken is not None:
            raise self.broken


class WriteRaisesToAClosedPeer(FakeWriter):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.out.reader_gone:
            raise BrokenPipeError("the peer is gone")
        super().write(data)


class ClosingOnEof(FakeWriter):
    def is_closing(self) -> bool:
        return self.closing or self.incoming.eof


class WriteAcceptsText(FakeWriter):
    def write(self, data: Any) -> None:
        super().write(data.encode() if isinstance(data, str) else data)


class WaitClosedHangs(FakeWriter):
    async def wait_closed(self) -> None:
        await asyncio.Event().wait()


class WritesAfterEofIgnored(FakeWriter):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.eof_sent:
            super().write(data)


class EmptyWriteIsEof(FakeWriter):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            self.out.eof = True  # the peer sees EOF, as a fake "flush" might signal it
        super().write(data)


# -- labkit's own stream fakes --------------------------------------------------------------


@BOTH_LOOPS
async def test_memory_connection_passes_every_stream_check() -> None:
    report = await labkit.check_stream_pair(labkit.memory_connection)
    assert set(report.passed) == STREAM_LABELS
    assert report.skipped == ()
    assert str(report).startswith("memory_connection: 19 checks passed, 0 skipped")


@BOTH_LOOPS
@pytest.mark.parametrize(
    "options",
    [
        {"read_size": 7, "capacity": 1000, "high_water": 4000},
        {"high_water": 16, "capacity": 256},
        {"limit": 100, "read_size": 16},
    ],
    ids=["fragmented", "tiny-buffers", "small-limit"],
)
async def test_memory_connection_passes_with_small_reads_and_buffers(
    options: dict[str, int],
) -> None:
    limit = options.get("limit", 2**16)
    report = await labkit.check_stream_pair(
        lambda: labkit.memory_connection(**options), limit=limit, skip={"duplex"}
    )
    assert len(report.passed) == len(STREAM_LABELS) - 1


@BOTH_LOOPS
async def test_memory_network_connections_pass_every_stream_check() -> None:
    network = labkit.MemoryNetwork()
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await network.start_server(handle, "127.0.0.1", 0)

    async def network_pair() -> Any:
        client = await network.open_connection(*server.address)
        return client, await accepted.get()

    async with server:
        report = await labkit.check_stream_pair(network_pair)
    assert set(report.passed) == STREAM_LABELS


@BOTH_LOOPS
async def test_an_independent_fake_written_from_scratch_passes_every_stream_check() -> None:
    report = await labkit.check_stream_pair(fake_pair_maker())
    assert set(report.passed) == STREAM_LABELS


# -- broken stream fakes fail, each with its own message -------------------------------------


BROKEN_STREAMS = [
    pytest.param(
        {"reader": ReadNeverWaits},
        "read_available (a->b)",
        "read(100) returned b'' with nothing written: asyncio's read() waits for data",
        id="read-never-waits",
    ),
    pytest.param(
        {"reader": ReadexactlyReturnsWhatIsThere},
        "readexactly (a->b)",
        "readexactly(5) returned b'12' with only b'12' written: asyncio's waits",
        id="readexactly-partial",
    ),
    pytest.param(
        {"reader": ReaduntilDropsTheSeparator},
        "readuntil (b->a)",
        "readuntil(b'\\r\\n') on b'ab\\r' + b'\\ncd...' returned b'ab'; expected "
        "b'ab\\r\\n' (a separator split across writes)",
        id="readuntil-without-separator",
    ),
    pytest.param(
        {"reader": PartialInsteadOfIncomplete},
        "incomplete_read (a->b)",
        "readexactly(1) at EOF returned b'' at EOF; asyncio's raises IncompleteReadError",
        id="partial-instead-of-incomplete",
    ),
    pytest.param(
        {"reader": NoLimit},
        "limit",
        "readuntil(b'\\n') raised IncompleteReadError: 131072 bytes read on a total of "
        "undefined expected bytes on 131072 bytes without a separator (limit=65536); asyncio's "
        "raises LimitOverrunError as soon as the limit is passed",
        id="no-limit",
    ),
    pytest.param(
        {"writer": DrainNeverWaits},
        "drain_backpressure (a->b)",
        "drain() never waited: 64 MiB were written while the peer read nothing",
        id="drain-never-waits",
    ),
    pytest.param(
        {"writer": WriteRaisesToAClosedPeer},
        "peer_closed (b->a)",
        "write() to a closed peer raised BrokenPipeError: the peer is gone (write 1)",
        id="write-raises",
    ),
    pytest.param(
        {"writer": ClosingOnEof},
        "peer_closed (a->b)",
        "is_closing() became True when the peer closed",
        id="closing-on-eof",
    ),
    pytest.param(
        {"writer": WriteAcceptsText},
        "round_trip",
        "write('text') was accepted: asyncio's transports refuse str with TypeError",
        id="write-accepts-text",
    ),
    pytest.param(
        {"writer": WritesAfterEofIgnored},
        "write_eof (a->b)",
        "write() after write_eof() was accepted; asyncio's raises RuntimeError",
        id="write-after-eof",
    ),
    pytest.param(
        {"writer": EmptyWriteIsEof},
        "round_trip",
        "after write(b''): asyncio's write(b'') sends nothing",
        id="empty-write-is-eof",
    ),
]


@BOTH_LOOPS
@pytest.mark.parametrize(("classes", "check", "message"), BROKEN_STREAMS)
async def test_a_broken_stream_fake_fails_the_check_that_covers_its_bug(
    classes: dict[str, Any], check: str, message: str
) -> None:
    with pytest.raises(ConformanceError) as info:
        await labkit.check_stream_pair(fake_pair_maker(**classes))
    error = info.value
    assert check in error.failures, error
    assert message in error.failures[check]
    assert error.report.passed, "checks the bug does not touch still pass"
    assert str(error).startswith(
        f"fake_pair_maker.<locals>.make_pair deviates from asyncio: {len(error.failures)} of 19 "
        "checks failed\n- "
    )


@VIRTUAL
async def test_a_reader_that_waits_for_n_bytes_times_out_with_the_reason() -> None:
    with pytest.raises(ConformanceError) as info:
        await labkit.check_stream_pair(fake_pair_maker(reader=ReadWaitsForN), step_timeout=5)
    assert info.value.failures["read_available (a->b)"] == (
        "read(100) returning after 3 bytes were written (asyncio's returns what is there; it "
        "does not wait for 100 bytes) did not happen within 5 s"
    )
    assert asyncio.get_running_loop().time() >= 5  # virtual seconds


@VIRTUAL
async def test_a_wait_closed_that_hangs_fails_close() -> None:
    with pytest.raises(ConformanceError) as info:
        await labkit.check_stream_pair(fake_pair_maker(writer=WaitClosedHangs))
    assert (
        "wait_closed() after close() did not happen within 10 s"
        in (info.value.failures["close (a->b)"])
    )


# -- an honest transport fake written from scratch, with its own peer ----------------------


class ToyTransport(asyncio.Transport):
    """A fake transport as a user might write it: a buffer the peer drains, the loop calls back."""

    def __init__(self, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self.loop = asyncio.get_running_loop()
        self.protocol = protocol
        self.buffer = bytearray()
        self.high, self.low = 64 * 1024, 16 * 1024
        self.paused = False
        self.reading = True
        self.closing = False
        self.eof_written = False
        self.lost_scheduled = False
        self.held = bytearray()
        self.held_eof = False
        self.peer_signal = Signal()
        protocol.connection_made(self)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if not self.buffer:
            self.schedule_lost(None)
        self.peer_signal.fire()

    def abort(self) -> None:
        self.buffer.clear()
        self.closing = True
        self.schedule_lost(None)
        self.peer_signal.fire()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    def is_reading(self) -> bool:
        return self.reading and not self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        if self.closing or self.reading:
            return
        self.reading = True
        self.loop.call_soon(self.flush_held)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high}) must be >= low ({low}) must be >= 0")
        self.high, self.low = high, low
        self.maybe_pause()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self.low, self.high)

    def get_write_buffer_size(self) -> int:
        return len(self.buffer)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        if self.eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data or self.closing:
            return
        self.buffer += data
        self.peer_signal.fire()
        self.maybe_pause()

    def write_eof(self) -> None:
        if self.closing or self.eof_written:
            return
        self.eof_written = True
        self.peer_signal.fire()

    def can_write_eof(self) -> bool:
        return True

    # internals and the peer's side

    def maybe_pause(self) -> None:
        if not self.paused and len(self.buffer) > self.high:
            self.paused = True
            self.protocol.pause_writing()

    def schedule_lost(self, exc: BaseException | None) -> None:
        if not self.lost_scheduled:
            self.lost_scheduled = True
            self.loop.call_soon(self.protocol.connection_lost, exc)

    def take(self, n: int) -> bytes:
        chunk = bytes(self.buffer[:n])
        del self.buffer[:n]
        if self.paused and len(self.buffer) <= self.low:
            self.paused = False
            self.protocol.resume_writing()
        if self.closing and not self.buffer:
            self.schedule_lost(None)
        return chunk

    def deliver(self, data: bytes) -> None:
        if self.closing:
            return
        if not self.is_reading():
            self.held += data
            return
        self.call_data_received(data)

    def call_data_received(self, data: bytes) -> None:
        try:
            self.protocol.data_received(data)  # type: ignore[attr-defined]
        except Exception as exc:
            self.loop.call_exception_handler(
                {"message": "data_received() failed", "exception": exc, "transport": self}
            )
            self.buffer.clear()
            self.closing = True
            self.schedule_lost(exc)

    def deliver_eof(self) -> None:
        if self.closing:
            return
        if not self.is_reading():
            self.held_eof = True
            return
        if not self.protocol.eof_received():  # type: ignore[attr-defined]
            self.close()

    def flush_held(self) -> None:
        data, self.held = bytes(self.held), bytearray()
        if data:
            self.deliver(data)
        if self.held_eof:
            self.deliver_eof()


class ToyPeer:
    """The TransportPeer of a ToyTransport: what a user writes for their own fake."""

    def __init__(self, transport: ToyTransport) -> None:
        self.transport = transport

    async def read(self, n: int) -> bytes:
        while True:
            if self.transport.buffer:
                return self.transport.take(n)
            if self.transport.eof_written or self.transport.closing:
                return b""
            await self.transport.peer_signal.wait()

    def write(self, data: bytes) -> None:
        self.transport.loop.call_soon(self.transport.deliver, bytes(data))

    def write_eof(self) -> None:
        self.transport.loop.call_soon(self.transport.deliver_eof)

    def close(self) -> None:
        self.write_eof()


def toy_connect(cls: type[ToyTransport] = ToyTransport) -> Callable[[asyncio.Protocol], Any]:
    async def connect(protocol: asyncio.Protocol) -> tuple[asyncio.Transport, ToyPeer]:
        transport = cls(protocol)
        return transport, ToyPeer(transport)

    return connect


# one bug each


class LostInsideClose(ToyTransport):
    def close(self) -> None:
        self.closing = True
        self.lost_scheduled = True
        self.protocol.connection_lost(None)


class NeverPauses(ToyTransport):
    def maybe_pause(self) -> None:
        pass


class LimitsAsHighLow(ToyTransport):
    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self.high, self.low)


class AbortFlushes(ToyTransport):
    def abort(self) -> None:
        self.close()


class CloseDropsTheBuffer(ToyTransport):
    def close(self) -> None:
        self.abort()


class PassesBytearray(ToyTransport):
    def call_data_received(self, data: bytes) -> None:
        super().call_data_received(bytearray(data))  # type: ignore[arg-type]


class IgnoresKeepOpen(ToyTransport):
    def deliver_eof(self) -> None:
        if not self.closing:
            self.protocol.eof_received()  # type: ignore[attr-defined]
            self.close()


class DeliversWhilePaused(ToyTransport):
    def deliver(self, data: bytes) -> None:
        if not self.closing:
            self.call_data_received(data)


class SwallowsProtocolErrors(ToyTransport):
    def call_data_received(self, data: bytes) -> None:
        try:
            self.protocol.data_received(data)  # type: ignore[attr-defined]
        except Exception:
            pass


class ResumesAtOnce(ToyTransport):
    def take(self, n: int) -> bytes:
        if self.paused:
            self.paused = False
            self.protocol.resume_writing()
        return super().take(n)


class AcceptsText(ToyTransport):
    def write(self, data: Any) -> None:
        super().write(data.encode() if isinstance(data, str) else data)


class LostTwice(ToyTransport):
    def abort(self) -> None:
        super().abort()
        self.loop.call_soon(self.protocol.connection_lost, None)


class LostWithAnError(ToyTransport):
    def schedule_lost(self, exc: BaseException | None) -> None:
        super().schedule_lost(exc or ConnectionAbortedError("closed"))


class SizeAlwaysZero(ToyTransport):
    def get_write_buffer_size(self) -> int:
        return 0


class NoConnectionMade(ToyTransport):
    def __init__(self, protocol: asyncio.BaseProtocol) -> None:
        super().__init__(asyncio.Protocol())
        self.protocol = protocol


TRANSPORT_NAMES = {
    "basics",
    "write",
    "data_received",
    "flow_control",
    "write_eof",
    "eof_received",
    "close",
    "abort",
    "pause_reading",
    "protocol_error",
    "set_protocol",
}


async def mock_transport_linked(protocol: asyncio.Protocol) -> tuple[asyncio.Transport, Any]:
    transport = MockTransport(protocol)
    reader = asyncio.StreamReader()
    far = asyncio.StreamReaderProtocol(reader)
    far_transport = MockTransport(far)
    MemoryLink(transport, far_transport)
    writer = asyncio.StreamWriter(far_transport, far, reader, asyncio.get_running_loop())
    return transport, (reader, writer)


class MockPeer:
    """A lone MockTransport's own peer API (peer_read, receive, receive_eof) as a TransportPeer."""

    def __init__(self, transport: MockTransport) -> None:
        self.transport = transport

    async def read(self, n: int) -> bytes:
        while True:
            if data := self.transport.peer_read(n):
                return data
            if self.transport.eof_written or self.transport.is_closing():
                return b""
            await self.transport.wait_written()

    def write(self, data: bytes) -> None:
        self.transport.receive(data)

    def write_eof(self) -> None:
        self.transport.receive_eof()

    def close(self) -> None:
        self.transport.receive_eof()


async def mock_transport_alone(protocol: asyncio.Protocol) -> tuple[asyncio.Transport, MockPeer]:
    transport = MockTransport(protocol)
    return transport, MockPeer(transport)


@BOTH_LOOPS
async def test_mock_transport_on_a_memory_link_passes_every_transport_check() -> None:
    report = await labkit.check_transport(mock_transport_linked)
    assert set(report.passed) == TRANSPORT_NAMES


@BOTH_LOOPS
async def test_a_lone_mock_transport_passes_but_for_its_documented_receive_deviation() -> None:
    """MockTransport.receive() raises the protocol's exception to the test, by design."""
    report = await labkit.check_transport(mock_transport_alone, skip={"protocol_error"})
    assert set(report.passed) == TRANSPORT_NAMES - {"protocol_error"}
    assert report.skipped == (("protocol_error", "skip= asked for it"),)
    with pytest.raises(ConformanceError) as info:
        await labkit.check_transport(mock_transport_alone)
    assert set(info.value.failures) == {"protocol_error"}
    assert info.value.failures["protocol_error"].startswith(
        "the exception from data_received() came out of the peer's write()"
    )


@BOTH_LOOPS
async def test_an_independent_fake_transport_with_its_own_peer_passes_every_check() -> None:
    report = await labkit.check_transport(toy_connect())
    assert set(report.passed) == TRANSPORT_NAMES


BROKEN_TRANSPORTS = [
    pytest.param(
        LostInsideClose,
        "close",
        "connection_lost() was called inside close(); asyncio calls it later",
        id="lost-inside-close",
    ),
    pytest.param(
        NeverPauses,
        "flow_control",
        "pause_writing() was never called: 67108864 bytes were written, the peer read none",
        id="never-pauses",
    ),
    pytest.param(
        LimitsAsHighLow,
        "basics",
        "get_write_buffer_limits() gave (1000, 100); asyncio's gives (low, high) = (100, 1000)",
        id="limits-reversed",
    ),
    pytest.param(
        AbortFlushes,
        "abort",
        "asyncio's abort() discards the write buffer",
        id="abort-flushes",
    ),
    pytest.param(
        CloseDropsTheBuffer,
        "close",
        "the peer read b'' then EOF; b'bye' was written before close(), and asyncio's close() "
        "sends what was written first",
        id="close-drops-the-buffer",
    ),
    pytest.param(
        PassesBytearray,
        "data_received",
        "data_received() got a bytearray; asyncio passes bytes",
        id="bytearray",
    ),
    pytest.param(
        IgnoresKeepOpen,
        "eof_received",
        "the transport closed although eof_received() returned True",
        id="ignores-keep-open",
    ),
    pytest.param(
        DeliversWhilePaused,
        "pause_reading",
        "data_received(b'held') was called while reading was paused",
        id="delivers-while-paused",
    ),
    pytest.param(
        ResumesAtOnce,
        "flow_control",
        "above the low-water mark 16384",
        id="resumes-at-once",
    ),
    pytest.param(
        AcceptsText,
        "write",
        "write('text') was accepted",
        id="accepts-text",
    ),
    pytest.param(
        LostTwice,
        "abort",
        "connection_lost() was called 3 times after abort()",
        id="lost-twice",
    ),
    pytest.param(
        LostWithAnError,
        "close",
        "close() led to connection_lost(ConnectionAbortedError('closed')); asyncio's passes None",
        id="lost-with-an-error",
    ),
    pytest.param(
        SizeAlwaysZero,
        "flow_control",
        "pause_writing() came with get_write_buffer_size() = 0, not past the high-water mark",
        id="size-always-zero",
    ),
    pytest.param(
        NoConnectionMade,
        "write",
        "connection_made(transport) had not been called once with the transport",
        id="no-connection-made",
    ),
]


@BOTH_LOOPS
@pytest.mark.parametrize(("cls", "check", "message"), BROKEN_TRANSPORTS)
async def test_a_broken_transport_fails_the_check_that_covers_its_bug(
    cls: type[ToyTransport], check: str, message: str
) -> None:
    with pytest.raises(ConformanceError) as info:
        await labkit.check_transport(toy_connect(cls))
    error = info.value
    assert check in error.failures, error
    assert message in error.failures[check]
    assert str(error).startswith("toy_connect.<locals>.connect deviates from asyncio: ")


@VIRTUAL
async def test_a_transport_that_swallows_protocol_errors_fails_protocol_error() -> None:
    with pytest.raises(ConformanceError) as info:
        await labkit.check_transport(toy_connect(SwallowsProtocolErrors))
    assert set(info.value.failures) == {"protocol_error"}
    assert info.value.failures["protocol_error"].startswith(
        "connection_lost() after data_received() raised (asyncio closes the transport) did not "
        "happen within 10 s"
    )


class NaiveTransport(asyncio.Transport):
    """The fake transport most test suites start with: a bytearray and a flag."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.sent = bytearray()
        self.closed = False
        protocol.connection_made(self)

    def write(self, data: Any) -> None:
        self.sent += data

    def close(self) -> None:
        self.closed = True
        self.protocol.connection_lost(None)

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0


class NaivePeer:
    def __init__(self, transport: NaiveTransport) -> None:
        self.transport = transport

    async def read(self, n: int) -> bytes:
        await asyncio.sleep(0)
        data = bytes(self.transport.sent[:n])
        del self.transport.sent[:n]
        return data

    def write(self, data: bytes) -> None:
        self.transport.protocol.data_received(data)

    def write_eof(self) -> None:
        self.transport.protocol.eof_received()

    def close(self) -> None:
        self.write_eof()


@VIRTUAL
async def test_a_naive_fake_fails_everything_one_line_each() -> None:
    async def naive(protocol: asyncio.Protocol) -> tuple[asyncio.Transport, NaivePeer]:
        transport = NaiveTransport(protocol)
        return transport, NaivePeer(transport)

    with pytest.raises(ConformanceError) as info:
        await labkit.check_transport(naive)
    failures = info.value.failures
    assert set(failures) == TRANSPORT_NAMES
    text = str(info.value)
    assert text.splitlines()[0] == (
        "test_a_naive_fake_fails_everything_one_line_each.<locals>.naive deviates from "
        "asyncio: 11 of 11 checks failed"
    )
    assert failures["basics"] == (
        "get_protocol() is not implemented: the fake inherits asyncio's abstract method, which "
        "raises NotImplementedError, when the check ran `if transport.get_protocol() is not "
        "recorder:`"
    )
    assert failures["close"].startswith("connection_lost() was called inside close()")
    assert failures["eof_received"].startswith(
        "connection_lost() after eof_received() returned None (asyncio then closes the "
        "transport) did not happen within 10 s"
    )
    assert failures["write"] == (
        "when the check cleaned up (abort(), then the peer's close()): eof_received() was "
        "called after connection_lost()"
    )
    assert "passed:" not in text


# -- arguments -------------------------------------------------------------------------------


@BOTH_LOOPS
async def test_skip_names_checks_and_unknown_names_are_refused() -> None:
    report = await labkit.check_stream_pair(labkit.memory_connection, skip="duplex")
    assert ("duplex", "skip= asked for it") in report.skipped
    report = await labkit.check_stream_pair(labkit.memory_connection, skip={"close"})
    assert {label for label, _ in report.skipped} == {"close (a->b)", "close (b->a)"}
    with pytest.raises(ValueError, match=r"no check named 'closing'; the checks are round_trip"):
        await labkit.check_stream_pair(labkit.memory_connection, skip={"closing"})
    with pytest.raises(ValueError, match=r"no check named 'nope'; the checks are basics, write"):
        await labkit.check_transport(mock_transport_linked, skip={"nope"})


@BOTH_LOOPS
async def test_limit_none_skips_the_limit_check_and_bad_limits_are_refused() -> None:
    report = await labkit.check_stream_pair(labkit.memory_connection, limit=None, skip="duplex")
    assert ("limit", "limit=None: the readers' limit is unknown") in report.skipped
    with pytest.raises(ValueError, match="limit must be an int >= 1"):
        await labkit.check_stream_pair(labkit.memory_connection, limit=0)


@BOTH_LOOPS
async def test_a_maker_returning_the_wrong_shape_is_told_the_right_one() -> None:
    with pytest.raises(TypeError, match=r"make_pair\(\) must return two \(reader, writer\) pairs"):
        await labkit.check_stream_pair(lambda: ["not", "pairs", "at all"])
    with pytest.raises(TypeError, match=r"must return two .* got 42"):
        await labkit.check_stream_pair(lambda: 42)  # type: ignore[arg-type,return-value]

    async def no_peer(protocol: asyncio.Protocol) -> tuple[asyncio.Transport, Any]:
        return MockTransport(protocol), "peer"

    with pytest.raises(TypeError, match=r"a \(StreamReader, StreamWriter\) pair or an object"):
        await labkit.check_transport(no_peer)

    async def no_tuple(protocol: asyncio.Protocol) -> Any:
        return MockTransport(protocol)

    with pytest.raises(TypeError, match=r"must return \(transport, peer\); got <MockTransport"):
        await labkit.check_transport(no_tuple)


def test_every_check_is_described() -> None:
    assert set(labkit.STREAM_CHECKS) == {label.split(" ")[0] for label in STREAM_LABELS}
    assert set(labkit.TRANSPORT_CHECKS) == TRANSPORT_NAMES
    assert isinstance(ToyPeer(ToyTransport.__new__(ToyTransport)), labkit.TransportPeer)


def test_a_failure_shows_the_users_call_and_the_verdict(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        test_user="""
        import asyncio
        import pytest
        import labkit

        class Eager(labkit.MockTransport):
            def close(self):
                super().close()
                self.get_protocol().connection_lost(None)   # the bug: inside close()

        async def connect(protocol):
            transport = Eager(protocol)
            reader = asyncio.StreamReader()
            far = asyncio.StreamReaderProtocol(reader)
            far_transport = labkit.MockTransport(far)
            labkit.MemoryLink(transport, far_transport)
            loop = asyncio.get_running_loop()
            return transport, (reader, asyncio.StreamWriter(far_transport, far, reader, loop))

        @pytest.mark.asyncio(loop_factories=["virtual"])
        async def test_my_transport():
            await labkit.check_transport(connect)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    output = result.stdout.str()
    assert result.ret == 1
    assert ">       await labkit.check_transport(connect)" in output
    assert "E       labkit.conformance.ConformanceError: connect deviates from asyncio: " in output
    assert "E       - close: connection_lost() was called inside close()" in output
    assert "conformance.py" not in output
