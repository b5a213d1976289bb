"""The compare dialog and the fork window with a grey model (issue 27): each model of the comparison
sees the drawing at its own levels and the titles say what a grey map shows; the fork shows grey
images on 0..1, its pixels still to draw apart from every grey, and continues a grey run exactly."""

from __future__ import annotations

import numpy as np
import torch
from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest

from app.widgets.inspector import level_ticks
from engine.checkpoint import load_checkpoint
from engine.document import level_of
from engine.figures import pixel_figures

from .test_compare_dialog import open_compare
from .test_grey import grey_bundled, gwin, stroke  # noqa: F401 -- the grey window's fixtures

STEPS = 40


def test_compare_a_grey_model_with_a_binary_and_a_k16_one(qtbot, gwin, grey_bundled):  # noqa: F811
    win = gwin
    assert win.state.levels == 256
    stroke(qtbot, win, [(6, 14), (14, 14), (22, 12)])
    dlg = open_compare(qtbot, win)
    dlg.choose(0, "__current__")
    dlg.choose(1, str(grey_bundled / "fvsbn-binary.safetensors"))
    dlg.choose(2, str(grey_bundled / "fvsbn-grey16.safetensors"))
    qtbot.waitUntil(lambda: dlg.up_to_date and len(dlg.results) == 3, timeout=20000)
    grey, binary, k16 = (f for _, f in dlg.results)
    intensity = win.session.intensity
    # the grey model: the figures the main window shows
    assert grey.levels == 256
    np.testing.assert_allclose(grey.prob, win.figures.prob, atol=1e-6)
    assert grey.log_p == np.float64(win.figures.log_p) or abs(grey.log_p - win.figures.log_p) < 1e-6
    # the binary model sees the drawing as a binary canvas, not levels up to 255 taken for ink values
    bmodel = load_checkpoint(grey_bundled / "fvsbn-binary.safetensors").model
    ref = pixel_figures(bmodel, level_of(intensity, 2))
    assert binary.levels == 2
    np.testing.assert_allclose(binary.nll, ref.nll, atol=1e-5)
    assert np.isfinite(binary.log_p) and binary.log_p == ref.log_p
    # the K = 16 model, at its 16 levels
    kmodel = load_checkpoint(grey_bundled / "fvsbn-grey16.safetensors").model
    ref16 = pixel_figures(kmodel, level_of(intensity, 16))
    assert k16.levels == 16 and abs(k16.log_p - ref16.log_p) < 1e-4
    # the titles say what each grey map is; the colour bar and the difference choice name both kinds
    titles = [c.title.text for c in dlg.columns]
    assert titles[0].endswith("256 levels") and "levels" not in titles[1] and titles[2].endswith("16 levels")
    assert dlg.bar.getAxis("left").labelText == "expected ink"
    assert "E[x_i | x_<i]" in dlg.diff_what.itemText(0) and "p(x_i = 1" in dlg.diff_what.itemText(0)
    # A (256 levels) minus B (binary): the maps differ, the totals are not set against each other
    np.testing.assert_allclose(dlg.diff, grey.prob - binary.prob, atol=1e-6)
    assert "do not compare" in dlg.summary.text and "log p(A) &minus; log p(B)" not in dlg.summary.text
    # two grey columns: the expected intensity, and their totals do compare when the levels agree
    dlg.choose(1, "__current__", "snake")  # NADE is tied to its ordering: this column explains why not
    dlg.choose(2, None)
    qtbot.waitUntil(lambda: dlg.up_to_date and len(dlg.results) == 2, timeout=20000)
    assert isinstance(dlg.results[1][1], str) and "not available" in dlg.results[1][1]
    assert dlg.bar.getAxis("left").labelText == "expected intensity"


def _fork(qtbot, win, steps: int) -> np.ndarray:
    s, fork = win.sampling, win.fork
    win.show_panel(s)
    s.seed.setValue(7)
    s.count.setValue(2)
    s.temperature.setValue(1.0)
    QTest.mouseClick(s.step_btn, Qt.LeftButton)
    qtbot.waitUntil(lambda: win.state.run is not None and win.state.run.frame is not None, timeout=10000)
    for _ in range(steps - 1):
        QTest.mouseClick(s.step_btn, Qt.LeftButton)
    qtbot.waitUntil(lambda: win.state.run.frame.index == steps - 1, timeout=10000)
    prefix = win.state.run.frame.x[0].copy()
    with qtbot.waitSignal(fork.forked, timeout=10000):
        QTest.mouseClick(fork.button, Qt.LeftButton)
    return prefix


def test_fork_a_grey_run_shows_grey_images_and_continues_it_exactly(qtbot, gwin):  # noqa: F811
    win = gwin
    fork = win.fork
    prefix = _fork(qtbot, win, STEPS)
    dlg = fork.dialog
    assert dlg.isVisible() and "blue" in dlg.note.text()
    np.testing.assert_array_equal(win.session.flat(), prefix)
    # drawn pixels on 0..1 (their level over 255), the ones still to draw left out (NaN), on the blue view
    shown = dlg.images[0].image.reshape(-1)
    np.testing.assert_allclose(shown[:STEPS], prefix[:STEPS] / 255, atol=1e-6)
    assert np.isnan(shown[STEPS:]).all()
    assert all(back.isVisible() and back.rect().width() == 28 for back in dlg.pending_backs)
    # edit a drawn pixel with the grey brush: the forked image shows its level, the original not
    win.acts.brush.setValue(1)
    col = int(np.argmin(prefix[:28]))  # the palest drawn pixel of row 0: full ink changes it
    stroke(qtbot, win, [(0, col)])
    edited = win.session.flat().copy()
    changed = edited != prefix
    assert changed[col] and edited[col] > prefix[col]
    forked, original = dlg.images[1].image.reshape(-1), dlg.images[0].image.reshape(-1)
    assert forked[col] == np.float32(edited[col] / 255) and original[col] == np.float32(prefix[col] / 255)
    with qtbot.waitSignal(fork.finished, timeout=60000):
        QTest.mouseClick(dlg.continue_btn, Qt.LeftButton)
    x, lp = fork.result
    # the original continuation is the run's own completion; the fork keeps every edited level
    full = win.model.sample(2, ordering=win.ordering, temperature=1.0, generator=torch.Generator().manual_seed(7)).numpy()
    np.testing.assert_array_equal(x[0], full[0])
    np.testing.assert_array_equal(x[1][changed], edited[changed])
    with torch.no_grad():
        ref = win.model.log_prob(torch.as_tensor(x), win.ordering).double().numpy()
    np.testing.assert_allclose(lp, ref, rtol=1e-5)
    # the finished images are grey, not saturated: levels over 255, the difference likewise
    for i in range(2):
        im = dlg.images[i].image.reshape(-1)
        np.testing.assert_allclose(im, x[i] / 255, atol=1e-6)
    assert len(set(np.unique(x[0]).tolist()) - {0.0, 255.0}) > 10
    np.testing.assert_allclose(dlg.images[2].image.reshape(-1), (x[1] - x[0]) / 255, atol=1e-6)
    assert "more ink in the fork" in dlg.info.text()


def test_a_background_pixels_bars_stand_clear_of_the_axes_and_the_influence_says_what_moves(qtbot, gwin):  # noqa: F811
    win = gwin
    stroke(qtbot, win, [(6, 10), (20, 16)])
    idx = 14 * 28 + 2  # paper, away from the stroke: the conditional's mass is at level 0
    assert win.session.canvas.reshape(-1)[idx] == 0
    win.state.set_pin(idx)
    chart = win.inspector.chart
    assert chart.isVisible() and len(chart.heights) == 256
    pl = chart.getPlotItem()
    # level 0's bar (from -0.5) and level 255's (to 255.5) lie inside the plot, clear of its axes (the
    # left axis's line runs along the view's left edge)
    left = pl.vb.sceneBoundingRect().left()
    x0 = pl.vb.mapViewToScene(QPointF(-0.5, 0.0)).x()
    x255 = pl.vb.mapViewToScene(QPointF(255.5, 0.0)).x()
    assert x0 > left + 4 and x255 < pl.vb.sceneBoundingRect().right() - 4
    ticks = [v for v, _ in pl.getAxis("bottom")._tickLevels[0]]
    assert ticks[0] == 0 and ticks[-1] == 255
    assert level_ticks(4) == [0, 1, 2, 3] and level_ticks(16) == [0, 4, 8, 12, 15]
    # the influence map of a grey pixel: its colour bar names the expected intensity, not p
    qtbot.waitUntil(lambda: win.influence.up_to_date, timeout=60000)
    label = win.influence_view.bar.getAxis("left").labelText
    assert "E[x]" in label and "\u0394p" not in label


def test_one_column_keeps_its_totals_off_the_difference_colour_bar(qtbot, gwin):  # noqa: F811
    win = gwin
    stroke(qtbot, win, [(6, 14), (22, 12)])
    dlg = open_compare(qtbot, win)
    dlg.choose(0, "__current__")
    dlg.choose(1, None)
    qtbot.waitUntil(lambda: dlg.up_to_date and len(dlg.results) == 1, timeout=20000)
    qtbot.wait(50)  # the scene lays the new grid out
    assert len(dlg.columns) == 1 and "nats" in dlg.summary.text
    summary, bar = dlg.summary.sceneBoundingRect(), dlg.diff_bar.sceneBoundingRect()
    assert summary.width() > 0 and not summary.intersects(bar)
