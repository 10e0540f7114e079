"""Bench-only pytest plugin: which event loop classes each test of a suite ran on.

bench/suites.py loads it (``-p labkit_bench_probe``) in every environment alike, so the table can
say whether a suite reached the loop it was meant to run on. It wraps ``asyncio.Runner.run``
and ``get_loop`` (pytest-asyncio's
and anyio's runners both use them) and writes ``{nodeid: [loop class, ...]}``
as JSON to the file named by ``$LABKIT_BENCH_PROBE`` at the end of the session.

Example::

    LABKIT_BENCH_PROBE=loops.json pytest -p labkit_bench_probe tests
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

_loops: dict[str, list[str]] = {}
_current: list[str] = []
_original_run = asyncio.Runner.run
_original_get_loop = asyncio.Runner.get_loop


def _get_loop(self: asyncio.Runner) -> asyncio.AbstractEventLoop:
    loop = _original_get_loop(self)
    if _current:
        names = _loops.setdefault(_current[-1], [])
        name = f"{type(loop).__module__}.{type(loop).__qualname__}"
        if name not in names:
            names.append(name)
    return loop


def _run(self: asyncio.Runner, coro: Any, *, context: Any = None) -> Any:
    self.get_loop()  # records the loop (run itself creates it without get_loop)
    return _original_run(self, coro, context=context)


asyncio.Runner.get_loop = _get_loop  # type: ignore[method-assign]
asyncio.Runner.run = _run  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    _current.append(item.nodeid)
    try:
        return (yield)
    finally:
        _current.pop()


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("LABKIT_BENCH_PROBE")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(_loops, out)
