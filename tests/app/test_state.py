"""The app state (app.state.AppState): what it holds, the signals it sends, and that the panels and
dialogs built on it work from a state alone, without a main window."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtWidgets import QWidget

from app.state import AppState, Run
from app.worker import Job
from engine.figures import pixel_figures
from engine.models import build_model
from engine.ordering import make_ordering


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model("fvsbn").eval()


def spy(signal) -> list:
    seen: list = []
    signal.connect(lambda *a: seen.append(a))
    return seen


def test_model_ordering_and_canvas_changes_are_announced(qtbot, model):
    st = AppState()
    changed, ordered, canvas, replaced = spy(st.modelChanged), spy(st.orderingChanged), spy(st.canvasChanged), spy(st.canvasReplaced)
    st.set_model(model, None, {"name": "x"})
    assert st.model is model and st.meta == {"name": "x"} and st.ordering == model.ordering and st.model_key == 1
    assert len(changed) == 1
    st.set_model(model, None)  # the same model again is a new key: results for the old one are stale
    assert st.model_key == 2 and len(changed) == 2
    st.set_ordering(make_ordering("snake"))
    assert len(ordered) == 1 and st.canvas_key() == (2, make_ordering("snake"), st.session.version)
    img = np.zeros((28, 28), np.uint8)
    img[5:9, 5:9] = 1
    mask = np.zeros((28, 28), bool)
    mask[20:] = True
    v = st.session.version
    st.replace_canvas(img, mask=mask)
    assert st.session.version > v and st.session.canvas.sum() == 16 and st.session.mask.sum() == 8 * 28
    assert len(replaced) == 1 and len(canvas) == 1
    assert st.session.undo() and st.session.canvas.sum() == 0 and not st.session.mask.any()  # one undo step
    st.canvas_edited()
    assert len(canvas) == 2 and len(replaced) == 1


def test_a_run_is_started_paused_and_ended_through_the_state(qtbot):
    st = AppState()
    runs, frames, finished = spy(st.runChanged), spy(st.runFrame), spy(st.runFinished)
    job = Job(1, lambda job: None, (), {})
    st.show_frame("ignored: no run")
    assert frames == []
    st.start_run(Run(job, "sample", 4, 7, 1.0, np.ones(784, bool)))
    assert st.running and len(runs) == 1
    st.show_frame("frame")
    assert st.run.frame == "frame" and frames == [("frame",)]
    st.pause_run(True)
    assert job.paused and st.run.paused and len(runs) == 2
    st.stop_run()
    assert job.cancelled and st.running  # it ends when the worker says so
    st.end_run()
    st.run_finished(False)
    assert not st.running and len(runs) == 3 and finished == [(False,)]


def test_the_compare_dialog_works_from_a_state_alone(qtbot):
    from app.widgets.compare import CompareDialog

    torch.manual_seed(0)
    model = build_model("made", {"hidden": (48,), "order_agnostic": True, "num_masks": 0}).eval()
    st = AppState()
    parent = QWidget()
    qtbot.addWidget(parent)
    dlg = CompareDialog(st, parent=parent)
    try:
        _compare_follows_the_state(qtbot, st, dlg, model)
    finally:
        st.closing.emit()  # the dialog stops its worker
    assert not dlg.worker._thread.isRunning()


def _compare_follows_the_state(qtbot, st, dlg, model):
    st.set_model(model, None)
    img = np.zeros((28, 28), np.uint8)
    img[10:18, 12:15] = 1
    st.replace_canvas(img)
    dlg.choose(0, "__current__", None)
    dlg.choose(1, "__current__", "snake")
    dlg.show()
    qtbot.waitUntil(lambda: dlg.up_to_date and len(dlg.results) == 2, timeout=20000)
    ref = pixel_figures(model, img, make_ordering("snake"))
    np.testing.assert_allclose(dlg.results[1][1].prob, ref.prob, atol=1e-6)
    # the canvas changes: the maps follow once the state says so
    img[2, 2] = 1
    st.replace_canvas(img)
    st.figures_shown()
    assert not dlg.up_to_date
    qtbot.waitUntil(lambda: dlg.up_to_date, timeout=20000)
    np.testing.assert_allclose(dlg.results[0][1].prob, pixel_figures(model, img).prob, atol=1e-6)


def test_pin_and_hover_are_announced(qtbot):
    st = AppState()
    pins, hovers = spy(st.pinChanged), spy(st.hoverChanged)
    st.set_hover(30)
    assert st.hover == 30 and hovers == [(30,)] and st.inspected == 30  # nothing pinned: the hovered pixel
    st.set_pin(100)
    assert st.pinned == 100 and pins == [(100,)] and st.inspected == 100  # the pinned pixel wins over the hover
    st.toggle_pin(100)  # the pinned pixel again unpins
    assert st.pinned == -1 and pins[-1] == (-1,) and st.inspected == 30
    st.toggle_pin(7)
    assert st.pinned == 7 and pins[-1] == (7,) and len(pins) == 3


def test_every_change_of_the_mask_and_the_ink_is_announced(qtbot):
    st = AppState()
    masks, inks, canvas, replaced = spy(st.maskChanged), spy(st.inkPainted), spy(st.canvasChanged), spy(st.canvasReplaced)
    strokes = spy(st.strokeFinished)
    assert st.begin_stroke()
    assert st.paint(3, 4, 1, mask=True) and st.session.mask[3, 4] and len(masks) == 1 and inks == [] and canvas == []
    assert st.paint(5, 5, 1) and st.session.canvas[5, 5] == 1 and len(inks) == 1 and len(canvas) == 1
    assert not st.paint(5, 5, 1) and len(inks) == 1 and len(canvas) == 1  # nothing changed: nothing said
    st.end_stroke()
    assert len(strokes) == 1
    st.set_brush(3)
    assert st.paint(20, 20, 1, mask=True) and len(masks) == 2
    assert st.session.mask[19:22, 20].all() and st.session.mask[20, 19:22].all()  # the state's brush, not 1
    st.clear_mask()
    assert not st.session.mask.any() and len(masks) == 3
    st.mask_lower_half()
    assert st.session.mask[14:].all() and not st.session.mask[:14].any() and len(masks) == 4
    st.set_mask(np.zeros((28, 28), bool))
    assert not st.session.mask.any() and len(masks) == 5
    for command in (st.invert_canvas, st.clear_canvas, st.undo, st.redo):
        n = len(replaced)
        command()
        assert len(replaced) == n + 1, command.__name__
    assert replaced and len(canvas) == 1 + len(replaced)  # a replaced canvas is a changed one too


def test_a_run_locks_the_canvas_against_every_edit(qtbot):
    st = AppState()
    st.replace_canvas(np.eye(28, dtype=np.uint8))
    locks = spy(st.lockChanged)
    st.start_run(Run(Job(1, lambda job: None, (), {}), "sample", 1, 0, 1.0, np.ones(784, bool)))
    assert st.locked and locks == [(True,)]
    before, version, replaced = st.session.canvas.copy(), st.session.version, spy(st.canvasReplaced)
    assert not st.begin_stroke()
    for command in (st.undo, st.redo, st.clear_canvas, st.invert_canvas):
        command()
    np.testing.assert_array_equal(st.session.canvas, before)
    assert st.session.version == version and replaced == []
    st.end_run()
    assert not st.locked and locks == [(True,), (False,)]
    st.clear_canvas()
    assert not st.session.canvas.any() and len(replaced) == 1


def test_figures_tool_overlay_and_read_outs_are_announced(qtbot, model):
    st = AppState()
    figures, tools, overlays = spy(st.figuresChanged), spy(st.toolChanged), spy(st.overlayChanged)
    ensembles, percentiles = spy(st.ensembleChanged), spy(st.percentileChanged)
    figs = pixel_figures(model, np.zeros((28, 28), np.uint8))
    st.set_figures(figs)
    assert st.figures is figs and st.figures_serial == 1 and len(figures) == 1
    st.set_figures(figs)  # the same heatmaps shown again are a new showing (the influence map follows)
    assert st.figures_serial == 2 and len(figures) == 2
    st.set_tool("mask")
    st.set_overlay("path")
    assert st.tool == "mask" and tools == [("mask",)] and st.overlay == "path" and overlays == [("path",)]
    st.set_percentile(42.0, "among 10 test digits")
    assert (st.percentile, st.percentile_note) == (42.0, "among 10 test digits") and len(percentiles) == 1
    st.set_ensemble(None)
    assert st.ensemble is None and len(ensembles) == 1
    errors, status = spy(st.error), spy(st.status)
    st.show_error("broken")
    st.show_status("hello", 100)
    assert errors == [("broken",)] and status == [("hello", 100)]


def test_the_canvas_widget_edits_only_through_the_state(qtbot):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    from app.widgets.canvas import CanvasWidget

    st = AppState()
    cv = CanvasWidget(st)
    qtbot.addWidget(cv)
    cv.resize(560, 560)
    cv.show()
    inks, strokes, masks = spy(st.inkPainted), spy(st.strokeFinished), spy(st.maskChanged)

    def drag(a, b, button=Qt.LeftButton):
        QTest.mousePress(cv, button, Qt.NoModifier, cv.pixel_center(*a).toPoint())
        QTest.mouseMove(cv, cv.pixel_center(*b).toPoint())
        QTest.mouseRelease(cv, button, Qt.NoModifier, cv.pixel_center(*b).toPoint())

    st.set_brush(1)
    drag((4, 4), (4, 10))
    assert st.session.canvas[4, 4:11].all() and inks and len(strokes) == 1 and st.session.can_undo
    st.set_tool("mask")
    drag((20, 4), (20, 10))
    assert st.session.mask[20, 4:11].all() and masks and not st.session.canvas[20].any()
    st.set_tool("draw")
    st.start_run(Run(Job(1, lambda job: None, (), {}), "sample", 1, 0, 1.0, np.ones(784, bool)))
    before = st.session.canvas.copy()
    n = len(inks)
    drag((12, 4), (12, 10))  # a run owns the canvas: the stroke is refused
    np.testing.assert_array_equal(st.session.canvas, before)
    assert len(inks) == n
    st.end_run()
    # pinning goes through the state and the canvas follows it
    pins = spy(cv.pinned)
    st.set_tool("inspect")
    QTest.mouseClick(cv, Qt.LeftButton, Qt.NoModifier, cv.pixel_center(2, 3).toPoint())
    assert pins == [(2 * 28 + 3,)]
    st.set_pin(5)
    assert cv.pinned_pixel == 5
