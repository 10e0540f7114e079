"""labkit.memory_connection(): asyncio streams in memory, backpressure and injected faults."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import labkit
from labkit import MemoryLink, MockTransport, memory_connection

both_loops = pytest.mark.asyncio(loop_factories=["asyncio", "virtual"])


@both_loops
async def test_bytes_flow_both_ways() -> None:
    async with memory_connection() as connection:
        (reader, writer), (peer_reader, peer_writer) = connection
        writer.write(b"PING\r\n")
        await writer.drain()
        assert await peer_reader.readline() == b"PING\r\n"
        peer_writer.write(b"PONG\r\n")
        assert await reader.readline() == b"PONG\r\n"


@both_loops
async def test_ends_are_named_tuples_with_their_transport() -> None:
    connection = memory_connection(
        client_address=("10.0.0.2", 5555), server_address=("10.0.0.1", 80)
    )
    async with connection:
        client, server = connection
        assert client is connection.client
        assert isinstance(client.transport, MockTransport)
        assert client.writer.get_extra_info("peername") == ("10.0.0.1", 80)
        assert server.writer.get_extra_info("peername") == ("10.0.0.2", 5555)
        assert isinstance(connection.link, MemoryLink)
        assert connection.to_server is connection.link.forward
        assert connection.to_client is connection.link.backward
    assert client.transport.lost
    assert server.transport.lost


class Received(asyncio.Protocol):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.eof = False

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True


@both_loops
async def test_a_link_delivers_on_a_later_iteration_never_inside_write() -> None:
    client, server = Received(), Received()
    a, b = MockTransport(client), MockTransport(server)
    MemoryLink(a, b)
    a.write(b"x")
    assert server.chunks == []
    await asyncio.sleep(0)
    assert server.chunks == [b"x"]
    a.write_eof()
    await asyncio.sleep(0)
    assert server.eof
    b.write(b"back")
    await asyncio.sleep(0)
    assert client.chunks == [b"back"]


@both_loops
async def test_a_link_buffers_capacity_bytes_for_a_receiver_that_does_not_read() -> None:
    client, server = Received(), Received()
    a, b = MockTransport(client, high_water=10), MockTransport(server)
    link = MemoryLink(a, b, capacity=100)
    b.pause_reading()
    a.write(b"q" * 105)
    assert a.get_write_buffer_size() == 5  # 100 wait in the "socket", 5 in the transport
    a.write(b"q" * 6)
    assert a.writing_paused
    assert link.forward.transferred == 100
    b.resume_reading()
    for _ in range(3):
        await asyncio.sleep(0)
    assert b"".join(server.chunks) == b"q" * 111
    assert not a.writing_paused


@both_loops
async def test_read_size_one_delivers_byte_by_byte_and_streams_still_frame_lines() -> None:
    async with memory_connection(read_size=1) as connection:
        (_, writer), (peer_reader, _) = connection
        writer.write(b"hello\nworld\n")
        assert await peer_reader.readline() == b"hello\n"
        assert await peer_reader.readline() == b"world\n"


@both_loops
async def test_write_eof_gives_the_peer_eof_and_keeps_the_other_direction() -> None:
    async with memory_connection() as connection:
        (reader, writer), (peer_reader, peer_writer) = connection
        writer.write(b"request")
        writer.write_eof()
        assert await peer_reader.read() == b"request"
        assert peer_reader.at_eof()
        peer_writer.write(b"response")
        peer_writer.close()
        assert await reader.read() == b"response"
        await peer_writer.wait_closed()


@both_loops
async def test_close_then_wait_closed_on_both_ends() -> None:
    async with memory_connection() as connection:
        (_, writer), (peer_reader, peer_writer) = connection
        writer.write(b"bye")
        writer.close()
        await writer.wait_closed()
        assert await peer_reader.read() == b"bye"
        peer_writer.close()
        await peer_writer.wait_closed()
        assert writer.transport.is_closing()


@both_loops
async def test_readline_limit_is_the_real_streamreaders() -> None:
    async with memory_connection(limit=8) as connection:
        (_, writer), (peer_reader, _) = connection
        writer.write(b"much too long a line\n")
        with pytest.raises(ValueError, match="limit"):
            await peer_reader.readline()


@both_loops
async def test_readexactly_at_eof_raises_incomplete_read() -> None:
    async with memory_connection() as connection:
        (_, writer), (peer_reader, _) = connection
        writer.write(b"abc")
        writer.close()
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await peer_reader.readexactly(5)
        assert info.value.partial == b"abc"


@both_loops
async def test_drain_blocks_while_the_peer_does_not_read_and_resumes_when_it_does() -> None:
    async with memory_connection(limit=1024, capacity=4096, high_water=8192) as connection:
        (_, writer), (peer_reader, _) = connection
        payload = b"x" * 100_000
        writer.write(payload)
        drain = asyncio.create_task(writer.drain(), name="drain")
        for _ in range(20):
            await asyncio.sleep(0)
        assert not drain.done()
        assert connection.client.transport.writing_paused
        assert connection.server.transport.is_reading() is False  # StreamReader paused it
        assert await peer_reader.readexactly(len(payload)) == payload
        await drain
        assert connection.client.transport.events[:2] == ["pause_writing", "resume_writing"]


@both_loops
async def test_a_small_write_to_a_reading_peer_never_pauses() -> None:
    async with memory_connection() as connection:
        (_, writer), (peer_reader, _) = connection
        writer.write(b"y" * 1000)
        await writer.drain()
        assert await peer_reader.readexactly(1000) == b"y" * 1000
        assert connection.client.transport.events == []


# -- faults ------------------------------------------------------------------------------


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_stall_makes_a_reader_time_out_in_virtual_time() -> None:
    async with memory_connection() as connection:
        (_, writer), (peer_reader, _) = connection
        connection.to_server.stall()
        writer.write(b"hello\n")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(30):
                await peer_reader.readline()
        assert asyncio.get_running_loop().time() == 30.0
        connection.to_server.unstall()
        assert await peer_reader.readline() == b"hello\n"


@both_loops
async def test_a_stall_fills_the_senders_buffer_and_pauses_it() -> None:
    async with memory_connection(high_water=100) as connection:
        (_, writer), _ = connection
        connection.to_server.stall()
        writer.write(b"z" * 101)
        assert connection.client.transport.writing_paused
        assert connection.to_server.stalled
        assert connection.to_server.transferred == 0


@both_loops
async def test_close_after_truncates_the_stream_with_a_clean_eof() -> None:
    async with memory_connection() as connection:
        (_, writer), (peer_reader, _) = connection
        connection.to_server.close_after(4)
        writer.write(b"0123456789")
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await peer_reader.readexactly(10)
        assert info.value.partial == b"0123"
        assert await connection.client.transport.wait_lost() is None
        assert connection.to_server.transferred == 4


@both_loops
async def test_reset_after_delivers_the_bytes_then_resets_both_ends() -> None:
    async with memory_connection() as connection:
        (reader, writer), (peer_reader, _) = connection
        connection.to_server.reset_after(3)
        writer.write(b"hello")
        assert await peer_reader.read(100) == b"hel"
        with pytest.raises(ConnectionResetError):
            await peer_reader.read(100)
        with pytest.raises(ConnectionResetError):
            await reader.read(100)
        with pytest.raises(ConnectionResetError):
            await writer.drain()


@both_loops
async def test_reset_now_breaks_both_ends() -> None:
    async with memory_connection() as connection:
        (reader, writer), (peer_reader, peer_writer) = connection
        connection.reset()
        with pytest.raises(ConnectionResetError):
            await reader.read()
        with pytest.raises(ConnectionResetError):
            await peer_reader.read()
        for end in connection:
            assert isinstance(end.transport.lost_exception, ConnectionResetError)
        peer_writer.close()
        writer.close()


@both_loops
async def test_writing_to_a_peer_that_closed_resets_the_writer() -> None:
    async with memory_connection() as connection:
        (_, writer), (_, peer_writer) = connection
        peer_writer.close()
        await peer_writer.wait_closed()
        writer.write(b"anyone there?")
        await asyncio.sleep(0)
        with pytest.raises(ConnectionResetError):
            await writer.drain()


@both_loops
async def test_lose_connection_on_one_end_resets_the_other() -> None:
    async with memory_connection() as connection:
        (_, _), (peer_reader, _) = connection
        connection.client.transport.lose_connection(OSError("cable pulled"))
        with pytest.raises(ConnectionResetError):
            await peer_reader.read()


@both_loops
async def test_fault_arguments_are_checked() -> None:
    async with memory_connection() as connection:
        with pytest.raises(ValueError, match="nbytes must be"):
            connection.to_server.close_after(-1)
        with pytest.raises(ValueError, match="capacity must be"):
            memory_connection(capacity=0)
        with pytest.raises(RuntimeError, match="one MemoryLink only"):
            MemoryLink(connection.client.transport, connection.server.transport)


@both_loops
async def test_reprs_are_deterministic() -> None:
    async with labkit.memory_connection() as connection:
        connection.to_client.stall()
        assert repr(connection.to_client) == "<Pipe stalled transferred=0>"
        assert repr(connection).startswith("<MemoryConnection <MemoryLink forward=<Pipe flowing")


@given(
    lines=st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b), max_size=12),
    read_size=st.integers(1, 64),
    capacity=st.integers(1, 256),
    high_water=st.integers(0, 128),
)
@settings(max_examples=60, deadline=None, database=None)
def test_property_any_link_settings_deliver_the_same_lines(
    lines: list[bytes], read_size: int, capacity: int, high_water: int
) -> None:
    """Whatever the read size, socket buffer and high-water mark: same lines, same order."""
    payload = b"".join(line + b"\n" for line in lines)

    async def exchange() -> list[bytes]:
        connection = memory_connection(
            limit=64, read_size=read_size, capacity=capacity, high_water=high_water
        )
        async with connection:
            (_, writer), (peer_reader, _) = connection

            async def send() -> None:
                for start in range(0, len(payload), 7):
                    writer.write(payload[start : start + 7])
                    await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(send(), name="sender")
            received = [line async for line in peer_reader]
            await sender
            return received

    assert labkit.run(exchange()) == [line + b"\n" for line in lines]
