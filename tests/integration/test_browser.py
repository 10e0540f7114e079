"""The learner's path in a real JupyterLab and a real headless Chromium.

Open the lesson list, open lesson 0, run all cells, see the exercise check say "not solved yet",
type a solution into the exercise cell, run it again and see the check pass. A screenshot of the
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


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[str]:
    """JupyterLab from the kit's environment on a copy of the learner notebooks; yields its URL."""
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
        yield f"http://127.0.0.1:{port}/lab/tree/README.md?token={token}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _output_containing(page: object, text: str) -> object:
    locator = page.locator(".jp-OutputArea-output", has_text=text)  # type: ignore[attr-defined]
    return locator.first


def test_learner_solves_an_exercise_in_jupyterlab(jupyterlab: str) -> None:
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
            page.goto(jupyterlab)

            # The lesson index opens first and lists the lessons.
            page.locator(".jp-RenderedMarkdown", has_text="Getting started").first.wait_for()
            listing = page.locator(".jp-DirListing-content")
            listing.get_by_text(LESSON, exact=True).dblclick()
            notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
            notebook.locator(".jp-Cell").nth(index).wait_for()
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for()

            # Run all: the exercise's check reports it is not solved yet.
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            _output_containing(page, f"exercise {EXERCISE}: not solved yet").wait_for()

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
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "failure.png"))
            raise
        finally:
            browser.close()
