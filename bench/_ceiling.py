"""The ceiling: the fastest a virtual-time loop built on asyncio's tasks and handles can be.

A measuring instrument for bench/sleepers.py, never a loop to use: it keeps timers in a heap of
plain ``(when, seq, handle)`` tuples (compared in C, not by ``TimerHandle.__lt__``), never asks a
selector for I/O, and runs a minimal scheduling step. It keeps none of the guarantees labkit's
loop keeps (no I/O, no threads, no debug mode, no deadlock detection), so whatever time the
workload still takes under it belongs to asyncio's ``Task``, ``Future`` and ``Handle`` and to
the workload itself — the part no loop on asyncio's machinery can remove.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from asyncio import events
from collections.abc import Callable
from contextvars import Context
from typing import Any


class CeilingLoop(asyncio.SelectorEventLoop):
    """Virtual time with nothing but a tuple heap and the ready queue (benchmark only)."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._heap: list[tuple[float, int, events.TimerHandle]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._now

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: Context | None = None,
    ) -> events.TimerHandle:
        handle = events.TimerHandle(when, callback, args, self, context)
        heapq.heappush(self._heap, (when, next(self._seq), handle))
        handle._scheduled = True  # type: ignore[attr-defined]
        return handle

    def _run_once(self) -> None:
        ready = self._ready  # type: ignore[attr-defined]
        heap = self._heap
        if not ready:
            while heap and heap[0][2].cancelled():
                heapq.heappop(heap)
            if heap:
                self._now = max(self._now, heap[0][0])
                while heap and heap[0][0] <= self._now:
                    handle = heapq.heappop(heap)[2]
                    handle._scheduled = False  # type: ignore[attr-defined]
                    ready.append(handle)
        for _ in range(len(ready)):
            handle = ready.popleft()
            if not handle.cancelled():
                handle._run()
