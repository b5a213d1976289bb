"""A fork in sampling driven as a user would: step a run, pause, fork, change a pixel on the
canvas, continue both; the original continuation is the run's own completion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import QPoint, QRect, QSize, Qt
from PySide6.QtTest import QTest

from app.fork import GAP, place_beside
from engine.sampling import continue_fork

from .test_main_window import stroke

STEPS = 40


def click(btn):
    QTest.mouseClick(btn, Qt.LeftButton)


def test_fork_a_paused_run_and_compare_both_continuations(qtbot, win):
    s, fork = win.sampling, win.fork
    win.show_panel(s)
    s.seed.setValue(7)
    s.count.setValue(2)
    assert not fork.button.isEnabled()
    click(s.step_btn)  # starts a paused run, one pixel
    qtbot.waitUntil(lambda: win.state.run is not None and win.state.run.frame is not None
                    and win.state.run.frame.index == 0, timeout=10000)
    for _ in range(STEPS - 1):
        click(s.step_btn)
    qtbot.waitUntil(lambda: win.state.run.frame.index == STEPS - 1, timeout=10000)
    assert fork.button.isEnabled() and win.state.locked
    prefix = win.state.run.frame.x[0].copy()
    with qtbot.waitSignal(fork.forked, timeout=10000):
        click(fork.button)
    assert fork.dialog.isVisible() and not win.state.locked and win.state.run is None
    # the canvas holds the image so far; the pixels still to draw are masked
    np.testing.assert_array_equal(win.session.flat(), prefix)
    assert win.session.mask.sum() == 784 - STEPS and not win.session.mask.reshape(-1)[:STEPS].any()
    # change one drawn pixel (raster: row 0 and the start of row 1 are drawn)
    win.acts.brush.setValue(1)
    old = win.session.canvas[0, 14]
    stroke(qtbot, win, [(0, 14)], Qt.RightButton if old else Qt.LeftButton)
    assert win.session.canvas[0, 14] == 1 - old and (win.session.flat() != prefix).sum() == 1
    # the fork's panel shows the edit at once: the forked image holds it, outlined, the original does not
    forked, original = fork.dialog.images[1].image.reshape(-1), fork.dialog.images[0].image.reshape(-1)
    assert forked[14] == 1 - old and original[14] == old and len(fork.dialog._marks) == 1
    np.testing.assert_array_equal(fork.dialog.images[2].image.reshape(-1)[:STEPS], win.session.flat()[:STEPS] - prefix[:STEPS])
    # ink drawn ahead of the run shows in the fork at once, and only there: the original still has it to draw
    stroke(qtbot, win, [(20, 10)])
    forked, original = fork.dialog.images[1].image.reshape(-1), fork.dialog.images[0].image.reshape(-1)
    assert forked[20 * 28 + 10] == 1 and original[20 * 28 + 10] == np.float32(0.35) and len(fork.dialog._marks) == 2
    stroke(qtbot, win, [(20, 10)], Qt.RightButton)  # and taken back
    assert fork.dialog.images[1].image.reshape(-1)[20 * 28 + 10] == np.float32(0.35) and len(fork.dialog._marks) == 1
    with qtbot.waitSignal(fork.finished, timeout=20000):
        click(fork.dialog.continue_btn)
    x, lp = fork.result
    # the original continuation is exactly the run's completion (same seed, same random numbers)
    gen = torch.Generator().manual_seed(7)
    full = win.model.sample(2, ordering=win.ordering, temperature=1.0, generator=gen).numpy()
    np.testing.assert_array_equal(x[0], full[0])
    np.testing.assert_array_equal(x[0][:STEPS], prefix[:STEPS])
    # the fork keeps the edit and the rest of what was drawn
    assert x[1][14] == 1 - old
    np.testing.assert_array_equal(np.delete(x[1][:STEPS], 14), np.delete(prefix[:STEPS], 14))
    with torch.no_grad():
        ref = win.model.log_prob(torch.as_tensor(x), win.ordering).double().numpy()
    np.testing.assert_allclose(lp, ref, rtol=1e-5)
    assert f"{lp[0]:.1f}" in fork.dialog.info.text() and f"{lp[1]:.1f}" in fork.dialog.info.text()
    np.testing.assert_array_equal(fork.dialog.images[2].image.reshape(-1), (x[1] - x[0]).astype(np.float32))
    # without an edit both continuations are the same: they share every random number
    gen2 = continue_fork(win.model, fork.point, fork.point.prefix)
    try:
        while True:
            next(gen2)
    except StopIteration as stop:
        same = stop.value
    np.testing.assert_array_equal(same[0], same[1])
    np.testing.assert_array_equal(same[0], x[0])
    # either continuation can go on the canvas
    with qtbot.waitSignal(win.figuresShown, timeout=10000):
        click(fork.dialog.use_b)
    np.testing.assert_array_equal(win.session.flat(), x[1])
    assert not win.session.mask.any()  # a whole image: nothing left to draw


def _fork_after(qtbot, win, steps: int) -> None:
    """Step a new paused run ``steps`` pixels and fork it."""
    s, fork = win.sampling, win.fork
    click(s.step_btn)
    qtbot.waitUntil(lambda: win.state.run is not None and win.state.run.frame is not None, timeout=10000)
    for _ in range(steps - 1):
        click(s.step_btn)
    qtbot.waitUntil(lambda: win.state.run.frame.index == steps - 1, timeout=10000)
    with qtbot.waitSignal(fork.forked, timeout=10000):
        click(fork.button)


def test_a_new_fork_drops_the_continuation_of_the_previous_one(qtbot, win):
    """A continuation still running when the user forks another run never reaches the new fork's
    dialog: its images belong to the old fork point."""
    s, fork = win.sampling, win.fork
    ended: dict[int, bool] = {}
    fork.worker.finished.connect(lambda i, c: ended.__setitem__(i, c))
    win.show_panel(s)
    _fork_after(qtbot, win, 5)
    s.speed.setValue(0)  # the slowest speed: the continuation is still running below
    click(fork.dialog.continue_btn)
    old = fork.requests.job
    assert old is not None and not fork.dialog.continue_btn.isEnabled()
    s.speed.setValue(s.speed.maximum())
    _fork_after(qtbot, win, 8)
    assert old.cancelled and not fork.requests.busy
    assert fork.point.draws == 8 and fork.result is None and fork.dialog.continue_btn.isEnabled()
    # the old job ends (its signals come in order, so whatever it still sent has arrived by then) ...
    qtbot.waitUntil(lambda: old.id in ended, timeout=10000)
    assert ended[old.id] is True
    # ... and none of it reached the new fork
    assert fork.result is None and fork.dialog.info.text() == ""


def test_closing_the_fork_window_takes_its_mask_away(qtbot, win):
    s, fork = win.sampling, win.fork
    win.show_panel(s)
    _fork_after(qtbot, win, 6)
    assert win.session.mask.sum() == 784 - 6 and fork.dialog.isVisible()
    with qtbot.waitSignal(win.state.maskChanged, timeout=5000):
        fork.dialog.close()
    assert not win.session.mask.any() and not fork.dialog.isVisible()


def test_the_fork_window_opens_where_the_layout_says(qtbot, win):
    s, fork = win.sampling, win.fork
    win.show_panel(s)
    _fork_after(qtbot, win, 3)
    frame = win.frameGeometry().size() - win.geometry().size()
    canvas = QRect(win.canvas.mapToGlobal(QPoint(0, 0)), win.canvas.size())
    least = fork.dialog.minimumSizeHint()
    want = place_beside(win.frameGeometry(), fork.dialog.preferred.expandedTo(least) + frame, win.screen().availableGeometry(),
                        canvas, minimum=least + frame)
    assert fork.dialog.frameGeometry() == want


SCREEN = QRect(0, 0, 1600, 1000)


@pytest.mark.parametrize("window", [QRect(0, 0, 900, 700), QRect(700, 100, 900, 700), QRect(300, 0, 1000, 480),
                                    QRect(300, 500, 1000, 500)])
def test_the_fork_window_goes_beside_the_window_where_there_is_room(window):
    size = QSize(600, 450)
    placed = place_beside(window, size, SCREEN)
    assert placed.size() == size
    assert SCREEN.contains(placed) and not placed.intersects(window)
    gaps = (placed.left() - window.right() - 1, window.left() - placed.right() - 1,
            placed.top() - window.bottom() - 1, window.top() - placed.bottom() - 1)
    assert GAP in gaps


def test_without_room_beside_the_window_it_keeps_off_the_canvas():
    window, canvas = QRect(0, 0, 1600, 1000), QRect(20, 60, 560, 560)
    size = QSize(960, 520)
    placed = place_beside(window, size, SCREEN, canvas)
    assert SCREEN.contains(placed) and not placed.intersects(canvas) and placed.size() == size
    # a canvas on the right: the window goes to its left
    canvas = QRect(1000, 60, 560, 560)
    placed = place_beside(window, size, SCREEN, canvas)
    assert SCREEN.contains(placed) and not placed.intersects(canvas) and placed.size() == size
    # a little less room than its size: as narrow as its minimum allows, still off the canvas
    canvas = QRect(100, 60, 560, 560)
    placed = place_beside(window, size, SCREEN, canvas, minimum=QSize(900, 400))
    assert SCREEN.contains(placed) and not placed.intersects(canvas) and placed.width() == 1600 - 660 - GAP
    # no room anywhere: on the screen, at its right edge, at its size
    placed = place_beside(window, QSize(1500, 900), SCREEN, QRect(20, 60, 900, 900))
    assert SCREEN.contains(placed) and placed.right() == SCREEN.right() and placed.size() == QSize(1500, 900)
