"""%%ipytest cells in a real Jupyter kernel: a runaway test fails alone, Interrupt stops it.

Each test drives an ipykernel of the kit's own environment through jupyter_client, as
JupyterLab does: execute requests, the iopub stream, and SIGINT for Kernel → Interrupt. The
tests wait for what the kernel reports (an idle status, a file the test under test writes),
never for a fixed time.
"""

from __future__ import annotations

import os
import queue
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

jupyter_client = pytest.importorskip("jupyter_client")

REPLY_TIMEOUT = 120.0
SETUP = "import asyncio, time, pytest\nfrom labkit.course import setup\nsetup(time_limit={limit})"


@dataclass
class Outcome:
    """What one cell did: its reply status, the error's name, the text it printed."""

    status: str
    ename: str = ""
    text: str = ""
    outputs: list[str] = field(default_factory=list)


class Kernel:
    """A kernel of the kit's Python, started in ``folder``."""

    def __init__(self, folder: Path) -> None:
        from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
        from jupyter_client.manager import KernelManager

        class OwnKernel(KernelSpecManager):  # type: ignore[misc]
            def get_kernel_spec(self, kernel_name: str, *args: Any, **kwargs: Any) -> Any:
                argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
                return KernelSpec(argv=argv, display_name="labkit", language="python")

        self.manager = KernelManager(kernel_name="python3", kernel_spec_manager=OwnKernel())
        self.manager.start_kernel(cwd=str(folder), env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=REPLY_TIMEOUT)

    def start(self, code: str) -> str:
        msg_id: str = self.client.execute(code)
        return msg_id

    def finish(self, msg_id: str) -> Outcome:
        """Collect a cell's output until the kernel reports it idle."""
        texts: list[str] = []
        ename = ""
        deadline = time.monotonic() + REPLY_TIMEOUT
        while True:
            try:
                message = self.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"the kernel did not finish the cell within {REPLY_TIMEOUT} s")
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                texts.append(content["text"])
            elif kind == "error":
                ename = content["ename"]
                texts.append("\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                break
        reply = self.client.get_shell_msg(timeout=REPLY_TIMEOUT)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.client.get_shell_msg(timeout=REPLY_TIMEOUT)
        return Outcome(reply["content"]["status"], ename, "".join(texts), texts)

    def run(self, code: str) -> Outcome:
        return self.finish(self.start(code))

    def interrupt(self) -> None:
        self.manager.interrupt_kernel()

    def stop(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def wait_for(path: Path, kernel: Kernel) -> None:
    """Until the test under test has written ``path`` (it is running), or the kernel died."""
    deadline = time.monotonic() + REPLY_TIMEOUT
    while not path.exists():
        assert kernel.manager.is_alive(), "the kernel died"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def interrupted(kernel: Kernel, cell: str, started: Path) -> Outcome:
    """Run a cell, press Kernel → Interrupt once its test has written ``started``."""
    msg_id = kernel.start(cell)
    wait_for(started, kernel)
    kernel.interrupt()
    return kernel.finish(msg_id)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """One kernel for the tests that leave it as they found it (each calls setup() itself)."""
    started = Kernel(tmp_path_factory.mktemp("shared"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    """A kernel of the test's own, in its tmp_path."""
    started = Kernel(tmp_path)
    try:
        yield started
    finally:
        started.stop()


def test_a_hung_async_test_fails_alone_and_the_kernel_keeps_its_state(shared: Kernel) -> None:
    kernel = shared
    assert kernel.run(SETUP.format(limit=1) + "\nx = 41").status == "ok"
    cell = kernel.run(
        "%%ipytest\n\n"
        "@pytest.mark.asyncio\n"
        "async def test_hangs():\n"
        "    await asyncio.Event().wait()\n\n"
        "def test_next():\n"
        "    pass\n"
    )
    assert cell.status == "ok", cell.text
    assert "Timeout: test_hangs was still running after 1 s of real time" in cell.text
    assert "waiting at <cell>:3 in test_hangs: await asyncio.Event().wait()" in cell.text
    assert cell.text.rstrip().endswith("1 failed, 1 passed")
    after = kernel.run("print(x + 1)")
    assert after.status == "ok"
    assert after.text == "42\n"
    assert kernel.manager.is_alive()


def test_a_test_busy_in_python_code_is_stopped_too(shared: Kernel) -> None:
    kernel = shared
    kernel.run(SETUP.format(limit=1))
    cell = kernel.run(
        "%%ipytest\n\n"
        "@pytest.mark.asyncio\n"
        "async def test_spins():\n"
        "    while True:\n"
        "        pass\n"
    )
    assert "Timeout: test_spins was still running after 1 s" in cell.text
    assert "<cell>:3 in test_spins" in cell.text
    assert kernel.run("print('alive')").text == "alive\n"


def test_the_marker_and_the_magic_line_set_the_limit(shared: Kernel) -> None:
    kernel = shared
    kernel.run(SETUP.format(limit=0))  # no limit from setup(): only the test's own
    marked = kernel.run(
        "%%ipytest\n\n@pytest.mark.timeout(0.5)\ndef test_spin():\n    while True:\n        pass\n"
    )
    assert "after 0.5 s of real time" in marked.text
    line = kernel.run(
        "%%ipytest --timeout=0.5\n\ndef test_spin():\n    while True:\n        pass\n"
    )
    assert "after 0.5 s of real time" in line.text


def test_interrupt_stops_the_running_test(shared: Kernel, tmp_path: Path) -> None:
    kernel = shared
    started, stopped = tmp_path / "started", tmp_path / "stopped"
    kernel.run(SETUP.format(limit=0) + "\nx = 41")
    cell = interrupted(
        kernel,
        "%%ipytest\n\n"
        "from pathlib import Path\n\n"
        "@pytest.mark.asyncio\n"
        "async def test_waits():\n"
        f"    Path({str(started)!r}).write_text('')\n"
        "    try:\n"
        "        await asyncio.Event().wait()\n"
        "    finally:\n"
        f"        Path({str(stopped)!r}).write_text('')\n\n"
        "def test_not_reached():\n"
        "    pass\n",
        started,
    )
    assert cell.status == "error"
    assert cell.ename == "CellStopped"
    assert "Interrupted: test_waits was stopped by Kernel → Interrupt." in cell.text
    assert "Kernel → Interrupt stopped the tests" in cell.text
    assert "1 failed\n" in cell.text  # test_not_reached never ran
    assert stopped.exists(), "the test went on running after the interrupt"
    after = kernel.run("import threading\nprint(x + 1, [t.name for t in threading.enumerate()])")
    assert after.text.startswith("42 ")
    assert "labkit-cell" not in after.text


def test_interrupt_stops_a_busy_synchronous_test(shared: Kernel, tmp_path: Path) -> None:
    kernel = shared
    started = tmp_path / "started"
    kernel.run(SETUP.format(limit=0))
    cell = interrupted(
        kernel,
        "%%ipytest\n\n"
        "from pathlib import Path\n\n"
        "def test_counts():\n"
        f"    Path({str(started)!r}).write_text('')\n"
        "    n = 0\n"
        "    while True:\n"
        "        n += 1\n",
        started,
    )
    assert cell.ename == "CellStopped"
    assert "Interrupted: test_counts was stopped by Kernel → Interrupt." in cell.text
    assert "<cell>:6 in test_counts" in cell.text
    threads = kernel.run("import threading\nprint([t.name for t in threading.enumerate()])")
    assert "labkit-cell" not in threads.text


def test_a_test_stuck_in_a_blocking_call_is_left_with_a_message(
    kernel: Kernel, tmp_path: Path
) -> None:
    kernel.run(SETUP.format(limit=0.5) + "\nx = 41")
    cell = kernel.run("%%ipytest\n\ndef test_sleeps():\n    time.sleep(600)\n")
    assert cell.ename == "CellStopped"
    assert "test_sleeps could not be stopped" in cell.text
    assert "<cell>:2 in test_sleeps: time.sleep(600)" in cell.text
    # The kernel's own output works again: pytest's capture of stdout was undone.
    assert kernel.run("print(x + 1)").text == "42\n"
    assert kernel.run("%%ipytest\n\ndef test_next():\n    pass\n").text.endswith("1 passed\n")


def test_cells_ignore_the_folders_pytest_settings_and_leave_no_files(
    kernel: Kernel, tmp_path: Path
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\naddopts = "--no-such-option"\ntimeout = 1\n'
    )
    kernel.run(SETUP.format(limit=30))
    cell = kernel.run(
        "%%ipytest\n\n"
        "@pytest.mark.asyncio\n"
        "async def test_sleeps():\n"
        "    await asyncio.sleep(1.5)\n"
    )
    assert cell.text == ".\n1 passed\n", cell.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pyproject.toml"]
    folder = kernel.run(
        "import labkit.course.notebook as nb\n"
        "print(sorted(p.name for p in nb._runner.folder.iterdir()))"
    )
    assert folder.text == "['pytest.ini']\n"


def test_a_killed_kernels_folder_goes_with_the_next_setup(tmp_path: Path) -> None:
    first = Kernel(tmp_path)
    try:
        first.run(SETUP.format(limit=30))
        where = first.run("import labkit.course.notebook as nb\nprint(nb._runner.folder)")
        folder = Path(where.text.strip())
        assert folder.is_dir()
        first.manager.provisioner.process.kill()  # SIGKILL: no atexit, no cleanup
        first.manager.provisioner.process.wait()
    finally:
        first.stop()
    assert folder.is_dir()
    second = Kernel(tmp_path)
    try:
        assert second.run(SETUP.format(limit=30)).status == "ok"
    finally:
        second.stop()
    assert not folder.exists()


def test_ipytest_run_called_directly_keeps_working(shared: Kernel) -> None:
    kernel = shared
    kernel.run(SETUP.format(limit=30))
    folder = kernel.run("import labkit.course.notebook as nb\nprint(nb._runner.folder)").text
    kernel.run(SETUP.format(limit=30))  # again: the same private folder
    again = kernel.run("print(nb._runner.folder)").text
    assert again == folder
    cell = kernel.run(
        "import ipytest\n"
        "ipytest.clean()\n\n"
        "@pytest.mark.asyncio\n"
        "async def test_direct():\n"
        "    await asyncio.sleep(0)\n\n"
        "ipytest.run()\n"
    )
    assert cell.text.startswith(".\n1 passed"), cell.text
