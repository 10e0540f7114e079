"""The labkit pytest plugin: the "asyncio", "uvloop" and "virtual" loops for pytest-asyncio 1.x.

It uses pytest-asyncio's own ``pytest_asyncio_loop_factories`` hook, so one test can run under
all three loops, and ``--labkit-loop`` picks the loop for a whole suite.

Example::

    @pytest.mark.asyncio(loop_factories=["asyncio", "uvloop", "virtual"])
    async def test_timeout_fires():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.Event().wait()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from labkit.clock import VirtualClock
from labkit.loop import new_virtual_loop

__all__ = ["LOOP_NAMES", "loop_factories"]

LOOP_NAMES = ("asyncio", "uvloop", "virtual")
_UVLOOP_MISSING = (
    "the 'uvloop' loop was asked for, but uvloop is not installed in this environment: "
    "`pip install uvloop` (it is part of the kit's environment; `make test` installs it), "
    "or choose --labkit-loop=asyncio / virtual"
)


def _uvloop_factory() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError as exc:
        raise RuntimeError(_UVLOOP_MISSING) from exc
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The loop factories the plugin offers, by name.

    Example::

        with asyncio.Runner(loop_factory=loop_factories()["virtual"]) as runner:
            runner.run(main())
    """
    return {
        "asyncio": asyncio.new_event_loop,
        "uvloop": _uvloop_factory,
        "virtual": new_virtual_loop,
    }


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("labkit")
    group.addoption(
        "--labkit-loop",
        dest="labkit_loop",
        default=None,
        choices=LOOP_NAMES,
        help="run every asyncio test without its own loop_factories under this loop "
        "(default: the labkit_loop ini option, else 'asyncio')",
    )
    parser.addini(
        "labkit_loop",
        help="default loop for asyncio tests: asyncio, uvloop or virtual",
        default="asyncio",
    )


def pytest_configure(config: pytest.Config) -> None:
    chosen = _suite_loop(config)
    if chosen not in LOOP_NAMES:
        raise pytest.UsageError(
            f"labkit_loop = {chosen!r} is not a loop labkit knows; "
            f"use one of {', '.join(LOOP_NAMES)}"
        )
    if chosen == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise pytest.UsageError(_UVLOOP_MISSING) from None
    config.addinivalue_line(
        "markers",
        "labkit_clock(autojump=True, start=0.0): options for the virtual loop of this test",
    )


def _suite_loop(config: pytest.Config) -> str:
    option = config.getoption("labkit_loop", default=None)
    return str(option or config.getini("labkit_loop") or "asyncio")


@pytest.hookimpl(trylast=True)
def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]] | None:
    """All three loops for a test that names its loop_factories; else the suite's loop."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = loop_factories()
    clock = item.get_closest_marker("labkit_clock")
    if clock is not None:
        options: dict[str, Any] = dict(clock.kwargs)

        def configured() -> asyncio.AbstractEventLoop:
            return new_virtual_loop(**options)

        factories["virtual"] = configured
    marker = item.get_closest_marker("asyncio")
    if marker is not None and "loop_factories" in marker.kwargs:
        return factories
    chosen = "virtual" if clock is not None else _suite_loop(config)
    return {chosen: factories[chosen]}


@pytest.fixture
def virtual_clock() -> VirtualClock:
    """The running test's virtual clock: read ``now``, ``await advance(seconds)``.

    Example::

        @pytest.mark.asyncio(loop_factories=["virtual"])
        async def test_retry_backs_off(virtual_clock):
            task = asyncio.create_task(retry())
            await virtual_clock.advance(30)
            assert virtual_clock.now == 30.0
    """
    return VirtualClock()
