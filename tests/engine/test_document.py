"""The canvas document (engine/document.py): brushes, strokes, the mask and the undo history."""

from __future__ import annotations

import numpy as np

from engine.document import Session, brush_offsets


def test_brush_sizes_grow_and_are_centred():
    sizes = [len(brush_offsets(s)) for s in range(1, 6)]
    assert sizes[0] == 1 and sizes == sorted(sizes) and sizes[-1] > 9
    assert (0, 0) in brush_offsets(3) and (-1, 0) in brush_offsets(3) and (1, 0) in brush_offsets(3)


def test_stroke_undo_redo_invert_clear():
    s = Session()
    s.begin_stroke()
    assert s.paint(5, 2, 1, from_point=(5, 20))  # a horizontal line with no gaps
    s.end_stroke()
    assert s.canvas[5, 2:21].all() and s.canvas.sum() == 19
    drawn = s.canvas.copy()
    s.invert()
    assert s.canvas.sum() == 784 - 19
    assert s.undo() and np.array_equal(s.canvas, drawn)
    assert s.undo() and s.canvas.sum() == 0 and not s.can_undo
    assert s.redo() and np.array_equal(s.canvas, drawn)
    s.clear()
    assert s.canvas.sum() == 0 and s.can_undo and not s.can_redo


def test_a_stroke_that_changes_nothing_leaves_no_undo_step_and_mask_is_separate():
    s = Session()
    s.begin_stroke()
    assert not s.paint(3, 3, 0)
    s.end_stroke()
    assert not s.can_undo
    v = s.version
    s.begin_stroke()
    s.paint(27, 27, 1, brush=3, mask=True)
    s.end_stroke()
    assert s.mask[27, 27] and s.mask[26, 27] and s.mask[27, 26] and s.canvas.sum() == 0 and s.version == v
    assert (~s.known).sum() == s.mask.sum()
    s.undo()
    assert not s.mask.any()
