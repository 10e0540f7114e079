"""labkit.ProtocolHarness, fragment() and bytes_diff(): fragmentation catches framing bugs."""

from __future__ import annotations

import asyncio
import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit import ProtocolHarness, bytes_diff, fragment

both_loops = pytest.mark.asyncio(loop_factories=["asyncio", "virtual"])


class UpperLines(asyncio.Protocol):
    """Correct: frames lines across data_received calls, answers each in upper case."""

    def __init__(self) -> None:
        self.buffer = b""
        self.lines: list[bytes] = []
        self.lost: list[Exception | None] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.lines.append(line)
            self.transport.write(line.upper() + b"\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


class OneMessagePerChunk(UpperLines):
    """The classic bug: assumes each data_received carries exactly one whole line."""

    def data_received(self, data: bytes) -> None:
        line = data.rstrip(b"\n")
        self.lines.append(line)
        self.transport.write(line.upper() + b"\n")


class Chatty(asyncio.Protocol):
    """Writes a lot on connect, honouring pause_writing/resume_writing."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0
        self.paused = False
        self.pauses = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.pump()

    def pump(self) -> None:
        while self.sent < self.total and not self.paused:
            self.transport.write(b"x" * 100)
            self.sent += 100

    def pause_writing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_writing(self) -> None:
        self.paused = False
        self.pump()


# -- fragment ----------------------------------------------------------------------------


def test_fragment_by_size_offsets_and_seed() -> None:
    assert fragment(b"abcdef", size=4) == [b"abcd", b"ef"]
    assert fragment(b"abcdef", size=1) == [b"a", b"b", b"c", b"d", b"e", b"f"]
    assert fragment(b"abcdef", at=[3, 1, 3, 0, 6]) == [b"a", b"bc", b"def"]
    assert fragment(b"", size=3) == []
    assert fragment(b"abcdef", seed=7) == fragment(b"abcdef", seed=7)
    assert all(1 <= len(c) <= 2 for c in fragment(b"x" * 50, seed=1, max_size=2))


def test_fragment_needs_exactly_one_way_to_split() -> None:
    with pytest.raises(TypeError, match=r"exactly one way.*got none"):
        fragment(b"abc")
    with pytest.raises(TypeError, match="got size, seed"):
        fragment(b"abc", size=1, seed=1)
    with pytest.raises(ValueError, match="size must be"):
        fragment(b"abc", size=0)
    with pytest.raises(ValueError, match="size must be an int >= 1"):
        fragment(b"abc", size=True)  # a bool is not a size (True used to mean 1)
    with pytest.raises(ValueError, match="max_size must be an int >= 1"):
        fragment(b"abc", seed=1, max_size=True)
    with pytest.raises(ValueError, match="between 0 and len"):
        fragment(b"abc", at=[4])


@given(data=st.binary(max_size=200), seed=st.integers(), max_size=st.integers(1, 20))
@settings(database=None)
def test_fragments_always_join_back(data: bytes, seed: int, max_size: int) -> None:
    assert b"".join(fragment(data, seed=seed, max_size=max_size)) == data


# -- bytes_diff ----------------------------------------------------------------------------


def test_bytes_diff_points_at_the_first_difference_and_shows_lines() -> None:
    message = bytes_diff(b"HELLO\nWORLD\n", b"HELLO\nWORLD\nWORLD\n")
    assert message.splitlines()[0] == (
        "written bytes differ from the expected ones at byte 12 (line 3, column 1); "
        "expected 12 bytes, got 18"
    )
    assert "+ b'WORLD\\n'" in message
    short = bytes_diff(b"abc", b"abd")
    assert "at byte 2 (line 1, column 3)" in short
    assert "line by line" not in short
    assert bytes_diff(b"x", b"x") == "the bytes are equal"


# -- the harness ---------------------------------------------------------------------------


@both_loops
async def test_feed_whole_and_assert_written() -> None:
    harness = ProtocolHarness(UpperLines())
    chunks = harness.feed(b"hello\nworld\n")
    assert chunks == [b"hello\nworld\n"]
    harness.assert_written(b"HELLO\nWORLD\n")
    assert harness.written == b"HELLO\nWORLD\n"


@both_loops
async def test_assert_written_fails_with_a_diff() -> None:
    harness = ProtocolHarness(UpperLines())
    harness.feed(b"hi\n")
    with pytest.raises(AssertionError, match=r"at byte 1 \(line 1, column 2\)"):
        harness.assert_written(b"HO\n")


@both_loops
@pytest.mark.parametrize("split", [{"size": 1}, {"at": [2, 3, 8]}, {"seed": 3}])
async def test_a_correct_line_protocol_survives_every_split(split: dict[str, object]) -> None:
    harness = ProtocolHarness(UpperLines())
    harness.feed(b"hello\nworld\n", **split)  # type: ignore[arg-type]
    harness.assert_written(b"HELLO\nWORLD\n")


@both_loops
async def test_fragmentation_catches_one_message_per_data_received() -> None:
    whole = ProtocolHarness(OneMessagePerChunk())
    whole.feed(b"hello\n")
    whole.assert_written(b"HELLO\n")  # the bug hides when each line arrives whole

    split = ProtocolHarness(OneMessagePerChunk())
    split.feed(b"hello\n", at=[3])
    with pytest.raises(AssertionError, match="differ"):
        split.assert_written(b"HELLO\n")
    assert split.written == b"HEL\nLO\n"

    coalesced = ProtocolHarness(OneMessagePerChunk())
    coalesced.feed(b"a\nb\n")  # two lines in one chunk
    assert coalesced.protocol.lines == [b"a\nb"]


@given(
    lines=st.lists(st.binary(max_size=12).filter(lambda b: b"\n" not in b), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=10),
)
@settings(max_examples=150, deadline=None, database=None)
def test_property_any_fragmentation_gives_the_same_lines(
    lines: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    offsets = [c for c in cuts if c <= len(stream)]

    async def parse() -> list[bytes]:
        harness = ProtocolHarness(UpperLines())
        harness.feed(stream, at=offsets)
        harness.assert_written(b"".join(line.upper() + b"\n" for line in lines))
        return harness.protocol.lines

    assert asyncio.run(parse()) == lines


def test_property_finds_the_buggy_protocol() -> None:
    """The same property, run against the bug, must fail: hypothesis finds a split."""

    @given(cut=st.integers(min_value=1, max_value=5))
    @settings(max_examples=20, deadline=None, database=None)
    def prop(cut: int) -> None:
        async def parse() -> list[bytes]:
            harness = ProtocolHarness(OneMessagePerChunk())
            harness.feed(b"hello\n", at=[cut])
            return harness.protocol.lines

        assert asyncio.run(parse()) == [b"hello"]

    with pytest.raises(AssertionError):
        prop()


@both_loops
async def test_feed_eof_and_wait_closed() -> None:
    harness = ProtocolHarness(UpperLines())
    harness.feed_eof()
    assert await harness.wait_closed() is None
    assert harness.protocol.lost == [None]


@both_loops
async def test_drop_defaults_to_a_connection_reset() -> None:
    harness = ProtocolHarness(UpperLines())
    harness.drop()
    exc = await harness.wait_closed()
    assert isinstance(exc, ConnectionResetError)
    assert exc.errno == errno.ECONNRESET
    assert harness.protocol.lost == [exc]


@both_loops
async def test_drop_with_a_chosen_error() -> None:
    harness = ProtocolHarness(UpperLines())
    harness.drop(TimeoutError("idle"))
    assert isinstance(await harness.wait_closed(), TimeoutError)


@both_loops
async def test_read_drains_and_resumes_a_paused_protocol() -> None:
    harness = ProtocolHarness(Chatty(10_000), high_water=1000, low_water=200)
    protocol = harness.protocol
    assert protocol.paused
    assert protocol.sent == 1100
    assert harness.read(900) == b"x" * 900  # 200 left: resume, it writes on
    assert protocol.pauses == 2
    assert len(harness.read()) == 1100
    assert harness.transport.events[:3] == ["pause_writing", "resume_writing", "pause_writing"]


@both_loops
async def test_a_slow_peer_receives_everything_and_keeps_the_writer_paused() -> None:
    harness = ProtocolHarness(Chatty(20_000), high_water=2000, low_water=500)
    data = await harness.read_slowly(20_000, chunk=500, interval=0.01)
    assert data == b"x" * 20_000
    assert harness.protocol.pauses >= 5


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_read_slowly_costs_virtual_time_only() -> None:
    harness = ProtocolHarness(Chatty(1000))
    await harness.read_slowly(1000, chunk=100, interval=1.0)
    assert asyncio.get_running_loop().time() == 10.0


@both_loops
async def test_read_slowly_stops_when_the_transport_closes() -> None:
    harness = ProtocolHarness(UpperLines())
    harness.feed(b"a\n")
    harness.transport.close()
    assert await harness.read_slowly(100, chunk=1, interval=0) == b"A\n"


@both_loops
async def test_read_slowly_waits_for_data_to_be_written() -> None:
    harness = ProtocolHarness(UpperLines())
    reader = asyncio.create_task(harness.read_slowly(2, chunk=1, interval=0), name="slow")
    await asyncio.sleep(0)
    assert not reader.done()
    harness.feed(b"z\n")
    assert await reader == b"Z\n"


@both_loops
async def test_read_slowly_rejects_bad_settings() -> None:
    harness = ProtocolHarness(UpperLines())
    with pytest.raises(ValueError, match="chunk must be"):
        await harness.read_slowly(1, chunk=0, interval=0)


@both_loops
async def test_repr() -> None:
    harness = ProtocolHarness(UpperLines())
    assert repr(harness) == "<ProtocolHarness UpperLines <MockTransport open buffered=0 written=0>>"


def test_bytes_diff_keeps_long_diffs_short() -> None:
    expected = b"".join(b"line %d\n" % n for n in range(100))
    message = bytes_diff(expected, b"")
    assert message.splitlines()[-1] == "  ... and 88 more line(s)"
    assert len(message.splitlines()) == 4 + 12 + 1


class WritesThenHalfCloses(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"bye")
        transport.write_eof()


@both_loops
async def test_read_slowly_stops_at_the_protocols_eof() -> None:
    harness = ProtocolHarness(WritesThenHalfCloses())
    real_wait = harness.transport.wait_written
    calls = 0

    async def counted_wait() -> None:
        nonlocal calls
        calls += 1
        if calls > 100:  # the old code spun here for ever without yielding to the loop
            raise AssertionError("read_slowly() keeps waiting after the protocol's EOF")
        await real_wait()

    harness.transport.wait_written = counted_wait  # type: ignore[method-assign]
    assert await harness.read_slowly(100, chunk=2, interval=0) == b"bye"
