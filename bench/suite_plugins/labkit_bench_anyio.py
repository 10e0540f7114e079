"""Bench-only: anyio's ``anyio_backend`` fixture, same test ids, on the loop the bench chose.

labkit_bench_settings registers this module, after anyio's own plugin, for
``LABKIT_BENCH_SETTING=anyio:...``; it is what a project writes in its conftest.py.

Example::

    @pytest.fixture(scope="module", params=["asyncio"])
    def anyio_backend(request):
        return (request.param, {"loop_factory": labkit.new_virtual_loop})
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

FACTORY: list[Callable[[], asyncio.AbstractEventLoop]] = []


@pytest.fixture(scope="module", params=["asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return (request.param, {"loop_factory": FACTORY[-1]})
