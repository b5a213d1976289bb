"""The main window driven as a user would: mouse strokes, pickers, hover, sampling, inpainting,
menus. Runs offscreen (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QFileDialog

from engine.checkpoint import save_checkpoint
from engine.models import build_model
from engine.ordering import make_ordering


def _pt(canvas, r, c) -> QPoint:
    return canvas.pixel_center(r, c).toPoint()


def stroke(qtbot, win, points, button=Qt.LeftButton):
    """Press at the first pixel, move through the others, release; wait for the new heatmaps."""
    cv = win.canvas
    with qtbot.waitSignal(win.figuresShown, timeout=10000):
        QTest.mousePress(cv, button, Qt.NoModifier, _pt(cv, *points[0]))
        for p in points[1:]:
            QTest.mouseMove(cv, _pt(cv, *p))
        QTest.mouseRelease(cv, button, Qt.NoModifier, _pt(cv, *points[-1]))


def test_starts_on_the_best_bundled_model_and_lists_all(win):
    assert win.entry.name == "made-raster"  # lowest test NLL of the three
    labels = [win.model_picker.itemText(i) for i in range(win.model_picker.count())]
    assert len(labels) == 3 and any("FVSBN" in t and "99.00" in t for t in labels)
    assert [a.text() for a in win.acts.bundled_menu.actions()][0].startswith("fvsbn-snake")


def test_drawing_updates_heatmaps_and_the_readout(qtbot, win, data_dir):
    before = win.figures
    n0 = win.heatmaps.updates
    stroke(qtbot, win, [(8, 8), (8, 14), (14, 14), (20, 14)])
    assert win.session.canvas[8, 8:15].all() and win.session.canvas[8:21, 14].all()
    after = win.figures
    assert win.heatmaps.updates > n0
    assert not np.allclose(before.prob, after.prob)  # the conditionals depend on the drawing
    np.testing.assert_array_equal(win.heatmaps.prob.image.image, after.prob.astype(np.float32))
    assert win.heatmaps.prob.image.levels.tolist() == [0.0, 1.0]  # fixed levels
    assert f"{after.log_p:.2f}" in win.readout.logp.text()
    assert f"{after.bits_per_pixel:.4f}" in win.readout.bpp.text()
    qtbot.waitUntil(lambda: win.readout.percentile is not None, timeout=20000)
    assert "percentile" in win.readout.pct.text() and "10,000 test digits" in win.readout.pct.text()
    # right button erases; Ctrl+Z brings the line back
    stroke(qtbot, win, [(8, 8), (8, 14)], Qt.RightButton)
    assert not win.session.canvas[8, 8:15].any()
    with qtbot.waitSignal(win.figuresShown, timeout=10000):
        QTest.keyClick(win, Qt.Key_Z, Qt.ControlModifier)
    assert win.session.canvas[8, 8:15].all()
    with qtbot.waitSignal(win.figuresShown, timeout=10000):
        QTest.keyClick(win, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert not win.session.canvas[8, 8:15].any()
    assert win.live.last_latency is not None and win.live.last_latency < 5


def test_fixed_order_model_disables_other_orderings_with_the_reason(win):
    picker = win.ordering_picker
    assert picker.is_enabled("raster") and not picker.is_enabled("snake")
    assert "raster ordering only" in picker.tooltip("snake")
    assert not picker.is_enabled("raster/turn") and "raster ordering only" in picker.tooltip("raster/turn")


def test_switching_ordering_recomputes_the_conditionals(qtbot, win, bundled):
    with qtbot.waitSignal(win.figuresShown, timeout=20000):
        win.checkpoints.open_checkpoint(bundled / "made-any.safetensors")
    stroke(qtbot, win, [(10, 5), (10, 22)])
    assert all(win.ordering_picker.is_enabled(n) for n in ("raster", "snake", "hilbert", "random"))
    raster = win.figures
    combo = win.ordering_picker.combo
    with qtbot.waitSignal(win.figuresShown, timeout=10000):
        combo.setCurrentIndex(combo.findData("spiral-out"))
        combo.activated.emit(combo.currentIndex())
    assert win.ordering == make_ordering("spiral-out") and win.canvas.ordering == win.ordering
    assert win.figures.ordering == win.ordering
    assert not np.allclose(win.figures.prob, raster.prob)
    # the line scans from the other corners are offered too, after a separator
    assert win.ordering_picker.is_enabled("snake/turn")
    assert win.ordering_picker.tooltip("snake/turn") == "snake, started from the bottom-right corner"
    with qtbot.waitSignal(win.figuresShown, timeout=10000):
        combo.setCurrentIndex(combo.findData("snake/turn"))
        combo.activated.emit(combo.currentIndex())
    assert win.ordering == make_ordering("snake/turn") and win.ordering.perm[0] == 28 * 28 - 1
    # a seeded family takes its seed from the spin box next to the list
    win.ordering_picker.seed.setValue(5)
    with qtbot.waitSignal(win.figuresShown, timeout=10000):
        combo.setCurrentIndex(combo.findData("random-rows"))
        combo.activated.emit(combo.currentIndex())
    assert win.ordering == make_ordering("random-rows", seed=5) and win.ordering_picker.seed.isVisible()
    # the overlay follows the ordering
    win.acts.overlay_combo.activated.emit(win.acts.overlay_combo.findData("path"))
    assert win.canvas.overlay == "path"


def test_hover_and_pin_show_the_pixel_and_its_predecessors(qtbot, win):
    stroke(qtbot, win, [(12, 12), (12, 16)])
    cv = win.canvas
    QTest.mouseMove(cv, _pt(cv, 12, 14))
    qtbot.waitUntil(lambda: win.inspector.pixel == 12 * 28 + 14, timeout=5000)
    f = win.inspector.fields
    assert f["pixel"].text().startswith("(12, 14)")
    assert f["step"].text().startswith(f"{12 * 28 + 14 + 1} of 784")  # raster ordering
    assert f["prob"].text() == f"{win.figures.prob[12, 14]:.4f}"
    win.state.set_tool("inspect")
    QTest.mouseClick(cv, Qt.LeftButton, Qt.NoModifier, _pt(cv, 12, 14))
    assert win.state.pinned == 12 * 28 + 14 and cv.pinned_pixel == win.state.pinned
    assert win.inspector.unpin.isEnabled() and "Pinned" in win.inspector.mode.text()
    # hovering elsewhere does not replace the pinned pixel; the canvas was not drawn on
    QTest.mouseMove(cv, _pt(cv, 3, 3))
    assert win.inspector.pixel == win.state.pinned and win.session.canvas[12, 14] == 1
    win.inspector.unpin.click()
    assert win.state.pinned == -1 and cv.pinned_pixel == -1


def test_run_and_stop_sampling(qtbot, win):
    stroke(qtbot, win, [(5, 5), (5, 10)])
    before = win.session.canvas.copy()
    s = win.sampling
    s.speed.setValue(1)  # 5 pixels per second: the run is still going when we stop it
    s.run_btn.click()
    assert win.state.running and win.state.locked and s.stop_btn.isEnabled()
    qtbot.waitUntil(lambda: s.progress.value() >= 1, timeout=10000)
    assert win.canvas.current_pixel >= 0 and "p(x=1)" in s.live.text()
    with qtbot.waitSignal(win.runFinished, timeout=5000) as blocker:
        s.stop_btn.click()
    assert blocker.args == [False]
    assert not win.state.running and not win.state.locked and win.canvas.display is None
    np.testing.assert_array_equal(win.session.canvas, before)


def test_sample_a_batch_into_the_grid_and_save_it(qtbot, win, tmp_path):
    s = win.sampling
    s.count.setValue(4)
    s.speed.setValue(len(s.SPEEDS) - 1 if hasattr(s, "SPEEDS") else 6)
    with qtbot.waitSignal(win.runFinished, timeout=30000) as blocker:
        s.run_btn.click()
    assert blocker.args == [True]
    assert s.images.shape == (4, 784) and set(np.unique(s.images)) <= {0.0, 1.0}
    np.testing.assert_array_equal(win.session.canvas.reshape(-1), s.images[0])
    win.runs.save_grid(str(tmp_path / "grid.png"))
    assert (tmp_path / "grid.png").stat().st_size > 0
    win.runs.use_sample(2)
    np.testing.assert_array_equal(win.session.canvas.reshape(-1), s.images[2])


def test_single_steps_draw_one_pixel_each(qtbot, win):
    s = win.sampling
    s.step_btn.click()  # starts a paused run and draws one pixel
    qtbot.waitUntil(lambda: s.progress.value() == 1, timeout=10000)
    s.step_btn.click()
    qtbot.waitUntil(lambda: s.progress.value() == 2, timeout=10000)
    assert win.state.running and s.pause_btn.isChecked()
    assert win.canvas.current_pixel == 1  # raster: the second pixel
    with qtbot.waitSignal(win.runFinished, timeout=5000):
        s.stop_btn.click()


@pytest.mark.parametrize("name, region, exact",
                         [("made-any", "left", True), ("made-raster", "lower", True), ("made-raster", "left", False)])
def test_inpainting_keeps_known_pixels(qtbot, win, bundled, name, region, exact):
    if win.entry.name != name:
        with qtbot.waitSignal(win.figuresShown, timeout=20000):
            win.checkpoints.open_checkpoint(bundled / f"{name}.safetensors")
    stroke(qtbot, win, [(4, 14), (24, 14)])
    stroke(qtbot, win, [(14, 6), (14, 22)])
    original = win.session.canvas.copy()
    if region == "lower":
        win.sampling.mask_half.click()
        assert win.session.mask[14:].all() and not win.session.mask[:14].any()
    else:  # paint the left half with the mask brush
        win.state.set_tool("mask")
        win.acts.brush.setValue(5)
        for r in range(2, 28, 5):
            QTest.mousePress(win.canvas, Qt.LeftButton, Qt.NoModifier, _pt(win.canvas, r, 2))
            QTest.mouseMove(win.canvas, _pt(win.canvas, r, 11))
            QTest.mouseRelease(win.canvas, Qt.LeftButton, Qt.NoModifier, _pt(win.canvas, r, 11))
        assert win.session.mask[:, 2:12].all() and not win.session.mask[:, 16:].any()
        np.testing.assert_array_equal(win.session.canvas, original)  # the mask brush leaves the ink alone
        win.sampling.mode_inpaint.setChecked(True)
    note = win.sampling.exactness.text()
    assert ("Exact" in note) == exact and ("Approximate" in note) != exact
    if not exact:
        assert "ignored" in note
    s = win.sampling
    assert s.mode_inpaint.isChecked()
    s.count.setValue(3)
    with qtbot.waitSignal(win.runFinished, timeout=30000) as blocker:
        s.run_btn.click()
    assert blocker.args == [True]
    known = ~win.session.mask.reshape(-1)
    for img in s.images:
        np.testing.assert_array_equal(img[known], original.reshape(-1)[known])
    np.testing.assert_array_equal(win.session.canvas.reshape(-1)[known], original.reshape(-1)[known])


def test_inpaint_without_a_mask_explains_instead_of_running(qtbot, win):
    win.sampling.mode_inpaint.setChecked(True)
    win.sampling.run_btn.click()
    assert not win.state.running and "mask" in win.last_error.lower()


def test_open_checkpoint_through_the_menu(qtbot, win, bundled, monkeypatch, tmp_path):
    # a copy outside the bundled folder: it joins the recent files (a bundled model stays bundled:
    # test_first_hour.py)
    path = tmp_path / "fvsbn-snake.safetensors"
    path.write_bytes((bundled / "fvsbn-snake.safetensors").read_bytes())
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))
    with qtbot.waitSignal(win.modelChanged, timeout=20000):
        win.acts.act_open.trigger()
    assert win.model.family == "fvsbn" and win.ordering == make_ordering("snake")
    assert win.ordering_picker.combo.currentData() == "snake" and not win.ordering_picker.is_enabled("raster")
    recent = [a.text() for a in win.acts.recent_menu.actions()]
    assert recent[0] == path.name
    assert Path(win.settings.value("recent/checkpoints")[0]) == path.resolve()


def test_a_broken_checkpoint_gives_an_error_and_keeps_the_model(qtbot, win, tmp_path, monkeypatch):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x02 this is a pickle, not a checkpoint")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(bad), "")))
    model = win.model
    win.acts.act_open.trigger()
    qtbot.waitUntil(lambda: "bad.safetensors" in win.last_error, timeout=10000)
    assert "pickle" in win.last_error and win.model is model


def test_import_export_invert_and_test_digit(qtbot, win, tmp_path, data_dir):
    from PIL import Image, ImageDraw

    img = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(img).rectangle((90, 30, 110, 170), fill=0)  # a dark "1" on white
    img.save(tmp_path / "one.png")
    with qtbot.waitSignal(win.figuresShown, timeout=10000):
        assert win.editing.import_image_file(tmp_path / "one.png")
    c = win.session.canvas
    assert c[14, 14] == 1 and c[14, 3] == 0 and c.sum() > 20
    assert win.editing.export_image_file(tmp_path / "out.png", scale=2)
    with Image.open(tmp_path / "out.png") as out:
        assert out.size == (56, 56)
    with qtbot.waitSignal(win.figuresShown, timeout=10000):
        win.acts.act_invert.trigger()
    assert win.session.canvas[14, 3] == 1
    assert not win.editing.import_image_file(tmp_path / "missing.png") and "missing.png" in win.last_error
    with qtbot.waitSignal(win.figuresShown, timeout=20000):
        win.acts.act_random.trigger()
    # a real test digit, whichever was drawn (a thin "1" can have fewer than 50 pixels on)
    from engine.data import load_split

    test = load_split("test").reshape(-1, 28, 28)
    assert win.session.canvas.sum() > 0
    assert (test == win.session.canvas[None]).all(axis=(1, 2)).any()


def test_no_checkpoints_gives_a_usable_untrained_model(make_window, tmp_path):
    win = make_window(tmp_path / "empty")
    assert win.entry is None and win.model.family == "fvsbn"
    assert "untrained" in win.model_picker.currentText()
    assert win.figures is not None


def test_rapid_strokes_end_on_the_heatmaps_of_the_final_canvas(qtbot, win):
    """Newest request wins: after a burst of strokes the heatmaps show the last canvas exactly."""
    from engine.figures import pixel_figures

    cv = win.canvas
    for k in range(12):
        r = 3 + 2 * k
        QTest.mousePress(cv, Qt.LeftButton, Qt.NoModifier, _pt(cv, r, 4))
        QTest.mouseMove(cv, _pt(cv, r, 12 + k))
        QTest.mouseRelease(cv, Qt.LeftButton, Qt.NoModifier, _pt(cv, r, 12 + k))
    qtbot.waitUntil(lambda: not win.live.pending and win.figures is not None
                    and np.allclose(win.heatmaps.prob.image.image,
                                    pixel_figures(win.model, win.session.canvas, win.ordering).prob, atol=1e-5),
                    timeout=10000)
    assert win.figures.log_p == pytest.approx(pixel_figures(win.model, win.session.canvas, win.ordering).log_p, abs=1e-3)
    assert win.session.canvas[25, 4:23].all()


def test_a_model_for_another_image_size_is_refused_and_the_current_one_kept(qtbot, win, tmp_path):
    from engine.checkpoint import save_checkpoint
    from engine.models import build_model
    from engine.ordering import make_ordering as mk

    tiny = build_model("fvsbn", {"height": 2, "width": 4}, mk("raster", 2, 4))
    save_checkpoint(tmp_path / "tiny.safetensors", tiny, {"name": "tiny"})
    model = win.model
    win.checkpoints.open_checkpoint(tmp_path / "tiny.safetensors")
    qtbot.waitUntil(lambda: "2x4" in win.last_error, timeout=10000)
    assert win.model is model and win.ordering.size == 784
    assert not any("tiny" in e.name for e in win.model_picker.entries)
    stroke(qtbot, win, [(3, 3), (3, 9)])  # still working


def test_save_checkpoint_as_and_export_through_the_menu(qtbot, win, tmp_path, monkeypatch):
    from engine.checkpoint import load_checkpoint

    target = tmp_path / "copy"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), "")))
    win.acts.act_save.trigger()
    saved = tmp_path / "copy.safetensors"
    qtbot.waitUntil(lambda: saved.is_file() and win.acts.recent_menu.actions()[0].text() == saved.name, timeout=10000)
    ck = load_checkpoint(saved)
    assert ck.meta["name"] == "copy" and ck.model.family == win.model.family
    assert ck.meta["metrics"]["test_nll"] == 90.0  # the measured figures travel with the weights
    stroke(qtbot, win, [(10, 10), (18, 10)])
    png = tmp_path / "digit.png"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(png), "")))
    win.acts.act_export.trigger()
    from PIL import Image

    with Image.open(png) as im:
        pixels = np.asarray(im.convert("L"))
    assert pixels.shape == (280, 280)  # 10 screen pixels per image pixel
    np.testing.assert_array_equal((pixels[5::10, 5::10] < 128).astype(np.uint8), win.session.canvas)


def test_closing_the_window_during_a_sampling_run(qtbot, make_window, bundled):
    win = make_window(bundled)
    win.sampling.speed.setValue(1)
    win.sampling.run_btn.click()
    qtbot.waitUntil(lambda: win.sampling.progress.value() >= 1, timeout=10000)
    visible_while_panels_stop: list[bool] = []
    win.state.closing.connect(lambda: visible_while_panels_stop.append(win.isVisible()))
    win.close()
    assert not win.runs.worker._thread.isRunning() and not win.compute._thread.isRunning()
    # the window is gone before the panels wait for their workers (a pass may take seconds)
    assert visible_while_panels_stop == [False]
    assert not win.fork.worker._thread.isRunning() and not win.compress_panel.worker._thread.isRunning()


def test_hovering_and_clicking_a_heatmap_maps_to_the_right_pixel(qtbot, win):
    from PySide6.QtCore import QPointF

    hm = win.heatmaps
    for m in hm.maps:
        pos = m.plot.vb.mapViewToScene(QPointF(20.5, 5.5))  # x = column 20, y = row 5 (y axis points down)
        hm.scene().sigMouseMoved.emit(pos)
        assert win.inspector.pixel == 5 * 28 + 20
        assert win.inspector.fields["pixel"].text().startswith("(5, 20)")
    with qtbot.waitSignal(hm.pinned, timeout=2000) as blocker:
        hm.pinned.emit(hm._pixel(hm.nll.plot.vb.mapViewToScene(QPointF(3.5, 25.5))))
    assert blocker.args == [25 * 28 + 3] and win.state.pinned == 25 * 28 + 3 and win.canvas.pinned_pixel == win.state.pinned


def test_export_the_conditionals_as_a_table_and_as_an_image(qtbot, win, tmp_path):
    import csv

    from PIL import Image

    stroke(qtbot, win, [(6, 8), (20, 8)])
    qtbot.waitUntil(lambda: win.figures is not None and not win.live.pending
                    and np.array_equal(win.figures.extra["image"], win.session.flat()), timeout=20000)
    figs = win.figures
    assert win.editing.export_conditionals(tmp_path / "c.csv")
    text = (tmp_path / "c.csv").read_text()
    comments = [ln for ln in text.splitlines() if ln.startswith("#")]
    assert any(win.ordering.label in ln for ln in comments) and any(f"{figs.log_p:.6f}" in ln for ln in comments)
    rows = list(csv.DictReader(ln for ln in text.splitlines() if not ln.startswith("#")))
    assert len(rows) == 784
    # one row per step of the ordering, each the pixel the ordering visits then
    assert [int(r["step"]) for r in rows] == list(range(1, 785))
    assert [int(r["raster_index"]) for r in rows] == [int(i) for i in win.ordering.perm]
    flat = win.session.flat()
    for r in rows:
        i = int(r["raster_index"])
        assert (int(r["row"]), int(r["col"])) == divmod(i, 28) and int(r["value"]) == int(flat[i])
        assert float(r["p_one"]) == pytest.approx(float(figs.prob.reshape(-1)[i]), rel=1e-5, abs=1e-9)
    nll = np.array([float(r["nll_nats"]) for r in rows])
    assert -nll.sum() == pytest.approx(figs.log_p, abs=1e-3)
    assert float(rows[-1]["log_p_so_far_nats"]) == pytest.approx(figs.log_p, abs=1e-3)
    assert win.editing.export_conditionals(tmp_path / "maps.png")
    with Image.open(tmp_path / "maps.png") as im:
        assert im.size[0] >= win.heatmaps.width() and im.size[1] >= win.heatmaps.height()
    errors = []
    win.state.error.connect(errors.append)
    assert not win.editing.export_conditionals(tmp_path / "missing" / "c.csv")
    assert errors and "Cannot save" in errors[0] and win.isVisible()
    # a save that fails half-way leaves the earlier file as it was and no temporary file
    import engine.atomic

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    real_fsync = engine.atomic.os.fsync
    engine.atomic.os.fsync = broken_fsync
    try:
        assert not win.editing.export_conditionals(tmp_path / "c.csv") and not win.editing.export_conditionals(tmp_path / "maps.png")
    finally:
        engine.atomic.os.fsync = real_fsync
    assert "No space left" in errors[-1]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_a_test_digit_arriving_during_a_run_leaves_the_runs_canvas_alone(qtbot, win, data_dir):
    """The test digit loads on a worker; a run started before it arrives owns the canvas, so the
    digit is not drawn under it (which left a canvas that was neither the run's nor the digit's)."""
    s = win.sampling
    s.speed.setValue(1)  # slow: the run is still going when the digit arrives
    before = win.session.canvas.copy()
    win.editing.load_test_digit(0)  # its result is delivered through the event loop: after the click below
    s.run_btn.click()
    assert win.state.running and win.state.locked
    qtbot.waitUntil(lambda: "not drawn" in win.statusBar().currentMessage(), timeout=20000)
    with qtbot.waitSignal(win.runFinished, timeout=5000):
        s.stop_btn.click()
    np.testing.assert_array_equal(win.session.canvas, before)
    win.editing.load_test_digit(0)  # not running: the digit is drawn (figures of the stopped run may come first)
    qtbot.waitUntil(lambda: win.session.canvas.sum() > 0, timeout=20000)


def test_inpainting_note_names_the_trained_ordering_it_uses(qtbot, win, tmp_path):
    """An order-agnostic model trained on fixed curves fills the lower half in the one of them that
    puts the known upper half first (raster here), whatever ordering the window shows."""
    torch.manual_seed(0)
    model = build_model("lstm", {"hidden": 8, "embed": 4, "order_agnostic": True, "train_orderings": ["spiral-in", "raster"]})
    path = save_checkpoint(tmp_path / "lstm-curves.safetensors", model, {"name": "lstm-curves"})
    with qtbot.waitSignal(win.figuresShown, timeout=20000):
        win.checkpoints.open_checkpoint(path)
    combo = win.ordering_picker.combo
    with qtbot.waitSignal(win.figuresShown, timeout=10000):
        combo.setCurrentIndex(combo.findData("hilbert"))
        combo.activated.emit(combo.currentIndex())
    win.sampling.mask_half.click()
    note = win.sampling.exactness.text()
    assert "Exact" in note and "raster ordering, one it was trained on" in note
    with qtbot.waitSignal(win.figuresShown, timeout=10000):
        combo.setCurrentIndex(combo.findData("snake"))
        combo.activated.emit(combo.currentIndex())
    # the note follows the ordering: snake already has the upper half first
    assert "snake ordering already puts the 392 known pixels first" in win.sampling.exactness.text()
