"""MockAsyncIterator: a scripted async stream that records how its consumer used it.

It stands in for an async generator (``async for``, ``asend``, ``athrow``, ``aclose``), waits a
chosen (virtual) time before each item, fails at a chosen position, and keeps a record a test
can assert on: how many items were taken, whether the stream was exhausted, and whether the
consumer closed it when it stopped early.
"""

from __future__ import annotations

import asyncio
import collections.abc
import math
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

__all__ = ["MockAsyncIterator"]

_T = TypeVar("_T")

_ErrorSpec = BaseException | type[BaseException]


class MockAsyncIterator(collections.abc.AsyncGenerator[_T, Any], Generic[_T]):
    """An async-generator stand-in that yields ``items``, with delays and an injected failure.

    ``delay`` is the time to wait before each item: one number for all of them, or one per
    item (a sequence). On labkit's virtual loop the waits cost no real time. The wait is
    ``await asyncio.sleep(delay)`` even when the delay is 0, so every item is a suspension
    point, and so is the step that finds the end: the consumer yields to the loop at each
    step, as with a real stream, and other tasks run in between. An async generator over a
    list never suspends. That matters to tests that count awaits: the cancellation sweep finds
    ``n + 1`` points in ``n`` items here, and none with a list-backed generator. ``fail_at=i``
    raises ``error`` instead of yielding item ``i``; ``error`` alone (without ``fail_at``)
    is raised after the last item, as a stream that breaks instead of ending cleanly.
    ``items`` is consumed lazily, so an endless iterator (``itertools.count()``) is fine.

    The record: ``consumed`` (items handed out), ``exhausted`` (the end was reached),
    ``closed`` (``aclose()`` ran), ``failed`` (the injected error was raised), ``sent`` and
    ``thrown`` (what ``asend``/``athrow`` delivered). ``assert_closed()`` fails with a clear
    message when a consumer stopped early without closing the stream; the fix it names is
    ``async with contextlib.aclosing(stream)``.

    Example::

        stream = MockAsyncIterator([1, 2, 3, 4], delay=0.5)
        async with contextlib.aclosing(stream):
            async for item in stream:
                if item == 2:
                    break
        assert stream.consumed == 2
        stream.assert_closed()
    """

    def __init__(
        self,
        items: Iterable[_T],
        *,
        delay: float | Sequence[float] = 0.0,
        fail_at: int | None = None,
        error: _ErrorSpec | None = None,
    ) -> None:
        self._items: Iterator[_T] = iter(items)
        self._delays = _check_delays(delay)
        if fail_at is not None and (
            not isinstance(fail_at, int) or isinstance(fail_at, bool) or fail_at < 0
        ):
            raise ValueError(
                f"fail_at must be an item position >= 0 (0 fails before the first item), "
                f"got {fail_at!r}"
            )
        if error is not None and not _is_error(error):
            raise TypeError(
                f"error must be an exception instance or class, got {error!r}; "
                "for example error=ConnectionResetError('peer went away')"
            )
        self._fail_at = fail_at
        self._error = error
        self._running = False
        self._finished = False
        self.consumed = 0
        """How many items the consumer has received."""
        self.started = False
        """Whether the consumer asked for at least one item."""
        self.exhausted = False
        """Whether the stream reached its end (StopAsyncIteration was raised by it)."""
        self.failed = False
        """Whether the injected error was raised."""
        self.closed = False
        """Whether ``aclose()`` was called."""
        self.sent: list[Any] = []
        """The non-None values delivered with ``asend()``, in order."""
        self.thrown: list[BaseException] = []
        """Exceptions delivered with ``athrow()``."""

    def __repr__(self) -> str:
        state = (
            "closed"
            if self.closed
            else "exhausted"
            if self.exhausted
            else "failed"
            if self.failed
            else "open"
        )
        return f"<MockAsyncIterator consumed={self.consumed} {state}>"

    # -- the async generator protocol ---------------------------------------------------

    def __aiter__(self) -> MockAsyncIterator[_T]:
        return self

    async def __anext__(self) -> _T:
        return await self._step()

    async def asend(self, value: Any) -> _T:
        """Resume the stream with ``value`` (recorded in ``sent``) and get the next item."""
        if value is not None and not self.started:
            raise TypeError("can't send non-None value to a just-started async generator")
        if value is not None:
            self.sent.append(value)
        return await self._step()

    async def athrow(
        self,
        typ: _ErrorSpec,
        val: Any = None,
        tb: TracebackType | None = None,
    ) -> _T:
        """Raise an exception at the stream's suspension point, as ``agen.athrow`` does.

        The mock does not catch it: it is recorded in ``thrown``, the stream finishes, and the
        exception propagates to the caller, like a generator without a matching ``except``.
        """
        self._enter("athrow")
        try:
            if isinstance(typ, BaseException):
                exc = typ
            elif val is None:
                exc = typ()
            elif isinstance(val, BaseException):
                exc = val
            else:
                exc = typ(val)
            self.thrown.append(exc)
            self._finished = True
            raise exc.with_traceback(tb) if tb is not None else exc
        finally:
            self._running = False

    async def aclose(self) -> None:
        """Close the stream: later steps raise StopAsyncIteration; recorded in ``closed``."""
        if self._running:
            raise RuntimeError("aclose(): asynchronous generator is already running")
        self.closed = True
        self._finished = True

    # -- assertions ---------------------------------------------------------------------

    def assert_closed(self) -> None:
        """Fail unless the consumer closed the stream, or ran it to its end or its error.

        Example::

            await consume_first_two(stream)
            stream.assert_closed()
        """
        if self.closed or self.exhausted or self.failed:
            return
        raise AssertionError(
            f"the consumer stopped after {self.consumed} item(s) without closing the stream: "
            "aclose() was never called. Iterate inside "
            "`async with contextlib.aclosing(stream):` so that an early exit (break, return, "
            "an exception) closes it at once."
        )

    def assert_consumed(self, count: int) -> None:
        """Fail unless exactly ``count`` items were handed to the consumer.

        Example::

            stream.assert_consumed(3)
        """
        if self.consumed != count:
            raise AssertionError(
                f"expected the consumer to take {count} item(s), it took {self.consumed}"
            )

    # -- internals ----------------------------------------------------------------------

    def _enter(self, what: str) -> None:
        if self._running:
            raise RuntimeError(f"{what}(): asynchronous generator is already running")
        self._running = True
        self.started = True

    async def _step(self) -> _T:
        self._enter("anext")
        try:
            if self._finished:
                raise StopAsyncIteration
            index = self.consumed
            wait = self._delay_for(index)
            try:
                await asyncio.sleep(wait)
            except BaseException:
                # Thrown into the generator where it waits (a cancellation, a timeout): like
                # an async generator without a handler, the stream is finished.
                self._finished = True
                raise
            if self._finished:  # closed while we waited
                raise StopAsyncIteration
            if self._fail_at is not None and index == self._fail_at:
                self._raise_error(index)
            try:
                item = next(self._items)
            except StopIteration:
                if self._error is not None and self._fail_at is None:
                    self._raise_error(index)
                self._finished = True
                self.exhausted = True
                raise StopAsyncIteration from None
            self.consumed += 1
            return item
        finally:
            self._running = False

    def _delay_for(self, index: int) -> float:
        if isinstance(self._delays, float):
            return self._delays
        return self._delays[index] if index < len(self._delays) else 0.0

    def _raise_error(self, index: int) -> None:
        self._finished = True
        self.failed = True
        error = self._error
        if error is None:
            error = RuntimeError(f"MockAsyncIterator: injected failure at item {index}")
        elif isinstance(error, type):
            error = error()
        raise error


def _is_error(error: object) -> bool:
    return isinstance(error, BaseException) or (
        isinstance(error, type) and issubclass(error, BaseException)
    )


def _check_delays(delay: float | Sequence[float]) -> float | tuple[float, ...]:
    if isinstance(delay, (int, float)):
        values: tuple[object, ...] = (delay,)
    elif isinstance(delay, collections.abc.Iterable) and not isinstance(delay, (str, bytes)):
        values = tuple(delay)
    else:
        values = (delay,)  # refused below, with the message that names the fix
    for value in values:
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or math.isnan(value)
            or value < 0
        ):
            raise ValueError(
                f"delay must be a number of seconds >= 0, or one such number per item; "
                f"got {delay!r}"
            )
    if isinstance(delay, (int, float)):
        return float(delay)
    return tuple(float(v) for v in values if isinstance(v, (int, float)))
