"""The app with a class-conditional model (issue 28, item 4): the bar chart of p(y | canvas) from the
drawn prefix, the evidence map between two classes, the heatmaps and inspector given a picked class
or the marginal, the digit picker reaching sampling, the grid with one row per digit; an
unconditional model leaves the app as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from engine.checkpoint import save_checkpoint
from engine.class_figures import drawn_prefix
from engine.models import build_model

COND = {"channels": 8, "layers": 2, "head": 16, "classes": 10}


@pytest.fixture(scope="module")
def class_bundled(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("class-bundled")
    torch.manual_seed(5)
    model = build_model("pixelcnn", COND)
    with torch.no_grad():  # the class terms start at zero: random ones, so the classes differ
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (1.0 if name.startswith("class_") else 0.3))
        model.set_class_prior(np.arange(10) + 5)
    metrics = {"test_nll": 80.0, "test_accuracy": 0.9677, "test_cond_nll": 78.25}
    save_checkpoint(folder / "pcnn-c10.safetensors", model, {"name": "pcnn-c10", "metrics": metrics})
    torch.manual_seed(6)
    save_checkpoint(folder / "fvsbn.safetensors", build_model("fvsbn", {}), {"name": "fvsbn", "metrics": {"test_nll": 99.0}})
    return folder


@pytest.fixture
def cwin(make_window, class_bundled):
    win = make_window(class_bundled)  # starts on the best: the conditional model
    assert win.model.classes == 10
    return win


def _pt(canvas, r, c) -> QPoint:
    return canvas.pixel_center(r, c).toPoint()


def stroke(qtbot, win, points) -> None:
    cv = win.canvas
    with qtbot.waitSignal(win.figuresShown, timeout=10000):
        QTest.mousePress(cv, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, _pt(cv, *points[0]))
        for p in points[1:]:
            QTest.mouseMove(cv, _pt(cv, *p))
        QTest.mouseRelease(cv, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, _pt(cv, *points[-1]))


def engine_log_posterior(win) -> tuple[np.ndarray, int]:
    x = win.session.flat().astype(np.float32)[None]
    upto = drawn_prefix(x, win.ordering)
    with torch.no_grad():
        return win.model.class_log_posterior(x, win.ordering, upto=upto)[0].double().numpy(), upto


def engine_posterior(win) -> tuple[np.ndarray, int]:
    log_post, upto = engine_log_posterior(win)
    return np.exp(log_post), upto


def shown_for_canvas(win) -> bool:
    st = win.state
    return (st.figures is not None and win.classes.shown_serial == st.figures_serial
            and np.array_equal(st.figures.extra["image"], win.session.flat()) and not win.live.pending)


def test_the_bar_chart_is_the_engines_posterior_and_follows_each_stroke(qtbot, cwin):
    win = cwin
    panel = win.class_panel
    assert panel.isVisible()
    qtbot.waitUntil(lambda: shown_for_canvas(win), timeout=10000)
    prior = panel.values.copy()
    np.testing.assert_allclose(prior, (np.arange(10) + 6) / (np.arange(10) + 6).sum(), atol=1e-6)  # blank: p(y)
    assert "nothing drawn yet" in panel.note.text()
    stroke(qtbot, win, [(5, 12), (12, 14), (19, 12)])
    qtbot.waitUntil(lambda: shown_for_canvas(win), timeout=10000)
    post, upto = engine_posterior(win)
    assert 0 < upto < 784
    np.testing.assert_allclose(panel.values, post, atol=1e-6)
    assert np.abs(panel.values - prior).max() > 1e-3  # the stroke moved it
    assert f"first {upto} pixels in raster order" in panel.note.text()
    heights = panel.bars.bars.opts["height"]
    np.testing.assert_allclose(heights, post, atol=1e-6)  # what is drawn, not only what is held
    stroke(qtbot, win, [(20, 5), (24, 20)])  # a second stroke, further down: a longer prefix
    qtbot.waitUntil(lambda: shown_for_canvas(win), timeout=10000)
    post2, upto2 = engine_posterior(win)
    assert upto2 > upto
    np.testing.assert_allclose(panel.values, post2, atol=1e-6)


def test_the_evidence_map_is_the_engines_difference_for_the_chosen_classes(qtbot, cwin):
    win = cwin
    panel = win.class_panel
    stroke(qtbot, win, [(4, 8), (10, 20), (22, 9)])
    qtbot.waitUntil(lambda: shown_for_canvas(win), timeout=10000)
    x = win.session.flat().astype(np.float32)[None]
    with torch.no_grad():
        lp = win.model.class_log_probs(x, win.ordering)[:, 0].double().numpy()
    post_log, upto = engine_log_posterior(win)
    top = list(np.argsort(-post_log, kind="stable"))
    counted = np.zeros(784, bool)
    counted[win.ordering.perm[:upto]] = True

    def check(a: int, b: int) -> None:
        assert panel.pair == (a, b)
        ev = panel.evidence_shown.reshape(-1)
        np.testing.assert_allclose(ev[counted], (lp[a] - lp[b])[counted], atol=1e-4)
        assert np.isnan(ev[~counted]).all()
        assert f">{a}<" in panel.legend.right.text() and f">{b}<" in panel.legend.left.text()
        assert f"log p({a} | x) − log p({b} | x) = {post_log[a] - post_log[b]:+.2f} nats" in panel.note.text()

    check(int(top[0]), int(top[1]))  # by default the two most probable classes
    panel.pick_a.setCurrentIndex(panel.pick_a.findData(4))
    panel.pick_b.setCurrentIndex(panel.pick_b.findData(7))
    qtbot.waitUntil(lambda: win.state.evidence_pair == (4, 7), timeout=5000)
    check(4, 7)
    panel.pick_a.setCurrentIndex(0)  # "top" against 7: the most probable class other than 7
    others = [int(c) for c in top if c != 7]
    check(others[0], 7)
    panel.pick_b.setCurrentIndex(0)  # and "2nd": the two most probable again
    assert win.state.evidence_pair == (None, None)
    check(int(top[0]), int(top[1]))


def test_the_heatmaps_show_the_marginal_or_the_picked_class(qtbot, cwin):
    win = cwin
    stroke(qtbot, win, [(6, 10), (18, 16)])
    x = win.session.flat().astype(np.float32)[None]
    with torch.no_grad():
        marginal = win.model.conditionals(x, win.ordering)[0].numpy()
        given7 = win.model.conditionals(x, win.ordering, y=7)[0].numpy()
    assert win.figures.given is None and "marginal" in win.maps_title.text()
    np.testing.assert_allclose(win.figures.prob.reshape(-1), marginal, atol=1e-5)
    win.class_panel.given.setCurrentIndex(win.class_panel.given.findData(7))
    assert win.state.given == 7
    qtbot.waitUntil(lambda: win.figures.given == 7 and not win.live.pending, timeout=10000)
    np.testing.assert_allclose(win.figures.prob.reshape(-1), given7, atol=1e-5)
    np.testing.assert_allclose(win.heatmaps.prob.image.image.reshape(-1), given7, atol=1e-5)
    assert "given y&nbsp;=&nbsp;7" in win.maps_title.text()
    assert win.sampling.digit.currentData() == 7  # one picked class, shown by both pickers
    win.state.set_pin(300)
    assert win.inspector.fields["given"].text() == "y = 7"
    assert win.inspector.fields["prob"].text() == f"{given7[300]:.4f}"


def test_the_picked_digit_reaches_sampling(qtbot, cwin):
    win = cwin
    s = win.sampling
    s.digit.setCurrentIndex(s.digit.findData(3))
    assert win.state.given == 3 and win.class_panel.given.currentData() == 3
    s.count.setValue(2)
    seed = s.seed.value()
    with qtbot.waitSignal(win.runFinished, timeout=60000) as blocker:
        s.run_btn.click()
    assert blocker.args == [True]
    np.testing.assert_array_equal(s.classes_drawn, [3, 3])
    ref = win.model.sample(2, ordering=win.ordering, generator=torch.Generator().manual_seed(seed), y=3).numpy()
    np.testing.assert_array_equal(s.images, ref)
    assert "of a 3" in s.progress.format()
    s.digit.setCurrentIndex(0)  # any: the model draws the digit, and the panel says which
    assert win.state.given is None
    seed = s.seed.value()
    with qtbot.waitSignal(win.runFinished, timeout=60000):
        s.run_btn.click()
    gen = torch.Generator().manual_seed(seed)
    first = next(win.model.sample_steps(2, ordering=win.ordering, generator=gen))  # the classes come before any pixel
    drawn = [int(c) for c in first.y]
    np.testing.assert_array_equal(s.classes_drawn, drawn)
    assert f"digits drawn: {drawn[0]}, {drawn[1]}" in s.progress.format()


def test_the_grid_has_one_row_per_digit_and_can_be_stopped(qtbot, cwin):
    win = cwin
    s = win.sampling
    stroke(qtbot, win, [(8, 8), (8, 20)])
    canvas = win.session.canvas.copy()
    seed = s.seed.value()
    with qtbot.waitSignal(win.runFinished, timeout=120000) as blocker:
        s.grid_btn.click()
    assert blocker.args == [True]
    assert s.images.shape == (80, 784) and s.cols == 8
    assert [t.textItem.toPlainText() for t in s._labels] == [str(c) for c in range(10)]
    np.testing.assert_array_equal(s.classes_drawn, np.repeat(np.arange(10), 8))
    ref = win.model.sample(80, ordering=win.ordering, generator=torch.Generator().manual_seed(seed),
                           y=np.repeat(np.arange(10), 8)).numpy()
    np.testing.assert_array_equal(s.images, ref)
    assert s.grid_image.image.shape == (10 * 29 + 1, 8 * 29 + 1)  # 10 rows of 8
    np.testing.assert_array_equal(win.session.canvas, canvas)  # the grid leaves the canvas alone
    s.speed.setValue(0)  # 2 pixels a second: it is still going when stopped
    with qtbot.waitSignal(win.runFinished, timeout=20000) as blocker:
        s.grid_btn.click()
        qtbot.waitUntil(lambda: s.progress.value() >= 1, timeout=10000)
        assert s.progress.format().endswith("· 10 different digits")
        s.stop_btn.click()
    assert blocker.args == [False]
    np.testing.assert_array_equal(win.session.canvas, canvas)


def test_the_model_card_gives_the_classifiers_test_accuracy(cwin):
    text = cwin.model_info.text.text()
    assert "Conditioned on 10 digit classes" in text and "<b>96.77%</b> correct" in text and "78.25 nats" in text


def test_an_unconditional_model_hides_the_class_panel(qtbot, win, class_bundled):
    assert win.model.classes == 0
    assert not win.class_panel.isVisible() and "digit classes" not in win.model_info.text.text()
    assert not win.sampling._form.isRowVisible(win.sampling._digit_row)
    assert "marginal" not in win.maps_title.text() and "given" not in win.maps_title.text()
    assert win.figures.classes is None
    win.state.set_pin(100)
    assert not win.inspector._form.isRowVisible(win.inspector.fields["given"])
    with qtbot.waitSignal(win.figuresShown, timeout=20000):
        win.checkpoints.open_checkpoint(class_bundled / "pcnn-c10.safetensors")
    assert win.class_panel.isVisible() and win.sampling._form.isRowVisible(win.sampling._digit_row)
    with qtbot.waitSignal(win.figuresShown, timeout=20000):  # the figures given y = 2, before the next model
        win.state.set_given(2)
    with qtbot.waitSignal(win.state.modelChanged, timeout=20000):
        win.checkpoints.open_checkpoint(class_bundled / "fvsbn.safetensors")
    assert win.state.given is None and not win.class_panel.isVisible()
    assert "given" not in win.maps_title.text()
    qtbot.waitUntil(lambda: win.figures is not None and win.figures.classes is None and not win.live.pending, timeout=10000)


def test_inpainting_completes_the_canvas_as_the_picked_digit(qtbot, cwin):
    win = cwin
    s = win.sampling
    stroke(qtbot, win, [(4, 8), (4, 20), (20, 12)])
    win.runs.mask_lower_half()
    s.digit.setCurrentIndex(s.digit.findData(7))
    assert "completed as a 7" in s.exactness.text()
    known, values = win.session.known.copy(), win.session.flat().copy()
    s.count.setValue(3)
    seed = s.seed.value()
    with qtbot.waitSignal(win.runFinished, timeout=60000) as blocker:
        s.run_btn.click()
    assert blocker.args == [True]
    np.testing.assert_array_equal(s.classes_drawn, [7, 7, 7])
    ref = win.model.inpaint(known, values, 3, ordering=win.ordering, generator=torch.Generator().manual_seed(seed), y=7).numpy()
    np.testing.assert_array_equal(s.images, ref)
    np.testing.assert_array_equal(s.images[:, known.reshape(-1)], np.broadcast_to(values[known.reshape(-1)], (3, int(known.sum()))))


@pytest.mark.parametrize("given", [None, 7])
def test_a_fork_of_a_conditional_run_continues_its_image_under_the_same_class(qtbot, cwin, given):
    """The fork's original continuation is the run's own completion: the image keeps the class it
    was drawn from (picked, or drawn by the run on its generator), and the forked one shares it."""
    from PySide6.QtTest import QTest as T

    win, steps = cwin, 30
    s, fork = win.sampling, win.fork
    win.state.set_given(given)
    win.show_panel(s)
    s.seed.setValue(11)
    s.count.setValue(3)
    T.mouseClick(s.step_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.state.run is not None and win.state.run.frame is not None, timeout=10000)
    for _ in range(steps - 1):
        T.mouseClick(s.step_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.state.run.frame.index == steps - 1, timeout=10000)
    drawn_class = int(win.state.run.frame.y[0])
    with qtbot.waitSignal(fork.forked, timeout=10000):
        T.mouseClick(fork.button, Qt.MouseButton.LeftButton)
    assert fork.point.y == drawn_class and fork.point.class_draw == (10 if given is None else 0)
    with qtbot.waitSignal(fork.finished, timeout=20000):
        T.mouseClick(fork.dialog.continue_btn, Qt.MouseButton.LeftButton)
    x, lp = fork.result
    gen = torch.Generator().manual_seed(11)
    full = win.model.sample(3, ordering=win.ordering, temperature=1.0, generator=gen, y=given).numpy()
    np.testing.assert_array_equal(x[0], full[0])
    np.testing.assert_array_equal(x[1], x[0])  # nothing edited: the same random numbers, the same class
