"""Scoring: the pure functions that turn verdicts into points, shared by the notebook and grader.

The in-notebook checks (:mod:`labkit.course.exercise`) print points computed here, and the
grader computes a submission's points with the same functions from verdicts it decided itself,
so a learner sees in JupyterLab what the grader will give for the visible checks.

* A ``check`` call shares its points equally among its check functions; one holds when it
  returned an observation equal (:func:`same`) to the instructor's reference.
* A ``check_test`` call gives nothing for passing on the correct code: its points are shared
  among the buggy versions (mutants) the test catches, and only while it passes on every
  correct version. A test that tests nothing earns 0.

Example::

    assert check_points(2, [True, False]) == 1
    assert catch_points(3, correct=[True], caught=[True, True, False]) == 2
    assert catch_points(3, correct=[True], caught=[False, False, False]) == 0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from labkit.course.grading.wire import Raised

__all__ = [
    "catch_points",
    "check_points",
    "default_points",
    "exercise_points",
    "same",
]


def default_points(kind: str, checks: int, mutants: int) -> float:
    """A call's points when it does not say: one per check function, or one per mutant.

    Example::

        assert default_points("test", checks=0, mutants=3) == 3
    """
    return float(mutants if kind == "test" else checks)


def check_points(max_points: float, verdicts: Sequence[bool]) -> float:
    """Points of a ``check`` call: ``max_points`` shared equally among the checks that held.

    Example::

        assert check_points(3, [True, True, False]) == 2
    """
    if not verdicts:
        return 0.0
    return round(max_points * sum(bool(v) for v in verdicts) / len(verdicts), 2)


def catch_points(max_points: float, correct: Sequence[bool], caught: Sequence[bool]) -> float:
    """Points of a ``check_test`` call: shared among mutants caught, if every correct one passed.

    Example::

        assert catch_points(4, correct=[True, False], caught=[True] * 4) == 0
    """
    if not correct or not all(correct) or not caught:
        return 0.0
    return round(max_points * sum(bool(c) for c in caught) / len(caught), 2)


def exercise_points(calls: Sequence[float], maximum: float) -> float:
    """An exercise's points: the sum over its calls, capped at its maximum, never negative.

    Example::

        assert exercise_points([2, 3], maximum=4) == 4
    """
    total = sum(value for value in calls if math.isfinite(value))
    return round(max(0.0, min(total, maximum)), 2)


def same(observed: Any, reference: Any) -> bool:
    """Whether an observation equals the reference: exact, except numbers compare by value.

    Integers and floats compare numerically (within 1e-9, so ``3`` matches ``3.0`` and float
    rounding differences between correct implementations do not matter); lists and tuples are
    both sequences; booleans are not numbers here (``True`` does not match ``1``). Only the
    wire format's plain types are ever compared, so no learner ``__eq__`` runs.

    Example::

        assert same({"t": 3.0, "items": (1, 2)}, {"t": 3, "items": [1, 2]})
        assert not same(True, 1)
    """
    kind, want = type(observed), type(reference)
    if kind is bool or want is bool:
        return kind is want and observed is reference
    if kind in (int, float) and want in (int, float):
        if math.isnan(observed) or math.isnan(reference):
            return math.isnan(observed) and math.isnan(reference)
        return math.isclose(observed, reference, rel_tol=1e-9, abs_tol=1e-9)
    if kind in (list, tuple) and want in (list, tuple):
        return len(observed) == len(reference) and all(
            same(a, b) for a, b in zip(observed, reference, strict=True)
        )
    if kind is dict and want is dict:
        if len(observed) != len(reference):
            return False
        for key, value in reference.items():
            match = [k for k in observed if same(k, key)]
            if len(match) != 1 or not same(observed[match[0]], value):
                return False
        return True
    if kind is Raised and want is Raised:
        return bool(observed.type == reference.type and observed.message == reference.message)
    if kind is want and kind in (str, bytes, type(None)):
        return bool(observed == reference)
    return False
