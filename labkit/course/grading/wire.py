"""The wire format: the only thing that crosses from a sandbox to the grader is plain data.

A learner's code runs with full power inside its sandbox, so whatever comes out of it is
untrusted bytes. This module defines the one format those bytes may take and decodes it
strictly, with its own parser (no pickle, no JSON object hooks, no classes to instantiate): plain
data is ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``list``, ``tuple``,
``dict`` and an exception reduced to :class:`Raised` (its type name and message). Only those
exact types are encoded (a subclass of ``int`` or an object whose ``__eq__`` always says yes is
refused), and decoding enforces caps on size, nesting and item count, so a flood or a
decompression-style bomb is an error, never a hang.

Framing on a pipe is a 4-byte big-endian length followed by the payload.

Example::

    data = encode({"elapsed": 3, "items": [1, 2], "error": Raised("ValueError", "bad")})
    assert decode(data) == {"elapsed": 3, "items": [1, 2], "error": Raised("ValueError", "bad")}
"""

from __future__ import annotations

import base64
import os
import struct
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_BYTES",
    "Raised",
    "WireError",
    "decode",
    "encode",
    "frame",
    "from_text",
    "informative",
    "plain_problem",
    "read_frame",
    "show",
    "to_text",
    "write_frame",
]

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 32
MAX_ITEMS = 200_000
MAX_DIGITS = 4300
MAX_MESSAGE = 2000

_LENGTH = struct.Struct(">I")
_FLOAT = struct.Struct(">d")


class WireError(ValueError):
    """Bytes that are not plain data in the wire format, or a value that cannot be encoded.

    Example::

        try:
            decode(b"junk")
        except WireError as error:
            print(error)   # "unknown tag b'j' at byte 0"
    """


@dataclass(frozen=True)
class Raised:
    """An exception as plain data: its type's name and its message.

    Example::

        Raised.of(KeyError("price"))   # Raised(type="KeyError", message="'price'")
    """

    type: str
    message: str

    @classmethod
    def of(cls, error: BaseException) -> Raised:
        """The plain form of an exception (the message cut to a readable length)."""
        try:
            message = str(error)
        except Exception:  # a learner's exception whose __str__ raises
            message = "<unprintable>"
        return cls(type(error).__name__, message[:MAX_MESSAGE])

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


# -- encoding ---------------------------------------------------------------------------------


def encode(value: Any) -> bytes:
    """The wire form of ``value``; raises WireError naming the first part that is not plain data.

    Example::

        encode([1, "a", None])
    """
    out = bytearray()
    _encode(value, out, 0, "the value")
    return bytes(out)


def _encode(value: Any, out: bytearray, depth: int, where: str) -> None:
    if depth > MAX_DEPTH:
        raise WireError(f"{where} is nested more than {MAX_DEPTH} levels deep")
    kind = type(value)
    if value is None:
        out += b"N"
    elif kind is bool:
        out += b"T" if value else b"F"
    elif kind is int:
        digits = str(value).encode("ascii")
        out += b"I" + _LENGTH.pack(len(digits)) + digits
    elif kind is float:
        out += b"D" + _FLOAT.pack(value)
    elif kind is str:
        raw = value.encode("utf-8", "surrogatepass")
        out += b"S" + _LENGTH.pack(len(raw)) + raw
    elif kind is bytes:
        out += b"B" + _LENGTH.pack(len(value)) + value
    elif kind is list or kind is tuple:
        out += (b"L" if kind is list else b"U") + _LENGTH.pack(len(value))
        for index, item in enumerate(value):
            _encode(item, out, depth + 1, f"{where}[{index}]")
    elif kind is dict:
        out += b"M" + _LENGTH.pack(len(value))
        for key, item in value.items():
            if type(key) not in (str, int, float, bool, bytes, tuple) and key is not None:
                raise WireError(f"{where} has a key of type {type(key).__name__}")
            _encode(key, out, depth + 1, f"{where} key")
            _encode(item, out, depth + 1, f"{where}[{key!r}]")
    elif kind is Raised:
        out += b"E"
        _encode(value.type, out, depth + 1, where)
        _encode(value.message, out, depth + 1, where)
    elif isinstance(value, BaseException):
        _encode(Raised.of(value), out, depth, where)
    else:
        raise WireError(f"{where} is a {kind.__name__}, which is not plain data")
    if len(out) > MAX_BYTES:
        raise WireError(f"{where} is larger than {MAX_BYTES} bytes")


def plain_problem(value: Any) -> str:
    """Why ``value`` cannot cross the wire ("" when it can).

    Example::

        plain_problem({1, 2})   # "the value is a set, which is not plain data"
    """
    try:
        encode(value)
    except WireError as error:
        return str(error)
    return ""


def informative(value: Any) -> bool:
    """Whether ``value`` holds a number, text, bytes or an exception, not only None and booleans.

    A check whose observation is ``True`` (or ``[]``, or ``{"ok": True}``: a mapping's keys are
    labels, only its values count) tells the grader nothing a forger could not guess; one that
    returns the value it asserted on does.

    Example::

        assert informative({"elapsed": 3}) and not informative([True, None, {"ok": []}])
    """
    kind = type(value)
    if value is None or kind is bool:
        return False
    if kind in (list, tuple):
        return any(informative(item) for item in value)
    if kind is dict:
        return any(informative(item) for item in value.values())
    return True


# -- decoding ---------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, max_items: int) -> None:
        self.data = data
        self.at = 0
        self.items = 0
        self.max_items = max_items

    def take(self, count: int) -> bytes:
        end = self.at + count
        if count < 0 or end > len(self.data):
            raise WireError(f"the data ends early (wanted {count} bytes at byte {self.at})")
        chunk = self.data[self.at : end]
        self.at = end
        return chunk

    def length(self) -> int:
        (value,) = _LENGTH.unpack(self.take(4))
        return int(value)

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise WireError(f"nested more than {MAX_DEPTH} levels deep")
        self.items += 1
        if self.items > self.max_items:
            raise WireError(f"more than {self.max_items} items")
        tag = self.take(1)
        if tag == b"N":
            return None
        if tag == b"T":
            return True
        if tag == b"F":
            return False
        if tag == b"I":
            size = self.length()
            if size > MAX_DIGITS + 1:
                raise WireError(f"an integer of more than {MAX_DIGITS} digits")
            digits = self.take(size)
            body = digits[1:] if digits[:1] == b"-" else digits
            if not body or not body.isdigit():
                raise WireError(f"a malformed integer at byte {self.at - size}")
            return int(digits)
        if tag == b"D":
            (number,) = _FLOAT.unpack(self.take(8))
            return float(number)
        if tag == b"S":
            raw = self.take(self.length())
            try:
                return raw.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError as exc:
                raise WireError(f"text that is not UTF-8 at byte {self.at - len(raw)}") from exc
        if tag == b"B":
            return self.take(self.length())
        if tag in (b"L", b"U"):
            count = self.length()
            if count > self.max_items:
                raise WireError(f"a sequence of {count} items")
            items = [self.value(depth + 1) for _ in range(count)]
            return items if tag == b"L" else tuple(items)
        if tag == b"M":
            count = self.length()
            if count > self.max_items:
                raise WireError(f"a mapping of {count} items")
            result: dict[Any, Any] = {}
            for _ in range(count):
                key = self.value(depth + 1)
                if type(key) in (list, dict, Raised) or not _hashable(key):
                    raise WireError(f"a mapping key of type {type(key).__name__}")
                if key in result:
                    raise WireError(f"the mapping key {key!r} appears twice")
                result[key] = self.value(depth + 1)
            return result
        if tag == b"E":
            kind, message = self.value(depth + 1), self.value(depth + 1)
            if type(kind) is not str or type(message) is not str:
                raise WireError("an exception whose type or message is not text")
            return Raised(kind, message)
        raise WireError(f"unknown tag {tag!r} at byte {self.at - 1}")


def _hashable(value: Any) -> bool:
    if type(value) is tuple:
        return all(_hashable(item) and type(item) not in (list, dict) for item in value)
    return type(value) in (str, int, float, bool, bytes) or value is None


def decode(data: bytes, *, max_bytes: int = MAX_BYTES, max_items: int = MAX_ITEMS) -> Any:
    """The value ``data`` encodes; raises WireError for anything else, trailing bytes included.

    Example::

        assert decode(encode((1, b"x"))) == (1, b"x")
    """
    if not isinstance(data, bytes):
        raise WireError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise WireError(f"{len(data)} bytes, more than the {max_bytes} allowed")
    reader = _Reader(data, max_items)
    value = reader.value(0)
    if reader.at != len(data):
        raise WireError(f"{len(data) - reader.at} bytes after the value")
    return value


def to_text(value: Any) -> str:
    """The wire form as ASCII text (base64), to store in JSON files such as the manifest.

    Example::

        assert from_text(to_text([1, 2])) == [1, 2]
    """
    return base64.b64encode(encode(value)).decode("ascii")


def from_text(text: str) -> Any:
    """The value of :func:`to_text`'s text; raises WireError if it is not that.

    Example::

        from_text(to_text("ok"))   # "ok"
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise WireError("not base64 text") from exc
    return decode(raw)


def show(value: Any, limit: int = 200) -> str:
    """A short readable form of a plain value, for reports and feedback.

    Example::

        show([1, 2.5, "a"])   # "[1, 2.5, 'a']"
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- framing ----------------------------------------------------------------------------------


def frame(payload: bytes) -> bytes:
    """``payload`` with its length in front, as written on a pipe.

    Example::

        assert frame(b"ab") == b"\\x00\\x00\\x00\\x02ab"
    """
    return _LENGTH.pack(len(payload)) + payload


def write_frame(fd: int, payload: bytes) -> None:
    """Write one framed message to a blocking file descriptor.

    Example::

        write_frame(reply_fd, encode({"status": "passed"}))
    """
    data = memoryview(frame(payload))
    while data:
        data = data[os.write(fd, data) :]


def read_frame(fd: int, max_bytes: int = MAX_BYTES) -> bytes | None:
    """Read one framed message from a blocking descriptor; None at a clean end of file.

    Raises WireError for a frame longer than ``max_bytes`` or cut short.

    Example::

        payload = read_frame(control_fd)
    """
    head = _read_exactly(fd, 4)
    if head is None:
        return None
    (size,) = _LENGTH.unpack(head)
    if size > max_bytes:
        raise WireError(f"a frame of {size} bytes, more than the {max_bytes} allowed")
    body = _read_exactly(fd, size)
    if body is None:
        raise WireError("the channel closed in the middle of a frame")
    return body


def _read_exactly(fd: int, count: int) -> bytes | None:
    chunks: list[bytes] = []
    got = 0
    while got < count:
        chunk = os.read(fd, min(count - got, 1 << 20))
        if not chunk:
            if got == 0:
                return None
            raise WireError("the channel closed in the middle of a frame")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
