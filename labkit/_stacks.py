"""Where code is: stack walking and frame labels shared by the trackers, the watchdog and probes.

Private to labkit. Every report that names a place in the user's code (a leak's acquisition, a
task's creation, a blocking call, a suspension point) labels it here, so that all of them print
``file.py:12 in function`` the same way and skip the same machinery frames (Python, asyncio,
pytest, Jupyter, labkit itself). Code typed into a notebook cell is labelled ``<cell>``.

Example::

    raw = raw_stack(sys._getframe(), depth=6)
    print(format_stack(locations(raw, 6)))
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import linecache
import os
import re
import sysconfig
import types
from typing import Any

from labkit.deadlock import suspension_frames
from labkit.trace import Location

__all__ = [
    "Raw",
    "file_label",
    "format_stack",
    "in_asyncio",
    "is_machinery",
    "locations",
    "raw_stack",
    "task_label",
    "waiting_at",
    "waiting_on",
]

# asyncio names unnamed tasks Task-N; Python 3.13.0 names them "None" when the loop has a task
# factory (create_task() calls set_name(None)).
_DEFAULT_NAME = re.compile(r"Task-\d+|None")
_IPYTEST_MODULE = re.compile(r"t_[0-9a-f]{32}\.py")
_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)
_ASYNCIO = os.path.dirname(asyncio.__file__) + os.sep
_LOOP_DRIVERS = frozenset({"_run", "_run_once"})
_STDLIB = os.path.normcase(sysconfig.get_paths()["stdlib"]) + os.sep
_LABKIT = os.path.normcase(os.path.dirname(os.path.abspath(__file__))) + os.sep
_MACHINERY_PACKAGES = frozenset(
    {
        "_pytest",
        "pytest",
        "pluggy",
        "pytest_asyncio",
        "uvloop",
        "ipykernel",
        "IPython",
        "ipytest",
        "tornado",
        "zmq",
        "jupyter_client",
        "traitlets",
        "nbclient",
        "ipykernel_launcher",
        "debugpy",
        "jupyter_core",
        "comm",
        "anyio",
    }
)
_SITE = re.compile(r"[/\\](?:site|dist)-packages[/\\]([^/\\]+)")
Raw = tuple[str, int, str]


@functools.lru_cache(maxsize=4096)
def is_machinery(filename: str) -> bool:
    """Whether a frame in this file belongs to Python, labkit or the test runner, not the user."""
    if not filename or filename.startswith("<frozen"):
        return True
    path = os.path.normcase(os.path.abspath(filename))
    if path.startswith(_LABKIT):  # wherever labkit is installed, site-packages included
        return True
    if path.startswith(_STDLIB) and "-packages" not in path:
        return True
    found = _SITE.search(path)
    return found is not None and found.group(1).split(".")[0] in _MACHINERY_PACKAGES


def raw_stack(frame: types.FrameType | None, depth: int = 64) -> tuple[Raw, ...]:
    """(file, line, function) of the first ``depth`` user frames from ``frame`` outwards.

    Cheap enough to take at every acquisition or task creation: it walks at most 64 frames and
    stops once it has ``depth`` frames of user code (machinery frames are skipped).
    """
    raw: list[Raw] = []
    walked = 0
    while frame is not None and len(raw) < depth and walked < 64:
        code = frame.f_code
        if code.co_name in _LOOP_DRIVERS and code.co_filename.startswith(_ASYNCIO):
            break  # the event loop running a callback: nothing above it is the caller's code
        if not is_machinery(code.co_filename):
            raw.append((code.co_filename, frame.f_lineno, code.co_qualname))
        frame = frame.f_back
        walked += 1
    return tuple(raw)


def locations(raw: tuple[Raw, ...], depth: int) -> tuple[Location, ...]:
    """The user's frames of a raw stack, most recent call last, at most ``depth`` of them."""
    user = [entry for entry in raw if not is_machinery(entry[0])][:depth]
    return tuple(
        Location(
            file_label(filename),
            line,
            function,
            linecache.getline(filename, line).strip(),
        )
        for filename, line, function in reversed(user)
    )


def format_stack(stack: tuple[Location, ...], indent: str = "    ") -> str:
    """The stack as indented lines, one place each, or a note that none of it is the user's."""
    if not stack:
        return f"{indent}(no frame of your code on the stack)"
    return "\n".join(f"{indent}{place}" for place in stack)


def file_label(filename: str) -> str:
    """A file's basename, or ``<cell>`` for code typed into a notebook cell (its name is random).

    ``<cell>`` is what the trackers, task hygiene and the notebook's pytest reports print too.
    """
    base = os.path.basename(filename)
    if filename.startswith("<ipython-input-") or _IPYTEST_MODULE.fullmatch(base):
        return "<cell>"
    if os.path.basename(os.path.dirname(filename)).startswith("ipykernel_"):
        return "<cell>"
    return base


def in_asyncio(frame: types.FrameType) -> bool:
    """Whether the frame runs asyncio's own code (a queue's ``put``, a lock's ``acquire``)."""
    return os.path.dirname(frame.f_code.co_filename) == _ASYNCIO_DIR


def task_label(task: asyncio.Future[Any]) -> str:
    """``task 'name'``, or ``task running coro()`` for a task left with asyncio's default name."""
    if not isinstance(task, asyncio.Task):
        return "a future"
    name = task.get_name()
    if _DEFAULT_NAME.fullmatch(name):
        coro = task.get_coro()
        qualname = getattr(coro, "__qualname__", type(coro).__name__)
        return f"task running {qualname}()"
    return f"task {name!r}"


def waiting_at(task: asyncio.Task[Any]) -> str:
    """Where a pending task waits, as the innermost user frame (``waiting at f.py:3 in g``)."""
    coro = task.get_coro()
    if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == "CORO_CREATED":
        return "not started yet"
    every = list(suspension_frames(coro))
    frames = [f for f in every if not is_machinery(f.f_code.co_filename)]
    if not frames:
        return f"waiting in {every[-1].f_code.co_qualname}()" if every else ""
    code = frames[-1].f_code
    line = linecache.getline(code.co_filename, frames[-1].f_lineno).strip()
    where = Location(file_label(code.co_filename), frames[-1].f_lineno, code.co_qualname, line)
    return f"waiting at {where}"


def waiting_on(task: asyncio.Future[Any]) -> asyncio.Future[Any] | None:
    """The future a pending task waits on, or None when it is ready to run (or not a task).

    asyncio keeps it in ``Task._fut_waiter``, in both of its Task implementations since 3.4;
    there is no public way to ask.
    """
    waiter: asyncio.Future[Any] | None = getattr(task, "_fut_waiter", None)
    return waiter
