"""labkit: test asyncio code in virtual time, deterministically, and find the bugs async code hides.

Example::

    import asyncio, labkit

    async def main():
        await asyncio.sleep(3600)          # an hour, in no real time
        return asyncio.get_running_loop().time()

    assert labkit.run(main()) == 3600.0
"""

from labkit.clock import VirtualClock
from labkit.deadlock import DeadlockError
from labkit.loop import VirtualTimeLoop, advance, new_virtual_loop, run

__all__ = [
    "DeadlockError",
    "VirtualClock",
    "VirtualTimeLoop",
    "advance",
    "new_virtual_loop",
    "run",
]

__version__ = "0.1.0"
