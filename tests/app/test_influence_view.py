"""The pinned pixel's influence map in the Inspect tab."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF
from PySide6.QtWidgets import QApplication

from app.widgets.influence import LEVELS, scale_for
from engine.figures import pixel_influence_steps
from engine.steps import drain

from .test_main_window import stroke


def _expected(win, pixel):
    return drain(pixel_influence_steps(win.model, win.figures.extra["image"], pixel, win.ordering))[1]


def _shown_for(win, pixel):
    inf = win.influence_view.influence
    return inf is not None and inf.pixel == pixel and win.influence.up_to_date


def test_pinning_a_pixel_maps_what_moves_its_conditional(qtbot, win):
    stroke(qtbot, win, [(8, 10), (8, 18), (16, 18)])
    pixel = 17 * 28 + 18  # just below the stroke's end: its conditional sees the stroke
    with qtbot.waitSignal(win.influenceShown, timeout=20000):
        win.state.set_pin(pixel)
    view = win.influence_view
    inf = view.influence
    assert inf.pixel == pixel and inf.step == int(win.ordering.inverse[pixel])
    want = _expected(win, pixel)
    np.testing.assert_allclose(inf.delta, want.delta, atol=1e-6)  # NaN where the ordering puts it later
    after = win.ordering.inverse.reshape(28, 28) >= inf.step
    assert np.isnan(inf.delta[after]).all() and np.isfinite(inf.delta[~after]).all()
    assert np.abs(inf.delta[~after]).max() > 0.01  # the stroke above it moves it
    j, v = inf.strongest(1)[0]
    assert f"({j // 28}, {j % 28})" in view.summary.text() and f"{abs(v):.3f}" in view.summary.text()
    assert f"{inf.p:.3f}" in view.summary.text()
    assert view.scale == scale_for(inf.delta) and tuple(view.image.levels) == (-view.scale, view.scale)
    # hovering the map names a pixel and what flipping it would do
    r, c = divmod(j, 28)
    view._on_move(view.plot.vb.mapViewToScene(QPointF(c + 0.5, r + 0.5)))
    assert f"({r}, {c})" in view.view.toolTip() and "flipped" in view.view.toolTip()
    # ... and outlines it on the canvas and the heatmaps
    assert win.canvas.hover_pixel == j and all(m.hover.isVisible() for m in win.heatmaps.maps)
    assert win.heatmaps.maps[0].hover.rect().topLeft() == QPointF(c, r)
    QApplication.sendEvent(view.view, QEvent(QEvent.Leave))
    assert win.canvas.hover_pixel == -1 and not win.heatmaps.maps[0].hover.isVisible()
    # unpinning clears it
    win.state.set_pin(-1)
    assert view.influence is None and view.hint.isVisible()


def test_the_map_follows_the_canvas_and_the_last_pin(qtbot, win):
    stroke(qtbot, win, [(6, 6), (6, 20)])
    win.state.set_pin(20 * 28 + 10)
    win.state.set_pin(21 * 28 + 12)  # replaces the first request at once
    qtbot.waitUntil(lambda: _shown_for(win, 21 * 28 + 12), timeout=20000)
    first = win.influence_view.influence.delta.copy()
    stroke(qtbot, win, [(18, 8), (18, 16)])  # new ink above the pinned pixel: the map is redone for it
    qtbot.waitUntil(lambda: _shown_for(win, 21 * 28 + 12)
                    and np.array_equal(win.figures.extra["image"], win.session.flat()), timeout=20000)
    inf = win.influence_view.influence
    np.testing.assert_allclose(inf.delta, _expected(win, 21 * 28 + 12).delta, atol=1e-6)
    assert not np.allclose(np.nan_to_num(inf.delta), np.nan_to_num(first))


def test_the_first_pixel_has_nothing_before_it(qtbot, win):
    first = int(win.ordering.perm[0])
    with qtbot.waitSignal(win.influenceShown, timeout=20000):
        win.state.set_pin(first)
    assert np.isnan(win.influence_view.influence.delta).all()
    assert "nothing comes before it" in win.influence_view.summary.text()


@pytest.mark.parametrize("top,scale", [(0.0, 0.05), (0.04, 0.05), (0.05, 0.05), (0.3, 0.5), (0.9, 1.0), (1.0, 1.0)])
def test_the_scale_is_the_smallest_round_level_that_holds_every_change(top, scale):
    d = np.full((2, 2), np.nan)
    d[0, 0], d[0, 1] = -top, top / 2
    assert scale_for(d) == scale and scale in LEVELS


def test_a_failing_influence_job_says_so_and_keeps_the_window(qtbot, win, monkeypatch):
    from app import jobs

    def broken(job, *args):
        raise ValueError("no memory left for the flipped copies")
        yield  # a generator, like the real job

    monkeypatch.setattr(jobs, "influence_job", broken)
    win.state.set_pin(10 * 28 + 10)
    qtbot.waitUntil(lambda: "unavailable" in win.influence_view.hint.text(), timeout=20000)
    assert "no memory left" in win.influence_view.hint.text() and win.influence_view.influence is None
    assert win.isVisible() and win.influence.requests.pending is None
