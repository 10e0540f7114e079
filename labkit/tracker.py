"""ResourceTracker: find resources acquired and never released, with the stack that acquired each.

A tracker holds each resource by *weak reference* and recognises it by identity through that
reference, never by its ``id()`` alone: CPython reuses the id of a freed object for the next
one, so a registry of ids silently merges a leaked resource with a new one and loses the leak.
(An id serves only as the index of a record whose weak reference must still point at the very
object; a record whose object died is filed as a leak first.) Each acquisition records its
stack, so a leak report says where the resource came from, not just how many are missing.

Example::

    tracker = labkit.ResourceTracker()

    class Pool:
        @tracker.acquires
        async def acquire(self) -> Connection: ...

        @tracker.releases
        async def release(self, conn: Connection) -> None: ...

    async with tracker:                  # on exit: assert_all_released()
        await handle(pool, bad_request)  # the error path forgets pool.release(conn)
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import inspect
import re
import sys
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast, overload

from labkit._stacks import Raw, format_stack, locations, raw_stack, task_label, waiting_at
from labkit.trace import Location

__all__ = ["Leak", "ResourceLeakError", "ResourceTracker"]

_F = TypeVar("_F", bound=Callable[..., Any])
_R = TypeVar("_R")

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _describe(obj: object) -> str:
    """A short, stable description of an object: its repr without memory addresses."""
    try:
        text = repr(obj)
    except Exception:
        text = ""
    if not text or _ADDRESS.search(text):
        return f"<{type(obj).__qualname__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _holders(loop: asyncio.AbstractEventLoop, held: list[_Held]) -> dict[int, str]:
    """For each resource still held, the pending task of ``loop`` whose frames reference it."""
    from labkit.deadlock import suspension_frames

    alive = {h.key: obj for h in held if (obj := h.ref()) is not None}
    found: dict[int, str] = {}
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in sorted(pending, key=lambda task: task.get_name()):
        for frame in suspension_frames(task.get_coro()):
            values = list(frame.f_locals.values())
            for key, obj in alive.items():
                if key not in found and any(value is obj for value in values):
                    where = waiting_at(task)
                    found[key] = f"{task_label(task)}, still pending" + (
                        f": {where}" if where else ""
                    )
    return found


# -- the tracker ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leak:
    """One resource acquired and never released: what it was, whether it still exists, where."""

    resource: str
    """The resource's repr (or ``<Type>`` when the repr would show a memory address)."""
    collected: bool
    """True when the resource was garbage-collected without ever being released."""
    stack: tuple[Location, ...]
    """Where it was acquired, most recent call last (your code only)."""
    held_by: str = ""
    """The pending task that still references it, with where it waits; found by the
    ``resource_tracker`` fixture, which checks while the test's loop is alive (else empty)."""

    def __str__(self) -> str:
        state = "garbage-collected without release" if self.collected else "still held"
        text = f"{self.resource} ({state}), acquired at\n{format_stack(self.stack, '      ')}"
        return f"{text}\n    held by {self.held_by}" if self.held_by else text


class ResourceLeakError(AssertionError):
    """Resources were acquired and never released; the message lists each with its stack."""

    def __init__(self, message: str, leaks: list[Leak], problems: list[str]) -> None:
        super().__init__(message)
        self.leaks = leaks
        self.problems = problems


@dataclass(eq=False)
class _Held:
    ref: weakref.ref[Any]
    description: str
    stacks: list[tuple[int, tuple[Raw, ...]]]  # (the acquisition's number, its stack)
    key: int


class ResourceTracker:
    """Record every acquire and release of a resource, and fail listing each one never released.

    Resources are held by weak reference, so tracking never keeps one alive and a new object
    that reuses a freed object's ``id()`` is never mistaken for it. Acquiring the same object
    again nests (each acquire needs its own release). Use it as a ``with`` / ``async with``
    block, decorate the acquire and release functions with :meth:`acquires` and
    :meth:`releases`, or take the ``resource_tracker`` pytest fixture.

    Example::

        tracker = ResourceTracker()
        conn = tracker.acquired(open_connection())
        tracker.released(conn)
        tracker.assert_all_released()
    """

    def __init__(self, *, depth: int = 6) -> None:
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"depth must be a number of stack frames >= 1, got {depth!r}")
        self.depth = depth
        self._lock = threading.Lock()
        self._dead: list[int] = []
        # Keyed by id() but checked by identity through the weak reference: a weakref compares
        # and hashes like its referent, which would merge equal resources (and fail on
        # unhashable ones, such as a plain dataclass).
        self._held: dict[int, _Held] = {}
        self._collected: list[tuple[int, Leak]] = []
        self._problems: list[tuple[int, str]] = []
        self._acquisitions = 0
        self._releases = 0
        # Every acquisition and every bad release gets the next number: mark() reads it.
        self._events = 0
        self._acquired: list[int] = []

    # -- recording ----------------------------------------------------------------------------

    def acquired(self, resource: _R) -> _R:
        """Record that ``resource`` was just acquired (here, by the caller); returns it.

        Example::

            conn = tracker.acquired(await pool.acquire())
        """
        return self._acquire(resource, raw_stack(sys._getframe(1), self.depth))

    def released(self, resource: object) -> None:
        """Record that ``resource`` was released; its most recent acquisition is closed.

        Releasing a resource that is not held (never acquired, or released twice) is recorded
        as a problem and reported by :meth:`assert_all_released`, not raised here, so the code
        under test runs exactly as it would in production.

        Example::

            await pool.release(conn)
            tracker.released(conn)
        """
        self._release(resource, raw_stack(sys._getframe(1), self.depth))

    def _acquire(self, resource: _R, raw: tuple[Raw, ...]) -> _R:
        key = id(resource)
        try:
            ref = weakref.ref(resource, functools.partial(self._on_collected, key))
        except TypeError:
            raise TypeError(
                f"ResourceTracker holds resources by weak reference and a "
                f"{type(resource).__qualname__} cannot be weakly referenced; track the object "
                "that owns it, or give the class a __weakref__ slot"
            ) from None
        with self._lock:
            self._reap()
            self._acquisitions += 1
            self._events += 1
            self._acquired.append(self._events)
            held = self._find(resource)
            if held is None:
                held = _Held(ref, _describe(resource), [], key)
                self._held[key] = held
            held.stacks.append((self._events, raw))
        return resource

    def _find(self, resource: object) -> _Held | None:
        """The record of this very object (call with the lock held)."""
        held = self._held.get(id(resource))
        if held is None:
            return None
        if held.ref() is not resource:
            # A dead object's id, reused before its collection was filed: file it now.
            self._file_collected(self._held.pop(held.key))
            return None
        return held

    def _release(self, resource: object, raw: tuple[Raw, ...]) -> None:
        with self._lock:
            self._reap()
            held = self._find(resource)
            if held is None:
                where = format_stack(locations(raw, self.depth), "      ")
                self._events += 1
                self._problems.append(
                    (
                        self._events,
                        f"{_describe(resource)} was released but is not held (never acquired, "
                        f"or released twice), at\n{where}",
                    )
                )
                return
            self._releases += 1
            held.stacks.pop()
            if not held.stacks:
                del self._held[held.key]

    def _on_collected(self, key: int, _ref: weakref.ref[Any]) -> None:
        # Called by the garbage collector at any moment, possibly while this thread holds the
        # lock: only queue the dead object's key (list.append is atomic); _reap() files it.
        self._dead.append(key)

    def _reap(self) -> None:
        """File resources collected without release as leaks (call with the lock held)."""
        while self._dead:
            key = self._dead.pop(0)
            held = self._held.get(key)
            if held is not None and held.ref() is None:
                self._file_collected(self._held.pop(key))

    def _file_collected(self, held: _Held) -> None:
        for number, raw in held.stacks:
            leak = Leak(held.description, True, locations(raw, self.depth))
            self._collected.append((number, leak))

    # -- decorators ---------------------------------------------------------------------------

    def acquires(self, func: _F) -> _F:
        """Decorate a function (sync or async) whose return value is a newly acquired resource.

        Example::

            class Pool:
                @tracker.acquires
                async def acquire(self) -> Connection: ...
        """
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def acquire_async(*args: Any, **kwargs: Any) -> Any:
                resource = await func(*args, **kwargs)
                return self._acquire(resource, raw_stack(sys._getframe(0), self.depth))

            return cast(_F, acquire_async)

        @functools.wraps(func)
        def acquire(*args: Any, **kwargs: Any) -> Any:
            return self._acquire(func(*args, **kwargs), raw_stack(sys._getframe(0), self.depth))

        return cast(_F, acquire)

    @overload
    def releases(self, func: _F, /) -> _F: ...
    @overload
    def releases(self, func: str, /) -> Callable[[_F], _F]: ...

    def releases(self, func: _F | str, /) -> _F | Callable[[_F], _F]:
        """Decorate a function (sync or async) that releases the resource passed to it.

        Bare, it releases its first argument other than ``self``/``cls``; name the parameter
        otherwise: ``@tracker.releases("conn")``, or ``@tracker.releases("self")`` on the
        resource's own ``close`` method. The release counts once the function returns.

        Example::

            class Pool:
                @tracker.releases
                async def release(self, conn: Connection) -> None: ...
        """
        if isinstance(func, str):
            name = func
            return lambda f: self._releasing(f, name)
        return self._releasing(func, None)

    def _releasing(self, func: _F, name: str | None) -> _F:
        if not callable(func):
            raise TypeError(f"@releases decorates a function, got {func!r}")
        signature = inspect.signature(func)
        parameters = [p for p in signature.parameters if name is None and p not in ("self", "cls")]
        target = name if name is not None else (parameters[0] if parameters else None)
        if target is None or target not in signature.parameters:
            raise TypeError(
                f"@releases on {func.__qualname__}: "
                + (
                    f"it has no parameter named {name!r}"
                    if name is not None
                    else "it takes no argument to release; name one, e.g. @releases('self')"
                )
            )

        def resource_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return signature.bind(*args, **kwargs).arguments[target]

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def release_async(*args: Any, **kwargs: Any) -> Any:
                result = await func(*args, **kwargs)
                self._release(resource_of(args, kwargs), raw_stack(sys._getframe(0), self.depth))
                return result

            return cast(_F, release_async)

        @functools.wraps(func)
        def release(*args: Any, **kwargs: Any) -> Any:
            result = func(*args, **kwargs)
            self._release(resource_of(args, kwargs), raw_stack(sys._getframe(0), self.depth))
            return result

        return cast(_F, release)

    # -- looking ------------------------------------------------------------------------------

    @property
    def held(self) -> list[object]:
        """The resources currently held (alive, acquired more often than released)."""
        with self._lock:
            self._reap()
            refs = [held.ref for held in self._held.values()]
        return [obj for obj in (ref() for ref in refs) if obj is not None]

    def __contains__(self, resource: object) -> bool:
        with self._lock:
            self._reap()
            return self._find(resource) is not None

    def __len__(self) -> int:
        """How many acquisitions are still open, including resources collected unreleased."""
        with self._lock:
            self._reap()
            return sum(len(h.stacks) for h in self._held.values()) + len(self._collected)

    def mark(self) -> int:
        """A bookmark in the tracker's history, for ``since=`` / ``before=`` of the checks.

        The pytest fixture uses it to tell what the test body acquired (it must be released
        when the body returns) from what fixtures acquired around it.

        Example::

            mark = tracker.mark()
            await handle(pool, request)
            tracker.assert_all_released(since=mark)   # only what handle() acquired
        """
        with self._lock:
            return self._events

    def leaks(self, *, since: int = 0, before: int | None = None) -> list[Leak]:
        """Every acquisition not released: resources still held, then those collected.

        ``since`` / ``before`` (from :meth:`mark`) keep the acquisitions made after / up to
        that bookmark.
        """
        return self._leaks(None, since, before)

    def _leaks(
        self, loop: asyncio.AbstractEventLoop | None, since: int = 0, before: int | None = None
    ) -> list[Leak]:
        def kept(number: int) -> bool:
            return number > since and (before is None or number <= before)

        with self._lock:
            self._reap()
            held = [h for h in self._held.values() if any(kept(n) for n, _raw in h.stacks)]
            collected = [leak for number, leak in self._collected if kept(number)]
        holders = _holders(loop, held) if loop is not None else {}
        still = [
            Leak(h.description, False, locations(raw, self.depth), holders.get(h.key, ""))
            for h in held
            for number, raw in h.stacks
            if kept(number)
        ]
        return still + collected

    def assert_all_released(
        self,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        since: int = 0,
        before: int | None = None,
    ) -> None:
        """Raise :class:`ResourceLeakError` listing every leaked resource and where it came from.

        With ``loop`` (a loop that is not running, such as a test's loop after the test), each
        resource still held also names the pending task of that loop that references it.
        ``since`` / ``before`` (from :meth:`mark`) check only what was acquired, or released
        wrongly, after / up to that bookmark.

        Example::

            tracker.assert_all_released()
            # ResourceLeakError: 1 of 3 acquired resources never released:
            #   Connection('db') (still held), acquired at
            #       service.py:14 in handle: conn = await pool.acquire()
        """
        error = self.error(loop=loop, since=since, before=before)
        if error is not None:
            raise error

    def error(
        self,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        since: int = 0,
        before: int | None = None,
    ) -> ResourceLeakError | None:
        """What :meth:`assert_all_released` would raise, or None when everything was released.

        Example::

            problem = tracker.error()
            if problem is not None:
                print(problem.leaks)
        """
        leaks = self._leaks(loop, since, before)
        last = before if before is not None else self._events
        with self._lock:
            self._reap()
            problems = [text for number, text in self._problems if since < number <= last]
            total = bisect.bisect_right(self._acquired, last) - bisect.bisect_right(
                self._acquired, since
            )
        if not leaks and not problems:
            return None
        lines: list[str] = []
        if leaks:
            lines.append(f"{len(leaks)} of {total} acquired resources never released:")
            lines.extend("  " + str(leak) for leak in leaks)
        if problems:
            lines.append(f"{len(problems)} release(s) of a resource not held:")
            lines.extend("  " + problem for problem in problems)
        return ResourceLeakError("\n".join(lines), leaks, problems)

    def clear(self) -> None:
        """Forget everything recorded so far (held resources, leaks and problems)."""
        with self._lock:
            self._reap()
            self._held.clear()
            self._collected.clear()
            self._problems.clear()
            self._acquired.clear()
            self._acquisitions = 0
            self._releases = 0

    # -- blocks -------------------------------------------------------------------------------

    def __enter__(self) -> ResourceTracker:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._check_on_exit(exc)

    async def __aenter__(self) -> ResourceTracker:
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._check_on_exit(exc)

    def _check_on_exit(self, exc: BaseException | None) -> None:
        if exc is None:
            self.assert_all_released()
            return
        try:
            self.assert_all_released()
        except ResourceLeakError as leak:
            exc.add_note(f"(and labkit.ResourceTracker found leaks) {leak}")

    def __repr__(self) -> str:
        return f"<ResourceTracker: {len(self)} open acquisition(s)>"
