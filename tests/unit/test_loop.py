"""labkit.VirtualTimeLoop behaves like asyncio's own loop, except that its clock is virtual."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import labkit
from labkit import VirtualTimeLoop

# A real-time wait, in a *thread*, before the peer answers: long enough that a racing virtual
# clock would have timed the reader out, short enough to keep the suite fast. Nothing asserts
# on how long anything took.
PEER_DELAY = 0.05


@pytest.fixture
def loop() -> Iterator[VirtualTimeLoop]:
    loop = VirtualTimeLoop()
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


@pytest.fixture
def manual_loop() -> Iterator[VirtualTimeLoop]:
    loop = VirtualTimeLoop(autojump=False)
    yield loop
    loop.close()


def run_virtual(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return labkit.run(main())


# -- the clock --------------------------------------------------------------------------------


def test_is_a_selector_loop_built_without_arguments() -> None:
    loop = VirtualTimeLoop()
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
        assert loop.time() == 0.0
        assert loop.autojump is True
    finally:
        loop.close()


def test_an_hour_of_sleep_is_instant_and_the_clock_reads_3600(loop: VirtualTimeLoop) -> None:
    loop.run_until_complete(asyncio.sleep(3600))
    assert loop.time() == 3600.0


def test_start_sets_the_initial_time() -> None:
    loop = VirtualTimeLoop(start=1_000.0)
    try:
        loop.run_until_complete(asyncio.sleep(5))
        assert loop.time() == 1_005.0
    finally:
        loop.close()


def test_autojump_wakes_each_sleeper_at_its_own_time(loop: VirtualTimeLoop) -> None:
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        woke.append((name, asyncio.get_running_loop().time()))

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(sleeper("day", 86_400))
            tg.create_task(sleeper("minute", 60))
            tg.create_task(sleeper("hour", 3_600))

    loop.run_until_complete(main())
    assert woke == [("minute", 60.0), ("hour", 3_600.0), ("day", 86_400.0)]


def test_call_later_and_call_at_run_in_time_order_at_their_own_times(
    loop: VirtualTimeLoop,
) -> None:
    seen: list[tuple[str, float]] = []
    done = loop.create_future()

    def note(name: str) -> None:
        seen.append((name, loop.time()))
        if len(seen) == 5:
            done.set_result(None)

    loop.call_later(3, note, "later-3")
    loop.call_at(1.5, note, "at-1.5")
    loop.call_later(2, note, "later-2a")
    loop.call_later(2, note, "later-2b")
    loop.call_soon(note, "soon")
    loop.run_until_complete(done)
    assert seen == [
        ("soon", 0.0),
        ("at-1.5", 1.5),
        ("later-2a", 2.0),
        ("later-2b", 2.0),
        ("later-3", 3.0),
    ]


def test_cancelled_timer_does_not_fire_and_time_stops_at_the_live_one(
    loop: VirtualTimeLoop,
) -> None:
    fired: list[str] = []
    handle = loop.call_later(100, fired.append, "cancelled")
    loop.call_later(10, fired.append, "live")
    handle.cancel()
    loop.run_until_complete(asyncio.sleep(10))
    assert fired == ["live"]
    assert loop.time() == 10.0


@pytest.mark.parametrize("start", [0.0, 1e7, 1.7e9, 1e17])
def test_timers_due_now_still_run_at_a_huge_time(start: float) -> None:
    # Past ~1e7 s, time() + 1 ns == time(): a timer due "now" must still run, not spin forever.
    loop = VirtualTimeLoop(start=start)
    try:
        due_now = loop.create_future()
        loop.call_later(0, due_now.set_result, "ran")
        assert loop.run_until_complete(due_now) == "ran"
        for _ in range(3):
            loop.run_until_complete(asyncio.sleep(0.1))
        assert loop.time() >= start
    finally:
        loop.close()


# -- manual mode --------------------------------------------------------------------------------


def test_manual_advance_from_outside_runs_each_callback_at_its_own_time(
    manual_loop: VirtualTimeLoop,
) -> None:
    seen: list[tuple[int, float]] = []
    for delay in (3, 1, 2, 7):
        manual_loop.call_later(delay, lambda d=delay: seen.append((d, manual_loop.time())))
    assert manual_loop.autojump is False

    manual_loop.advance(2.5)
    assert seen == [(1, 1.0), (2, 2.0)]
    assert manual_loop.time() == 2.5

    manual_loop.advance(0.5)  # a timer due exactly at the target runs
    assert seen == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert manual_loop.time() == 3.0


def test_manual_advance_zero_runs_what_is_ready_without_moving_time(
    manual_loop: VirtualTimeLoop,
) -> None:
    ran: list[float] = []
    manual_loop.call_soon(lambda: ran.append(manual_loop.time()))
    manual_loop.advance(0)
    assert ran == [0.0]
    assert manual_loop.time() == 0.0


def test_manual_advance_on_an_empty_loop_moves_time(manual_loop: VirtualTimeLoop) -> None:
    manual_loop.advance(42)
    assert manual_loop.time() == 42.0


def test_manual_advance_returns_once_the_loop_is_idle_at_the_new_time(
    manual_loop: VirtualTimeLoop,
) -> None:
    steps: list[str] = []

    async def chain() -> None:
        await asyncio.sleep(5)
        for i in range(3):  # several more loop iterations after the timer fires
            await asyncio.sleep(0)
            steps.append(f"step {i}")
        steps.append("parked")
        await asyncio.sleep(100)
        steps.append("woke")

    task = manual_loop.create_task(chain(), name="chain")
    manual_loop.advance(5)
    assert steps == ["step 0", "step 1", "step 2", "parked"]
    assert not task.done()
    manual_loop.advance(100)
    assert steps[-1] == "woke"
    assert task.done()


def test_manual_mode_does_not_move_time_by_itself(manual_loop: VirtualTimeLoop) -> None:
    task = manual_loop.create_task(asyncio.sleep(1), name="sleeper")
    manual_loop.advance(0.999)
    assert not task.done()
    manual_loop.advance(0.001)
    assert task.done()


def test_await_advance_inside_the_loop_in_manual_mode(manual_loop: VirtualTimeLoop) -> None:
    woke: list[float] = []

    async def sleeper(delay: float) -> None:
        await asyncio.sleep(delay)
        woke.append(asyncio.get_running_loop().time())

    async def main() -> None:
        first = asyncio.create_task(sleeper(5), name="five")
        second = asyncio.create_task(sleeper(20), name="twenty")
        await labkit.advance(10)
        assert first.done()
        assert not second.done()
        assert asyncio.get_running_loop().time() == 10.0
        await labkit.advance(10)
        assert second.done()

    manual_loop.run_until_complete(main())
    assert woke == [5.0, 20.0]
    assert manual_loop.time() == 20.0


def test_await_advance_also_works_in_autojump_mode(loop: VirtualTimeLoop) -> None:
    async def main() -> tuple[bool, float]:
        task = asyncio.create_task(asyncio.sleep(30), name="thirty")
        await labkit.advance(10)
        return task.done(), asyncio.get_running_loop().time()

    assert loop.run_until_complete(main()) == (False, 10.0)


def test_a_manual_wait_without_advance_is_reported_not_hung(
    manual_loop: VirtualTimeLoop,
) -> None:
    with pytest.raises(labkit.DeadlockError, match=r"autojump=False.*labkit\.advance"):
        manual_loop.run_until_complete(asyncio.sleep(1))


def test_advance_while_the_loop_runs_names_the_async_form(loop: VirtualTimeLoop) -> None:
    async def main() -> None:
        loop.advance(1)

    with pytest.raises(RuntimeError, match=r"await labkit\.advance"):
        loop.run_until_complete(main())


@pytest.mark.parametrize("bad", [-1, float("nan"), "10", True])
def test_advance_rejects_bad_seconds(manual_loop: VirtualTimeLoop, bad: Any) -> None:
    with pytest.raises(ValueError, match=r"advance\(\) needs a number of seconds >= 0"):
        manual_loop.advance(bad)
    assert manual_loop.time() == 0.0


def test_advance_refuses_infinity(manual_loop: VirtualTimeLoop) -> None:
    """advance(inf) used to set the clock to inf, after which no timer could ever be ordered."""
    with pytest.raises(ValueError, match=r"advance\(\) needs a finite number of seconds"):
        manual_loop.advance(float("inf"))
    assert manual_loop.time() == 0.0


def test_two_advances_at_once_are_refused(manual_loop: VirtualTimeLoop) -> None:
    async def main() -> None:
        first = asyncio.create_task(labkit.advance(10), name="first")
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already in progress"):
            await labkit.advance(5)
        await first

    manual_loop.run_until_complete(main())
    assert manual_loop.time() == 10.0


def test_labkit_advance_on_the_stock_loop_explains_the_fix() -> None:
    async def main() -> None:
        await labkit.advance(1)

    with pytest.raises(TypeError, match=r"needs a VirtualTimeLoop.*new_virtual_loop"):
        asyncio.run(main())


@pytest.mark.parametrize("bad", [-1, float("nan"), "1", True])
def test_bad_autojump_threshold_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="autojump_threshold must be a number of real seconds"):
        VirtualTimeLoop(autojump_threshold=bad)


@pytest.mark.parametrize("bad", ["no", "", 0, 1, None])
def test_autojump_must_be_a_bool(bad: Any) -> None:
    """autojump="no" used to be accepted, and being truthy it meant the opposite."""
    with pytest.raises(TypeError, match=r"autojump must be True .* or False .*, got"):
        VirtualTimeLoop(autojump=bad)
    with pytest.raises(TypeError, match="autojump must be True"):
        labkit.new_virtual_loop(autojump=bad)


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), "0", None])
def test_bad_start_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="start must be a finite number of seconds"):
        VirtualTimeLoop(start=bad)


# -- asyncio's own tools, unchanged ---------------------------------------------------------------


def test_asyncio_timeout_fires_at_the_exact_virtual_deadline() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.Event().wait()
        return loop.time()

    assert run_virtual(main) == 30.0


def test_timeout_reschedule_and_timeout_at() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):  # noqa: PT012 -- the block under test is the timeout
            async with asyncio.timeout(10) as cm:
                cm.reschedule(loop.time() + 25)
                await asyncio.sleep(3_600)
        async with asyncio.timeout_at(loop.time() + 100):
            await asyncio.sleep(99)
        return loop.time()

    assert run_virtual(main) == 124.0


def test_wait_for_times_out_or_returns() -> None:
    async def slow() -> str:
        await asyncio.sleep(60)
        return "slow"

    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slow(), timeout=5)
        assert loop.time() == 5.0
        return await asyncio.wait_for(slow(), timeout=61), loop.time()

    assert run_virtual(main) == ("slow", 65.0)


def test_task_group_cancels_siblings_on_failure() -> None:
    cancelled: list[str] = []

    async def fails_later() -> None:
        await asyncio.sleep(10)
        raise ValueError("boom")

    async def sleeps_long() -> None:
        try:
            await asyncio.sleep(1_000)
        except asyncio.CancelledError:
            cancelled.append(f"cancelled at {asyncio.get_running_loop().time()}")
            raise

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(fails_later(), name="fails")
            tg.create_task(sleeps_long(), name="sleeps")

    with pytest.raises(ExceptionGroup) as info:
        run_virtual(main)
    assert info.group_contains(ValueError, match="boom")
    assert cancelled == ["cancelled at 10.0"]


def test_bounded_queue_blocks_the_producer_until_the_consumer_takes() -> None:
    async def main() -> list[tuple[str, int, float]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        log: list[tuple[str, int, float]] = []

        async def producer() -> None:
            for i in range(3):
                await queue.put(i)
                log.append(("put", i, loop.time()))

        async def consumer() -> None:
            for _ in range(3):
                await asyncio.sleep(10)
                item = await queue.get()
                log.append(("got", item, loop.time()))
                queue.task_done()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(producer(), name="producer")
            tg.create_task(consumer(), name="consumer")
        await queue.join()
        return log

    assert run_virtual(main) == [
        ("put", 0, 0.0),
        ("got", 0, 10.0),
        ("put", 1, 10.0),
        ("got", 1, 20.0),
        ("put", 2, 20.0),
        ("got", 2, 30.0),
    ]


def test_lock_semaphore_and_condition() -> None:
    async def main() -> list[str]:
        lock = asyncio.Lock()
        sem = asyncio.Semaphore(2)
        cond = asyncio.Condition()
        log: list[str] = []
        ready = False

        async def holder() -> None:
            async with lock:
                await asyncio.sleep(5)
                log.append("holder releases")

        async def waiter() -> None:
            async with lock:
                log.append(f"waiter got lock at {asyncio.get_running_loop().time()}")

        async def limited(n: int) -> None:
            async with sem:
                await asyncio.sleep(1)
                log.append(f"limited {n} at {asyncio.get_running_loop().time()}")

        async def notified() -> None:
            async with cond:
                await cond.wait_for(lambda: ready)
                log.append("notified")

        async with asyncio.TaskGroup() as tg:
            tg.create_task(holder(), name="holder")
            tg.create_task(waiter(), name="waiter")
            for n in range(3):
                tg.create_task(limited(n), name=f"limited-{n}")
            tg.create_task(notified(), name="notified")
            await asyncio.sleep(20)
            async with cond:
                ready = True
                cond.notify_all()
        return log

    assert run_virtual(main) == [
        "limited 0 at 1.0",
        "limited 1 at 1.0",
        "limited 2 at 2.0",
        "holder releases",
        "waiter got lock at 5.0",
        "notified",
    ]


def test_run_in_executor_returns_the_result(loop: VirtualTimeLoop) -> None:
    async def main() -> int:
        return await asyncio.get_running_loop().run_in_executor(None, sum, [1, 2, 3])

    assert loop.run_until_complete(main()) == 6


def test_executor_job_holds_the_clock_so_wait_for_does_not_race_it() -> None:
    # The job blocks until a helper thread releases it after some real time; if the virtual
    # clock jumped while the job was in flight, the 5 s wait_for would time out at once.
    release = threading.Event()

    def job() -> str:
        release.wait(timeout=30)
        return "done"

    async def main() -> str:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, job)
        threading.Timer(PEER_DELAY, release.set).start()
        return await asyncio.wait_for(future, timeout=5)

    assert run_virtual(main) == "done"


def test_real_time_block_holds_the_clock_for_a_raw_thread() -> None:
    async def main() -> str:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        answer: asyncio.Future[str] = loop.create_future()

        def post() -> None:
            threading.Event().wait(PEER_DELAY)
            loop.call_soon_threadsafe(answer.set_result, "posted")

        with loop.real_time():
            threading.Thread(target=post).start()
            return await asyncio.wait_for(answer, timeout=5)

    assert run_virtual(main) == "posted"


# -- real I/O ---------------------------------------------------------------------------------


def _send_later(sock: socket.socket, data: bytes) -> threading.Thread:
    def send() -> None:
        threading.Event().wait(PEER_DELAY)
        sock.sendall(data)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_a_pending_socket_read_holds_the_clock() -> None:
    # The acceptance test: a 5 s wait_for on a real socket read whose peer answers
    # later must not time out because the virtual clock raced ahead.
    async def main() -> bytes:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            reader, writer = await asyncio.open_connection(sock=ours)
            thread = _send_later(theirs, b"hello\n")
            try:
                return await asyncio.wait_for(reader.readline(), timeout=5)
            finally:
                thread.join()
                writer.close()
                await writer.wait_closed()

    assert run_virtual(main) == b"hello\n"


def test_a_pending_socket_read_still_times_out_when_the_peer_is_silent() -> None:
    # With autojump_threshold=0 the clock may jump even while the socket is open: the same
    # wait_for now times out (in virtual time) because the peer never answers.
    async def main() -> float:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        with ours, theirs:
            reader, writer = await asyncio.open_connection(sock=ours)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.readline(), timeout=5)
            writer.close()
            await writer.wait_closed()
        return loop.time()

    with asyncio.Runner(
        loop_factory=lambda: labkit.new_virtual_loop(autojump_threshold=0)
    ) as runner:
        assert runner.run(main()) == 5.0


def test_low_level_sock_calls_over_loopback() -> None:
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            b.setblocking(False)
            await loop.sock_sendall(a, b"ping")
            return await asyncio.wait_for(loop.sock_recv(b, 4), timeout=5)

    assert run_virtual(main) == b"ping"


def test_tcp_server_and_client_over_loopback() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        writer.write(line.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> bytes:
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"shout\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.readline(), timeout=5)
            writer.close()
            await writer.wait_closed()
        return answer

    assert run_virtual(main) == b"SHOUT\n"


def test_a_server_waiting_for_a_client_from_a_thread_is_not_a_deadlock() -> None:
    # Only a listening socket is registered while we wait: that is a possible wake-up, so the
    # loop must wait for the client instead of raising DeadlockError.
    async def main() -> bytes:
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.set_result(await reader.read(5))
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]

            def client() -> None:
                with socket.create_connection(("127.0.0.1", port)) as sock:
                    sock.sendall(b"hello")

            thread = threading.Thread(target=client)
            thread.start()
            try:
                return await got
            finally:
                thread.join()

    assert run_virtual(main) == b"hello"


def test_unix_stream_server(tmp_path: Any) -> None:
    if not hasattr(asyncio, "start_unix_server"):
        pytest.skip("no unix sockets on this platform")
    path = str(tmp_path / "sock")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    async def main() -> bytes:
        server = await asyncio.start_unix_server(handle, path)
        async with server:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"unix\n")
            answer = await asyncio.wait_for(reader.readline(), timeout=5)
            writer.close()
            await writer.wait_closed()
        return answer

    assert run_virtual(main) == b"unix\n"


# -- subprocesses and signals -----------------------------------------------------------------


def test_subprocess_exec_communicates() -> None:
    async def main() -> tuple[bytes, int]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; print(sys.stdin.read().upper())",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(b"child"), timeout=30)
        return out.strip(), proc.returncode or 0

    assert run_virtual(main) == (b"CHILD", 0)


def test_subprocess_shell_and_wait_for_do_not_race_the_child() -> None:
    # The child waits for its stdin to close; it outlives several loop iterations.
    async def main() -> int:
        proc = await asyncio.create_subprocess_shell(
            f'"{sys.executable}" -c "import sys; sys.stdin.read(); sys.exit(3)"',
            stdin=subprocess.PIPE,
        )
        assert proc.stdin is not None
        proc.stdin.close()
        return await asyncio.wait_for(proc.wait(), timeout=5)

    assert run_virtual(main) == 3


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")
def test_add_signal_handler_receives_a_signal_sent_to_self() -> None:
    async def main() -> str:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[str] = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, got.set_result, "SIGUSR1")
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            return await asyncio.wait_for(got, timeout=5)
        finally:
            assert loop.remove_signal_handler(signal.SIGUSR1)
            assert not loop.remove_signal_handler(signal.SIGUSR1)

    assert run_virtual(main) == "SIGUSR1"


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")
def test_a_loop_waiting_only_for_a_signal_is_not_a_deadlock() -> None:
    async def main() -> str:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[str] = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR2, got.set_result, "SIGUSR2")
        thread = threading.Timer(PEER_DELAY, os.kill, (os.getpid(), signal.SIGUSR2))
        thread.start()
        try:
            return await got
        finally:
            thread.join()
            loop.remove_signal_handler(signal.SIGUSR2)

    assert run_virtual(main) == "SIGUSR2"


def test_a_closed_subprocess_transport_holds_the_clock_until_the_child_is_reaped() -> None:
    # close() kills the child; its exit arrives later from the child watcher. A clock released
    # at close() would time the 5 s wait out at once (CPython's test_close_kill_running).
    async def main() -> int | None:
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        class Child(asyncio.SubprocessProtocol):
            def process_exited(self) -> None:
                exited.set_result(None)

        transport, _ = await loop.subprocess_exec(
            Child, sys.executable, "-c", "import time; time.sleep(60)"
        )
        transport.close()
        await asyncio.wait_for(exited, 5)
        return transport.get_returncode()

    assert run_virtual(main) == -signal.SIGKILL


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs POSIX interval timers")
def test_an_armed_real_time_alarm_holds_the_clock_while_the_loop_handles_sigalrm() -> None:
    async def main() -> str:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[str] = loop.create_future()
        loop.add_signal_handler(signal.SIGALRM, got.set_result, "alarm")
        signal.setitimer(signal.ITIMER_REAL, PEER_DELAY)
        try:
            return await asyncio.wait_for(got, timeout=60)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            loop.remove_signal_handler(signal.SIGALRM)

    assert run_virtual(main) == "alarm"


# -- debug mode, run and Runner ---------------------------------------------------------------


def test_debug_mode_is_on_and_catches_a_thread_unsafe_call() -> None:
    async def main() -> str:
        loop = asyncio.get_running_loop()
        assert loop.get_debug()
        errors: list[str] = []

        def wrong_thread() -> None:
            try:
                loop.call_soon(print)
            except RuntimeError as exc:
                errors.append(str(exc))

        thread = threading.Thread(target=wrong_thread)
        thread.start()
        thread.join()
        return errors[0]

    message = labkit.run(main(), debug=True)
    assert "Non-thread-safe operation" in message


def test_debug_mode_reports_a_never_retrieved_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails() -> None:
        raise ValueError("nobody looked")

    async def main() -> None:
        task = asyncio.create_task(fails(), name="forgotten")
        await asyncio.sleep(1)
        assert task.done()
        del task

    with caplog.at_level("ERROR", logger="asyncio"):
        labkit.run(main(), debug=True)
        import gc

        gc.collect()
    assert "Task exception was never retrieved" in caplog.text


def test_run_mirrors_asyncio_run() -> None:
    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(86_400)
        return type(loop).__name__, loop.time()

    assert labkit.run(main()) == ("VirtualTimeLoop", 86_400.0)


def test_run_with_virtual_false_uses_the_stock_loop() -> None:
    async def main() -> bool:
        return isinstance(asyncio.get_running_loop(), VirtualTimeLoop)

    assert labkit.run(main(), virtual=False) is False


def test_run_refuses_a_non_coroutine() -> None:
    with pytest.raises(ValueError, match="coroutine"):
        labkit.run(asyncio.sleep)  # type: ignore[arg-type]


def test_new_virtual_loop_with_asyncio_runner() -> None:
    async def main() -> float:
        await asyncio.sleep(7)
        return asyncio.get_running_loop().time()

    with asyncio.Runner(loop_factory=labkit.new_virtual_loop) as runner:
        assert isinstance(runner.get_loop(), VirtualTimeLoop)
        assert runner.run(main()) == 7.0
        assert runner.run(main()) == 14.0  # one loop, one clock, across runs


def test_new_virtual_loop_passes_options() -> None:
    loop = labkit.new_virtual_loop(autojump=False, start=50.0)
    try:
        assert loop.autojump is False
        assert loop.time() == 50.0
    finally:
        loop.close()


def test_new_virtual_loop_rejects_an_unknown_option() -> None:
    with pytest.raises(TypeError, match="autojmp"):
        labkit.new_virtual_loop(autojmp=False)


def test_async_generators_are_finalized_by_the_runner() -> None:
    closed: list[float] = []

    async def ticks() -> Any:
        try:
            while True:
                await asyncio.sleep(1)
                yield asyncio.get_running_loop().time()
        finally:
            closed.append(asyncio.get_running_loop().time())

    async def main() -> float:
        gen = ticks()
        async with contextlib.aclosing(gen):
            async for t in gen:
                if t >= 3:
                    return t
        return -1.0

    assert labkit.run(main()) == 3.0
    assert closed == [3.0]


# -- FreshState: one loop for many runs (labkit.explore) -----------------------------------------


def test_fresh_state_ends_a_run_and_resets_the_loop(loop: VirtualTimeLoop) -> None:
    from labkit.loop import FreshState

    fresh = FreshState(loop)
    errors: list[dict[str, Any]] = []
    handler = loop.get_exception_handler()
    cleaned: list[str] = []
    late: list[str] = []

    async def broken() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("broken")
            raise ValueError("cleanup failed")

    async def generator() -> Any:
        try:
            yield 1
            yield 2
        finally:
            cleaned.append("generator")

    async def run() -> None:
        left = asyncio.create_task(broken())
        agen = generator()
        await agen.__anext__()  # left suspended: the loop must close it
        run.agen = agen  # type: ignore[attr-defined]
        loop.call_later(10, late.append, "timer")
        loop.set_task_factory(lambda loop, coro, **kw: asyncio.Task(coro, loop=loop, **kw))
        loop.set_exception_handler(lambda loop, context: errors.append(context))
        loop.slow_callback_duration = 5.0
        await asyncio.sleep(3)
        assert not left.done()

    loop.run_until_complete(run())
    assert loop.time() == 3.0
    assert fresh.restore()
    assert cleaned == ["broken", "generator"]
    assert [e["message"] for e in errors] == ["unhandled exception during asyncio.run() shutdown"]
    assert loop.time() == 0.0
    assert loop.get_task_factory() is None
    assert loop.get_exception_handler() is handler
    assert loop.slow_callback_duration == 0.1
    assert asyncio.all_tasks(loop) == set()
    loop.run_until_complete(asyncio.sleep(20))
    assert late == [], "a timer of the earlier run fired in the next one"


def test_fresh_state_refuses_a_loop_with_real_resources(loop: VirtualTimeLoop) -> None:
    from labkit.loop import FreshState

    fresh = FreshState(loop)
    left, right = socket.socketpair()
    try:
        left.setblocking(False)
        loop.add_reader(left, lambda: None)
        assert not fresh.restore()
        loop.remove_reader(left)
        assert fresh.restore()
    finally:
        left.close()
        right.close()
    loop.run_until_complete(loop.shutdown_default_executor())
    assert not fresh.restore(), "a shut-down executor is not what a new loop has"


def test_only_selecting_is_true_only_when_the_next_turn_would_just_select(
    loop: VirtualTimeLoop,
) -> None:
    from labkit.loop import only_selecting

    observed: list[bool] = []

    async def main() -> None:
        observed.append(only_selecting(loop))
        loop.call_soon(lambda: None)
        observed.append(only_selecting(loop))
        await asyncio.sleep(0)
        timer = loop.call_later(0, lambda: None)  # due now
        observed.append(only_selecting(loop))
        timer.cancel()
        await asyncio.sleep(0)
        loop.call_later(1, lambda: None)  # not due yet
        observed.append(only_selecting(loop))

    loop.run_until_complete(main())
    assert observed == [True, False, False, True]


@pytest.mark.parametrize("debug", [False, True])
def test_held_handle_is_a_handle_like_any_other(loop: VirtualTimeLoop, debug: bool) -> None:
    import contextvars

    from labkit.loop import HeldHandle, enqueue

    loop.set_debug(debug)
    ran: list[str] = []
    context = contextvars.copy_context()
    made = asyncio.Handle(ran.append, ("x",), loop, context)
    held = HeldHandle(ran.append, ("x",), loop, context)
    assert repr(held).replace("HeldHandle", "Handle").split(" created at ")[0] == (
        repr(made).split(" created at ")[0]
    )
    stack = held._source_traceback  # type: ignore[attr-defined]
    if debug:  # made here, as asyncio would say, not in labkit
        assert stack[-1].filename == made._source_traceback[-1].filename == __file__  # type: ignore[attr-defined]
    else:
        assert stack is None
    enqueue(loop, held)
    cancelled = HeldHandle(ran.append, ("never",), loop, context)
    cancelled.cancel()
    assert cancelled.cancelled()
    enqueue(loop, cancelled)
    loop.run_until_complete(asyncio.sleep(0))
    assert ran == ["x"]
    loop.set_debug(False)
