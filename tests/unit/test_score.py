"""Scoring is a pure function of verdicts: the notebook and the grader use the same one."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labkit.course.grading.score import (
    catch_points,
    check_points,
    default_points,
    exercise_points,
    same,
)
from labkit.course.grading.wire import Raised


def test_check_points_are_shared_among_the_checks_that_hold() -> None:
    assert check_points(3, [True, True, False]) == 2
    assert check_points(2, []) == 0
    assert check_points(1, [True, False, False]) == 0.33


def test_passing_on_the_correct_code_earns_nothing_by_itself() -> None:
    # async def test_retry(retry): pass -- passes everywhere, catches nothing.
    assert catch_points(5, correct=[True], caught=[False] * 5) == 0
    assert catch_points(5, correct=[True], caught=[True, True, False, False, False]) == 2
    assert catch_points(5, correct=[True, False], caught=[True] * 5) == 0  # a correct one failed
    assert catch_points(5, correct=[], caught=[True] * 5) == 0


def test_default_points_are_one_per_check_or_one_per_mutant() -> None:
    assert default_points("check", checks=3, mutants=0) == 3
    assert default_points("test", checks=0, mutants=4) == 4


@given(
    st.floats(0, 100),
    st.lists(st.booleans(), min_size=1, max_size=6),
    st.lists(st.booleans(), min_size=1, max_size=6),
)
def test_points_never_exceed_the_maximum(
    maximum: float, correct: list[bool], caught: list[bool]
) -> None:
    assert 0 <= catch_points(maximum, correct, caught) <= round(maximum, 2) + 1e-9
    assert 0 <= check_points(maximum, caught) <= round(maximum, 2) + 1e-9


def test_exercise_points_add_up_and_are_capped() -> None:
    assert exercise_points([2, 3], maximum=4) == 4
    assert exercise_points([1.5, math.inf, -1], maximum=4) == 0.5
    assert exercise_points([], maximum=4) == 0


@pytest.mark.parametrize(
    ("observed", "reference", "equal"),
    [
        (3, 3.0, True),
        (0.1 + 0.2, 0.3, True),
        (True, 1, False),
        (1, True, False),
        (None, 0, False),
        ([1, 2], (1, 2), True),
        ({"a": [1]}, {"a": (1.0,)}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({1: "x"}, {1.0: "x"}, True),
        ("3", 3, False),
        (b"x", "x", False),
        (Raised("ValueError", "m"), Raised("ValueError", "m"), True),
        (Raised("ValueError", "m"), Raised("TypeError", "m"), False),
        (float("nan"), float("nan"), True),
        ([[]], [[]], True),
    ],
)
def test_same_compares_plain_values_only(observed: Any, reference: Any, equal: bool) -> None:
    assert same(observed, reference) is equal
