"""labkit.MockTransport: every asyncio.Transport method, and flow control as a socket does it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from labkit import MockTransport

both_loops = pytest.mark.asyncio(loop_factories=["asyncio", "virtual"])


class Recorder(asyncio.Protocol):
    """Records every callback a transport makes, in order."""

    def __init__(self, *, keep_open_on_eof: bool = False) -> None:
        self.calls: list[Any] = []
        self.transport: asyncio.BaseTransport | None = None
        self.keep_open_on_eof = keep_open_on_eof

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.calls.append("connection_made")

    def data_received(self, data: bytes) -> None:
        self.calls.append(data)

    def eof_received(self) -> bool:
        self.calls.append("eof_received")
        return self.keep_open_on_eof

    def pause_writing(self) -> None:
        self.calls.append("pause_writing")

    def resume_writing(self) -> None:
        self.calls.append("resume_writing")

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append(("connection_lost", exc))


# -- construction and the BaseTransport methods ------------------------------------------


@both_loops
async def test_connection_made_is_called_at_once_with_the_transport() -> None:
    protocol = Recorder()
    transport = MockTransport(protocol)
    assert protocol.transport is transport
    assert protocol.calls == ["connection_made"]
    assert transport.get_protocol() is protocol
    assert isinstance(transport, asyncio.Transport)


def test_needs_a_loop_and_says_so() -> None:
    with pytest.raises(RuntimeError, match=r"needs an event loop.*loop="):
        MockTransport(Recorder())


@both_loops
async def test_get_extra_info_defaults_and_overrides() -> None:
    transport = MockTransport(Recorder(), extra={"peername": ("10.0.0.1", 1234)})
    assert transport.get_extra_info("peername") == ("10.0.0.1", 1234)
    assert transport.get_extra_info("sockname") == ("127.0.0.1", 8000)
    assert transport.get_extra_info("socket") is None
    assert transport.get_extra_info("nope", "default") == "default"


@both_loops
async def test_set_protocol_switches_the_callbacks() -> None:
    first, second = Recorder(), Recorder()
    transport = MockTransport(first)
    transport.set_protocol(second)
    transport.receive(b"x")
    assert second.calls == [b"x"]
    assert first.calls == ["connection_made"]


@both_loops
async def test_without_a_protocol_the_error_says_how_to_give_one() -> None:
    transport = MockTransport()
    with pytest.raises(RuntimeError, match=r"MockTransport\(protocol\).*set_protocol"):
        transport.get_protocol()
    transport.set_write_buffer_limits(high=1)
    with pytest.raises(RuntimeError, match="no protocol to pause"):
        transport.write(b"ab")


# -- writing -----------------------------------------------------------------------------


@both_loops
async def test_write_buffers_until_the_peer_reads() -> None:
    transport = MockTransport(Recorder())
    transport.write(b"hello ")
    transport.write(bytearray(b"wor"))
    transport.write(memoryview(b"ld"))
    transport.write(b"")
    assert transport.get_write_buffer_size() == 11
    assert transport.peer_read(6) == b"hello "
    assert transport.get_write_buffer_size() == 5
    assert transport.peer_read() == b"world"
    assert transport.peer_read() == b""
    assert transport.written == b"hello world"  # the record survives reading


@both_loops
async def test_write_rejects_text_like_a_real_transport() -> None:
    transport = MockTransport(Recorder())
    with pytest.raises(TypeError, match="bytes-like object, not 'str'"):
        transport.write("text")  # type: ignore[arg-type]


@both_loops
async def test_writelines_writes_each_chunk() -> None:
    transport = MockTransport(Recorder())
    transport.writelines([b"a", bytearray(b"b"), memoryview(b"c")])
    assert transport.written == b"abc"


@both_loops
async def test_write_eof_half_closes_and_forbids_more_writes() -> None:
    protocol = Recorder()
    transport = MockTransport(protocol)
    assert transport.can_write_eof()
    transport.write(b"last")
    transport.write_eof()
    transport.write_eof()  # a second call is ignored
    assert transport.eof_written
    assert not transport.is_closing()
    with pytest.raises(RuntimeError, match=r"write\(\) after write_eof\(\)"):
        transport.write(b"more")
    transport.receive(b"still reading")
    assert protocol.calls[-1] == b"still reading"
    assert transport.events == ["write_eof"]


@both_loops
async def test_peer_read_rejects_a_negative_size() -> None:
    transport = MockTransport(Recorder())
    with pytest.raises(ValueError, match="max_bytes"):
        transport.peer_read(-1)


# -- flow control ------------------------------------------------------------------------


@both_loops
async def test_default_limits_are_asyncios() -> None:
    transport = MockTransport(Recorder())
    assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)


@pytest.mark.parametrize(
    ("high", "low", "expected"),
    [(None, None, (16384, 65536)), (100, None, (25, 100)), (None, 10, (10, 40)), (8, 8, (8, 8))],
)
@both_loops
async def test_set_write_buffer_limits_follows_asyncios_defaults(
    high: int | None, low: int | None, expected: tuple[int, int]
) -> None:
    transport = MockTransport(Recorder())
    transport.set_write_buffer_limits(high=high, low=low)
    assert transport.get_write_buffer_limits() == expected


@both_loops
async def test_bad_limits_are_refused_with_asyncios_message() -> None:
    transport = MockTransport(Recorder())
    with pytest.raises(ValueError, match=r"high \(1\) must be >= low \(2\)"):
        transport.set_write_buffer_limits(high=1, low=2)


@both_loops
async def test_pause_writing_past_high_water_and_resume_at_low_water() -> None:
    protocol = Recorder()
    transport = MockTransport(protocol, high_water=10, low_water=4)
    transport.write(b"x" * 10)  # at the mark: not past it
    assert not transport.writing_paused
    transport.write(b"x")  # 11 > 10
    assert transport.writing_paused
    transport.write(b"x" * 100)  # already paused: no second call
    assert protocol.calls == ["connection_made", "pause_writing"]
    transport.peer_read(100)  # 11 left > 4
    assert transport.writing_paused
    transport.peer_read(7)  # 4 left <= 4
    assert not transport.writing_paused
    assert protocol.calls == ["connection_made", "pause_writing", "resume_writing"]
    assert transport.events == ["pause_writing", "resume_writing"]


@both_loops
async def test_lowering_the_limits_pauses_at_once() -> None:
    protocol = Recorder()
    transport = MockTransport(protocol)
    transport.write(b"x" * 100)
    transport.set_write_buffer_limits(high=50)
    assert protocol.calls[-1] == "pause_writing"


@both_loops
async def test_a_failing_pause_writing_goes_to_the_loops_exception_handler() -> None:
    class Broken(Recorder):
        def pause_writing(self) -> None:
            raise ValueError("bug in pause_writing")

    reported: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx))
    transport = MockTransport(Broken(), high_water=1)
    transport.write(b"xx")
    assert [ctx["message"] for ctx in reported] == ["protocol.pause_writing() failed"]
    assert transport.writing_paused


@both_loops
async def test_flow_control_pauses_and_resumes_asyncios_stream_writer() -> None:
    """A real protocol: StreamWriter.drain() blocks while paused, returns once drained."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    transport = MockTransport(protocol, high_water=1000, low_water=100)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    writer.write(b"x" * 5000)
    drain = asyncio.create_task(writer.drain(), name="drain")
    await asyncio.sleep(0)
    assert not drain.done()  # paused: drain() waits for the peer
    transport.peer_read(4000)
    await asyncio.sleep(0)
    assert not drain.done()  # 1000 left, still above the low-water mark
    transport.peer_read(900)
    await drain  # 100 left: resume_writing() woke drain()
    assert transport.events == ["pause_writing", "resume_writing"]


# -- reading -----------------------------------------------------------------------------


@both_loops
async def test_receive_calls_data_received_now() -> None:
    protocol = Recorder()
    transport = MockTransport(protocol)
    transport.receive(b"ab")
    transport.receive(b"")
    assert protocol.calls == ["connection_made", b"ab"]
    assert transport.is_reading()


@both_loops
async def test_pause_reading_holds_data_until_resume_reading() -> None:
    protocol = Recorder()
    transport = MockTransport(protocol)
    transport.pause_reading()
    transport.pause_reading()  # idempotent
    assert not transport.is_reading()
    transport.receive(b"held")
    transport.receive_eof()
    await asyncio.sleep(0)
    assert protocol.calls == ["connection_made"]
    transport.resume_reading()
    transport.resume_reading()
    assert protocol.calls == ["connection_made"]  # delivered on the loop, not inside resume
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert protocol.calls[1:3] == [b"held", "eof_received"]
    assert transport.events[:2] == ["pause_reading", "resume_reading"]


@both_loops
async def test_held_data_is_delivered_in_read_size_chunks_one_per_iteration() -> None:
    protocol = Recorder()
    transport = MockTransport(protocol, read_size=3)
    transport.pause_reading()
    transport.receive(b"abcdefgh")
    transport.resume_reading()
    for _ in range(3):
        await asyncio.sleep(0)
    assert protocol.calls[1:] == [b"abc", b"def", b"gh"]


@both_loops
async def test_eof_closes_the_transport_unless_the_protocol_keeps_it_open() -> None:
    closing = Recorder()
    transport = MockTransport(closing)
    transport.receive_eof()
    assert transport.is_closing()
    assert await transport.wait_lost() is None
    assert closing.calls == ["connection_made", "eof_received", ("connection_lost", None)]

    keeping = Recorder(keep_open_on_eof=True)
    half_open = MockTransport(keeping)
    half_open.receive_eof()
    assert not half_open.is_closing()
    half_open.write(b"reply after EOF")
    assert half_open.peer_read() == b"reply after EOF"


@both_loops
async def test_data_after_eof_or_close_is_dropped() -> None:
    protocol = Recorder(keep_open_on_eof=True)
    transport = MockTransport(protocol)
    transport.receive_eof()
    transport.receive(b"late")
    transport.close()
    transport.receive(b"later")
    assert b"late" not in protocol.calls
    assert b"later" not in protocol.calls


@both_loops
async def test_an_exception_in_data_received_reaches_the_test_and_loses_the_connection() -> None:
    class Broken(Recorder):
        def data_received(self, data: bytes) -> None:
            raise ValueError(f"cannot parse {data!r}")

    protocol = Broken()
    transport = MockTransport(protocol)
    with pytest.raises(ValueError, match="cannot parse"):
        transport.receive(b"junk")
    exc = await transport.wait_lost()
    assert isinstance(exc, ValueError)
    assert protocol.calls[-1] == ("connection_lost", exc)


@both_loops
async def test_buffered_protocols_get_their_data_through_get_buffer() -> None:
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buf = bytearray(4)
            self.received = bytearray()

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buf

        def buffer_updated(self, nbytes: int) -> None:
            self.received += self.buf[:nbytes]

    protocol = Buffered()
    transport = MockTransport(protocol)
    transport.receive(b"0123456789")
    assert protocol.received == b"0123456789"


# -- closing -----------------------------------------------------------------------------


@both_loops
async def test_close_with_nothing_buffered_loses_the_connection_on_the_next_iteration() -> None:
    protocol = Recorder()
    transport = MockTransport(protocol)
    transport.close()
    assert transport.is_closing()
    assert not transport.is_reading()
    assert not transport.lost  # connection_lost is called from the loop, never inline
    await asyncio.sleep(0)
    assert transport.lost
    assert protocol.calls[-1] == ("connection_lost", None)


@both_loops
async def test_close_flushes_the_buffer_before_connection_lost() -> None:
    protocol = Recorder()
    transport = MockTransport(protocol)
    transport.write(b"goodbye")
    transport.close()
    transport.write(b"ignored")
    assert transport.writes_after_close == 1
    for _ in range(3):
        await asyncio.sleep(0)
    assert not transport.lost  # the peer has not read "goodbye" yet
    assert transport.peer_read() == b"goodbye"
    assert await transport.wait_lost() is None


@both_loops
async def test_abort_drops_the_buffer() -> None:
    protocol = Recorder()
    transport = MockTransport(protocol)
    transport.write(b"never sent")
    transport.abort()
    assert transport.get_write_buffer_size() == 0
    assert await transport.wait_lost() is None
    assert transport.events == ["abort", "connection_lost(None)"]


@both_loops
async def test_connection_lost_is_called_exactly_once_whatever_happens() -> None:
    protocol = Recorder()
    transport = MockTransport(protocol)
    transport.close()
    transport.close()
    transport.abort()
    transport.lose_connection(ConnectionResetError())
    transport.receive_eof()
    await transport.wait_lost()
    for _ in range(3):
        await asyncio.sleep(0)
    assert [c for c in protocol.calls if isinstance(c, tuple)] == [("connection_lost", None)]


@both_loops
async def test_lose_connection_reports_the_error() -> None:
    protocol = Recorder()
    transport = MockTransport(protocol)
    transport.write(b"pending")
    error = ConnectionResetError(104, "Connection reset by peer")
    transport.lose_connection(error)
    assert await transport.wait_lost() is error
    assert transport.lost_exception is error
    assert transport.events == ["lose_connection", "connection_lost(ConnectionResetError)"]


@both_loops
async def test_wait_written_wakes_on_a_write() -> None:
    transport = MockTransport(Recorder())
    waiter = asyncio.create_task(transport.wait_written(), name="wait-written")
    await asyncio.sleep(0)
    assert not waiter.done()
    transport.write(b"x")
    await waiter


@both_loops
async def test_repr_is_deterministic() -> None:
    transport = MockTransport(Recorder())
    transport.write(b"abc")
    assert repr(transport) == "<MockTransport open buffered=3 written=3>"


def test_no_warning_is_logged_by_a_clean_run(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        transport = MockTransport(Recorder())
        transport.write(b"x")
        transport.peer_read()
        transport.close()
        await transport.wait_lost()

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        asyncio.run(main())
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@both_loops
async def test_a_bug_in_connection_lost_is_raised_by_wait_lost() -> None:
    class Broken(Recorder):
        def connection_lost(self, exc: Exception | None) -> None:
            raise NotImplementedError("clean-up not written yet")

    transport = MockTransport(Broken())
    transport.close()
    with pytest.raises(NotImplementedError, match="clean-up"):
        await transport.wait_lost()
    with pytest.raises(NotImplementedError):  # and again, for a later waiter
        await transport.wait_lost()


@both_loops
async def test_a_bug_in_connection_lost_with_nobody_waiting_goes_to_the_loop() -> None:
    class Broken(Recorder):
        def connection_lost(self, exc: Exception | None) -> None:
            raise ValueError("bug in clean-up")

    reported: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx))
    transport = MockTransport(Broken())
    transport.abort()
    await asyncio.sleep(0)
    assert [type(ctx["exception"]) for ctx in reported] == [ValueError]
    assert transport.lost


@both_loops
async def test_a_stream_reader_pauses_and_resumes_reading_through_the_transport() -> None:
    """asyncio's StreamReader pauses the transport past 2 * limit and resumes it as it reads."""
    reader = asyncio.StreamReader(limit=1000)
    transport = MockTransport(asyncio.StreamReaderProtocol(reader))
    payload = bytes(range(256)) * 40  # 10 240 bytes
    for start in range(0, len(payload), 1500):
        transport.receive(payload[start : start + 1500])
    assert not transport.is_reading()  # StreamReader buffer passed 2000 bytes
    assert transport.events == ["pause_reading"]
    assert await reader.readexactly(len(payload)) == payload
    assert transport.events[:2] == ["pause_reading", "resume_reading"]
    assert transport.is_reading()


# -- the peak of the write buffer --------------------------------------------------------


@both_loops
async def test_peak_write_buffer_size_remembers_the_highest_level() -> None:
    transport = MockTransport(Recorder(), high_water=10, low_water=4)
    assert transport.peak_write_buffer_size == 0
    transport.write(b"x" * 6)
    transport.write(b"x" * 6)
    assert transport.peak_write_buffer_size == 12
    transport.peer_read()
    transport.write(b"y" * 3)
    assert transport.get_write_buffer_size() == 3
    assert transport.peak_write_buffer_size == 12  # a later check still sees the peak


@both_loops
async def test_peak_write_buffer_size_counts_what_a_linked_peer_could_not_take() -> None:
    """Through a MemoryLink the peer's socket buffer takes its share first, as send() would."""
    from labkit import MemoryLink

    class Silent(asyncio.Protocol):
        def eof_received(self) -> bool:
            return True

    writer, reader = MockTransport(Recorder()), MockTransport(Silent())
    MemoryLink(writer, reader, capacity=100)
    reader.pause_reading()
    writer.write(b"z" * 60)
    assert writer.peak_write_buffer_size == 0  # all 60 went into the link's buffer
    writer.write(b"z" * 70)
    assert writer.get_write_buffer_size() == 30
    assert writer.peak_write_buffer_size == 30


@both_loops
async def test_peak_write_buffer_size_of_a_stream_writer_under_backpressure() -> None:
    """A producer that respects drain() keeps the peak near the high-water mark."""
    import labkit

    async with labkit.memory_connection(high_water=1000, capacity=500, limit=250) as connection:
        (_, writer), (peer_reader, _) = connection

        async def produce() -> None:
            for _ in range(100):
                writer.write(b"m" * 100)
                await writer.drain()

        producer = asyncio.create_task(produce())
        assert await peer_reader.readexactly(10_000) == b"m" * 10_000
        await producer
        peak = connection.client.transport.peak_write_buffer_size
        assert 1000 < peak <= 1100  # paused as soon as it passed the mark, by one write at most

    async with labkit.memory_connection(high_water=1000, capacity=500, limit=250) as connection:
        (_, writer), (peer_reader, _) = connection
        for _ in range(100):  # the bug: no drain()
            writer.write(b"m" * 100)
        assert await peer_reader.readexactly(10_000) == b"m" * 10_000
        assert connection.client.transport.peak_write_buffer_size > 9000
