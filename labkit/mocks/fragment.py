"""fragment(): split a byte string into the chunks a network could deliver it in.

TCP delivers a byte stream, not messages: one ``send`` can arrive as many ``data_received``
calls and many sends as one. A protocol is only correct if every split of the same bytes
gives the same result; these are the splits a test chooses from.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

__all__ = ["fragment"]


def fragment(
    data: bytes,
    *,
    size: int | None = None,
    at: Sequence[int] | None = None,
    seed: int | None = None,
    max_size: int = 16,
) -> list[bytes]:
    """Split ``data`` into chunks: every ``size`` bytes, ``at`` given offsets, or at random.

    Exactly one of ``size``, ``at`` or ``seed`` chooses the split; with ``seed`` the chunks
    are 1 to ``max_size`` bytes long, drawn from ``random.Random(seed)`` (the same seed,
    the same split). Joined back, the chunks are always ``data``.

    Example::

        assert fragment(b"abcdef", size=4) == [b"abcd", b"ef"]
        assert fragment(b"abcdef", at=[1, 3]) == [b"a", b"bc", b"def"]
        assert b"".join(fragment(b"abcdef", seed=7)) == b"abcdef"
    """
    chosen = [
        name for name, value in (("size", size), ("at", at), ("seed", seed)) if value is not None
    ]
    if len(chosen) != 1:
        raise TypeError(
            "fragment() needs exactly one way to split: size=N (every N bytes), "
            f"at=[offsets] or seed=S (random); got {', '.join(chosen) or 'none'}"
        )
    data = bytes(data)
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"size must be an int >= 1 (bytes per chunk), got {size!r}")
        return [data[i : i + size] for i in range(0, len(data), size)]
    if at is not None:
        offsets = sorted(set(at))
        if offsets and (offsets[0] < 0 or offsets[-1] > len(data)):
            raise ValueError(
                f"offsets must lie between 0 and len(data) = {len(data)}, got {list(at)!r}"
            )
        bounds = [0, *[o for o in offsets if 0 < o < len(data)], len(data)]
        return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1:
        raise ValueError(f"max_size must be an int >= 1, got {max_size!r}")
    rng = random.Random(seed)
    chunks: list[bytes] = []
    position = 0
    while position < len(data):
        step = rng.randint(1, max_size)
        chunks.append(data[position : position + step])
        position += step
    return chunks
