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
