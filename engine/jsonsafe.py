"""JSON from a user or a file, parsed with a size and a nesting-depth limit.

``json.loads`` recurses once per nesting level, so a few kilobytes of ``[[[[...`` end in a
``RecursionError``, and a huge text is parsed whole before anyone looks at it. :func:`loads` checks
both limits first, with one linear pass over the text that needs no recursion, and then parses;
every failure is a :class:`JSONError` with a one-line message naming ``what`` was being read.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import PixelchainError

__all__ = ["JSONError", "MAX_DEPTH", "loads", "nesting_depth"]

#: deeper than anything pixelchain writes (a checkpoint's metadata nests 4 levels)
MAX_DEPTH = 32


class JSONError(PixelchainError, ValueError):
    """Text that is not JSON within the limits."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in ``text``, ignoring brackets inside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def loads(text: str | bytes, what: str = "JSON", max_bytes: int = 1 << 20, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``text`` as JSON; refuse it with a :class:`JSONError` when it is longer than ``max_bytes``,
    nests deeper than ``max_depth``, or is not JSON."""
    if len(text) > max_bytes:
        raise JSONError(f"{what} is too large ({len(text):,} bytes; at most {max_bytes:,})")
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise JSONError(f"{what} is not UTF-8 text") from None
    if nesting_depth(text) > max_depth:
        raise JSONError(f"{what} nests deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise JSONError(f"{what} is not valid JSON ({first[:120]})") from None
