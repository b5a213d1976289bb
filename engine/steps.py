"""Long engine work is a plain generator that yields progress and returns its result (so that a
worker can stop it between steps); :func:`drain` runs one to the end where nothing needs to, and
:func:`fmt_time` writes the elapsed and remaining times that progress reports show."""

from __future__ import annotations

import math
from typing import Any, Generator

__all__ = ["drain", "fmt_time"]


def drain(gen: Generator[Any, Any, Any]) -> tuple[list[Any], Any]:
    """Run ``gen`` to the end: (everything it yielded, its return value)."""
    items = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as stop:
            return items, stop.value


def fmt_time(s: float) -> str:
    """Seconds as ``m:ss``, or ``h:mm:ss`` from an hour on; ``?`` when unknown (not finite)."""
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
