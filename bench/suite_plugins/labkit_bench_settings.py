"""Bench-only pytest plugin: the one setting a suite needs to reach the loop under test.

``$LABKIT_BENCH_SETTING`` names it; bench/suites.py sets it per suite and mode and prints it in
its table. What each stands for in a project of one's own:

* ``anyio:labkit`` / ``anyio:looptime``: a suite on anyio's pytest plugin gets the loop through
  anyio's backend options, as a project would write in its conftest.py::

      @pytest.fixture(params=[("asyncio", {"loop_factory": labkit.new_virtual_loop})])
      def anyio_backend(request): return request.param

* ``hook-first:labkit``: a suite whose conftest.py answers pytest-asyncio's
  ``pytest_asyncio_loop_factories`` hook itself (first answer wins, so labkit's never runs, see
  the adopters issue) gets labkit's virtual loop from a ``tryfirst`` implementation instead.

Example::

    LABKIT_BENCH_SETTING=anyio:labkit pytest -p labkit_bench_settings tests
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest

SETTING = os.environ.get("LABKIT_BENCH_SETTING", "")


def _loop_factory(peer: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if peer == "labkit":
        import labkit

        return labkit.new_virtual_loop
    if peer == "looptime":
        import looptime

        return looptime.new_event_loop
    raise pytest.UsageError(f"LABKIT_BENCH_SETTING: unknown loop {peer!r} (labkit or looptime)")


class _HookFirst:
    """Answers pytest-asyncio's loop-factory hook before the suite's own conftest does."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_asyncio_loop_factories(
        self, config: pytest.Config, item: pytest.Item
    ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
        return {"virtual": _loop_factory("labkit")}


def pytest_configure(config: pytest.Config) -> None:
    kind, _, peer = SETTING.partition(":")
    # Registered here, after the entry-point plugins: a fixture registered later wins, so this
    # anyio_backend overrides anyio's own (a conftest.py one would still win, as in a project).
    if kind == "anyio":
        import labkit_bench_anyio

        labkit_bench_anyio.FACTORY.append(_loop_factory(peer))
        config.pluginmanager.register(labkit_bench_anyio, "labkit-bench-anyio")
    elif kind == "hook-first":
        config.pluginmanager.register(_HookFirst(), "labkit-bench-hook-first")
    elif kind:
        raise pytest.UsageError(f"LABKIT_BENCH_SETTING: unknown setting {SETTING!r}")
