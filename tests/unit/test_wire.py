"""The wire format carries plain data only, and its decoder refuses everything else, bounded."""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.course.grading.wire import (
    Raised,
    WireError,
    decode,
    encode,
    frame,
    from_text,
    informative,
    plain_problem,
    read_frame,
    to_text,
    write_frame,
)

PLAIN = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(PLAIN)
def test_plain_data_round_trips_exactly(value: Any) -> None:
    assert decode(encode(value)) == value
    assert type(decode(encode(value))) is type(value)
    assert from_text(to_text(value)) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_to_plain_data_or_a_wire_error(data: bytes) -> None:
    try:
        value = decode(data)
    except WireError:
        return
    assert plain_problem(value) == ""


def test_an_exception_crosses_as_its_type_name_and_message() -> None:
    assert decode(encode(KeyError("price"))) == Raised("KeyError", "'price'")
    assert str(Raised("ValueError", "bad")) == "ValueError: bad"


class Always:
    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


class Number(int):
    pass


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (Always(), "the value is a Always, which is not plain data"),
        (Number(3), "the value is a Number, which is not plain data"),
        ({1, 2}, "the value is a set, which is not plain data"),
        ([1, {"a": object()}], "the value[1]['a'] is a object, which is not plain data"),
        ({Always(): 1}, "the value has a key of type Always"),
        (lambda: 1, "the value is a function, which is not plain data"),
    ],
)
def test_what_is_not_plain_data_is_refused_by_name(value: Any, problem: str) -> None:
    assert plain_problem(value) == problem
    with pytest.raises(WireError):
        encode(value)


def test_decoding_is_bounded() -> None:
    nested: Any = []
    for _ in range(40):
        nested = [nested]
    with pytest.raises(WireError, match="nested more than"):
        encode(nested)
    deep = b"L\x00\x00\x00\x01" * 40 + b"N"
    with pytest.raises(WireError, match="nested more than"):
        decode(deep)
    huge_count = b"L" + struct.pack(">I", 10**9)
    with pytest.raises(WireError, match="a sequence of"):
        decode(huge_count)
    with pytest.raises(WireError, match="more than the"):
        decode(b"N" * 100, max_bytes=10)
    many = b"L" + struct.pack(">I", 90) + (b"L" + struct.pack(">I", 2) + b"NN") * 90
    with pytest.raises(WireError, match="more than 100 items"):
        decode(many, max_items=100)
    digits = b"I" + struct.pack(">I", 5000) + b"9" * 5000
    with pytest.raises(WireError, match="digits"):
        decode(digits)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "ends early"),
        (b"X", "unknown tag"),
        (b"NN", "1 bytes after the value"),
        (b"S\x00\x00\x00\x02\xff\xfe", "not UTF-8"),
        (b"I\x00\x00\x00\x02-x", "malformed integer"),
        (b"M\x00\x00\x00\x02S\x00\x00\x00\x01aNS\x00\x00\x00\x01aN", "appears twice"),
        (b"M\x00\x00\x00\x01L\x00\x00\x00\x00N", "mapping key of type list"),
        (b"EIx", "ends early"),
    ],
)
def test_malformed_bytes_are_a_wire_error_saying_what(data: bytes, problem: str) -> None:
    with pytest.raises(WireError, match=problem):
        decode(data)


def test_informative_observations_hold_more_than_none_and_booleans() -> None:
    assert informative(0)
    assert informative("")
    assert informative([None, 3])
    assert informative(Raised("ValueError", ""))
    assert not informative(None)
    assert not informative([True, False, None])
    assert not informative({"ok": True, "left": []})
    assert not informative(((), []))


def test_frames_travel_over_a_pipe_and_oversized_ones_are_refused() -> None:
    read, write = os.pipe()
    try:
        write_frame(write, encode({"cell": 3}))
        os.write(write, frame(b"x" * 100))
        assert decode(read_frame(read) or b"") == {"cell": 3}
        with pytest.raises(WireError, match="more than the 10 allowed"):
            read_frame(read, max_bytes=10)
    finally:
        os.close(read)
        os.close(write)


def test_a_frame_cut_short_is_an_error_and_a_clean_end_is_none() -> None:
    read, write = os.pipe()
    os.write(write, struct.pack(">I", 10) + b"abc")
    os.close(write)
    with pytest.raises(WireError, match="middle of a frame"):
        read_frame(read)
    os.close(read)
    read, write = os.pipe()
    os.close(write)
    assert read_frame(read) is None
    os.close(read)
