"""The explorer's document, without Qt: the drawn digit, the inpainting mask and undo/redo.

The desktop app (``app/``) holds one :class:`Session` and only translates mouse events into
:meth:`Session.paint` calls; everything here can be driven and tested by a plain script. What the
app computes from the drawing lives in :mod:`engine.figures`, the checkpoints it lists in
:mod:`engine.catalogue`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["Session", "brush_offsets"]


def brush_offsets(size: int) -> list[tuple[int, int]]:
    """Offsets (dr, dc) covered by a round brush of ``size`` pixels across (1 = one pixel)."""
    size = max(1, int(size))
    r = (size - 1) / 2
    lo, hi = -int(math.floor(r)), int(math.ceil(r))
    out = []
    for dr in range(lo, hi + 1):
        for dc in range(lo, hi + 1):
            cy, cx = dr - (hi + lo) / 2, dc - (hi + lo) / 2
            if cy * cy + cx * cx <= r * r + 0.5:
                out.append((dr, dc))
    return out


class Session:
    """A binary ``height x width`` canvas with a mask of pixels to regenerate and an undo history.

    ``canvas`` is uint8 0/1 (1 = ink). ``mask`` is bool (True = unknown, to be inpainted). Every
    user action that changes the canvas is one undo step: call :meth:`begin_stroke` when the mouse
    button goes down and paint as the mouse moves; :meth:`set_canvas`, :meth:`clear` and
    :meth:`invert` record their own step.
    """

    def __init__(self, height: int = 28, width: int = 28, max_history: int = 200):
        self.height, self.width = height, width
        self.canvas = np.zeros((height, width), np.uint8)
        self.mask = np.zeros((height, width), bool)
        self._undo: list[tuple[np.ndarray, np.ndarray]] = []
        self._redo: list[tuple[np.ndarray, np.ndarray]] = []
        self.max_history = max_history
        self.version = 0  #: bumps on every change of the canvas (what heatmap requests carry)

    # -- history -------------------------------------------------------------------------------
    def _snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        return self.canvas.copy(), self.mask.copy()

    def _record(self) -> None:
        self._undo.append(self._snapshot())
        del self._undo[: -self.max_history]
        self._redo.clear()

    def begin_stroke(self) -> None:
        """Start an undo step (call before painting a stroke)."""
        self._record()

    def end_stroke(self) -> None:
        """Drop the undo step of a stroke that changed nothing."""
        if self._undo and np.array_equal(self._undo[-1][0], self.canvas) and np.array_equal(self._undo[-1][1], self.mask):
            self._undo.pop()

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> bool:
        if not self._undo:
            return False
        self._redo.append(self._snapshot())
        self.canvas, self.mask = self._undo.pop()
        self.version += 1
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        self._undo.append(self._snapshot())
        self.canvas, self.mask = self._redo.pop()
        self.version += 1
        return True

    # -- editing -------------------------------------------------------------------------------
    def _stamp(self, target: np.ndarray, row: int, col: int, value: Any, brush: int) -> bool:
        changed = False
        for dr, dc in brush_offsets(brush):
            r, c = row + dr, col + dc
            if 0 <= r < self.height and 0 <= c < self.width and target[r, c] != value:
                target[r, c] = value
                changed = True
        return changed

    def paint(self, row: int, col: int, value: int = 1, brush: int = 1, *, mask: bool = False,
              from_point: tuple[int, int] | None = None) -> bool:
        """Set pixels under a brush (on the canvas, or on the mask if ``mask``) along the segment
        from ``from_point`` to ``(row, col)``; True when something changed."""
        target = self.mask if mask else self.canvas
        val = bool(value) if mask else int(bool(value))
        points = [(row, col)] if from_point is None else _segment(from_point, (row, col))
        changed = False
        for r, c in points:
            changed |= self._stamp(target, r, c, val, brush)
        if changed and not mask:
            self.version += 1
        return changed

    def set_canvas(self, image: np.ndarray, record: bool = True) -> None:
        img = np.asarray(image).reshape(self.height, self.width)
        if record:
            self._record()
        self.canvas = (img > 0.5).astype(np.uint8)
        self.version += 1

    def clear(self) -> None:
        self.set_canvas(np.zeros_like(self.canvas))

    def invert(self) -> None:
        self.set_canvas(1 - self.canvas)

    def set_mask(self, mask: np.ndarray, record: bool = True) -> None:
        if record:
            self._record()
        self.mask = np.asarray(mask, dtype=bool).reshape(self.height, self.width).copy()

    def clear_mask(self) -> None:
        self.set_mask(np.zeros_like(self.mask))

    @property
    def known(self) -> np.ndarray:
        """(D,) bool: pixels kept when inpainting (everything not masked)."""
        return ~self.mask.reshape(-1)

    def flat(self) -> np.ndarray:
        return self.canvas.reshape(-1).astype(np.float32)


def _segment(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
    """Grid points on the segment from ``a`` to ``b`` (so fast mouse moves leave no gaps)."""
    (r0, c0), (r1, c1) = a, b
    n = max(abs(r1 - r0), abs(c1 - c0))
    if n == 0:
        return [(r1, c1)]
    return [(round(r0 + (r1 - r0) * t / n), round(c0 + (c1 - c0) * t / n)) for t in range(n + 1)]
