"""Labels for code typed into notebook cells: one ``<cell>:12`` wherever a report names a place.

A cell's code runs from a temporary file whose name changes with every kernel
(``/tmp/ipykernel_4242/1326271889.py``), and ``%%ipytest`` collects it as a module with a random
name (``t_<32 hex digits>.py``). The test cell's pytest report, the exercise checks' feedback and
the library's own reports (deadlocks, leaks, sweeps) must all name such a place the same way, and
the same way in every run, so stored notebook outputs do not change: :func:`cell_label` labels a
file, :func:`clean_text` rewrites a whole report.

Example::

    clean_text("waiting at 1326271889.py:12 in test_x")   # "waiting at <cell>:12 in test_x"
    cell_label("/tmp/ipykernel_4242/1326271889.py")       # "<cell>"
"""

from __future__ import annotations

import os
import re
import textwrap

__all__ = ["CELL", "cell_label", "clean_text", "is_cell_file", "wrap"]

#: How every report names a notebook cell.
CELL = "<cell>"

_CELL_FILE = re.compile(r"(?:[A-Za-z]:)?[^\s\"'()<>]*?[/\\]ipykernel_\d+[/\\]\d+\.py")
_CELL_BASENAME = re.compile(r"(?<![\w/\\.])\d{5,}\.py\b")
_IPYTHON_INPUT = re.compile(r"<ipython-input-\d+-[0-9a-f]+>")
_IPYTEST_MODULE = re.compile(r"\bt_[0-9a-f]{32}\.py")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_SOURCE_PATH = re.compile(r"(?:[A-Za-z]:)?(?:\.\.)?[/\\][^\s:'\"<>()]*[/\\]([\w.-]+\.py)\b")
_TASK_COUNTER = re.compile(r"\bTask-\d+\b")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def is_cell_file(filename: object) -> bool:
    """Whether a code object's file name is a notebook cell's (IPython's temporary files).

    Example::

        is_cell_file("/tmp/ipykernel_4242/1326271889.py")   # True
    """
    text = str(filename)
    return bool(_CELL_FILE.fullmatch(text) or _IPYTHON_INPUT.fullmatch(text))


def cell_label(filename: str) -> str:
    """``<cell>`` for a notebook cell's file, else the file's base name (``locks.py``).

    Example::

        f"{cell_label(code.co_filename)}:{lineno}"   # "<cell>:12"
    """
    if is_cell_file(filename) or _IPYTEST_MODULE.fullmatch(os.path.basename(filename)):
        return CELL
    if os.path.basename(os.path.dirname(filename)).startswith("ipykernel_"):
        return CELL
    return os.path.basename(filename)


def clean_text(text: str) -> str:
    """Remove what changes between runs from a report: cell file paths, addresses, task counters.

    Example::

        clean_text("/tmp/ipykernel_4242/1234567.py:5: AssertionError")  # "<cell>:5: ..."
    """
    text = _ANSI.sub("", text)
    text = _CELL_FILE.sub(CELL, text)
    text = _CELL_BASENAME.sub(CELL, text)
    text = _IPYTHON_INPUT.sub(CELL, text)
    text = _IPYTEST_MODULE.sub("notebook.py", text)
    text = _SOURCE_PATH.sub(r"\1", text)
    text = _TASK_COUNTER.sub("Task-N", text)
    return _ADDRESS.sub("", text)


def wrap(text: str, width: int = 96) -> str:
    """A paragraph broken between words to fit a report (JupyterLab would break inside words).

    Example::

        print("E   " + wrap(message).replace("\\n", "\\nE   "))
    """
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)
