"""labkit: test asyncio code in virtual time, deterministically, and find the bugs async code hides.

Example::

    import asyncio, labkit

    async def main():
        await asyncio.sleep(3600)          # an hour, in no real time
        return asyncio.get_running_loop().time()

    assert labkit.run(main()) == 3600.0
"""

from labkit.backpressure import Blocked, CountingQueue, assert_blocks, is_blocked, suspended_at
from labkit.cancellation import (
    CancelSweep,
    CancelSweepError,
    SweepPoint,
    cancel_at_every_await,
    force_cancel,
    run_cancel_sweep,
    timeout_at_every_await,
)
from labkit.checkpoints import assert_checkpoints, assert_no_checkpoints
from labkit.clock import VirtualClock
from labkit.conformance import (
    STREAM_CHECKS,
    TRANSPORT_CHECKS,
    ConformanceError,
    ConformanceReport,
    TransportPeer,
    check_stream_pair,
    check_transport,
)
from labkit.deadlock import DeadlockError
from labkit.explore import Exploration, ExplorationFailure, Run, explore, record, replay
from labkit.hygiene import HygieneError, HygieneProblem, TaskTracker
from labkit.loop import VirtualTimeLoop, advance, new_virtual_loop, run
from labkit.mocks import (
    MemoryConnection,
    MemoryLink,
    MemoryNetwork,
    MemoryServer,
    MockAsyncIterator,
    MockTransport,
    Pipe,
    ProtocolHarness,
    StreamEnd,
    bytes_diff,
    fragment,
    memory_connection,
)
from labkit.scheduler import (
    Round,
    Scheduler,
    StepLimitError,
    Stepper,
    run_until_idle,
    step_through,
)
from labkit.strategy import FIFO, PCT, Exhaustive, RandomOrder, Strategy
from labkit.throughput import Throughput, measure_throughput
from labkit.timeline import format_timeline, plot_timeline
from labkit.trace import Location, Step, TaskState, Trace
from labkit.tracker import Leak, ResourceLeakError, ResourceTracker
from labkit.watchdog import BlockingCall, BlockingCallError, Watchdog

__all__ = [
    "FIFO",
    "PCT",
    "STREAM_CHECKS",
    "TRANSPORT_CHECKS",
    "Blocked",
    "BlockingCall",
    "BlockingCallError",
    "CancelSweep",
    "CancelSweepError",
    "ConformanceError",
    "ConformanceReport",
    "CountingQueue",
    "DeadlockError",
    "Exhaustive",
    "Exploration",
    "ExplorationFailure",
    "HygieneError",
    "HygieneProblem",
    "Leak",
    "Location",
    "MemoryConnection",
    "MemoryLink",
    "MemoryNetwork",
    "MemoryServer",
    "MockAsyncIterator",
    "MockTransport",
    "Pipe",
    "ProtocolHarness",
    "RandomOrder",
    "ResourceLeakError",
    "ResourceTracker",
    "Round",
    "Run",
    "Scheduler",
    "Step",
    "StepLimitError",
    "Stepper",
    "Strategy",
    "StreamEnd",
    "SweepPoint",
    "TaskState",
    "TaskTracker",
    "Throughput",
    "Trace",
    "TransportPeer",
    "VirtualClock",
    "VirtualTimeLoop",
    "Watchdog",
    "advance",
    "assert_blocks",
    "assert_checkpoints",
    "assert_no_checkpoints",
    "bytes_diff",
    "cancel_at_every_await",
    "check_stream_pair",
    "check_transport",
    "explore",
    "force_cancel",
    "format_timeline",
    "fragment",
    "is_blocked",
    "measure_throughput",
    "memory_connection",
    "new_virtual_loop",
    "plot_timeline",
    "record",
    "replay",
    "run",
    "run_cancel_sweep",
    "run_until_idle",
    "step_through",
    "suspended_at",
    "timeout_at_every_await",
]

__version__ = "0.1.0"
