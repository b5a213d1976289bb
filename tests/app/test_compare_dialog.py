"""View ▸ Compare Models… driven as a user would: the canvas under several models and orderings,
maps on one colour scale, totals, and the difference map."""

from __future__ import annotations

import math

import numpy as np

from engine.checkpoint import load_checkpoint
from engine.figures import pixel_figures
from engine.ordering import make_ordering

from .test_main_window import stroke


def open_compare(qtbot, win):
    view = next(a.menu() for a in win.menuBar().actions() if a.text().replace("&", "") == "View")
    act = next(a for a in view.actions() if a.text().replace("&", "").startswith("Compare Models"))
    act.trigger()
    dlg = win.compare.dialog
    qtbot.waitUntil(lambda: dlg.up_to_date, timeout=20000)
    return dlg


def figs_of(dlg):
    return [f for _, f in dlg.results]


def test_two_models_side_by_side_with_a_difference_map(qtbot, win, bundled):
    stroke(qtbot, win, [(6, 14), (14, 14), (22, 14)])
    dlg = open_compare(qtbot, win)
    assert dlg.isVisible() and len(dlg.results) == 2 and len(dlg.columns) == 2
    a, b = figs_of(dlg)
    np.testing.assert_allclose(a.prob, win.figures.prob, atol=1e-6)  # column A: the model shown
    other = dlg.model_boxes[1].currentData()  # column B: the next model of the picker's list
    assert other.endswith(".safetensors") and other != str(win.entry.path)
    ref = pixel_figures(load_checkpoint(other).model, win.session.canvas)
    np.testing.assert_allclose(b.prob, ref.prob, atol=1e-6)
    # the same fixed colour scale on every map, one colour bar for them all
    for c, f in zip(dlg.columns, (a, b), strict=True):
        assert c.image.levels.tolist() == [0.0, 1.0]
        np.testing.assert_array_equal(c.image.image, f.prob.astype(np.float32))
        assert f"{-f.log_p:.1f}" in c.totals.text
        assert f"{-f.log_p / (784 * math.log(2)):.4f} bits/pixel" in c.totals.text
    assert {id(r()) for r in dlg.bar.img_list} == {id(c.image) for c in dlg.columns}
    # the difference map: A - B of the probabilities on fixed symmetric levels
    np.testing.assert_allclose(dlg.diff, a.prob - b.prob, atol=1e-6)
    assert dlg.diff_image.levels.tolist() == [-1.0, 1.0]
    assert f"{a.log_p - b.log_p:+.1f}" in dlg.summary.text
    # ... or of -log p(x_i | x_<i), swapped: B - A, levels +-5 nats
    dlg.diff_what.setCurrentIndex(dlg.diff_what.findData("nll"))
    dlg.diff_what.activated.emit(dlg.diff_what.currentIndex())
    dlg.diff_a.setCurrentIndex(1)
    dlg.diff_a.activated.emit(1)
    dlg.diff_b.setCurrentIndex(0)
    dlg.diff_b.activated.emit(0)
    np.testing.assert_allclose(dlg.diff, b.nll - a.nll, atol=1e-6)
    assert dlg.diff_image.levels.tolist() == [-5.0, 5.0]
    # drawing on the canvas updates the comparison
    with qtbot.waitSignal(dlg.computed, timeout=20000):
        stroke(qtbot, win, [(10, 4), (10, 24)])
    qtbot.waitUntil(lambda: dlg.up_to_date, timeout=20000)
    np.testing.assert_allclose(figs_of(dlg)[0].prob, win.figures.prob, atol=1e-6)


def test_one_any_order_model_under_several_orderings(qtbot, win, bundled):
    with qtbot.waitSignal(win.figuresShown, timeout=20000):
        win.checkpoints.open_checkpoint(bundled / "made-any.safetensors")
    stroke(qtbot, win, [(5, 8), (20, 20)])
    dlg = open_compare(qtbot, win)
    names = [None, "snake", "spiral-out", "hilbert"]
    for i, name in enumerate(names):
        dlg.choose(i, "__current__", name)
    qtbot.waitUntil(lambda: dlg.up_to_date and len(dlg.results) == 4, timeout=20000)
    assert len(dlg.columns) == 4
    figs = figs_of(dlg)
    for name, f in zip(names, figs, strict=True):
        order = win.model.ordering if name is None else make_ordering(name)
        ref = pixel_figures(win.model, win.session.canvas, order)
        np.testing.assert_allclose(f.prob, ref.prob, atol=1e-6)
        assert math.isclose(f.log_p, ref.log_p, rel_tol=1e-6)
    assert len({round(f.log_p, 3) for f in figs}) == 4  # log p(x) depends on the ordering
    # a model tied to one ordering says why instead of a map
    fixed = str(bundled / "fvsbn-snake.safetensors")
    dlg.choose(3, fixed, "raster")
    qtbot.waitUntil(lambda: dlg.up_to_date and isinstance(dlg.results[3][1], str), timeout=20000)
    assert "snake ordering only" in dlg.results[3][1] and "not available" in dlg.columns[3].totals.text
    assert not dlg.columns[3].image.isVisible() and dlg.columns[2].image.isVisible()  # no blank map posing as p = 0
    dlg.choose(2, None)
    dlg.choose(3, None)
    qtbot.waitUntil(lambda: dlg.up_to_date and len(dlg.results) == 2, timeout=20000)
    assert len(dlg.columns) == 2
