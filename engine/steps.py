"""Long engine work is a plain generator that yields progress and returns its result (so that a
worker can stop it between steps); :func:`drain` runs one to the end where nothing needs to."""

from __future__ import annotations

from typing import Any, Generator

__all__ = ["drain"]


def drain(gen: Generator[Any, Any, Any]) -> tuple[list[Any], Any]:
    """Run ``gen`` to the end: (everything it yielded, its return value)."""
    items = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as stop:
            return items, stop.value
