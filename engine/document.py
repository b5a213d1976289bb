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

__all__ = ["Session", "brush_offsets", "soft_brush", "level_of", "intensity_of"]


def level_of(intensity: np.ndarray, levels: int) -> np.ndarray:
    """The pixel levels 0 .. ``levels``-1 of 0-255 intensities, as the grey data set quantises them
    (``floor(intensity * K / 256)``, :func:`engine.mnist.quantize`; at K = 2 "intensity >= 128")."""
    return (np.asarray(intensity).astype(np.int64) * int(levels) // 256).astype(np.uint8)


def intensity_of(level: np.ndarray, levels: int) -> np.ndarray:
    """The 0-255 intensity a level stands for: ``round(v * 255 / (K - 1))`` (0 and 255 at K = 2; the
    grey PNGs of :mod:`engine.images` use the same). It always quantises back to ``v``
    (:func:`level_of`), and the top level is full ink whatever K."""
    k = int(levels)
    v = np.asarray(level).astype(np.int64).clip(0, k - 1)
    return ((v * 255 + (k - 1) // 2) // (k - 1)).astype(np.uint8)


def soft_brush(height: int, width: int, a: tuple[float, float], b: tuple[float, float], size: int) -> np.ndarray:
    """(height, width) ink of a soft round brush of ``size`` pixels across dragged from ``a`` to ``b``
    (pixel (row, col) centres): 1 within ``(size - 1) / 2`` of the segment, falling to 0 over the next
    1.5 pixels along a cosine, like the anti-aliased strokes of MNIST's grey digits (drawn with a
    pen, scanned, then filtered down to 28x28)."""
    core = max(0.0, (max(1, int(size)) - 1) / 2)
    fall = 1.5
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    (r0, c0), (r1, c1) = a, b
    dr, dc = r1 - r0, c1 - c0
    n2 = dr * dr + dc * dc
    t = np.zeros_like(rows) if n2 == 0 else (((rows - r0) * dr + (cols - c0) * dc) / n2).clip(0.0, 1.0)
    dist = np.hypot(rows - (r0 + t * dr), cols - (c0 + t * dc))
    u = ((dist - core) / fall).clip(0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * u))


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
    """A ``height x width`` canvas of pixel levels with a mask of pixels to regenerate and an undo history.

    ``canvas`` is uint8, the levels 0 .. ``levels``-1 of the model shown (0/1 for a binary model, 1 =
    ink): what the model reads. ``mask`` is bool (True = unknown, to be inpainted). Every user action
    that changes the canvas is one undo step: call :meth:`begin_stroke` when the mouse button goes
    down and paint as the mouse moves; :meth:`set_canvas`, :meth:`clear` and :meth:`invert` record
    their own step.

    Underneath, ``intensity`` (uint8 0-255) is what was drawn, and ``canvas`` is its quantisation at
    ``levels`` (:func:`level_of`, the grey data set's own rule). Switching models
    (:meth:`set_levels`) re-quantises the same drawing, so a grey stroke seen by a binary model (as
    "intensity >= 128") comes back grey under a grey model again; an image set or painted at K levels
    stores each level's intensity (:func:`intensity_of`), which quantises back to the same level. At
    two levels painting, inverting and setting work on 0/1 exactly as a binary canvas always has.
    """

    def __init__(self, height: int = 28, width: int = 28, max_history: int = 200, levels: int = 2):
        self.height, self.width = height, width
        self.levels = int(levels)
        self.intensity = np.zeros((height, width), np.uint8)  #: 0-255, what is drawn
        self.canvas = np.zeros((height, width), np.uint8)  #: its levels at ``levels``
        self.mask = np.zeros((height, width), bool)
        self._undo: list[tuple[np.ndarray, np.ndarray]] = []
        self._redo: list[tuple[np.ndarray, np.ndarray]] = []
        self.max_history = max_history
        self.version = 0  #: bumps on every change of the canvas (what heatmap requests carry)

    # -- history -------------------------------------------------------------------------------
    def _snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        return self.intensity.copy(), self.mask.copy()

    def _restore(self, snap: tuple[np.ndarray, np.ndarray]) -> None:
        self.intensity, self.mask = snap
        self.canvas = level_of(self.intensity, self.levels)

    def _record(self) -> None:
        self._undo.append(self._snapshot())
        del self._undo[: -self.max_history]
        self._redo.clear()

    def begin_stroke(self) -> None:
        """Start an undo step (call before painting a stroke)."""
        self._record()

    def end_stroke(self) -> None:
        """Drop the undo step of a stroke that changed nothing."""
        if self._undo and np.array_equal(self._undo[-1][0], self.intensity) and np.array_equal(self._undo[-1][1], self.mask):
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
        self._restore(self._undo.pop())
        self.version += 1
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        self._undo.append(self._snapshot())
        self._restore(self._redo.pop())
        self.version += 1
        return True

    # -- editing -------------------------------------------------------------------------------
    def _stamp(self, target: np.ndarray, row: int, col: int, value: Any, brush: int) -> bool:
        changed = False
        for dr, dc in brush_offsets(brush):
            r, c = row + dr, col + dc
            if 0 <= r < self.height and 0 <= c < self.width and target[r, c] != value:
                target[r, c] = value
                if target is self.canvas:
                    self.intensity[r, c] = 255 * int(value)
                changed = True
        return changed

    def paint(self, row: int, col: int, value: int = 1, brush: int = 1, *, mask: bool = False,
              from_point: tuple[int, int] | None = None, strength: float = 1.0) -> bool:
        """Set pixels under a brush (on the canvas, or on the mask if ``mask``) along the segment
        from ``from_point`` to ``(row, col)``; True when something changed.

        At two levels (and on the mask) the brush is hard: its pixels become ``value`` (0 or 1). At
        more levels it is soft (:func:`soft_brush`): ``value`` 1 inks with ``strength`` (0..1, the
        intensity at the stroke's centre), keeping what is darker already, and ``value`` 0 erases
        with the same soft edge."""
        if self.levels > 2 and not mask:
            return self._paint_soft(row, col, bool(value), brush, from_point, strength)
        target = self.mask if mask else self.canvas
        val = bool(value) if mask else int(bool(value))
        points = [(row, col)] if from_point is None else _segment(from_point, (row, col))
        changed = False
        for r, c in points:
            changed |= self._stamp(target, r, c, val, brush)
        if changed and not mask:
            self.version += 1
        return changed

    def _paint_soft(self, row: int, col: int, ink: bool, brush: int, from_point: tuple[int, int] | None,
                    strength: float) -> bool:
        a = (row, col) if from_point is None else from_point
        cover = soft_brush(self.height, self.width, a, (row, col), brush)
        old = self.intensity.astype(np.float64)
        if ink:
            new = np.maximum(old, np.round(255.0 * float(np.clip(strength, 0.0, 1.0)) * cover))
        else:
            new = np.minimum(old, np.round(old * (1.0 - cover)))
        new_u8 = new.astype(np.uint8)
        if np.array_equal(new_u8, self.intensity):
            return False
        self.intensity = new_u8
        canvas = level_of(new_u8, self.levels)
        changed = not np.array_equal(canvas, self.canvas)
        self.canvas = canvas
        if changed:
            self.version += 1
        return changed

    def set_levels(self, levels: int) -> bool:
        """Show the drawing at ``levels`` (the model's K): the canvas becomes the intensities'
        levels (:func:`level_of`); not an undo step. True when the canvas changed (its version bumps)."""
        levels = int(levels)
        if levels < 2:
            raise ValueError(f"a canvas needs at least 2 pixel levels, not {levels}")
        if levels == self.levels:
            return False
        self.levels = levels
        canvas = level_of(self.intensity, levels)
        if np.array_equal(canvas, self.canvas):
            return False
        self.canvas = canvas
        self.version += 1
        return True

    def set_canvas(self, image: np.ndarray, record: bool = True) -> None:
        """Put ``image``, levels 0 .. ``levels``-1 (0/1 at two levels: anything above 0.5 is ink),
        on the canvas."""
        img = np.asarray(image).reshape(self.height, self.width)
        if record:
            self._record()
        if self.levels == 2:
            self.canvas = (img > 0.5).astype(np.uint8)
        else:
            vals = np.where(np.isfinite(img), img, 0) if np.issubdtype(img.dtype, np.floating) else img
            self.canvas = np.clip(np.rint(vals), 0, self.levels - 1).astype(np.uint8)
        self.intensity = intensity_of(self.canvas, self.levels)
        self.version += 1

    def set_intensity(self, intensity: np.ndarray, record: bool = True) -> None:
        """Put 0-255 intensities (an imported grey picture, ink high) on the canvas, quantised at ``levels``."""
        img = np.asarray(intensity).reshape(self.height, self.width)
        if record:
            self._record()
        self.intensity = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        self.canvas = level_of(self.intensity, self.levels)
        self.version += 1

    def clear(self) -> None:
        self.set_canvas(np.zeros_like(self.canvas))

    def invert(self) -> None:
        """Ink becomes paper and paper ink (level v becomes K-1-v)."""
        if self.levels == 2:
            self.set_canvas(1 - self.canvas)
        else:
            self.set_intensity(255 - self.intensity)

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
