"""A job: what one fresh process in the sandbox does, from the submission's cells to its reply.

The sandbox's zygote (:mod:`~labkit.course.grading.zygote`) forks one process per job. That
process runs the submission's cells up to the exercise (learner cells as written, the lesson's
cells as the instructor wrote them), then the job:

* a ``check`` job defines the check cell's functions and calls each as a
  :mod:`~labkit.course.trial`, replying with what each returned (its observation) or how it
  failed;
* a ``test`` job defines one candidate implementation under the correct implementation's name
  and runs the learner's test against it, replying passed, failed, timed out or placeholder.

The candidate is a fresh object (a copy of the function, or a fresh subclass whose methods are
fresh copies), named, documented and placed like the correct implementation, so ``impl is
Given`` is false and ``impl.method is Given.method`` is false for every candidate alike. The
job's definitions and the check functions run in a copy of the notebook's namespace in which the
lesson's protected names are the lesson's own objects, so rebinding ``Heartbeat`` in a learner
cell changes nothing the candidates are built from.

The reply is plain data in the wire format, written to this process's own pipe, each frame
signed with the job's one-time key (HMAC-SHA256): bytes written to the pipe by anything that
does not hold the key are ignored. It is a *report*, decided on nothing: the grader compares
observations with the instructor's and reads a test's verdicts knowing which candidate each job
had. Learner code in this process that digs the key out of memory could still forge the reply
(the tamper scan flags the introspection that needs); a forged reply earns points only by
guessing values it cannot see.

Example::

    run(runner, table, spec, cells=(0, 1), reply_fd=fd, key=key)   # in the forked process
"""

from __future__ import annotations

import hmac
import linecache
import os
import secrets
import types
from collections.abc import Sequence
from typing import Any

from labkit.course.grading.wire import encode, frame, informative, plain_problem
from labkit.course.trial import DEFAULT_TIME_LIMIT, failure_hint, is_placeholder, run_trial

__all__ = ["fresh_copy", "run", "sign"]

# Bound when the zygote imports this module, before any learner code: patching os or hmac
# from a cell later does not change how the reply is written.
_WRITE = os.write
_DIGEST = hmac.digest

_MISSING = object()
_MAX_HINT = 1500


def sign(key: bytes, payload: bytes) -> bytes:
    """A signed frame's content: the HMAC-SHA256 of ``payload`` under ``key``, then the payload.

    Example::

        assert sign(b"k" * 32, b"x")[32:] == b"x"
    """
    return _DIGEST(key, payload, "sha256") + payload


def _send(fd: int, key: bytes, value: Any) -> None:
    data = memoryview(frame(sign(key, encode(value))))
    while data:
        data = data[_WRITE(fd, data) :]


def run(
    runner: Any,
    table: Sequence[dict[str, Any]],
    spec: dict[str, Any],
    cells: Sequence[int],
    reply_fd: int,
    key: bytes,
    skip: dict[int, str] | None = None,
) -> None:
    """Run the cells, then the job; write the signed reply (and progress frames) to ``reply_fd``.

    ``skip`` maps cells that ran past the per-cell limit in an earlier job to their error: they
    are reported failed again without spending that time once more.

    Example::

        run(runner, table, {"kind": "check", "define": [...], "checks": ["f"]}, (0,), fd, key)
    """
    errors: list[list[Any]] = []
    skip = skip or {}
    for index in cells:
        entry = table[index]
        _send(reply_fd, key, {"cell": index})
        error = skip[index] if index in skip else runner.run_cell(entry["source"])
        if error:
            errors.append([index, error])
        if entry["kind"] != "learner":
            runner.remember(entry["protects"])
    _send(reply_fd, key, {"cell": -1})
    try:
        reply = _job(runner, spec)
    except BaseException as exc:  # the job could not start: a name the learner never defined
        reply = {"error": _hint(f"{type(exc).__name__}: {exc}")}
    reply["cells"] = errors
    try:
        encoded = encode(reply)
    except ValueError as exc:  # a value that is not plain data slipped into a hint
        encoded = encode({"error": f"the reply could not be encoded ({exc})", "cells": errors})
    data = memoryview(frame(sign(key, encoded)))
    while data:
        data = data[_WRITE(reply_fd, data) :]


def _hint(text: str) -> str:
    return text if len(text) <= _MAX_HINT else text[:_MAX_HINT] + " ..."


def _namespace(runner: Any) -> dict[str, Any]:
    ns = dict(runner.namespace)
    ns.update(runner.protected)
    return ns


def _define(ns: dict[str, Any], sources: Sequence[str], pick: int = -1, **where: Any) -> Any:
    """Run the job's definitions in ``ns``; return what statement ``pick`` bound to its name."""
    picked = None
    for index, source in enumerate(sources):
        filename = f"<check-{secrets.token_hex(4)}>"
        lines = source.splitlines(keepends=True) or ["\n"]
        if not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        linecache.cache[filename] = (len(source), None, lines, filename)
        code = compile(source, filename, "exec")
        if index != pick:
            exec(code, ns)
            continue
        name = where["name"]
        saved = ns.get(name, _MISSING)
        exec(code, ns)
        picked = ns[name]
        if where.get("alias"):
            ns[where["alias"]] = picked
        if saved is _MISSING:
            ns.pop(name, None)
        else:
            ns[name] = saved
    return picked


def _options(spec: dict[str, Any], ns: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {"time_limit": float(spec.get("time_limit") or DEFAULT_TIME_LIMIT)}
    if spec.get("loop_factory"):
        options["loop_factory"] = eval(spec["loop_factory"], ns)
    return options


def _job(runner: Any, spec: dict[str, Any]) -> dict[str, Any]:
    ns = _namespace(runner)
    if spec["kind"] == "check":
        _define(ns, spec["define"])
        options = _options(spec, ns)
        items = []
        for expr in spec["checks"]:
            func = eval(expr, ns)
            trial = run_trial(func, **options)
            if is_placeholder(trial.error):
                items.append({"status": "placeholder"})
                break
            if trial.passed:
                problem = plain_problem(trial.value)
                if not problem and not informative(trial.value):
                    problem = "returned only None or booleans"
                item: dict[str, Any] = {"status": "ok", "problem": problem}
                item["observation"] = None if problem else trial.value
                items.append(item)
            else:
                status = "timeout" if trial.timed_out else "failed"
                hint = failure_hint(trial, func, options["time_limit"])
                items.append({"status": status, "hint": _hint(hint)})
        return {"items": items}
    candidate = _define(
        ns, spec["define"], spec["pick"], name=spec["name"], alias=spec.get("alias", "")
    )
    candidate = fresh_copy(candidate, spec["name"], spec.get("docs") or {}, runner.namespace, ns)
    test = eval(spec["test"], ns)
    options = _options(spec, ns)
    trial = run_trial(test, (candidate,), **options)
    if is_placeholder(trial.error):
        return {"outcome": "placeholder"}
    if trial.passed:
        return {"outcome": "passed"}
    outcome = "timeout" if trial.timed_out else "failed"
    return {"outcome": outcome, "hint": _hint(failure_hint(trial, test, options["time_limit"]))}


def fresh_copy(
    obj: Any,
    name: str,
    docs: dict[str, Any],
    notebook: dict[str, Any],
    ns: dict[str, Any],
) -> Any:
    """A new object behaving like ``obj``, named and documented like the correct implementation.

    A function becomes a copy of itself; a class becomes a new subclass of itself holding fresh
    copies of every method along its MRO. Functions defined in the notebook get ``ns`` as their
    globals, so every candidate sees the same names; other objects are returned as they are.

    Example::

        impl = fresh_copy(Heartbeat, "Heartbeat", {"": None}, shell.user_ns, ns)
        assert impl is not Heartbeat and issubclass(impl, Heartbeat)
    """
    if isinstance(obj, types.FunctionType):
        return _copy_function(obj, name, name, docs.get(""), notebook, ns)
    if isinstance(obj, type):
        attributes: dict[str, Any] = {
            "__module__": "__main__",
            "__qualname__": name,
            "__doc__": docs.get(""),
        }
        skip = {"__dict__", "__weakref__", "__module__", "__qualname__", "__doc__", "__slots__"}
        for klass in obj.__mro__:
            if klass is object:
                continue
            for attribute, value in vars(klass).items():
                if attribute in attributes or attribute in skip:
                    continue
                copied = _copy_member(value, name, attribute, docs.get(attribute), notebook, ns)
                if copied is not None:
                    attributes[attribute] = copied
        return type(obj)(name, (obj,), attributes)
    return obj


def _copy_member(
    value: Any, owner: str, attribute: str, doc: Any, notebook: dict[str, Any], ns: dict[str, Any]
) -> Any:
    qualname = f"{owner}.{attribute}"
    if isinstance(value, types.FunctionType):
        return _copy_function(value, attribute, qualname, doc, notebook, ns)
    if isinstance(value, staticmethod) and isinstance(value.__func__, types.FunctionType):
        return staticmethod(_copy_function(value.__func__, attribute, qualname, doc, notebook, ns))
    if isinstance(value, classmethod) and isinstance(value.__func__, types.FunctionType):
        return classmethod(_copy_function(value.__func__, attribute, qualname, doc, notebook, ns))
    if isinstance(value, property):

        def fresh(part: Any) -> Any:
            if isinstance(part, types.FunctionType):
                return _copy_function(part, attribute, qualname, None, notebook, ns)
            return part

        return property(fresh(value.fget), fresh(value.fset), fresh(value.fdel), doc)
    return None


def _copy_function(
    func: types.FunctionType,
    name: str,
    qualname: str,
    doc: Any,
    notebook: dict[str, Any],
    ns: dict[str, Any],
) -> types.FunctionType:
    globals_ = ns if func.__globals__ is notebook or func.__globals__ is ns else func.__globals__
    copy = types.FunctionType(func.__code__, globals_, name, func.__defaults__, func.__closure__)
    copy.__kwdefaults__ = func.__kwdefaults__
    copy.__dict__.update(func.__dict__)
    copy.__qualname__ = qualname
    copy.__module__ = "__main__" if globals_ is ns else func.__module__
    copy.__doc__ = doc
    copy.__annotations__ = dict(func.__annotations__)
    return copy
