"""Conformance checks: prove that a fake stream or transport behaves like asyncio's real ones.

A test double is only as good as its likeness to the real thing: a fake ``StreamReader`` whose
``read(100)`` waits for 100 bytes, a fake writer whose ``drain()`` never waits, or a fake
transport that calls ``connection_lost`` inside ``close()`` lets code pass its unit tests and
fail in production. :func:`check_stream_pair` and :func:`check_transport` run a fake through
what asyncio's own socket streams and transports do, in the spirit of trio's
``trio.testing.check_two_way_stream``, and fail with one line per deviation. Every check is
derived from asyncio's real implementations and passes on real loopback sockets, on asyncio's
own loop, on labkit's virtual loop and on uvloop.

Where asyncio's own loop and uvloop differ, nothing is checked:

* the default low-water mark (16 KiB on asyncio's loop, 16 bytes on uvloop): the checks set
  the limits they rely on;
* ``write()`` once the connection is lost (asyncio drops the data, and logs a warning after
  five such writes; uvloop raises ``RuntimeError``), and ``write()`` after ``close()`` (asyncio
  still sends it if the buffer was not empty): the checks never write to a closing transport;
* ``get_write_buffer_size()`` after ``abort()`` (0 on asyncio's loop; uvloop keeps reporting
  the discarded bytes);
* ``is_reading()`` after ``eof_received()`` kept the transport open (True on asyncio's loop,
  False on uvloop);
* the wording of errors (``write(str)``'s ``TypeError``, the exception handler's message for a
  failing protocol callback): only the exception type and object are checked.

A check that waits for something (data, EOF, ``connection_lost``) gives up after
``step_timeout`` seconds, which on labkit's virtual loop cost no real time unless real
sockets are involved. A check that something does *not* happen (a read with no data must
wait) lets the loop run 50 rounds first.

Example::

    report = await labkit.check_stream_pair(labkit.memory_connection)
    print(report)                     # memory_connection: 19 checks passed, 0 skipped
    await labkit.check_transport(connect_my_fake)    # ConformanceError: one line per deviation
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import random
import traceback
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeVar, cast, runtime_checkable

__all__ = [
    "STREAM_CHECKS",
    "TRANSPORT_CHECKS",
    "ConformanceError",
    "ConformanceReport",
    "TransportPeer",
    "check_stream_pair",
    "check_transport",
]

_T = TypeVar("_T")
_SETTLE_ROUNDS = 50
_CHUNK = 64 * 1024
_MAX_CLOG = 64 * 1024 * 1024
_HIGH = 64 * 1024
_LOW = 16 * 1024
_PATTERN = bytes(range(251))  # a prime period: misordered power-of-two chunks show up
_DUPLEX_SIZE = 1024 * 1024
_DUPLEX_MAX_CHUNK = 16 * 1024
_PEER_CLOSED_ROUNDS = 100
_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)

End = tuple[asyncio.StreamReader, asyncio.StreamWriter]
StreamPairMaker = Callable[[], Awaitable[Iterable[End]] | Iterable[End]]

STREAM_CHECKS: Mapping[str, str] = {
    "round_trip": "bytes, bytearray, memoryview and writelines() arrive in order both ways; "
    "write(b'') sends nothing (not EOF); write(str) raises TypeError; get_extra_info() "
    "returns the default for an unknown key",
    "read_available": "read(n) waits while nothing is there, then returns 1..n bytes of what "
    "arrived without waiting for n; read(0) returns b'' at once",
    "readexactly": "readexactly(n) waits across fragments for exactly n bytes and leaves the "
    "rest; readexactly(0) returns b''",
    "readuntil": "readuntil(sep) finds a separator split across writes and returns up to and "
    "including it; readline() returns one line at a time",
    "incomplete_read": "at EOF readexactly() and readuntil() raise IncompleteReadError with "
    "the partial bytes, readline() and read() return what is left, then b''",
    "write_eof": "after write_eof() (when can_write_eof()) the peer reads the data then EOF, "
    "write() raises RuntimeError, neither end is closing and the peer can still reply",
    "close": "close() makes is_closing() true at once; wait_closed() returns (twice); the peer "
    "reads the data then EOF and stays open; this end reads EOF; drain() raises "
    "ConnectionResetError",
    "drain_backpressure": "drain() waits while the peer reads nothing and returns once it has "
    "read; every byte arrives intact",
    "peer_closed": "after the peer closed, this end reads EOF and is not closing; write() never "
    "raises, drain() raises ConnectionError within a few writes",
    "limit": "with the reader's limit given: readuntil() raises LimitOverrunError and keeps the "
    "data, readline() raises ValueError",
    "duplex": "1 MiB each way at once, written and read in random sizes with drain(): every "
    "read returns 1..n bytes and both streams arrive intact",
}
"""The checks :func:`check_stream_pair` runs (names for ``skip=``) and what each verifies."""

TRANSPORT_CHECKS: Mapping[str, str] = {
    "basics": "connection_made() was called once before connect() returned; get_protocol(), "
    "is_closing(), is_reading(), get_extra_info() defaults, set/get_write_buffer_limits() "
    "as (low, high) with asyncio's defaults and ValueError for high < low",
    "write": "bytes, bytearray, memoryview and writelines() reach the peer in order; write(b'') "
    "sends nothing; write(str) raises TypeError",
    "data_received": "what the peer sends arrives through data_received() in order, as bytes, "
    "never empty",
    "flow_control": "with the peer not reading, pause_writing() comes once the buffer passes "
    "the high-water mark, once; writes go on being buffered; resume_writing() comes once it "
    "drains to the low-water mark; get_write_buffer_size() is 0 when the peer has it all",
    "write_eof": "write_eof() (when can_write_eof()) sends the buffered data, then EOF; write() "
    "then raises RuntimeError; the transport stays open and still receives",
    "eof_received": "the peer's EOF calls eof_received() once; returning None closes the "
    "transport (connection_lost(None)), returning True keeps it open for writing",
    "close": "close() makes is_closing() true at once, calls connection_lost(None) once, later "
    "(never inside close()), after the peer has read the buffered data and EOF",
    "abort": "abort() closes at once: connection_lost(None) once, later; the buffered data is "
    "discarded; the peer sees EOF or a reset",
    "pause_reading": "pause_reading() holds received data back until resume_reading(); "
    "is_reading() follows",
    "protocol_error": "an exception from data_received() closes the transport with "
    "connection_lost(exc) and reaches the loop's exception handler",
    "set_protocol": "set_protocol() sends later callbacks to the new protocol",
}
"""The checks :func:`check_transport` runs (names for ``skip=``) and what each verifies."""


@runtime_checkable
class TransportPeer(Protocol):
    """The far end of a transport under :func:`check_transport`: reads what it wrote, sends to it.

    ``connect()`` may return a ``(StreamReader, StreamWriter)`` pair instead (say, from
    ``asyncio.open_connection(sock=...)`` on the other half of a socketpair); implement these
    four methods to check a fake whose far end is something else.

    Example::

        class ListPeer:                       # for a fake that keeps writes in a bytearray
            def __init__(self, fake): self.fake = fake
            async def read(self, n):          # at least 1 byte, b"" once the fake sent EOF
                await self.fake.written_event.wait(); return self.fake.take(n)
            def write(self, data): self.fake.deliver(data)
            def write_eof(self): self.fake.deliver_eof()
            def close(self): self.fake.deliver_eof()
    """

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes the transport wrote; wait for one; b"" once it sent EOF or closed."""
        ...

    def write(self, data: bytes) -> None:
        """Send ``data`` to the transport (its protocol's ``data_received``)."""
        ...

    def write_eof(self) -> None:
        """Half-close towards the transport (its protocol's ``eof_received``)."""
        ...

    def close(self) -> None:
        """Close this end: the transport sees EOF (or a reset, for data sent afterwards)."""
        ...


@dataclass(frozen=True)
class ConformanceReport:
    """What a conformance check ran: the checks that passed and the ones skipped, with why.

    Example::

        report = await labkit.check_stream_pair(labkit.memory_connection)
        print(report)        # memory_connection: 19 checks passed, 0 skipped
        assert "drain_backpressure (a->b)" in report.passed
    """

    subject: str
    passed: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        lines = [f"{self.subject}: {len(self.passed)} checks passed, {len(self.skipped)} skipped"]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


class ConformanceError(AssertionError):
    """A fake deviates from asyncio: one line per failed check, naming what asyncio does instead.

    ``failures`` maps each failed check to its message; ``report`` is what passed.

    Example::

        try:
            await labkit.check_stream_pair(make_my_fake_pair)
        except labkit.ConformanceError as error:
            print(error.failures["drain_backpressure (a->b)"])
    """

    def __init__(self, report: ConformanceReport, failures: Mapping[str, str]) -> None:
        self.report = report
        self.failures = dict(failures)
        total = len(self.failures) + len(report.passed)
        lines = [
            f"{report.subject} deviates from asyncio: {len(self.failures)} of {total} checks failed"
        ]
        lines += [f"- {name}: {message}" for name, message in self.failures.items()]
        if report.passed:
            lines.append(f"passed: {', '.join(report.passed)}")
        lines += [f"skipped {name}: {why}" for name, why in report.skipped]
        super().__init__("\n".join(lines))


class _CheckFailed(Exception):
    """One check's verdict; its message says what happened and what asyncio does."""


class _BadInput(TypeError):
    """The maker or connect function itself is wrong: raised to the caller, not a verdict."""


class _Skip(Exception):
    """The check does not apply (say, write_eof on a transport that cannot half-close)."""


def _fail(message: str) -> NoReturn:
    raise _CheckFailed(message)


def _pattern(offset: int, size: int) -> bytes:
    """The bytes ``offset .. offset + size`` of an endless repetition of ``_PATTERN``."""
    start = offset % len(_PATTERN)
    repeated = _PATTERN * (size // len(_PATTERN) + 2)
    return repeated[start : start + size]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _unexpected(error: BaseException) -> str:
    """An exception a check did not expect, with the call it came from."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return f"raised {_describe(error)}"
    last = frames[-1]
    ours = [frame for frame in frames if frame.filename == __file__]
    step = f", when the check ran `{ours[-1].line}`" if ours and ours[-1].line else ""
    if isinstance(error, NotImplementedError) and os.path.dirname(last.filename) == _ASYNCIO_DIR:
        return (
            f"{last.name}() is not implemented: the fake inherits asyncio's abstract "
            f"method, which raises NotImplementedError{step}"
        )
    place = f"{os.path.basename(last.filename)}:{last.lineno}"
    return f"raised {_describe(error)} in {last.name}() ({place}){step}"


def _subject(maker: object) -> str:
    name = getattr(maker, "__qualname__", None) or getattr(maker, "__name__", None)
    return str(name) if name else _short(maker)


class _Run:
    """The shared machinery of one check: timeouts, settling, tasks to clean up."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tasks: list[asyncio.Task[Any]] = []

    def spawn(self, coro: Coroutine[Any, Any, _T], name: str) -> asyncio.Task[_T]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"conformance: {name}")
        self.tasks.append(task)
        return task

    async def within(self, awaitable: Awaitable[_T], what: str) -> _T:
        """Await ``awaitable`` for at most ``timeout`` seconds; a failure names ``what``."""
        try:
            async with asyncio.timeout(self.timeout):
                return await awaitable
        except TimeoutError:
            if isinstance(awaitable, asyncio.Future) and not awaitable.done():
                awaitable.cancel()
            _fail(f"{what} did not happen within {self.timeout:g} s")

    async def settle(self) -> None:
        """Let the loop run a while: what asyncio would do on its own by now, has happened."""
        for _ in range(_SETTLE_ROUNDS):
            await asyncio.sleep(0)

    async def cleanup(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task
        self.tasks.clear()


async def _run_checks(
    kind: str,
    subject: str,
    plan: list[tuple[str, Callable[[], Awaitable[None]]]],
    known: Mapping[str, str],
    skip: Collection[str],
) -> ConformanceReport:
    __tracebackhide__ = True
    if isinstance(skip, str):
        skip = {skip}
    unknown = sorted(set(skip) - set(known))
    if unknown:
        raise ValueError(
            f"{kind}(skip=...): no check named {', '.join(map(repr, unknown))}; the checks are "
            f"{', '.join(known)}"
        )
    passed: list[str] = []
    skipped: list[tuple[str, str]] = []
    failures: dict[str, str] = {}
    for label, run in plan:
        name = label.split(" ", 1)[0]
        if name in skip:
            skipped.append((label, "skip= asked for it"))
            continue
        try:
            await run()
        except _Skip as reason:
            skipped.append((label, str(reason)))
        except _CheckFailed as failure:
            failures[label] = str(failure)
        except (asyncio.CancelledError, _BadInput):
            raise
        except Exception as error:
            failures[label] = _unexpected(error)
        else:
            passed.append(label)
    report = ConformanceReport(subject, tuple(passed), tuple(skipped))
    if failures:
        raise ConformanceError(report, failures)
    return report


# -- streams ---------------------------------------------------------------------------------


async def check_stream_pair(
    make_pair: StreamPairMaker,
    *,
    limit: int | None = 2**16,
    step_timeout: float = 10.0,
    skip: Collection[str] = (),
) -> ConformanceReport:
    """Check that a connected pair of asyncio streams behaves like two ends of a real socket.

    ``make_pair()`` (a function or a coroutine function) returns a fresh connected pair
    ``((reader_a, writer_a), (reader_b, writer_b))`` on each call (a
    :class:`labkit.MemoryConnection` is one); every check gets its own pair and closes it.
    The one-way checks run from ``a`` to ``b`` and back (``"close (a->b)"``, ``"close
    (b->a)"``); :data:`STREAM_CHECKS` says what each verifies. ``limit`` is the readers' limit
    (asyncio's default; ``None`` skips the limit checks); ``skip`` names checks not to run
    (a documented deviation of the fake). Returns a :class:`ConformanceReport`; raises
    :class:`ConformanceError` listing every failed check.

    Example::

        async def loopback_pair():
            accepted = asyncio.get_running_loop().create_future()
            server = await asyncio.start_server(
                lambda r, w: accepted.set_result((r, w)), "127.0.0.1", 0)
            client = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
            server_end = await accepted
            server.close()
            return client, server_end

        await labkit.check_stream_pair(loopback_pair)          # the real thing passes
        await labkit.check_stream_pair(labkit.memory_connection)
        await labkit.check_stream_pair(make_my_fake_pair)      # ConformanceError: ...
    """
    __tracebackhide__ = True
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be an int >= 1 (bytes) or None, got {limit!r}")
    plan: list[tuple[str, Callable[[], Awaitable[None]]]] = []
    for name, check, one_way in _STREAM_PLAN:
        for flip in (False, True) if one_way else (False,):
            label = f"{name} ({'b->a' if flip else 'a->b'})" if one_way else name
            plan.append((label, _stream_runner(make_pair, check, flip, limit, step_timeout)))
    return await _run_checks("check_stream_pair", _subject(make_pair), plan, STREAM_CHECKS, skip)


_StreamCheck = Callable[["_Run", End, End, "int | None"], Awaitable[None]]


def _stream_runner(
    make_pair: StreamPairMaker, check: _StreamCheck, flip: bool, limit: int | None, timeout: float
) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        ctx = _Run(timeout)
        a, b = await _make_pair(ctx, make_pair)
        try:
            await check(ctx, *((b, a) if flip else (a, b)), limit)
        finally:
            await ctx.cleanup()
            await _close_ends(ctx, (a, b))

    return run


async def _make_pair(ctx: _Run, make_pair: StreamPairMaker) -> tuple[End, End]:
    made = make_pair()
    if inspect.isawaitable(made):
        made = await ctx.within(made, "make_pair()")
    try:
        ends = [tuple(end) for end in made]
    except TypeError:
        ends = []
    if len(ends) != 2 or any(len(end) != 2 for end in ends):
        raise _BadInput(
            "make_pair() must return two (reader, writer) pairs, "
            f"((reader_a, writer_a), (reader_b, writer_b)); got {_short(made)}"
        )
    (ra, wa), (rb, wb) = ends
    return cast(End, (ra, wa)), cast(End, (rb, wb))


async def _close_ends(ctx: _Run, ends: Iterable[End]) -> None:
    writers = [writer for _, writer in ends]
    for writer in writers:
        with contextlib.suppress(Exception):
            writer.close()
    for writer in writers:
        with contextlib.suppress(Exception, _CheckFailed):
            await ctx.within(writer.wait_closed(), "wait_closed() when cleaning up")


async def _read_to_eof(ctx: _Run, reader: asyncio.StreamReader, what: str) -> bytes:
    data = bytearray()
    while chunk := await ctx.within(reader.read(65536), what):
        data += chunk
    return bytes(data)


async def _read_n(ctx: _Run, reader: asyncio.StreamReader, size: int, what: str) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await ctx.within(reader.read(65536), what)
        if not chunk:
            _fail(f"{what}: EOF after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


async def _still_waiting(ctx: _Run, task: asyncio.Task[Any], what: str, why: str) -> None:
    await ctx.settle()
    if not task.done():
        return
    if task.cancelled():
        outcome = "was cancelled"
    elif (error := task.exception()) is not None:
        outcome = f"raised {_describe(error)}"
    else:
        outcome = f"returned {_short(task.result())}"
    _fail(f"{what} {outcome} {why}")


async def _expect_incomplete(
    ctx: _Run, step: Awaitable[Any], what: str, partial: bytes, expected: int | None
) -> None:
    try:
        result = await ctx.within(step, what)
    except asyncio.IncompleteReadError as error:
        if (error.partial, error.expected) != (partial, expected):
            _fail(
                f"{what} raised IncompleteReadError(partial={error.partial!r}, "
                f"expected={error.expected!r}); asyncio's gives partial={partial!r}, "
                f"expected={expected!r}"
            )
        return
    _fail(
        f"{what} returned {_short(result)} at EOF; asyncio's raises "
        f"IncompleteReadError(partial={partial!r}, expected={expected!r})"
    )


async def _expect(
    ctx: _Run, step: Awaitable[Any], expected: bytes, what: str, why: str = ""
) -> None:
    """Await ``step`` (``what``); fail unless it returned ``expected``."""
    got = await ctx.within(step, what)
    if got != expected:
        _fail(f"{what} returned {_short(got)}; expected {_short(expected)}{why}")


async def _pending(
    ctx: _Run, step: Coroutine[Any, Any, _T], what: str, why: str
) -> asyncio.Task[_T]:
    """Start ``step``; fail if it is done once the loop settled (it should still wait)."""
    task = ctx.spawn(step, what)
    await _still_waiting(ctx, task, what, why)
    return task


async def _stream_round_trip(ctx: _Run, a: End, b: End, limit: int | None) -> None:
    (ra, wa), (rb, wb) = a, b
    wa.write(b"bytes,")
    wa.write(bytearray(b"bytearray,"))
    wa.write(memoryview(b"memoryview,"))
    wa.write(b"")
    wa.writelines([b"line1,", bytearray(b"line2")])
    await ctx.within(wa.drain(), "drain() with a few bytes written")
    expected = b"bytes,bytearray,memoryview,line1,line2"
    got = await _read_n(ctx, rb, len(expected), "the peer reading what was written")
    if got != expected:
        _fail(f"the peer read {_short(got)}, but {_short(expected)} was written")
    pending = await _pending(
        ctx,
        rb.read(100),
        "the peer's read(100)",
        "after write(b''): asyncio's write(b'') sends nothing, and b'' from read() means EOF",
    )
    wa.write(b"!")
    await _expect(ctx, pending, b"!", "the peer's read(100) after write(b'!')")
    wb.write(b"reply")
    got = await _read_n(ctx, ra, 5, "reading the peer's reply")
    if got != b"reply":
        _fail(f"the reply arrived as {_short(got)}, but b'reply' was written")
    try:
        wa.write("text")  # type: ignore[arg-type]
    except TypeError:
        pass
    else:
        _fail("write('text') was accepted: asyncio's transports refuse str with TypeError")
    if wa.get_extra_info("labkit-no-such-key", "fallback") != "fallback":
        _fail("get_extra_info(unknown_key, default) did not return the default")


async def _stream_read_available(ctx: _Run, a: End, b: End, limit: int | None) -> None:
    (_, wa), (rb, _) = a, b
    pending = await _pending(
        ctx,
        rb.read(100),
        "read(100)",
        "with nothing written: asyncio's read() waits for data (b'' means EOF)",
    )
    wa.write(b"abc")
    got = await ctx.within(
        pending,
        "read(100) returning after 3 bytes were written (asyncio's returns what is there; "
        "it does not wait for 100 bytes)",
    )
    if not got or not b"abc".startswith(got):
        _fail(f"read(100) returned {_short(got)} after b'abc' was written")
    if len(got) < 3:
        await _expect(ctx, rb.readexactly(3 - len(got)), b"abc"[len(got) :], "the rest of b'abc'")
    await _expect(ctx, rb.read(0), b"", "read(0)", " at once, as asyncio's does")


async def _stream_readexactly(ctx: _Run, a: End, b: End, limit: int | None) -> None:
    (_, wa), (rb, _) = a, b
    wa.write(b"12")
    pending = await _pending(
        ctx,
        rb.readexactly(5),
        "readexactly(5)",
        "with only b'12' written: asyncio's waits for exactly 5 bytes",
    )
    wa.write(b"345678")
    await _expect(ctx, pending, b"12345", "readexactly(5) on b'12' + b'345678'")
    await _expect(ctx, rb.readexactly(3), b"678", "readexactly(3) after readexactly(5)")
    await _expect(ctx, rb.readexactly(0), b"", "readexactly(0)", " at once, as asyncio's does")


async def _stream_readuntil(ctx: _Run, a: End, b: End, limit: int | None) -> None:
    (_, wa), (rb, _) = a, b
    wa.write(b"ab\r")
    pending = await _pending(
        ctx,
        rb.readuntil(b"\r\n"),
        "readuntil(b'\\r\\n')",
        "with only b'ab\\r' written: asyncio's waits for the whole separator",
    )
    wa.write(b"\ncd\r\nef\n")
    await _expect(
        ctx,
        pending,
        b"ab\r\n",
        "readuntil(b'\\r\\n') on b'ab\\r' + b'\\ncd...'",
        " (a separator split across writes)",
    )
    await _expect(ctx, rb.readuntil(b"\r\n"), b"cd\r\n", "a second readuntil(b'\\r\\n')")
    await _expect(ctx, rb.readline(), b"ef\n", "readline()")
    wa.write(b"one\ntwo\n")
    await _expect(ctx, rb.readline(), b"one\n", "readline() on b'one\\ntwo\\n'")
    await _expect(ctx, rb.readline(), b"two\n", "a second readline() on b'one\\ntwo\\n'")


async def _stream_incomplete_read(ctx: _Run, a: End, b: End, limit: int | None) -> None:
    (_, wa), (rb, _) = a, b
    wa.write(b"line\n12")
    wa.close()
    await _expect(ctx, rb.readline(), b"line\n", "readline()")
    await _expect_incomplete(ctx, rb.readuntil(b";"), "readuntil(b';') at EOF", b"12", None)
    await _expect_incomplete(ctx, rb.readexactly(1), "readexactly(1) at EOF", b"", 1)
    await _expect(ctx, rb.read(), b"", "read() at EOF")
    if not rb.at_eof():
        _fail("at_eof() is False after the peer closed and everything was read")
    await _expect(ctx, rb.readline(), b"", "readline() at EOF")


async def _stream_write_eof(ctx: _Run, a: End, b: End, limit: int | None) -> None:
    (ra, wa), (rb, wb) = a, b
    if not wa.can_write_eof():
        raise _Skip("can_write_eof() is False (as for TLS): no half-close to check")
    wa.write(b"abc")
    wa.write_eof()
    try:
        wa.write(b"more")
    except RuntimeError:
        pass
    else:
        _fail("write() after write_eof() was accepted; asyncio's raises RuntimeError")
    wa.write_eof()
    await _expect_incomplete(
        ctx, rb.readexactly(5), "readexactly(5) after b'abc' and write_eof()", b"abc", 5
    )
    if not rb.at_eof():
        _fail("at_eof() is False after the peer's write_eof() and everything was read")
    await _expect(ctx, rb.read(), b"", "read() after EOF")
    if wa.is_closing():
        _fail("is_closing() is True after write_eof(); a half-closed asyncio stream stays open")
    if wb.is_closing():
        _fail(
            "the peer's is_closing() became True when it received EOF; asyncio keeps it open "
            "(StreamReaderProtocol.eof_received returns True) so it can still reply"
        )
    wb.write(b"reply")
    await ctx.within(wb.drain(), "the peer's drain() after its reply")
    wb.close()
    got = await _read_to_eof(ctx, ra, "reading the peer's reply after write_eof()")
    if got != b"reply":
        _fail(f"after write_eof() this end read {_short(got)} from the peer; expected b'reply'")
    await ctx.within(wb.wait_closed(), "the peer's wait_closed()")


async def _stream_close(ctx: _Run, a: End, b: End, limit: int | None) -> None:
    (ra, wa), (rb, wb) = a, b
    wa.write(b"last words")
    wa.close()
    if not wa.is_closing():
        _fail("is_closing() is False right after close(); asyncio's is True at once")
    wa.close()
    await ctx.within(wa.wait_closed(), "wait_closed() after close()")
    await ctx.within(wa.wait_closed(), "a second wait_closed()")
    got = await _read_to_eof(ctx, rb, "the peer reading to EOF after close()")
    if got != b"last words":
        _fail(f"the peer read {_short(got)} then EOF; b'last words' was written before close()")
    await _expect(
        ctx,
        ra.read(),
        b"",
        "this end's own read() after its close() (asyncio's reader gets EOF when its "
        "transport is lost)",
    )
    try:
        await ctx.within(wa.drain(), "drain() after close()")
    except ConnectionError:
        pass
    else:
        _fail("drain() after close() returned; asyncio's raises ConnectionResetError")
    if wb.is_closing():
        _fail(
            "the peer's is_closing() became True when this end closed; asyncio keeps it open "
            "until it closes itself or a write fails"
        )


async def _stream_drain_backpressure(ctx: _Run, a: End, b: End, limit: int | None) -> None:
    (_, wa), (rb, _) = a, b
    chunk_size = _CHUNK
    written = 0
    drain: asyncio.Task[None] | None = None
    while written < _MAX_CLOG:
        wa.write(_pattern(written, chunk_size))
        written += chunk_size
        chunk_size = min(2 * chunk_size, _MAX_CLOG - written) or chunk_size
        drain = ctx.spawn(wa.drain(), "drain")
        await ctx.settle()
        if not drain.done():
            break
        await drain
    else:
        _fail(
            f"drain() never waited: {written // 2**20} MiB were written while the peer read "
            "nothing, and every drain() returned at once; asyncio's waits once the transport's "
            "buffer passes its high-water mark (so a slow reader slows the writer down)"
        )
    assert drain is not None
    reader = ctx.spawn(_read_n(ctx, rb, written, "the peer reading everything"), "reader")
    await ctx.within(drain, f"drain() returning once the peer read the {written} bytes")
    _check_pattern(await reader, written, "after drain() waited")


async def _stream_peer_closed(ctx: _Run, a: End, b: End, limit: int | None) -> None:
    (ra, wa), (_, wb) = a, b
    wb.close()
    with contextlib.suppress(ConnectionError):
        await ctx.within(wb.wait_closed(), "the peer's wait_closed()")
    got = await _read_to_eof(ctx, ra, "reading to EOF after the peer closed")
    if got != b"":
        _fail(f"read {_short(got)} from a peer that wrote nothing and closed")
    if wa.is_closing():
        _fail(
            "is_closing() became True when the peer closed; asyncio keeps this end open after "
            "EOF (StreamReaderProtocol.eof_received returns True), so it can still write"
        )
    for attempt in range(1, _PEER_CLOSED_ROUNDS + 1):
        if not wa.is_closing():
            try:
                wa.write(b"x" * 100)
            except Exception as error:
                _fail(
                    f"write() to a closed peer raised {_describe(error)} (write {attempt}); "
                    "asyncio's write() never raises for a broken connection, drain() does"
                )
        try:
            await ctx.within(wa.drain(), "drain() after writing to a closed peer")
        except ConnectionError:
            return
        await asyncio.sleep(0)
    _fail(
        f"{_PEER_CLOSED_ROUNDS} write() + drain() rounds to a closed peer all succeeded; "
        "asyncio's drain() raises ConnectionResetError (or BrokenPipeError) once the peer's reset "
        "arrives, on the second write over loopback"
    )


async def _stream_limit(ctx: _Run, a: End, b: End, limit: int | None) -> None:
    (ra, wa), (rb, wb) = a, b
    if limit is None:
        raise _Skip("limit=None: the readers' limit is unknown")
    size = 2 * limit
    for writer in (wa, wb):
        writer.write(b"x" * size)
        if writer.can_write_eof():
            writer.write_eof()
        else:
            writer.close()
    try:
        result = await ctx.within(rb.readuntil(b"\n"), "readuntil() past the limit")
    except asyncio.LimitOverrunError:
        pass
    except Exception as error:
        _fail(
            f"readuntil(b'\\n') raised {_describe(error)} on {size} bytes without a separator "
            f"(limit={limit}); asyncio's raises LimitOverrunError as soon as the limit is passed"
        )
    else:
        _fail(
            f"readuntil(b'\\n') returned {len(result)} bytes from {size} bytes without a "
            f"separator (limit={limit}); asyncio's raises LimitOverrunError"
        )
    got = await _read_to_eof(ctx, rb, "reading what readuntil() left behind")
    if len(got) != size:
        _fail(
            f"after LimitOverrunError read() got {len(got)} bytes, not the {size} written; "
            "asyncio's readuntil() leaves the data in the buffer"
        )
    try:
        result = await ctx.within(ra.readline(), "readline() past the limit")
    except ValueError:
        pass
    except Exception as error:
        _fail(
            f"readline() raised {_describe(error)} on {size} bytes without a newline "
            f"(limit={limit}); asyncio's raises ValueError"
        )
    else:
        _fail(
            f"readline() returned {len(result)} bytes from {size} bytes without a newline "
            f"(limit={limit}); asyncio's raises ValueError"
        )


async def _stream_duplex(ctx: _Run, a: End, b: End, limit: int | None) -> None:
    rng = random.Random(0)
    forward, backward = rng.randbytes(_DUPLEX_SIZE), rng.randbytes(_DUPLEX_SIZE)

    async def send(writer: asyncio.StreamWriter, data: bytes, seed: int) -> None:
        sizes = random.Random(seed)
        view = memoryview(data)
        while view:
            size = sizes.randint(1, _DUPLEX_MAX_CHUNK)
            writer.write(view[:size])
            view = view[size:]
            await writer.drain()

    async def receive(reader: asyncio.StreamReader, data: bytes, seed: int, name: str) -> None:
        sizes = random.Random(seed)
        got = bytearray()
        while len(got) < len(data):
            size = sizes.randint(1, _DUPLEX_MAX_CHUNK)
            chunk = await reader.read(size)
            if not chunk or len(chunk) > size:
                _fail(f"{name}: read({size}) returned {len(chunk)} bytes at byte {len(got)}")
            got += chunk
        if got != data:
            _fail(f"{name}: the bytes differ from those written")

    (ra, wa), (rb, wb) = a, b
    tasks = [
        ctx.spawn(send(wa, forward, 1), "send a->b"),
        ctx.spawn(send(wb, backward, 2), "send b->a"),
        ctx.spawn(receive(rb, forward, 3, "a->b"), "receive a->b"),
        ctx.spawn(receive(ra, backward, 4, "b->a"), "receive b->a"),
    ]
    await ctx.within(
        asyncio.gather(*tasks), f"sending {_DUPLEX_SIZE} bytes each way at once with drain()"
    )


_STREAM_PLAN: list[tuple[str, _StreamCheck, bool]] = [
    ("round_trip", _stream_round_trip, False),
    ("read_available", _stream_read_available, True),
    ("readexactly", _stream_readexactly, True),
    ("readuntil", _stream_readuntil, True),
    ("incomplete_read", _stream_incomplete_read, True),
    ("write_eof", _stream_write_eof, True),
    ("close", _stream_close, True),
    ("drain_backpressure", _stream_drain_backpressure, True),
    ("peer_closed", _stream_peer_closed, True),
    ("limit", _stream_limit, False),
    ("duplex", _stream_duplex, False),
]


# -- transports ------------------------------------------------------------------------------

Connect = Callable[[asyncio.Protocol], Awaitable[tuple[asyncio.Transport, Any]]]


class _StreamPeer:
    """A ``(StreamReader, StreamWriter)`` pair as a :class:`TransportPeer`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self, n: int) -> bytes:
        return await self.reader.read(n)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def write_eof(self) -> None:
        self.writer.write_eof()

    def close(self) -> None:
        self.writer.close()

    async def wait_closed(self) -> None:
        await self.writer.wait_closed()


def _as_peer(peer: object) -> TransportPeer:
    if isinstance(peer, tuple) and len(peer) == 2:
        reader, writer = peer
        if isinstance(reader, asyncio.StreamReader) and isinstance(writer, asyncio.StreamWriter):
            return _StreamPeer(reader, writer)
    if isinstance(peer, TransportPeer):
        return peer
    raise _BadInput(
        "connect(protocol) must return (transport, peer), the peer being a (StreamReader, "
        "StreamWriter) pair or an object with async read(n), write(data), write_eof() and "
        f"close() (see labkit.TransportPeer); got peer={_short(peer)}"
    )


class _ProtocolBug(Exception):
    """What the protocol_error check's data_received raises."""


class _Recorder(asyncio.Protocol):
    """The protocol the transport checks connect: records every callback, flags misuse."""

    def __init__(self, *, keep_open: bool = False, fail_data: bool = False) -> None:
        self.keep_open = keep_open
        self.fail_data = fail_data
        self.transport: asyncio.BaseTransport | None = None
        self.made = 0
        self.data = bytearray()
        self.eofs = 0
        self.lost: list[BaseException | None] = []
        self.pauses: list[int] = []
        self.resumes: list[int] = []
        self.paused = False
        self.raised: list[BaseException] = []
        self.violations: list[str] = []
        self.changed = asyncio.Event()

    def _after_lost(self, what: str) -> None:
        if self.lost:
            self.violations.append(f"{what} was called after connection_lost()")

    def _size(self) -> int:
        get = getattr(self.transport, "get_write_buffer_size", None)
        return int(get()) if callable(get) else -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.made:
            self.violations.append("connection_made() was called twice")
        self.made += 1
        self.transport = transport
        self.changed.set()

    def data_received(self, data: bytes) -> None:
        self._after_lost("data_received()")
        if self.eofs:
            self.violations.append("data_received() was called after eof_received()")
        if not isinstance(data, bytes):
            self.violations.append(
                f"data_received() got a {type(data).__name__}; asyncio passes bytes (a "
                "protocol may keep it, so it must not change later)"
            )
        if not data:
            self.violations.append("data_received(b'') was called; asyncio never passes b''")
        self.data += data
        self.changed.set()
        if self.fail_data:
            error = _ProtocolBug("conformance check: data_received() fails on purpose")
            self.raised.append(error)
            raise error

    def eof_received(self) -> bool:
        self._after_lost("eof_received()")
        if self.eofs:
            self.violations.append("eof_received() was called twice")
        self.eofs += 1
        self.changed.set()
        return self.keep_open

    def pause_writing(self) -> None:
        self._after_lost("pause_writing()")
        if self.paused:
            self.violations.append("pause_writing() was called twice without resume_writing()")
        self.paused = True
        self.pauses.append(self._size())
        self.changed.set()

    def resume_writing(self) -> None:
        self._after_lost("resume_writing()")
        if not self.paused:
            self.violations.append("resume_writing() was called without pause_writing()")
        self.paused = False
        self.resumes.append(self._size())
        self.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost:
            self.violations.append("connection_lost() was called twice")
        self.lost.append(exc)
        self.changed.set()

    def has_lost(self) -> bool:
        return bool(self.lost)

    async def until(self, ctx: _Run, condition: Callable[[], bool], what: str) -> None:
        async def wait() -> None:
            while not condition():
                self.changed.clear()
                await self.changed.wait()

        await ctx.within(wait(), what)


class _TransportRun(_Run):
    """One transport check: connects recorders through the user's ``connect`` and cleans up."""

    def __init__(self, connect: Connect, timeout: float) -> None:
        super().__init__(timeout)
        self._connect = connect
        self.connections: list[tuple[_Recorder, asyncio.Transport, TransportPeer]] = []
        self.switched: dict[int, _Recorder] = {}

    async def connect(
        self, *, keep_open: bool = False, fail_data: bool = False
    ) -> tuple[_Recorder, asyncio.Transport, TransportPeer]:
        recorder = _Recorder(keep_open=keep_open, fail_data=fail_data)
        made: Any = self._connect(recorder)
        if inspect.isawaitable(made):
            made = await self.within(made, "connect(protocol)")
        transport: asyncio.Transport
        try:
            transport, raw_peer = made
        except (TypeError, ValueError):
            raise _BadInput(
                f"connect(protocol) must return (transport, peer); got {_short(made)}"
            ) from None
        peer = _as_peer(raw_peer)
        self.connections.append((recorder, transport, peer))
        if recorder.made != 1 or recorder.transport is not transport:
            _fail(
                "connection_made(transport) had not been called once with the transport when "
                "connect() returned (loop.create_connection returns after it)"
            )
        return recorder, transport, peer

    def adopt(self, transport: asyncio.Transport, recorder: _Recorder) -> None:
        """``recorder`` is now ``transport``'s protocol (set_protocol): clean-up waits for it."""
        self.switched[id(transport)] = recorder

    async def close_all(self) -> list[str]:
        """Abort every connection, then close its peer; report the callbacks misused."""
        problems: list[str] = []
        recorders: list[_Recorder] = []
        for first, transport, _ in self.connections:
            current = self.switched.get(id(transport), first)
            recorders += [first] if current is first else [first, current]
        during_check = {id(recorder): len(recorder.violations) for recorder in recorders}
        for first, transport, peer in self.connections:
            current = self.switched.get(id(transport), first)
            try:
                transport.abort()
            except Exception:  # the abort check reports that; close what can be closed
                with contextlib.suppress(Exception):
                    transport.close()
            else:
                try:
                    await current.until(self, current.has_lost, "connection_lost()")
                except _CheckFailed:
                    problems.append("abort() never led to connection_lost()")
            with contextlib.suppress(Exception):
                peer.close()
            wait_closed = getattr(peer, "wait_closed", None)
            if callable(wait_closed):
                with contextlib.suppress(Exception, _CheckFailed):
                    await self.within(wait_closed(), "the peer's wait_closed()")
        await self.settle()
        for recorder in recorders:
            seen = during_check[id(recorder)]
            problems += recorder.violations[:seen]
            problems += [
                f"when the check cleaned up (abort(), then the peer's close()): {violation}"
                for violation in recorder.violations[seen:]
            ]
        return problems


async def check_transport(
    connect: Connect, *, step_timeout: float = 10.0, skip: Collection[str] = ()
) -> ConformanceReport:
    """Check that a transport behaves towards its protocol as asyncio's socket transports do.

    ``await connect(protocol)`` makes a fresh connection with ``protocol`` as its protocol
    and returns ``(transport, peer)``: ``connection_made`` must have been called, as
    ``loop.create_connection`` has by the time it returns, and ``peer`` is the far end,
    a ``(StreamReader, StreamWriter)`` pair or a :class:`TransportPeer`. Every check connects
    anew; :data:`TRANSPORT_CHECKS` says what each verifies. ``skip`` names checks not to run.
    Returns a :class:`ConformanceReport`; raises :class:`ConformanceError` listing every
    failed check.

    Example::

        async def socketpair_transport(protocol):           # the real thing
            mine, theirs = socket.socketpair()
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_connection(lambda: protocol, sock=mine)
            return transport, await asyncio.open_connection(sock=theirs)

        async def mock_transport(protocol):                  # labkit's fake, linked
            transport = labkit.MockTransport(protocol)
            reader = asyncio.StreamReader()
            far = asyncio.StreamReaderProtocol(reader)
            far_transport = labkit.MockTransport(far)
            labkit.MemoryLink(transport, far_transport)
            loop = asyncio.get_running_loop()
            return transport, (reader, asyncio.StreamWriter(far_transport, far, reader, loop))

        await labkit.check_transport(socketpair_transport)
        await labkit.check_transport(mock_transport)
    """
    __tracebackhide__ = True
    plan: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        (name, _transport_runner(connect, check, step_timeout)) for name, check in _TRANSPORT_PLAN
    ]
    return await _run_checks("check_transport", _subject(connect), plan, TRANSPORT_CHECKS, skip)


def _transport_runner(
    connect: Connect, check: Callable[[_TransportRun], Awaitable[None]], timeout: float
) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        ctx = _TransportRun(connect, timeout)
        failure: _CheckFailed | None = None
        try:
            await check(ctx)
        except _CheckFailed as error:
            failure = error
        finally:
            await ctx.cleanup()
            problems = await ctx.close_all()
        if failure is not None:
            raise failure
        if problems:
            _fail("; ".join(dict.fromkeys(problems)))

    return run


async def _peer_read_n(ctx: _Run, peer: TransportPeer, size: int, what: str) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await ctx.within(peer.read(65536), what)
        if not chunk:
            _fail(f"{what}: the peer got EOF after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


async def _peer_read_to_eof(ctx: _Run, peer: TransportPeer, what: str) -> bytes:
    data = bytearray()
    while chunk := await ctx.within(peer.read(65536), what):
        data += chunk
    return bytes(data)


def _check_pattern(got: bytes, size: int, what: str) -> None:
    if len(got) != size:
        _fail(f"{what}: the peer got {len(got)} bytes, {size} were written")
    expected = _pattern(0, size)
    if got != expected:
        index = next(i for i, (x, y) in enumerate(zip(got, expected, strict=True)) if x != y)
        _fail(f"{what}: the bytes the peer got differ from those written, at byte {index}")


async def _clog(ctx: _Run, recorder: _Recorder, transport: asyncio.Transport) -> int:
    """Write patterned chunks, the peer not reading, until pause_writing(); return the count."""
    transport.set_write_buffer_limits(high=_HIGH, low=_LOW)
    written = 0
    while not recorder.pauses:
        if written >= _MAX_CLOG or recorder.lost:
            _fail(
                f"pause_writing() was never called: {written} bytes were written, the peer "
                f"read none, get_write_buffer_size() is {transport.get_write_buffer_size()} "
                f"(high-water mark {_HIGH}); asyncio's transport buffers what the socket does "
                "not take and pauses the protocol past the mark"
            )
        transport.write(_pattern(written, _CHUNK))
        written += _CHUNK
        await asyncio.sleep(0)
    return written


async def _transport_basics(ctx: _TransportRun) -> None:
    recorder, transport, _ = await ctx.connect()
    if transport.get_protocol() is not recorder:
        _fail("get_protocol() does not return the protocol connect() was given")
    if transport.is_closing():
        _fail("is_closing() is True on a new connection")
    if not transport.is_reading():
        _fail("is_reading() is False on a new connection; asyncio's transports start reading")
    if transport.get_extra_info("labkit-no-such-key", "fallback") != "fallback":
        _fail("get_extra_info(unknown_key, default) did not return the default")
    if transport.get_write_buffer_size() != 0:
        _fail(f"get_write_buffer_size() is {transport.get_write_buffer_size()} before any write")
    for high, low, expected in ((1000, 100, (100, 1000)), (100, None, (25, 100))):
        transport.set_write_buffer_limits(high=high, low=low)
        limits = tuple(transport.get_write_buffer_limits())
        if limits != expected:
            _fail(
                f"set_write_buffer_limits(high={high}, low={low}) then "
                f"get_write_buffer_limits() gave {limits}; asyncio's gives (low, high) = "
                f"{expected} (low defaults to high // 4)"
            )
    try:
        transport.set_write_buffer_limits(high=1, low=2)
    except ValueError:
        pass
    else:
        _fail("set_write_buffer_limits(high=1, low=2) was accepted; asyncio's raises ValueError")


async def _transport_write(ctx: _TransportRun) -> None:
    _, transport, peer = await ctx.connect()
    transport.write(b"bytes,")
    transport.write(bytearray(b"bytearray,"))
    transport.write(memoryview(b"memoryview,"))
    transport.write(b"")
    transport.writelines([b"line1,", bytearray(b"line2")])
    expected = b"bytes,bytearray,memoryview,line1,line2"
    got = await _peer_read_n(ctx, peer, len(expected), "the peer reading what was written")
    if got != expected:
        _fail(f"the peer read {_short(got)}, but {_short(expected)} was written")
    try:
        transport.write("text")  # type: ignore[arg-type]
    except TypeError:
        pass
    else:
        _fail("write('text') was accepted: asyncio's transports refuse str with TypeError")


async def _transport_data_received(ctx: _TransportRun) -> None:
    recorder, _, peer = await ctx.connect()
    rng = random.Random(5)
    payload = rng.randbytes(200_000)
    offset = 0
    while offset < len(payload):
        size = rng.randint(1, 8192)
        peer.write(payload[offset : offset + size])
        offset += size
    await recorder.until(
        ctx, lambda: len(recorder.data) >= len(payload), "data_received() of 200000 bytes"
    )
    if bytes(recorder.data) != payload:
        _fail("data_received() got bytes that differ from what the peer sent")


async def _transport_flow_control(ctx: _TransportRun) -> None:
    recorder, transport, peer = await ctx.connect()
    written = await _clog(ctx, recorder, transport)
    if recorder.pauses[0] <= _HIGH:
        _fail(
            f"pause_writing() came with get_write_buffer_size() = {recorder.pauses[0]}, not "
            f"past the high-water mark {_HIGH}; asyncio pauses only once the buffer exceeds it"
        )
    transport.write(_pattern(written, _CHUNK))
    written += _CHUNK
    await ctx.settle()
    size = transport.get_write_buffer_size()
    if size <= _HIGH:
        _fail(
            f"get_write_buffer_size() is {size} while paused with the peer not reading; it "
            f"should count the buffered bytes (> {_HIGH})"
        )
    got = await _peer_read_n(ctx, peer, written, "the peer reading everything")
    _check_pattern(got, written, "after pause_writing()")
    if not recorder.resumes:
        _fail(f"resume_writing() was never called, though the peer read all {written} bytes")
    if recorder.resumes[0] > _LOW:
        _fail(
            f"resume_writing() came with get_write_buffer_size() = {recorder.resumes[0]}, "
            f"above the low-water mark {_LOW}; asyncio resumes once the buffer is at or below it"
        )
    if transport.get_write_buffer_size() != 0:
        _fail(
            f"get_write_buffer_size() is {transport.get_write_buffer_size()} after the peer read "
            "every byte written; expected 0"
        )


async def _transport_write_eof(ctx: _TransportRun) -> None:
    recorder, transport, peer = await ctx.connect()
    if not transport.can_write_eof():
        raise _Skip("can_write_eof() is False (as for TLS): no half-close to check")
    written = await _clog(ctx, recorder, transport)
    transport.write_eof()
    transport.write_eof()
    try:
        transport.write(b"more")
    except RuntimeError:
        pass
    else:
        _fail("write() after write_eof() was accepted; asyncio's raises RuntimeError")
    if transport.is_closing():
        _fail("is_closing() is True after write_eof(); a half-closed transport stays open")
    got = await _peer_read_to_eof(ctx, peer, "the peer reading the data, then EOF")
    _check_pattern(got, written, "data buffered before write_eof()")
    peer.write(b"still receiving")
    await recorder.until(ctx, lambda: len(recorder.data) >= 15, "data_received() after write_eof()")
    if bytes(recorder.data) != b"still receiving":
        _fail(f"after write_eof() data_received() got {_short(bytes(recorder.data))}")
    if recorder.lost:
        _fail("connection_lost() was called after write_eof(); the transport should stay open")


async def _transport_eof_received(ctx: _TransportRun) -> None:
    recorder, transport, peer = await ctx.connect()
    peer.write(b"last")
    peer.write_eof()
    await recorder.until(ctx, lambda: bool(recorder.eofs), "eof_received() after the peer's EOF")
    if bytes(recorder.data) != b"last":
        _fail(f"data_received() got {_short(bytes(recorder.data))} before EOF; expected b'last'")
    await recorder.until(
        ctx,
        lambda: bool(recorder.lost),
        "connection_lost() after eof_received() returned None (asyncio then closes the transport)",
    )
    _expect_lost_once(recorder, "the peer's EOF")
    if not transport.is_closing():
        _fail("is_closing() is False after the transport closed on EOF")

    keeper, kept, kept_peer = await ctx.connect(keep_open=True)
    kept_peer.write_eof()
    await keeper.until(ctx, lambda: bool(keeper.eofs), "eof_received() after the peer's EOF")
    await ctx.settle()
    if kept.is_closing() or keeper.lost:
        _fail("the transport closed although eof_received() returned True (keep it open)")
    kept.write(b"reply after EOF")
    got = await _peer_read_n(ctx, kept_peer, 15, "the peer reading a reply sent after its EOF")
    if got != b"reply after EOF":
        _fail(f"the peer read {_short(got)}; b'reply after EOF' was written")
    kept.close()
    got = await _peer_read_to_eof(ctx, kept_peer, "the peer reading EOF after close()")
    if got:
        _fail(f"the peer read {_short(got)} after close(); expected EOF")
    await keeper.until(ctx, lambda: bool(keeper.lost), "connection_lost() after close()")


async def _transport_close(ctx: _TransportRun) -> None:
    recorder, transport, peer = await ctx.connect()
    transport.write(b"bye")
    transport.close()
    if not transport.is_closing():
        _fail("is_closing() is False right after close(); asyncio's is True at once")
    if recorder.lost:
        _fail(
            "connection_lost() was called inside close(); asyncio calls it later, from the "
            "loop (call_soon), so the code after close() still runs first"
        )
    transport.close()
    got = await _peer_read_to_eof(ctx, peer, "the peer reading the data, then EOF")
    if got != b"bye":
        _fail(
            f"the peer read {_short(got)} then EOF; b'bye' was written before close(), and "
            "asyncio's close() sends what was written first (abort() is the one that drops it)"
        )
    await recorder.until(ctx, recorder.has_lost, "connection_lost() after close()")
    _expect_lost_once(recorder, "close()")

    flushing, buffered, slow_peer = await ctx.connect()
    written = await _clog(ctx, flushing, buffered)
    buffered.close()
    await ctx.settle()
    if flushing.lost:
        _fail(
            f"connection_lost() came while {buffered.get_write_buffer_size()} bytes were still "
            "buffered and the peer had read nothing; asyncio's close() sends the buffered data "
            "first (abort() is the one that drops it)"
        )
    got = await _peer_read_to_eof(ctx, slow_peer, "the peer reading what close() flushes")
    _check_pattern(got, written, "data buffered before close()")
    await flushing.until(ctx, flushing.has_lost, "connection_lost() after the flush")
    _expect_lost_once(flushing, "close()")


async def _transport_abort(ctx: _TransportRun) -> None:
    recorder, transport, peer = await ctx.connect()
    written = await _clog(ctx, recorder, transport)
    transport.abort()
    if not transport.is_closing():
        _fail("is_closing() is False right after abort()")
    if recorder.lost:
        _fail("connection_lost() was called inside abort(); asyncio calls it later, from the loop")
    transport.abort()
    transport.close()
    got = bytearray()
    with contextlib.suppress(ConnectionError):
        while chunk := await ctx.within(peer.read(65536), "the peer reading after abort()"):
            got += chunk
    if got != _pattern(0, len(got)):
        _fail("what the peer got after abort() is not a prefix of what was written")
    if len(got) >= written:
        _fail(
            f"the peer got all {written} bytes after abort(); asyncio's abort() discards the "
            "write buffer (close() is the one that flushes it)"
        )
    await recorder.until(ctx, recorder.has_lost, "connection_lost() after abort()")
    _expect_lost_once(recorder, "abort()")


def _expect_lost_once(recorder: _Recorder, what: str) -> None:
    if len(recorder.lost) > 1:
        _fail(f"connection_lost() was called {len(recorder.lost)} times after {what}")
    if recorder.lost != [None]:
        _fail(f"{what} led to connection_lost({recorder.lost[0]!r}); asyncio's passes None")


async def _transport_pause_reading(ctx: _TransportRun) -> None:
    recorder, transport, peer = await ctx.connect()
    transport.pause_reading()
    transport.pause_reading()
    if transport.is_reading():
        _fail("is_reading() is True after pause_reading()")
    peer.write(b"held")
    await ctx.settle()
    if recorder.data:
        _fail(f"data_received({_short(bytes(recorder.data))}) was called while reading was paused")
    transport.resume_reading()
    transport.resume_reading()
    if not transport.is_reading():
        _fail("is_reading() is False after resume_reading()")
    await recorder.until(ctx, lambda: len(recorder.data) >= 4, "data after resume_reading()")
    if bytes(recorder.data) != b"held":
        _fail(f"after resume_reading() data_received() got {_short(bytes(recorder.data))}")


async def _transport_protocol_error(ctx: _TransportRun) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        recorder, _, peer = await ctx.connect(fail_data=True)
        try:
            peer.write(b"boom")
        except _ProtocolBug:
            _fail(
                "the exception from data_received() came out of the peer's write(): the fake "
                "calls data_received() inside the sender's call and lets it through; asyncio "
                "calls it from the loop, reports the exception to the loop's exception handler "
                "and closes the transport with connection_lost(exc)"
            )
        await recorder.until(
            ctx,
            lambda: bool(recorder.lost),
            "connection_lost() after data_received() raised (asyncio closes the transport)",
        )
        await ctx.settle()
    finally:
        loop.set_exception_handler(previous)
    if not recorder.raised:
        _fail("data_received() was never called for the bytes the peer sent")
    bug = recorder.raised[0]
    if recorder.lost[0] is not bug:
        _fail(
            f"connection_lost({recorder.lost[0]!r}) after data_received() raised {bug!r}; "
            "asyncio's passes that exception"
        )
    if not any(context.get("exception") is bug for context in reported):
        _fail(
            "the exception from data_received() never reached the loop's exception handler; "
            "asyncio reports it with loop.call_exception_handler()"
        )


async def _transport_set_protocol(ctx: _TransportRun) -> None:
    first, transport, peer = await ctx.connect()
    second = _Recorder()
    transport.set_protocol(second)
    ctx.adopt(transport, second)
    if transport.get_protocol() is not second:
        _fail("get_protocol() does not return the protocol given to set_protocol()")
    peer.write(b"to the second")
    await second.until(ctx, lambda: len(second.data) >= 13, "data for the new protocol")
    if first.data:
        _fail("data_received() still went to the old protocol after set_protocol()")
    transport.close()
    await second.until(ctx, lambda: bool(second.lost), "connection_lost() of the new protocol")
    if first.lost:
        _fail("connection_lost() went to the old protocol after set_protocol()")


_TRANSPORT_PLAN: list[tuple[str, Callable[[_TransportRun], Awaitable[None]]]] = [
    ("basics", _transport_basics),
    ("write", _transport_write),
    ("data_received", _transport_data_received),
    ("flow_control", _transport_flow_control),
    ("write_eof", _transport_write_eof),
    ("eof_received", _transport_eof_received),
    ("close", _transport_close),
    ("abort", _transport_abort),
    ("pause_reading", _transport_pause_reading),
    ("protocol_error", _transport_protocol_error),
    ("set_protocol", _transport_set_protocol),
]
