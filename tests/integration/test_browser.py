"""The learner's path in a real JupyterLab and a real headless Chromium.

Open the lesson list, open lesson 0 (it opens unmodified), run all cells, see the exercise check
say "not solved yet" and long report lines wrap between words, type a solution into the exercise
cell, run it again and see the check pass. Then open lesson 2 and save it untouched: the file is
byte for byte as built. When JupyterLab stops, its kernels stop with it. A screenshot of the
solved notebook is saved under artifacts/browser/.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LESSON = "00-getting-started.ipynb"
UNTOUCHED = "02-virtual-time.ipynb"
EXERCISE = "0.1"
ARTIFACTS = Path(os.environ.get("LABKIT_ARTIFACTS", REPO / "artifacts")) / "browser"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT_S = 120
# The execution indicator of the notebook in front, once its kernel is ready and idle.
IDLE = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status='idle']"
UI_TIMEOUT_MS = 120_000

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _solution_source() -> str:
    """The instructor's solution for the exercise, with the region markers removed."""
    source = json.loads((REPO / "instructor" / LESSON).read_text())
    for cell in source["cells"]:
        meta = cell["metadata"].get("labkit", {})
        if meta.get("exercise") == EXERCISE and meta.get("role") == "solution":
            lines = "".join(cell["source"]).splitlines()
            return "\n".join(
                line
                for line in lines
                if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line
            )
    raise AssertionError(f"lesson {LESSON} has no solution cell for exercise {EXERCISE}")


def _solution_index() -> int:
    learner = json.loads((REPO / "notebooks" / LESSON).read_text())
    for index, cell in enumerate(learner["cells"]):
        meta = cell["metadata"].get("labkit", {})
        if meta.get("exercise") == EXERCISE and meta.get("role") == "solution":
            return index
    raise AssertionError(f"learner notebook {LESSON} has no solution cell for {EXERCISE}")


def _kernel_processes(marker: str) -> list[int]:
    """The processes whose command line mentions ``marker`` (a kernel's connection file)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """JupyterLab from the kit's environment on a copy of the learner notebooks.

    Yields its URL and the folder it serves.

    On the way out it checks that stopping `labkit lab` stopped JupyterLab and its kernels.
    """
    root = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", root)
    port, token = _free_port(), "labkit-browser-test"
    env = dict(
        os.environ,
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        HOME=str(tmp_path),
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labkit",
            "lab",
            "--port",
            str(port),
            "--root",
            str(root),
            "--token",
            token,
            "--no-browser",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    log: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        while True:
            try:
                line = lines.get(timeout=START_TIMEOUT_S)
            except queue.Empty:
                pytest.fail(
                    "JupyterLab did not report that it is running within "
                    f"{START_TIMEOUT_S} s; its output:\n" + "".join(log[-30:])
                )
            if line is None:
                pytest.fail(
                    f"JupyterLab exited with code {proc.wait()} before it was ready; "
                    "its output:\n" + "".join(log[-30:])
                )
            log.append(line)
            if "is running at" in line or "running at:" in line:
                break
        yield f"http://127.0.0.1:{port}/lab/tree/README.md?token={token}", root
    finally:
        runtime = tmp_path / "runtime"
        kernels = [p.name for p in runtime.glob("kernel-*.json")] if runtime.is_dir() else []
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("JupyterLab did not stop within 60 s of `labkit lab` being stopped")
    left = [pid for name in kernels for pid in _kernel_processes(name)]
    assert not left, f"kernels still running after JupyterLab stopped: {left}"
    config = REPO / "jupyter" / "config"
    assert sorted(p.name for p in config.rglob("*")) == ["custom", "custom.css", "migrated"], (
        "JupyterLab wrote into the kit's jupyter/config folder"
    )


def _output_containing(page: object, text: str) -> object:
    locator = page.locator(".jp-OutputArea-output", has_text=text)  # type: ignore[attr-defined]
    return locator.first


def test_learner_solves_an_exercise_in_jupyterlab(jupyterlab: tuple[str, Path]) -> None:
    url, root = jupyterlab
    chromium = _chromium()
    if chromium is None:
        pytest.skip(
            "no Chromium on this machine: `apt-get install chromium` "
            "(make test does it where it runs as root)"
        )
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    solution = _solution_source()
    index = _solution_index()

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(url)

            # The lesson index opens first and lists the lessons.
            page.locator(".jp-RenderedMarkdown", has_text="Getting started").first.wait_for()
            listing = page.locator(".jp-DirListing-content")
            listing.get_by_text(LESSON, exact=True).dblclick()
            notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
            notebook.locator(".jp-Cell").nth(index).wait_for()
            page.locator(IDLE).wait_for()
            # The kernel is up and JupyterLab has written its language_info: nothing changed.
            tab = page.locator(".lm-TabBar-tab.jp-mod-current", has_text=LESSON)
            assert "jp-mod-dirty" not in (tab.get_attribute("class") or "")

            # Run all: the exercise's check reports it is not solved yet.
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            _output_containing(page, f"exercise {EXERCISE}: not solved yet").wait_for()
            # Long report lines wrap between words, not inside them.
            deadlock = _output_containing(page, "DeadlockError")
            style = deadlock.locator("pre").first.evaluate("e => getComputedStyle(e).wordBreak")
            assert style == "normal", f"report lines break inside words (word-break: {style})"

            # Type the solution into the exercise cell and run it with its check.
            cell = notebook.locator(".jp-Cell").nth(index)
            editor = cell.locator(".cm-content")
            editor.click()
            page.keyboard.press("Control+A")
            page.keyboard.press("Delete")
            page.keyboard.insert_text(solution)
            page.keyboard.press("Shift+Enter")
            page.keyboard.press("Shift+Enter")
            solved = _output_containing(page, f"exercise {EXERCISE}: solved")
            solved.wait_for()
            solved.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "solved-exercise.png"))
            assert "not solved yet" not in solved.inner_text()

            # Another lesson, opened and saved untouched, is byte for byte as built.
            listing.get_by_text(UNTOUCHED, exact=True).dblclick()
            other = page.locator(".lm-TabBar-tab.jp-mod-current", has_text=UNTOUCHED)
            other.wait_for()
            page.locator(IDLE).wait_for()
            assert "jp-mod-dirty" not in (other.get_attribute("class") or "")
            saving = lambda r: f"/api/contents/{UNTOUCHED}" in r.url and r.request.method == "PUT"  # noqa: E731
            with page.expect_response(saving) as response:
                page.keyboard.press("Control+s")
            assert response.value.ok
            saved = (root / UNTOUCHED).read_bytes()
            assert saved == (REPO / "notebooks" / UNTOUCHED).read_bytes(), (
                "opening and saving an untouched lesson changed it"
            )
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "failure.png"))
            raise
        finally:
            browser.close()
