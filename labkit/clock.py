"""VirtualClock: a test's handle on the running loop's virtual time."""

from __future__ import annotations

import asyncio

from labkit.loop import VirtualTimeLoop, advance

__all__ = ["VirtualClock"]


class VirtualClock:
    """Reads and moves the virtual time of whichever VirtualTimeLoop is running.

    It looks the loop up when used, so it can be made before the loop exists (as the
    ``virtual_clock`` pytest fixture is).

    Example::

        clock = VirtualClock()
        async def main():
            await clock.advance(60)
            assert clock.now == 60.0
        labkit.run(main())
    """

    @property
    def loop(self) -> VirtualTimeLoop:
        """The running VirtualTimeLoop; a clear TypeError on any other loop."""
        loop = asyncio.get_running_loop()
        if not isinstance(loop, VirtualTimeLoop):
            raise TypeError(
                "the virtual clock needs the test to run on labkit's virtual loop, but it runs "
                f"on {type(loop).__module__}.{type(loop).__qualname__}: mark the test "
                "@pytest.mark.asyncio(loop_factories=['virtual']) or pass --labkit-loop=virtual"
            )
        return loop

    @property
    def now(self) -> float:
        """The current virtual time in seconds."""
        return self.loop.time()

    async def advance(self, seconds: float) -> None:
        """Move time by ``seconds``, running every callback that falls due on the way."""
        self.loop  # noqa: B018 -- raises the clear error on a real loop
        await advance(seconds)
